//! Why the planner will not change a device: one kind per reason, each kind
//! saying whether `--force` may override it. Every refusal the engine raises
//! is one of these, so the rule "may force release this?" lives here only.

use std::fmt;

use crate::model::fabric::StaysOnHost;
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
    /// A member of the device's IOMMU group could not be read, so whether
    /// the group can be handed over is unknown (fail closed).
    GroupUnreadable { group: u32, missing: Vec<String> },
    /// The IOMMU is on but the device has no IOMMU group (fail closed).
    NoGroup,
    /// The running host uses the device.
    InUse(DeviceUse),
    /// An NVSwitch of a shared NVLink fabric: Fabric Manager keeps it.
    Fabric(StaysOnHost),
    /// An SR-IOV PF with VFs enabled would change driver: unbinding its
    /// driver destroys the VFs (igb, mlx5, vfio-pci disable SR-IOV in their
    /// remove) or leaves them behind ("driver left SR-IOV enabled after
    /// remove": nvme), and vfio-pci refuses to bind a PF with VFs enabled
    /// (`vfio_pci_core_register_device`: "Cannot bind to PF with SR-IOV
    /// enabled", EBUSY). Never forced: `sriov PF --numvfs 0` first.
    PfWithVfs { num_vfs: u32, vfs: Vec<PciAddress> },
    /// The host uses an SR-IOV PF whose VF count would change: the PF keeps
    /// its driver, but some drivers reset it then (ixgbe reinitialises the
    /// PF, dropping its link, when SR-IOV is enabled or disabled).
    InterruptsPf(DeviceUse),
}

impl RefusalKind {
    /// Whether `--force` may override this refusal. What the host cannot run
    /// without (root filesystem, swap, a network root's transport) and an
    /// open handle (a VM, a CUDA job) are never released: doing so breaks
    /// the host or blocks in the kernel. Group facts that cannot be read
    /// are never guessed.
    pub fn force_overrides(&self) -> bool {
        match self {
            RefusalKind::Bridge
            | RefusalKind::GroupNotViable { .. }
            | RefusalKind::GroupUnreadable { .. }
            | RefusalKind::NoGroup
            | RefusalKind::Fabric(_)
            | RefusalKind::PfWithVfs { .. } => false,
            RefusalKind::InUse(u) => !(u.host_critical() || matches!(u, DeviceUse::Holder { .. })),
            // The PF is not released: an interruption is what is at stake,
            // which the operator may accept for any use.
            RefusalKind::InterruptsPf(_) => true,
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
            RefusalKind::GroupUnreadable { group, missing } => write!(
                f,
                "IOMMU group {group} of {device} lists {} that cannot be read; refusing rather than guessing the group is viable (check the sysfs entries)",
                missing.join(", ")
            ),
            RefusalKind::NoGroup => write!(
                f,
                "{device} has no IOMMU group although the IOMMU is on (no /sys/bus/pci/devices/{device}/iommu_group); VFIO cannot isolate it"
            ),
            RefusalKind::InUse(u) if self.force_overrides() => {
                write!(f, "{device} {u}; use --force to release it anyway")
            }
            RefusalKind::InUse(u) => write!(f, "{device} {u}; refused even with --force"),
            RefusalKind::Fabric(stays) => write!(f, "{stays}"),
            RefusalKind::PfWithVfs { num_vfs, vfs } => {
                let listed: Vec<String> = vfs.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "{device} is an SR-IOV PF with {num_vfs} VF(s) enabled ({}): unbinding its driver destroys them or leaves them orphaned, and vfio-pci refuses a PF with VFs enabled (EBUSY); refused even with --force: remove them first (vfioctl sriov {device} --numvfs 0)",
                    if listed.is_empty() { "being created".to_string() } else { listed.join(", ") }
                )
            }
            // `SriovError::InterruptsPf` says why and how to proceed, once.
            RefusalKind::InterruptsPf(u) => write!(f, "{device} {u}"),
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
