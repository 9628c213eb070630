//! What the host uses a device for: the facts behind safety refusals.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::address::PciAddress;

/// One way the running host depends on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceUse {
    /// Backs the root filesystem (never released: see `gate::refusal`).
    RootFilesystem {
        block: String,
    },
    /// Backs a mounted filesystem.
    Mount {
        mountpoint: String,
        block: String,
    },
    Swap {
        block: String,
    },
    /// A network interface on the device carries addresses (or routes).
    Addresses {
        interface: String,
    },
    DefaultRoute {
        interface: String,
    },
    /// The firmware's boot display, or a framebuffer console on it.
    Console {
        what: String,
    },
    /// The network transport of a root filesystem on NFS, iSCSI or NBD: the
    /// interface the route to the server leaves by (never released).
    NetworkRoot {
        fstype: String,
        server: String,
        interface: String,
    },
    /// An interface enslaved to a bridge, bond, team, Open vSwitch or
    /// macvlan master: traffic of other interfaces flows through it.
    Enslaved {
        interface: String,
        master: String,
    },
    /// The device's interface lives in another network namespace (a
    /// container's): vfioctl cannot see what it carries there.
    OtherNamespace {
        interface: String,
    },
    /// A process holds the device's VFIO group or driver node (a VM, a CUDA job,
    /// nvidia-persistenced). Releasing would block or break it (never forced).
    Holder {
        pid: u32,
        command: String,
        path: String,
    },
    /// A mediated device (a vGPU) created on the device: its driver's
    /// unbind destroys it, under whatever VM has it (never forced; removed
    /// by hand first). `of` names the VF it was created on, for a PF.
    Mdev {
        uuid: String,
        mdev_type: String,
        of: Option<String>,
    },
}

impl fmt::Display for DeviceUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceUse::RootFilesystem { block } => write!(f, "backs the root filesystem ({block})"),
            DeviceUse::Mount { mountpoint, block } => write!(f, "backs {mountpoint} ({block})"),
            DeviceUse::Swap { block } => write!(f, "backs swap on {block}"),
            DeviceUse::Addresses { interface } => write!(f, "carries addresses on {interface}"),
            DeviceUse::DefaultRoute { interface } => {
                write!(f, "carries the default route ({interface})")
            }
            DeviceUse::Console { what } => write!(f, "is the {what}"),
            DeviceUse::NetworkRoot {
                fstype,
                server,
                interface,
            } => write!(
                f,
                "carries the {fstype} root filesystem (server {server} through {interface})"
            ),
            DeviceUse::Enslaved { interface, master } => {
                write!(f, "has {interface} enslaved to {master}")
            }
            DeviceUse::OtherNamespace { interface } => write!(
                f,
                "has {interface} in another network namespace (what it carries there is not visible)"
            ),
            DeviceUse::Holder { pid, command, path } => {
                write!(f, "is held open by PID {pid} ({command}) through {path}")
            }
            DeviceUse::Mdev {
                uuid,
                mdev_type,
                of,
            } => write!(
                f,
                "has mediated device {uuid} ({mdev_type}) created on {}, which its driver's unbind destroys under any VM using it; once no VM uses it, remove it first (echo 1 > /sys/bus/mdev/devices/{uuid}/remove, or mdevctl stop)",
                of.as_deref().map_or_else(|| "it".to_string(), |vf| format!("its VF {vf}"))
            ),
        }
    }
}

impl DeviceUse {
    /// The host cannot keep running without it: the root filesystem, swap,
    /// or a network root's transport. Never released, not even by `--force`,
    /// and never claimed at boot.
    pub fn host_critical(&self) -> bool {
        matches!(
            self,
            DeviceUse::RootFilesystem { .. }
                | DeviceUse::Swap { .. }
                | DeviceUse::NetworkRoot { .. }
        )
    }

    /// Releasing the device breaks or blocks what uses it now: an open
    /// handle (a VM, a CUDA job), or a mediated device the unbind destroys.
    /// Never released, not even by `--force`.
    pub fn breaks_a_user(&self) -> bool {
        matches!(self, DeviceUse::Holder { .. } | DeviceUse::Mdev { .. })
    }
}

/// Uses per device; devices the host does not depend on are absent.
pub type UsageMap = BTreeMap<PciAddress, Vec<DeviceUse>>;

/// How the host uses the devices a plan would release. The planner asks once,
/// for exactly those devices, so costly facts (open handles: a walk of every
/// process) are gathered only when something would be released.
pub trait UsageFacts {
    fn usage_of(&self, releasing: &BTreeSet<PciAddress>) -> UsageMap;
}

/// A map already complete (tests, or facts gathered up front).
impl UsageFacts for UsageMap {
    fn usage_of(&self, _releasing: &BTreeSet<PciAddress>) -> UsageMap {
        self.clone()
    }
}
