//! Reading an SR-IOV PF and its VFs from the host: finding the PF a
//! selector names, and reading it with its VFs for the plan and for
//! binding the VFs.

use super::SriovError;
use crate::host::sysfs::{read_devices, read_selected, InventoryError, Names};
use crate::host::HostRoot;
use crate::model::{Inventory, PciAddress, Selector, SriovRole};

/// The one function `selector` matches (the plan refuses it if it is not a
/// PF); more than one is refused.
pub(super) fn find_pf(root: &HostRoot, selector: &Selector) -> anyhow::Result<PciAddress> {
    let selectors = std::slice::from_ref(selector);
    let inv = read_selected(root, selectors, Names::Skip)?;
    let matched = inv.select(selectors)?;
    match matched.as_slice() {
        [one] => Ok(one.address),
        many => Err(SriovError::Ambiguous {
            selector: selector.text.clone(),
            count: many.len(),
            first: many[0].address,
        }
        .into()),
    }
}

/// The PF and its VFs with their IOMMU groups and neighbours (a VF rebound
/// needs its group), not the whole host.
pub fn read_pf(root: &HostRoot, pf: PciAddress) -> anyhow::Result<Inventory> {
    let inv = read_devices(root, &[pf], Names::Skip)?;
    let vfs = match inv.device(&pf).map(|d| &d.sriov) {
        Some(SriovRole::Pf { vfs, .. }) => vfs.clone(),
        _ => Vec::new(),
    };
    Ok(read_with_vfs(root, pf, &vfs)?)
}

/// `pf` and the `vfs` named, with their IOMMU groups and neighbours.
pub(super) fn read_with_vfs(
    root: &HostRoot,
    pf: PciAddress,
    vfs: &[PciAddress],
) -> Result<Inventory, InventoryError> {
    let mut seeds = vec![pf];
    seeds.extend_from_slice(vfs);
    read_devices(root, &seeds, Names::Skip)
}
