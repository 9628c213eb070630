//! One file per verb. Each reads what it needs through `host`, decides with
//! `model`, and renders with `output`.

pub mod bind;
pub mod change;
pub mod check;
pub mod host_config;
pub mod list;
pub mod nodedev;
pub mod nova;
pub mod persist;
pub mod restore;
pub mod show;
pub mod udev_hook;
pub mod unbind;

use std::time::Duration;

use crate::host::libvirt::{self, Target};
use crate::model::nodedev::NodeDevice;
use crate::model::{Inventory, PciDevice, Selector, SelectorError};

/// How to reach libvirt, from the global options; only the commands that
/// need libvirt use it.
#[derive(Debug, Clone)]
pub struct LibvirtOptions {
    pub target: Target,
    pub timeout: Duration,
}

/// libvirt's PCI node devices at `uri`, parsed; malformed XML fails naming the device.
pub fn node_devices(uri: &str, timeout: Duration) -> anyhow::Result<Vec<NodeDevice>> {
    libvirt::pci_node_devices(uri, timeout)?
        .iter()
        .map(|listed| NodeDevice::parse(&listed.name, &listed.xml).map_err(Into::into))
        .collect()
}

/// Parses every selector, failing on the first malformed one.
pub fn parse_selectors(texts: &[String]) -> Result<Vec<Selector>, SelectorError> {
    texts.iter().map(|t| t.parse()).collect()
}

/// The line printed once when the host has no active IOMMU.
pub const IOMMU_OFF_NOTE: &str = "IOMMU: off (no IOMMU groups): VFIO passthrough needs it; enable VT-d/AMD-Vi in firmware and add intel_iommu=on iommu=pt (Intel) or iommu=pt (AMD) to the kernel command line";

/// A short SR-IOV column value: `PF 2/16`, `VF`, or `-`.
pub fn sriov_brief(dev: &PciDevice) -> String {
    match &dev.sriov {
        crate::model::SriovRole::Pf {
            total_vfs, num_vfs, ..
        } => format!("PF {num_vfs}/{total_vfs}"),
        crate::model::SriovRole::Vf { .. } => "VF".to_string(),
        crate::model::SriovRole::None => "-".to_string(),
    }
}

/// `vendor device` names from pci.ids, or `-`.
pub fn device_name(inv: &Inventory, dev: &PciDevice) -> String {
    match (
        inv.names.vendor(dev.ids.vendor),
        inv.names.device(dev.ids.vendor, dev.ids.device),
    ) {
        (Some(v), Some(d)) => format!("{v} {d}"),
        (Some(v), None) => format!("{v} device {}", dev.ids.device),
        (None, _) => "-".to_string(),
    }
}

/// The class name from pci.ids, or the class code in brackets.
pub fn class_label(inv: &Inventory, dev: &PciDevice) -> String {
    inv.names
        .class(dev.class)
        .map_or_else(|| format!("[{}]", dev.class), str::to_string)
}
