//! The libvirt edge: a read-only connection that lists the PCI node devices
//! and fetches their XML. Nothing is ever detached or reattached here.
//!
//! libvirt's own error printing is switched off (errors come back as values
//! and are reported once, on one line), and the whole query runs on a worker
//! thread that the caller waits for with a deadline, so an unresponsive
//! daemon costs at most `timeout`, never a hang.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use virt::connect::Connect;

/// The URI used when neither `--connect` nor `VFIOCTL_CONNECT` names one.
pub const DEFAULT_URI: &str = "qemu:///system";

/// One node device as libvirt listed it: its name and `virNodeDeviceGetXMLDesc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDeviceXml {
    pub name: String,
    pub xml: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LibvirtError {
    #[error("cannot connect to libvirt at {uri}: {message} (start libvirtd or virtqemud, or name the right URI with --connect or VFIOCTL_CONNECT)")]
    Unreachable { uri: String, message: String },
    #[error("libvirt at {uri} did not answer within {secs} s (check that libvirtd or virtqemud is healthy, or raise --connect-timeout)")]
    Timeout { uri: String, secs: u64 },
    #[error("libvirt at {uri}: {what} failed: {message}")]
    Query {
        uri: String,
        what: &'static str,
        message: String,
    },
}

/// Which libvirt describes the host being inspected, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Uri(String),
    /// `--root` names another host tree and no URI was given: the local
    /// libvirt would describe a different machine.
    NotThisHost,
}

impl Target {
    /// An explicit URI wins; otherwise the default, but only when the host
    /// root is `/`.
    pub fn resolve(connect: Option<&str>, root: &Path) -> Target {
        match connect {
            Some(uri) => Target::Uri(uri.to_string()),
            None if root == Path::new("/") => Target::Uri(DEFAULT_URI.to_string()),
            None => Target::NotThisHost,
        }
    }

    /// Why libvirt is not asked, for notes and errors.
    pub fn why_not(&self) -> Option<String> {
        match self {
            Target::Uri(_) => None,
            Target::NotThisHost => Some(
                "--root names another host tree and no --connect URI names its libvirt".to_string(),
            ),
        }
    }
}

/// libvirt's message on one line.
fn message(err: &virt::error::Error) -> String {
    err.message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn query(uri: &str) -> Result<Vec<NodeDeviceXml>, LibvirtError> {
    // Without this, libvirt prints every error to stderr itself.
    virt::error::clear_error_callback();
    let conn = Connect::open_read_only(Some(uri)).map_err(|e| LibvirtError::Unreachable {
        uri: uri.to_string(),
        message: message(&e),
    })?;
    let failed = |what: &'static str, e: &virt::error::Error| LibvirtError::Query {
        uri: uri.to_string(),
        what,
        message: message(e),
    };
    let devices = conn
        .list_all_node_devices(virt::sys::VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)
        .map_err(|e| failed("listing PCI node devices", &e))?;
    let mut out = Vec::with_capacity(devices.len());
    for dev in &devices {
        let name = dev
            .name()
            .map_err(|e| failed("reading a node device name", &e))?;
        let xml = dev
            .xml_desc(0)
            .map_err(|e| failed("reading node device XML", &e))?;
        out.push(NodeDeviceXml { name, xml });
    }
    // libvirt lists in hash order; callers get a stable one.
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Lists the PCI node devices at `uri` with their XML, giving up after `timeout`.
/// A query that times out is abandoned on its thread (the process is short-lived).
pub fn pci_node_devices(uri: &str, timeout: Duration) -> Result<Vec<NodeDeviceXml>, LibvirtError> {
    // The test driver's file is checked here: libxml2 would print its own
    // warning about a missing file before libvirt returns the error.
    if let Some(file) = uri.strip_prefix("test://").filter(|f| *f != "/default") {
        if !Path::new(file).is_file() {
            return Err(LibvirtError::Unreachable {
                uri: uri.to_string(),
                message: format!("the test driver's file {file} does not exist"),
            });
        }
    }
    let (tx, rx) = mpsc::channel();
    let owned = uri.to_string();
    std::thread::Builder::new()
        .name("libvirt".to_string())
        .spawn(move || {
            let _ = tx.send(query(&owned));
        })
        .map_err(|e| LibvirtError::Query {
            uri: uri.to_string(),
            what: "starting the libvirt thread",
            message: e.to_string(),
        })?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(LibvirtError::Timeout {
            uri: uri.to_string(),
            secs: timeout.as_secs(),
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(LibvirtError::Query {
            uri: uri.to_string(),
            what: "the query",
            message: "the libvirt thread ended without an answer".to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_uri_only_for_the_real_root() {
        assert_eq!(
            Target::resolve(None, Path::new("/")),
            Target::Uri(DEFAULT_URI.into())
        );
        assert_eq!(
            Target::resolve(Some("test:///default"), Path::new("/tmp/h")),
            Target::Uri("test:///default".into())
        );
        let other = Target::resolve(None, Path::new("/tmp/h"));
        assert_eq!(other, Target::NotThisHost);
        assert!(other.why_not().unwrap().contains("--connect"));
    }
}
