//! Reading an SR-IOV PF and its VFs from the host, for the plan and for
//! binding the VFs.

use crate::host::sysfs::{read_devices, Names};
use crate::host::HostRoot;
use crate::model::{Inventory, PciAddress, SriovRole};

/// The PF and its VFs with their IOMMU groups and neighbours (a VF rebound
/// needs its group), not the whole host.
pub fn read_pf(root: &HostRoot, pf: PciAddress) -> anyhow::Result<Inventory> {
    let inv = read_devices(root, &[pf], Names::Skip)?;
    let mut seeds = vec![pf];
    if let Some(SriovRole::Pf { vfs, .. }) = inv.device(&pf).map(|d| &d.sriov) {
        seeds.extend(vfs);
    }
    Ok(read_devices(root, &seeds, Names::Skip)?)
}
