//! The libvirt edge: a read-only connection that lists the PCI node devices
//! and fetches their XML. Nothing is ever detached or reattached here.
//!
//! The connection itself lives in the `vfioctl-libvirt` helper program
//! (src/bin/vfioctl-libvirt.rs), the only code that links libvirt; this side
//! runs it with a deadline, so an unresponsive daemon costs at most
//! `timeout`, never a hang, and reports its one-line errors.

use std::io::Read;
use std::os::unix::process::CommandExt;
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
    /// root is this machine's own `/`, however it is spelled
    /// (`root::names_this_host`: `/proc/..` is the host, and its VMs count).
    pub fn resolve(connect: Option<&str>, root: &Path) -> Target {
        match connect {
            Some(uri) => Target::Uri(uri.to_string()),
            None if super::root::names_this_host(root) => Target::Uri(DEFAULT_URI.to_string()),
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

/// The fixed directories searched after the executable's own (`helper_path`).
pub const HELPER_DIRS: &[&str] = &["/usr/libexec/vfioctl", "/usr/lib/vfioctl"];

/// A helper named by a program that links this library (its tests, whose
/// executable is not beside the helper): `use_helper`. Never set by the
/// vfioctl binary, and nothing in the environment sets it.
static HELPER_OVERRIDE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Runs `path` as the helper in this process from now on: for programs
/// that link vfioctl's library, whose executable has no helper beside it
/// (the integration tests). Later calls with another path are ignored.
pub fn use_helper(path: impl Into<PathBuf>) {
    let _ = HELPER_OVERRIDE.set(path.into());
}

/// Where the helper is, at fixed places only (root runs it; nothing in the
/// environment chooses it): beside this executable (a build tree), in
/// `../libexec/vfioctl` from it (an installation under any prefix: `make
/// install` puts vfioctl in PREFIX/sbin and the helper in
/// PREFIX/libexec/vfioctl), then `HELPER_DIRS`. The executable's own path
/// is the kernel's (`/proc/self/exe`), not argv[0].
fn helper_path() -> Option<PathBuf> {
    if let Some(path) = HELPER_OVERRIDE.get() {
        return Some(path.clone());
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let mut candidates = vec![
        dir.join(HELPER),
        dir.join("../libexec/vfioctl").join(HELPER),
    ];
    candidates.extend(HELPER_DIRS.iter().map(|d| Path::new(d).join(HELPER)));
    candidates.into_iter().find(|p| p.is_file())
}

/// What of vfioctl's environment the helper gets: what an `ssh` transport
/// needs to find its keys, agent and tickets. Nothing else: libvirt's
/// client reads variables of its own (`LIBVIRT_LOG_OUTPUTS` makes it
/// create and append to a file it names, as root), and its `PATH` is the
/// system's (`programs::SYSTEM_PATH`), where it finds `ssh`.
const HELPER_ENV_KEPT: &[&str] = &[
    "HOME",
    "USER",
    "LOGNAME",
    "SSH_AUTH_SOCK",
    "KRB5CCNAME",
    "XDG_RUNTIME_DIR",
];

/// Refuses a helper that someone other than root (or the owner of the
/// running executable: a build tree run by its builder) could have
/// replaced: it must be a regular file owned by one of them and writable by
/// no one else.
fn trusted_helper(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    let own = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| m.uid())
        .unwrap_or(0);
    let mode = meta.mode() & 0o7777;
    if !meta.is_file() || (meta.uid() != 0 && meta.uid() != own) || mode & 0o022 != 0 {
        return Err(format!(
            "refusing to run {}: owned by uid {} with mode {mode:o}; the helper must be a regular file owned by root (or by vfioctl's own owner) and writable by no one else (chown root, chmod go-w)",
            path.display(),
            meta.uid()
        ));
    }
    Ok(())
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
/// threads, so a large answer cannot block it.
///
/// It runs as the leader of a process group of its own, and every program
/// libvirt starts for the connection (the `ssh` of `qemu+ssh://`, the
/// command of `qemu+ext://`, which libvirt runs as its child without a
/// group or session of their own) is in that group. The whole group is
/// killed once the helper has exited or at the deadline, and when the query
/// is dropped unfinished (vfioctl returning early, by an error): a
/// transport that never answers never outlives vfioctl. The group is killed
/// before the helper is reaped, so its number cannot have been reused. If
/// vfioctl itself dies (a signal, kill -9), the kernel sends the helper
/// SIGTERM (`PR_SET_PDEATHSIG`), on which it kills its group.
pub struct Query {
    uri: String,
    child: std::process::Child,
    started: Instant,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<String>>,
    done: bool,
}

impl Query {
    /// Kills the helper's process group (the helper and whatever libvirt
    /// started), then reaps the helper.
    fn end_group(&mut self) -> std::io::Result<std::process::ExitStatus> {
        super::programs::kill_group(&self.child);
        self.done = true;
        self.child.wait()
    }

    /// Whether the helper has exited, without reaping it, so its group can
    /// still be killed by number.
    fn exited(&self) -> Result<bool, String> {
        super::programs::exited_unreaped(&self.child).map_err(|e| e.to_string())
    }
}

impl Drop for Query {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.end_group();
        }
    }
}

/// Starts the helper on `uri`; `Query::finish` collects its answer. Callers
/// that have other work (reading sysfs) start it first, so that libvirt's
/// start-up overlaps that work. Call it from the thread that lives as long
/// as the query (the main thread): the helper's parent-death signal follows
/// the thread that started it.
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
            "the helper {HELPER} is not installed beside vfioctl, in ../libexec/vfioctl from it, or in {}",
            HELPER_DIRS.join(" or ")
        ))
    })?;
    trusted_helper(&helper).map_err(query_failed)?;
    let mut command = Command::new(&helper);
    command
        .env_clear()
        .envs(
            HELPER_ENV_KEPT
                .iter()
                .filter_map(|k| Some((k, std::env::var_os(k)?))),
        )
        .env("PATH", super::programs::SYSTEM_PATH)
        .arg(uri)
        .args(want.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls (prctl,
    // getppid) are made, on no memory of the parent's.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // vfioctl died before the signal was armed: nothing to answer.
            if libc::getppid() != parent {
                return Err(std::io::Error::other(
                    "vfioctl ended while its helper started",
                ));
            }
            Ok(())
        });
    }
    let mut child = command
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
    /// deadline it is killed with its group and the answer is a timeout.
    /// Either way nothing it or libvirt started is left running.
    pub fn finish(mut self, timeout: Duration) -> Result<Snapshot, LibvirtError> {
        let uri = self.uri.clone();
        let query_failed = |message: String| LibvirtError::Query {
            uri: uri.clone(),
            what: "the query",
            message,
        };
        loop {
            match self.exited() {
                Ok(true) => break,
                Ok(false) if self.started.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Ok(false) => {
                    return Err(LibvirtError::Timeout {
                        uri: uri.clone(),
                        secs: timeout.as_secs(),
                    });
                }
                Err(e) => return Err(query_failed(e)),
            }
        }
        // The helper has exited: whatever it left of its transport goes too.
        let status = self.end_group().map_err(|e| query_failed(e.to_string()))?;
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

    /// #31: root runs the helper only from a file no one else could have
    /// replaced (its path is fixed; nothing in the environment names it).
    #[test]
    fn a_helper_others_could_replace_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join(HELPER);
        std::fs::write(&helper, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(trusted_helper(&helper), Ok(()));
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o775)).unwrap();
        let err = trusted_helper(&helper).unwrap_err();
        assert!(err.contains("writable by no one else"), "{err}");
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&helper, Some(4242), None).unwrap();
        let err = trusted_helper(&helper).unwrap_err();
        assert!(err.contains("owned by uid 4242"), "{err}");
        assert!(trusted_helper(dir.path()).is_err(), "a directory");
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
        // #31: the real root spelled otherwise is this host: its libvirt is asked.
        for spelled in ["/proc/..", "//", "/proc/self/root"] {
            assert_eq!(
                Target::resolve(None, Path::new(spelled)),
                Target::Uri(DEFAULT_URI.into()),
                "{spelled}"
            );
        }
        let other = Target::resolve(None, Path::new("/tmp/h"));
        assert_eq!(other, Target::NotThisHost);
        assert!(other.why_not().unwrap().contains("--connect"));
    }
}
