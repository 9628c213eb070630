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

/// What to ask the helper for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    NodeDevices,
    Domains,
    Both,
}

impl Want {
    fn args(self) -> &'static [&'static str] {
        match self {
            Want::NodeDevices => &["nodedevs"],
            Want::Domains => &["domains"],
            Want::Both => &["nodedevs", "domains"],
        }
    }
}

/// One domain as the helper read it: `virDomainGetName`, `GetUUIDString`,
/// `GetID`, `IsActive`, `GetState`, `IsPersistent`, `GetAutostart`, and
/// `GetXMLDesc` (live when active, `VIR_DOMAIN_XML_INACTIVE` when persistent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainListing {
    pub name: String,
    pub uuid: String,
    pub id: Option<u32>,
    pub active: bool,
    /// libvirt's `virDomainState` number.
    pub state: i32,
    pub persistent: bool,
    pub autostart: bool,
    pub live_xml: Option<String>,
    pub config_xml: Option<String>,
}

/// The helper's answer: what was asked for, `None` for what was not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub node_devices: Option<Vec<NodeDeviceXml>>,
    pub domains: Option<Vec<DomainListing>>,
}

/// The sockets a local `qemu:///system` connection uses, read-only and
/// read-write: the modular daemon's (virtqemud) first, as libvirt's client
/// tries it first, then the monolithic daemon's (libvirtd, or virtproxyd).
pub const SYSTEM_SOCKETS: &[&str] = &[
    "/run/libvirt/virtqemud-sock-ro",
    "/run/libvirt/virtqemud-sock",
    "/run/libvirt/libvirt-sock-ro",
    "/run/libvirt/libvirt-sock",
];

/// Whether libvirt is absent for `uri`: for a local `qemu:///system` URI
/// (the default), no socket at all means no libvirt on this host, so there
/// is nothing to ask and no VM it runs. The sockets are the paths libvirt's
/// client opens (`?socket=PATH` names one), never under `--root`: the helper
/// connects to them as they are. Returns the reason when absent; `None`
/// when libvirt is there or cannot be judged from here (test driver, remote
/// URIs): then it must be asked.
pub fn absent(uri: &str) -> Option<String> {
    let sockets = sockets_for(uri)?;
    let present = sockets.iter().any(|s| {
        use std::os::unix::fs::FileTypeExt;
        std::fs::symlink_metadata(s).is_ok_and(|m| m.file_type().is_socket())
    });
    (!present).then(|| {
        format!(
            "no libvirt on this host ({} do not exist)",
            sockets.join(", ")
        )
    })
}

/// The sockets libvirt's client may use for `uri`: `SYSTEM_SOCKETS` for a
/// local `qemu:///system` (`qemu+unix` too), the one `?socket=` names;
/// `None` for other URIs (test driver, remote hosts, session daemons).
pub fn sockets_for(uri: &str) -> Option<Vec<String>> {
    let rest = uri
        .strip_prefix("qemu:///system")
        .or_else(|| uri.strip_prefix("qemu+unix:///system"))?;
    let defaults = || SYSTEM_SOCKETS.iter().map(|s| s.to_string()).collect();
    if rest.is_empty() {
        return Some(defaults());
    }
    let query = rest.strip_prefix('?')?;
    Some(
        match query.split('&').find_map(|kv| kv.strip_prefix("socket=")) {
            Some(socket) => vec![socket.to_string()],
            None => defaults(),
        },
    )
}

/// The helper, started and not yet waited for: its pipes are read on
/// threads, so a large answer cannot block it. Dropped unfinished, it is
/// killed and reaped.
pub struct Query {
    uri: String,
    child: std::process::Child,
    started: Instant,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<String>>,
    done: bool,
}

impl Drop for Query {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts the helper on `uri`; `Query::finish` collects its answer. Callers
/// that have other work (reading sysfs) start it first, so that libvirt's
/// start-up overlaps that work.
pub fn start(uri: &str, want: Want) -> Result<Query, LibvirtError> {
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
        .args(want.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| query_failed(format!("cannot run {}: {e}", helper.display())))?;
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
    Ok(Query {
        uri: uri.to_string(),
        child,
        started: Instant::now(),
        out: Some(out),
        err: Some(err),
        done: false,
    })
}

impl Query {
    /// Waits for the helper until `timeout` after it was started; at the
    /// deadline it is killed and the answer is a timeout.
    pub fn finish(mut self, timeout: Duration) -> Result<Snapshot, LibvirtError> {
        let uri = self.uri.clone();
        let query_failed = |message: String| LibvirtError::Query {
            uri: uri.clone(),
            what: "the query",
            message,
        };
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if self.started.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Ok(None) => {
                    return Err(LibvirtError::Timeout {
                        uri: uri.clone(),
                        secs: timeout.as_secs(),
                    });
                }
                Err(e) => return Err(query_failed(e.to_string())),
            }
        };
        self.done = true;
        let stdout = self
            .out
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let stderr = self
            .err
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let message = stderr.lines().next().unwrap_or("").trim().to_string();
        match status.code() {
            Some(0) => serde_json::from_slice(&stdout)
                .map_err(|e| query_failed(format!("unreadable answer from {HELPER}: {e}"))),
            Some(HELPER_UNREACHABLE) => Err(LibvirtError::Unreachable {
                uri: uri.clone(),
                message,
            }),
            _ => Err(query_failed(if message.is_empty() {
                format!("{HELPER} exited with {status}")
            } else {
                message
            })),
        }
    }
}

/// Asks the helper for `want` at `uri`, giving up after `timeout`.
///
/// libvirt is asked by a helper process so that vfioctl itself (and the udev
/// hook above all) never loads libvirt's libraries, whose initialisation
/// costs more than the rest of a vfioctl run. A hung daemon is handled by
/// killing the helper at the deadline.
pub fn query(uri: &str, want: Want, timeout: Duration) -> Result<Snapshot, LibvirtError> {
    start(uri, want)?.finish(timeout)
}

/// Lists the PCI node devices at `uri` with their XML, giving up after `timeout`.
pub fn pci_node_devices(uri: &str, timeout: Duration) -> Result<Vec<NodeDeviceXml>, LibvirtError> {
    Ok(query(uri, Want::NodeDevices, timeout)?
        .node_devices
        .unwrap_or_default())
}

/// The helper's exit status when it cannot connect.
pub const HELPER_UNREACHABLE: i32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_uri_is_judged_by_both_daemons_sockets() {
        let system = sockets_for("qemu:///system").unwrap();
        assert_eq!(system[0], "/run/libvirt/virtqemud-sock-ro", "modular first");
        assert!(system.contains(&"/run/libvirt/libvirt-sock-ro".to_string()));
        assert_eq!(sockets_for("qemu+unix:///system").unwrap(), system);
        assert_eq!(
            sockets_for("qemu+unix:///system?socket=/x/virtqemud-sock-ro").unwrap(),
            vec!["/x/virtqemud-sock-ro".to_string()]
        );
        assert_eq!(sockets_for("qemu:///system?mode=direct").unwrap(), system);
        for other in [
            "test:///default",
            "qemu+ssh://h/system",
            "qemu:///session",
            "qemu:///systemX",
        ] {
            assert_eq!(sockets_for(other), None, "{other}");
            assert_eq!(absent(other), None, "{other}: asked, never judged absent");
        }
        let why = absent("qemu:///system?socket=/nonexistent/sock").unwrap();
        assert!(why.contains("no libvirt on this host"), "{why}");
    }

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
