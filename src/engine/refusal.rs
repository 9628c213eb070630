//! Why the planner will not change a device: one kind per reason, each kind
//! saying whether `--force` may override it. Every refusal the engine raises
//! is one of these, so the rule "may force release this?" lives here only.

use std::fmt;

use crate::model::group::Blocker;
use crate::model::usage::DeviceUse;
use crate::model::PciAddress;

/// One refusal: the device it concerns and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub device: PciAddress,
    pub kind: RefusalKind,
}

/// The reasons vfioctl refuses to change a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalKind {
    /// Bridges and ports are never rebound (they do not block VFIO).
    Bridge,
    /// The device's IOMMU group would keep members on host drivers.
    /// `with_group_helps`: every blocker is a PCI function `--with-group` would move.
    GroupNotViable {
        group: u32,
        blockers: Vec<Blocker>,
        with_group_helps: bool,
    },
    /// The running host uses the device.
    InUse(DeviceUse),
}

impl RefusalKind {
    /// Whether `--force` may override this refusal. A root filesystem or an
    /// open handle (a VM, a CUDA job) is never released: doing so breaks
    /// the host or blocks in the kernel.
    pub fn force_overrides(&self) -> bool {
        match self {
            RefusalKind::Bridge | RefusalKind::GroupNotViable { .. } => false,
            RefusalKind::InUse(u) => !matches!(
                u,
                DeviceUse::RootFilesystem { .. } | DeviceUse::Holder { .. }
            ),
        }
    }
}

impl Refusal {
    pub fn force_overrides(&self) -> bool {
        self.kind.force_overrides()
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let device = self.device;
        match &self.kind {
            RefusalKind::Bridge => write!(
                f,
                "{device} is a bridge or port; vfioctl never changes their drivers (they do not block VFIO)"
            ),
            RefusalKind::GroupNotViable {
                group,
                blockers,
                with_group_helps,
            } => {
                let list: Vec<String> = blockers
                    .iter()
                    .map(|b| format!("{} on {}", b.device, b.driver))
                    .collect();
                let list = list.join(", ");
                if *with_group_helps {
                    write!(f, "IOMMU group {group} would not be viable: {list} would stay on a host driver; add --with-group to bind every endpoint of the group")
                } else {
                    write!(
                        f,
                        "IOMMU group {group} would not be viable: {list} cannot be moved by vfioctl"
                    )
                }
            }
            RefusalKind::InUse(u) if self.force_overrides() => {
                write!(f, "{device} {u}; use --force to release it anyway")
            }
            RefusalKind::InUse(u) => write!(f, "{device} {u}; refused even with --force"),
        }
    }
}

/// The refusals of one plan, printed joined by `; `.
pub fn joined(refusals: &[Refusal]) -> String {
    refusals
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
