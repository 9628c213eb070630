//! Short labels shared by the table commands.

use crate::model::{Inventory, PciDevice};

/// The line printed once when the host has no active IOMMU.
pub fn iommu_off_note() -> String {
    format!(
        "IOMMU: off (no IOMMU groups): VFIO passthrough needs it; {}",
        crate::model::IommuState::REMEDY
    )
}

/// A short SR-IOV column value: `PF 2/16`, `VF of 0000:3b:00.0`, or `-`.
pub fn sriov_brief(dev: &PciDevice) -> String {
    match &dev.sriov {
        crate::model::SriovRole::Pf {
            total_vfs, num_vfs, ..
        } => format!("PF {num_vfs}/{total_vfs}"),
        crate::model::SriovRole::Vf { physfn } => format!("VF of {physfn}"),
        crate::model::SriovRole::None => "-".to_string(),
    }
}

/// `devices` with each PF's VFs moved right after it (in `virtfnN` order)
/// when the PF is among them; everything else keeps its order.
pub fn vfs_under_their_pf<'a>(devices: &[&'a PciDevice]) -> Vec<&'a PciDevice> {
    use crate::model::SriovRole;
    use std::collections::{HashMap, HashSet};
    let by_address: HashMap<_, &'a PciDevice> = devices.iter().map(|d| (d.address, *d)).collect();
    let under_pf = |d: &PciDevice| matches!(d.sriov, SriovRole::Vf { physfn } if by_address.contains_key(&physfn));
    let mut out = Vec::with_capacity(devices.len());
    let mut placed = HashSet::new();
    for dev in devices.iter().filter(|d| !under_pf(d)) {
        out.push(*dev);
        placed.insert(dev.address);
        if let SriovRole::Pf { vfs, .. } = &dev.sriov {
            for vf in vfs.iter().filter_map(|a| by_address.get(a)) {
                if under_pf(vf) && placed.insert(vf.address) {
                    out.push(*vf);
                }
            }
        }
    }
    // A VF listed with its PF but missing from the PF's virtfn links (a
    // racing change) keeps its order at the end rather than vanishing.
    out.extend(devices.iter().filter(|d| !placed.contains(&d.address)));
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::device::tests::endpoint;
    use crate::model::SriovRole;

    #[test]
    fn vfs_follow_their_pf() {
        let mut pf0 = endpoint("3b:00.0", 0x020000);
        let mut pf1 = endpoint("3b:00.1", 0x020000);
        let vf = |addr: &str, pf: &str| {
            let mut d = endpoint(addr, 0x020000);
            d.sriov = SriovRole::Vf {
                physfn: pf.parse().unwrap(),
            };
            d
        };
        let (a, b, c) = (
            vf("3b:02.0", "3b:00.0"),
            vf("3b:02.1", "3b:00.0"),
            vf("3b:0a.0", "3b:00.1"),
        );
        pf0.sriov = SriovRole::Pf {
            total_vfs: 8,
            num_vfs: 2,
            vfs: vec![b.address, a.address],
        };
        pf1.sriov = SriovRole::Pf {
            total_vfs: 8,
            num_vfs: 1,
            vfs: vec![c.address],
        };
        let orphan = vf("5e:02.0", "5e:00.0");
        let listed = [&pf0, &pf1, &a, &b, &c, &orphan];
        let order: Vec<String> = vfs_under_their_pf(&listed)
            .iter()
            .map(|d| d.address.to_string())
            .collect();
        assert_eq!(
            order,
            [
                "0000:3b:00.0",
                "0000:3b:02.1",
                "0000:3b:02.0",
                "0000:3b:00.1",
                "0000:3b:0a.0",
                "0000:5e:02.0"
            ]
        );
        assert_eq!(sriov_brief(&a), "VF of 0000:3b:00.0");
    }
}
