//! Why the gate will not let a change through: one kind per reason, each kind
//! saying whether `--force` may override it. Every refusal the engine raises
//! is one of these, so the rule "may force release this?" lives here only.

use std::fmt;

use crate::model::domain::{HostDeviceKind, NovaInstance};
use crate::model::fabric::StaysOnHost;
use crate::model::group::Blocker;
use crate::model::usage::DeviceUse;
use crate::model::{DriverName, PciAddress};

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
    /// A libvirt domain uses the device now, or its config names it.
    Vm(Box<VmUse>),
    /// libvirt is there but did not answer: whether a VM uses the device is
    /// unknown (`--no-libvirt` proceeds without asking).
    VmUnknown { error: String },
    /// A reset of the device would reset `function`, which a host driver
    /// has (the device itself, or a function a bus reset also resets).
    ResetOnHostDriver {
        function: PciAddress,
        driver: DriverName,
    },
    /// A claiming driver_override would be left on a device the host uses
    /// while it is on another driver: its next probe (a rebind, a hot-plug,
    /// `drivers_probe`) hands it to `driver` and takes it from the host.
    NextProbe { driver: DriverName, used: DeviceUse },
}

/// How a libvirt domain stands on a device a change would give away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmUse {
    pub domain: String,
    pub nova: Option<NovaInstance>,
    /// The domain is active and its live XML names the function: it has it now.
    pub running: bool,
    /// libvirt's state label (`running`, `paused`, `shut off`...).
    pub state: &'static str,
    pub persistent: bool,
    pub autostart: bool,
    /// How the XML names the function.
    pub kind: HostDeviceKind,
    /// `managed='yes'` (`None` for an mdev).
    pub managed: Option<bool>,
    /// The function the domain names, when it is not the device itself.
    pub via: Via,
}

/// The function through which a domain depends on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The device itself.
    Itself,
    /// Another member of the device's IOMMU group.
    GroupMember { member: PciAddress, group: u32 },
    /// A VF of the device (a PF): releasing the PF destroys its VFs.
    Vf(PciAddress),
    /// An mdev created on the device (its parent).
    Mdev(String),
}

impl fmt::Display for VmUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nova = self
            .nova
            .as_ref()
            .map(|n| format!(", {n}"))
            .unwrap_or_default();
        let via = match &self.via {
            Via::Itself => String::new(),
            Via::GroupMember { member, group } => {
                format!(" through {member}, a member of its IOMMU group {group}")
            }
            Via::Vf(vf) => format!(" through its VF {vf}"),
            Via::Mdev(uuid) => format!(" through mdev {uuid} created on it"),
        };
        let managed = match self.managed {
            Some(true) => " managed='yes'",
            Some(false) => " managed='no'",
            None => "",
        };
        let how = format!("({}{managed})", self.kind.label());
        if self.running {
            return write!(
                f,
                "is used by domain {} ({}{nova}){via} {how}",
                self.domain, self.state
            );
        }
        let next = match (&self.via, self.managed) {
            (Via::Vf(_), _) => "fails (the VF is destroyed with the change)",
            (Via::Mdev(_), _) => "fails (the mdev is destroyed with the change)",
            (_, Some(true)) => {
                "takes the device back from the host (libvirt detaches it to vfio-pci)"
            }
            _ => "fails (libvirt expects it on a VFIO driver and does not detach it)",
        };
        let autostart = if self.autostart {
            "it autostarts with libvirt (at boot)"
        } else {
            "it does not autostart"
        };
        write!(
            f,
            "is named by the config of domain {} ({}{nova}){via} {how}: its next start {next}; {autostart}",
            self.domain, self.state
        )
    }
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
            | RefusalKind::PfWithVfs { .. }
            | RefusalKind::VmUnknown { .. }
            | RefusalKind::ResetOnHostDriver { .. }
            | RefusalKind::NextProbe { .. } => false,
            RefusalKind::InUse(u) => !(u.host_critical() || u.breaks_a_user()),
            // The PF is not released: an interruption is what is at stake,
            // which the operator may accept for any use.
            RefusalKind::InterruptsPf(_) => true,
            // A running VM has the device; a defined one only would take it
            // (or fail) at its next start.
            RefusalKind::Vm(u) => !u.running,
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
            RefusalKind::Vm(u) if u.running => write!(
                f,
                "{device} {u}; refused even with --force (shut the domain down or detach the device from it first)"
            ),
            RefusalKind::Vm(u) => write!(f, "{device} {u}; use --force to release it anyway"),
            RefusalKind::VmUnknown { error } => write!(
                f,
                "{device}: whether a VM uses it is unknown, as libvirt did not answer ({error}); refused even with --force (--no-libvirt changes it without asking libvirt)"
            ),
            RefusalKind::ResetOnHostDriver { function, driver } if *function == device => write!(
                f,
                "{device} is on the host driver {driver}, which does not expect a reset under it; reset only resets devices on a VFIO driver or none (vfioctl bind {device} first)"
            ),
            RefusalKind::ResetOnHostDriver { function, driver } => write!(
                f,
                "resetting {device} also resets {function} (below the same bridge), which is on the host driver {driver}; refused"
            ),
            RefusalKind::NextProbe { driver, used } => write!(
                f,
                "{device} {used}, and a driver_override of {driver} would hand it to {driver} at its next probe (a rebind, a hot-plug, drivers_probe); refused even with --force"
            ),
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
