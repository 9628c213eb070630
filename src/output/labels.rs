//! Short labels shared by the table commands.

use crate::model::{Inventory, PciDevice};

/// The line printed once when the host has no active IOMMU.
pub fn iommu_off_note() -> String {
    format!(
        "IOMMU: off (no IOMMU groups): VFIO passthrough needs it; {}",
        crate::model::IommuState::REMEDY
    )
}

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
