//! The host's virtual machines: every libvirt domain (through the helper
//! process, read-only, under the `--connect-timeout` deadline), its XML
//! parsed, mdev parents resolved in sysfs and each running domain's QEMU
//! process found from libvirt's pid file.
//!
//! When libvirt is not asked: the udev hook and `persist apply` never ask it
//! (at boot it may not be up yet, and udev must not start a socket-activated
//! daemon); `--no-libvirt` skips it; a local `qemu:///system` with no socket
//! at all means no libvirt on this host. A libvirt that is there but does not
//! answer makes the facts `Failed`: the gate refuses what it covers.

use std::fs;
use std::time::Duration;

use crate::model::domain::{parse_domain_xml, Domain, DomainState, VmFacts};
use crate::model::PciAddress;

use super::libvirt::{self, DomainListing, Snapshot, Target, Want};
use super::root::HostRoot;

/// Where the VM facts of a change come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmSource {
    /// Never ask libvirt: the udev hook and `persist apply` (the boot unit;
    /// `gate::policy`, `VmSource::for_path`).
    AtBoot,
    /// `--no-libvirt`: the operator chose not to ask.
    Skipped,
    /// Ask libvirt at `target`, giving up after `timeout`.
    Libvirt { target: Target, timeout: Duration },
    /// A URI that cannot speak for this host's VMs (libvirt's test driver
    /// named for the real root): the facts are unknown, and the gate
    /// refuses what they would decide.
    Unfit(String),
}

impl VmSource {
    /// Where `path` gets its VM facts: `asked` (libvirt, or `--no-libvirt`)
    /// when the gate's policy has it ask libvirt, else never (the udev hook
    /// and `persist apply`: `gate::policy`).
    pub fn for_path(path: crate::gate::Path, asked: impl FnOnce() -> VmSource) -> VmSource {
        if path.asks_libvirt() {
            asked()
        } else {
            VmSource::AtBoot
        }
    }
}

/// What `--no-libvirt` leaves unknown.
pub const SKIPPED: &str = "--no-libvirt: libvirt was not asked, so no VM was checked";

/// A read started and not yet collected (`start`, then `finish`).
pub enum Pending {
    Ready(VmFacts),
    Asking {
        uri: String,
        query: libvirt::Query,
        timeout: Duration,
    },
    /// Not started: read when collected (`HostUsage` asks only when the gate
    /// judges a device a VM rule covers).
    Deferred(VmSource),
}

/// Starts reading the domains: the helper runs while the caller reads sysfs.
pub fn start(source: &VmSource) -> Pending {
    let (uri, timeout) = match source {
        VmSource::Unfit(why) => return Pending::Ready(VmFacts::Failed(why.clone())),
        VmSource::AtBoot => {
            return Pending::Ready(VmFacts::NotAsked(
                crate::gate::NOT_ASKED_AT_BOOT.to_string(),
            ))
        }
        VmSource::Skipped => return Pending::Ready(VmFacts::NotAsked(SKIPPED.to_string())),
        VmSource::Libvirt {
            target: Target::NotThisHost,
            ..
        } => {
            let why = Target::NotThisHost.why_not().unwrap_or_default();
            return Pending::Ready(VmFacts::NotAsked(why));
        }
        VmSource::Libvirt {
            target: Target::Uri(uri),
            timeout,
        } => (uri.clone(), *timeout),
    };
    if let Some(why) = libvirt::absent(&uri) {
        return Pending::Ready(VmFacts::Absent(why));
    }
    match libvirt::start(&uri, Want::Domains) {
        Ok(query) => Pending::Asking {
            uri,
            query,
            timeout,
        },
        Err(e) => Pending::Ready(VmFacts::Failed(e.to_string())),
    }
}

impl Pending {
    /// The facts, once the helper answered (or the deadline passed).
    pub fn finish(self, root: &HostRoot) -> VmFacts {
        match self {
            Pending::Ready(facts) => facts,
            Pending::Deferred(source) => read(root, &source),
            Pending::Asking {
                uri,
                query,
                timeout,
            } => match query.finish(timeout) {
                Ok(snapshot) => from_snapshot(root, &uri, &snapshot),
                Err(e) => VmFacts::Failed(e.to_string()),
            },
        }
    }
}

/// Reads the domains now (`start` then `finish`).
pub fn read(root: &HostRoot, source: &VmSource) -> VmFacts {
    start(source).finish(root)
}

/// The facts in a helper's answer that listed the domains.
pub fn from_snapshot(root: &HostRoot, uri: &str, snapshot: &Snapshot) -> VmFacts {
    let Some(listed) = &snapshot.domains else {
        return VmFacts::Failed(format!("libvirt at {uri}: the domains were not listed"));
    };
    match domains(root, uri, listed) {
        Ok(domains) => VmFacts::Known {
            uri: uri.to_string(),
            domains,
        },
        Err(e) => VmFacts::Failed(format!("libvirt at {uri}: {e}")),
    }
}

/// Whether `uri` names a hypervisor on this machine (no host part), whose
/// pid files and sysfs are the ones under the host root.
fn local(uri: &str) -> bool {
    uri.split_once("://")
        .is_some_and(|(_, rest)| rest.starts_with('/'))
}

fn domains(root: &HostRoot, uri: &str, listed: &[DomainListing]) -> Result<Vec<Domain>, String> {
    let local = local(uri);
    let mut out = Vec::with_capacity(listed.len());
    for l in listed {
        let parse = |xml: &Option<String>| {
            xml.as_deref()
                .map(|x| parse_domain_xml(&l.name, x))
                .transpose()
                .map_err(|e| e.to_string())
        };
        let mut live = parse(&l.live_xml)?;
        let mut config = parse(&l.config_xml)?;
        if local {
            for def in [&mut live, &mut config].into_iter().flatten() {
                for dev in &mut def.devices {
                    if let Some(uuid) = &dev.mdev {
                        dev.address = mdev_parent(root, uuid);
                    }
                }
            }
        }
        out.push(Domain {
            qemu_pid: if l.active && local {
                qemu_pid(root, &l.name)
            } else {
                None
            },
            name: l.name.clone(),
            uuid: l.uuid.clone(),
            id: l.id,
            active: l.active,
            state: DomainState::from_libvirt(l.state),
            persistent: l.persistent,
            autostart: l.autostart,
            live,
            config,
        });
    }
    Ok(out)
}

/// The PCI function an mdev was created on: `/sys/bus/mdev/devices/UUID`
/// links into its parent's directory. `None` when the mdev does not exist.
pub fn mdev_parent(root: &HostRoot, uuid: &str) -> Option<PciAddress> {
    if !crate::model::domain::valid_uuid(uuid) {
        return None;
    }
    let real = fs::canonicalize(root.path(format!("/sys/bus/mdev/devices/{uuid}"))).ok()?;
    real.parent()
        .and_then(|p| p.file_name())
        .and_then(|n| PciAddress::from_sysfs_name(&n.to_string_lossy()))
}

/// Every mdev on the host: the PCI function it was created on, its UUID and
/// its type (the name its `mdev_type` link points at).
pub fn mdevs(root: &HostRoot) -> Vec<(PciAddress, String, String)> {
    let Ok(dir) = fs::read_dir(root.path("/sys/bus/mdev/devices")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let uuid = entry.file_name().to_string_lossy().into_owned();
            let parent = mdev_parent(root, &uuid)?;
            let mdev_type = fs::read_link(entry.path().join("mdev_type"))
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "type unknown".to_string());
            Some((parent, uuid, mdev_type))
        })
        .collect()
}

/// A domain name that is safe as one path component.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// The QEMU process of running domain `name`: the pid in libvirt's
/// `/run/libvirt/qemu/NAME.pid`, kept only when that process's command line
/// names exactly this guest (`guest_name`), so a stale file never points at
/// an unrelated process, nor at another domain's QEMU (a stale `a.pid`
/// holding the PID of domain `a,b`'s QEMU).
pub fn qemu_pid(root: &HostRoot, name: &str) -> Option<u32> {
    if !plain_name(name) {
        return None;
    }
    let text = fs::read_to_string(root.path(format!("/run/libvirt/qemu/{name}.pid"))).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let process =
        procfs::process::Process::new_with_root(root.path(format!("/proc/{pid}"))).ok()?;
    (guest_name(&process.cmdline().ok()?).as_deref() == Some(name)).then_some(pid)
}

/// The guest name a QEMU command line gives: the `guest=` option of the
/// value of its (last) `-name`, read as QEMU reads an option list (split at
/// single commas; `,,` is a literal comma), which is how libvirt escapes a
/// domain's name there (domain `a,b` runs with `-name guest=a,,b,...`). The
/// value's first option without a key is the guest too (QEMU's implied key).
pub fn guest_name(cmdline: &[String]) -> Option<String> {
    let value = cmdline
        .windows(2)
        .filter(|w| w[0] == "-name" || w[0] == "--name")
        .map(|w| &w[1])
        .next_back()?;
    let options = option_list(value);
    if let Some(first) = options.first().filter(|o| !o.contains('=')) {
        return Some(first.clone());
    }
    options
        .into_iter()
        .find_map(|o| o.strip_prefix("guest=").map(str::to_string))
}

/// A QEMU option list (`key=value,key=value`) split into its options, each
/// `,,` standing for one comma.
fn option_list(text: &str) -> Vec<String> {
    let mut options = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let current = options.last_mut().expect("never empty");
        match c {
            ',' if chars.peek() == Some(&',') => {
                chars.next();
                current.push(',');
            }
            ',' => options.push(String::new()),
            c => current.push(c),
        }
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_uris_have_no_host() {
        assert!(local("qemu:///system"));
        assert!(local("test:///abs/vms.xml"));
        assert!(!local("qemu+ssh://host/system"));
        assert!(!local("garbage"));
    }

    #[test]
    fn names_that_are_not_one_path_component_are_never_read() {
        for bad in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert!(!plain_name(bad), "{bad:?}");
        }
        assert!(plain_name("instance-0000002a"));
    }

    /// Writes `text` at host path `path` under `root`, making its directories.
    fn put(root: &HostRoot, path: &str, text: &[u8]) {
        let path = root.path(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn qemu_pid_needs_the_guest_named_on_its_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        let w = |p: &str, t: &[u8]| put(&root, p, t);
        w("/run/libvirt/qemu/vm1.pid", b"4242\n");
        assert_eq!(qemu_pid(&root, "vm1"), None, "no such process");
        w(
            "/proc/4242/cmdline",
            b"/usr/bin/qemu\0-name\0guest=other,debug-threads=on\0",
        );
        assert_eq!(qemu_pid(&root, "vm1"), None, "another guest's QEMU");
        w(
            "/proc/4242/cmdline",
            b"/usr/bin/qemu\0-name\0guest=vm1,debug-threads=on\0",
        );
        assert_eq!(qemu_pid(&root, "vm1"), Some(4242));
        w("/run/libvirt/qemu/vm2.pid", b"not a pid");
        assert_eq!(qemu_pid(&root, "vm2"), None);
    }

    /// #31: libvirt escapes a comma in a domain's name on QEMU's command
    /// line (`-name guest=a,,b`, its qemuxmlconfdata/name-escape test: domain
    /// `foo=1,bar=2` runs with `-name guest=foo=1,,bar=2,debug-threads=on`):
    /// the domain finds its QEMU, and a stale pid file of domain `a` holding
    /// that QEMU's PID is not taken for `a`'s.
    #[test]
    fn domain_names_match_libvirts_escaping_on_the_qemu_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        let w = |p: &str, t: &[u8]| put(&root, p, t);
        w(
            "/proc/4242/cmdline",
            b"/usr/bin/qemu-system-x86_64\0-name\0guest=a,,b,debug-threads=on\0-S\0",
        );
        w("/run/libvirt/qemu/a,b.pid", b"4242\n");
        w("/run/libvirt/qemu/a.pid", b"4242\n");
        assert_eq!(qemu_pid(&root, "a,b"), Some(4242));
        assert_eq!(qemu_pid(&root, "a"), None, "a stale a.pid is not a's QEMU");
        w(
            "/proc/4343/cmdline",
            b"qemu\0-name\0guest=foo=1,,bar=2,debug-threads=on\0",
        );
        w("/run/libvirt/qemu/foo=1,bar=2.pid", b"4343\n");
        w("/run/libvirt/qemu/foo=1.pid", b"4343\n");
        assert_eq!(qemu_pid(&root, "foo=1,bar=2"), Some(4343));
        assert_eq!(qemu_pid(&root, "foo=1"), None);

        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            guest_name(&args(&["qemu", "-name", "guest=x,,,,y,,"])).as_deref(),
            Some("x,,y,")
        );
        assert_eq!(
            guest_name(&args(&["qemu", "-name", "plain,debug-threads=on"])).as_deref(),
            Some("plain")
        );
        assert_eq!(
            guest_name(&args(&["qemu", "-uuid", "guest=x"])),
            None,
            "only -name's value"
        );
        assert_eq!(guest_name(&args(&["qemu", "-name", "process=p"])), None);
        assert_eq!(guest_name(&args(&["qemu", "-name"])), None);
    }
}
