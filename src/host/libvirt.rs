//! The libvirt edge: a read-only connection that lists the PCI node devices
//! and fetches their XML. Nothing is ever detached or reattached here.
//!
//! The connection itself lives in the `vfioctl-libvirt` helper program
//! (src/bin/vfioctl-libvirt.rs), the only code that links libvirt; this side
//! runs it with a deadline, so an unresponsive daemon costs at most
//! `timeout`, never a hang, and reports its one-line errors.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The URI used when neither `--connect` nor `VFIOCTL_CONNECT` names one.
pub const DEFAULT_URI: &str = "qemu:///system";

/// One node device as libvirt listed it: its name and `virNodeDeviceGetXMLDesc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The helper program that talks to libvirt (see src/bin/vfioctl-libvirt.rs).
pub const HELPER: &str = "vfioctl-libvirt";
/// Environment variable naming the helper explicitly.
pub const HELPER_ENV: &str = "VFIOCTL_LIBVIRT_HELPER";

/// Where the helper is: `$VFIOCTL_LIBVIRT_HELPER`, beside this executable
/// (a build tree), or in libexec beside its prefix (an installation).
fn helper_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(HELPER_ENV) {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let candidates = [
        dir.join(HELPER),
        dir.join("../libexec/vfioctl").join(HELPER),
        PathBuf::from("/usr/libexec/vfioctl").join(HELPER),
        PathBuf::from("/usr/lib/vfioctl").join(HELPER),
    ];
    candidates.into_iter().find(|p| p.is_file())
}

/// Lists the PCI node devices at `uri` with their XML, giving up after `timeout`.
///
/// libvirt is asked by a helper process so that vfioctl itself (and the udev
/// hook above all) never loads libvirt's libraries, whose initialisation
/// costs more than the rest of a vfioctl run. A hung daemon is handled by
/// killing the helper at the deadline.
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
    let query_failed = |message: String| LibvirtError::Query {
        uri: uri.to_string(),
        what: "the query",
        message,
    };
    let helper = helper_path().ok_or_else(|| {
        query_failed(format!(
            "the helper {HELPER} is not installed beside vfioctl or in /usr/libexec/vfioctl (set {HELPER_ENV})"
        ))
    })?;
    let mut child = Command::new(&helper)
        .arg(uri)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| query_failed(format!("cannot run {}: {e}", helper.display())))?;
    // Read the pipes on threads so a large answer cannot block the helper.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = stderr.read_to_string(&mut buf);
        buf
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LibvirtError::Timeout {
                    uri: uri.to_string(),
                    secs: timeout.as_secs(),
                });
            }
            Err(e) => return Err(query_failed(e.to_string())),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let message = stderr.lines().next().unwrap_or("").trim().to_string();
    match status.code() {
        Some(0) => serde_json::from_slice(&stdout)
            .map_err(|e| query_failed(format!("unreadable answer from {HELPER}: {e}"))),
        Some(HELPER_UNREACHABLE) => Err(LibvirtError::Unreachable {
            uri: uri.to_string(),
            message,
        }),
        _ => Err(query_failed(if message.is_empty() {
            format!("{HELPER} exited with {status}")
        } else {
            message
        })),
    }
}

/// The helper's exit status when it cannot connect.
pub const HELPER_UNREACHABLE: i32 = 2;

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
