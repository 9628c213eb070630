//! Every path that can change a binding now or at a later boot, and how the
//! gate judges it: the one place where a path's difference from the others
//! is written, with its reason. The gate reads it (`Path::asks_libvirt`,
//! `Path::has_force`, `Path::judges_writes_to_held`), and `build.rs` renders
//! it as the man page's table of paths under SAFETY RULES, so this file
//! imports nothing.

/// A path through which vfioctl changes bindings (now, or at a later boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    Bind,
    Restore,
    Unbind,
    Sriov,
    Recover,
    Reset,
    PersistAdd,
    PersistRemove,
    PersistApply,
    UdevHook,
    HostConfig,
}

/// How one path is judged.
#[derive(Debug)]
pub struct PathPolicy {
    pub path: Path,
    /// The command line that takes this path.
    pub command: &'static str,
    /// libvirt is asked before a device is given away from VFIO; a
    /// libvirt that does not answer refuses it (unless `--no-libvirt`).
    pub asks_libvirt: bool,
    /// `--force` may override the rules it overrides elsewhere.
    pub force: bool,
    /// What the gate judges on this path.
    pub judged: &'static str,
    /// Where this path differs from the others, and why (empty: nowhere).
    pub differs: &'static str,
}

/// Every path, in the man page's order.
pub const PATHS: &[PathPolicy] = &[
    PathPolicy {
        path: Path::Bind,
        command: "bind",
        asks_libvirt: true,
        force: true,
        judged: "each device's driver change: bridges, the IOMMU group (known in full and viable afterwards), the NVLink fabric, a PF with VFs, host uses and open handles of every device released; libvirt domains when a device goes to a non-VFIO driver (--driver)",
        differs: "a bind to a VFIO driver does not ask libvirt: a running domain's QEMU holds the device's VFIO group (the open-handle rule refuses it) and a defined domain wants the device on VFIO",
    },
    PathPolicy {
        path: Path::Restore,
        command: "restore",
        asks_libvirt: true,
        force: true,
        judged: "as bind, for a device given back to the host: host uses and open handles, a PF with VFs, running and defined libvirt domains (libvirt silent: refused)",
        differs: "",
    },
    PathPolicy {
        path: Path::Unbind,
        command: "unbind",
        asks_libvirt: true,
        force: true,
        judged: "as restore",
        differs: "",
    },
    PathPolicy {
        path: Path::Sriov,
        command: "sriov",
        asks_libvirt: true,
        force: true,
        judged: "the VF count change (host uses of the PF), every VF it destroys as released (open handles, host uses, running and defined domains), then the new VFs' bind as bind",
        differs: "",
    },
    PathPolicy {
        path: Path::Recover,
        command: "recover",
        asks_libvirt: true,
        force: true,
        judged: "each device by where recover moves it: back to a host driver as restore (so recover of a bind is judged as restore), back to VFIO as bind (recover of a restore), a VF count as sriov; --force only where that command takes it",
        differs: "a process holding a device refuses even a driver_override write (the unbind the interrupted change left may still be pending, and the write would block behind it); a driver_override that would hand a device the host uses to a claiming driver at its next probe is never written back: recover leaves such a device on its host driver without it, and says so; recover of an interrupted reset makes no reset and writes only the reset_method recorded before it back (when --method changed it), without a verdict: the list only decides how a later reset is made, and the host had it before; the devices it reset stay unverified (check CRITICAL) until a later reset verifies them",
    },
    PathPolicy {
        path: Path::Reset,
        command: "reset",
        asks_libvirt: true,
        force: false,
        judged: "the device and every function the reset may also reset (the method --method names, else the worst one reset_method lists; a bus reset: every function below the bridge above the device): each must be on a VFIO driver or none, held by no process, used by no running domain and not used by the host; libvirt silent: refused",
        differs: "never forced: a reset under a user corrupts what it is doing; a stopped domain that names the device does not refuse it (a reset changes no binding)",
    },
    PathPolicy {
        path: Path::PersistAdd,
        command: "persist add, bind --persist",
        asks_libvirt: false,
        force: true,
        judged: "every device a declaration covers now, as claimed at every boot: host uses (not open handles: they do not survive a reboot), the NVLink fabric",
        differs: "libvirt is not asked: a declaration moves devices to VFIO, which no domain refuses",
    },
    PathPolicy {
        path: Path::PersistRemove,
        command: "persist remove",
        asks_libvirt: true,
        force: true,
        judged: "every device whose declaration goes, as given back to the host at the next boot: running and defined libvirt domains",
        differs: "",
    },
    PathPolicy {
        path: Path::PersistApply,
        command: "persist apply (the boot unit)",
        asks_libvirt: false,
        force: false,
        judged: "as bind and sriov, for each declaration",
        differs: "libvirt is never asked (at boot it may not be up yet, and a socket-activated daemon must not be started from here); no --force: it runs unattended",
    },
    PathPolicy {
        path: Path::UdevHook,
        command: "udev-hook",
        asks_libvirt: false,
        force: false,
        judged: "as persist apply, for the device udev added",
        differs: "libvirt is never asked (udev must not wait on or start it); no --force: it runs unattended",
    },
    PathPolicy {
        path: Path::HostConfig,
        command: "host-config --write",
        asks_libvirt: false,
        force: false,
        judged: "every device its boot files would take from its driver, as claimed at every boot (persist add's rules)",
        differs: "no --force: the files act at every boot, unattended",
    },
];

/// Every rollback and put-back after a failed change: a device the change
/// itself moved moments ago, under the same lock, goes back to the binding
/// it had, without being judged again (refusing it could strand the device
/// half-moved; the state it returns to is the one the host had).
pub const ROLLBACK: &str = "A rollback (a failed change putting back what it moved, newest first) writes only the bindings, VF count and autoprobe the device had before that change, under the same lock, without a new verdict: refusing it could strand a device half-moved, and it returns the host to where it was.";

impl Path {
    pub fn policy(self) -> &'static PathPolicy {
        PATHS
            .iter()
            .find(|p| p.path == self)
            .expect("every path has a policy row")
    }

    /// The command as a change record names it (`bind`, `persist apply`,
    /// `udev-hook`...).
    pub fn verb(self) -> &'static str {
        match self {
            Path::Bind => "bind",
            Path::Restore => "restore",
            Path::Unbind => "unbind",
            Path::Sriov => "sriov",
            Path::Recover => "recover",
            Path::Reset => "reset",
            Path::PersistAdd => "persist add",
            Path::PersistRemove => "persist remove",
            Path::PersistApply => "persist apply",
            Path::UdevHook => "udev-hook",
            Path::HostConfig => "host-config",
        }
    }

    /// The path asks libvirt before a device is given away from VFIO.
    pub fn asks_libvirt(self) -> bool {
        self.policy().asks_libvirt
    }

    /// `--force` exists on this path.
    pub fn has_force(self) -> bool {
        self.policy().force
    }

    /// A process holding a device refuses even a write of its
    /// driver_override (see `recover`'s row).
    pub fn judges_writes_to_held(self) -> bool {
        self == Path::Recover
    }

    /// A claiming driver_override on a device that stays on its host
    /// driver is dropped rather than written back (see `recover`'s row).
    pub fn drops_stale_overrides(self) -> bool {
        self == Path::Recover
    }
}
