//! A snapshot of the host's PCI functions and IOMMU groups.

use std::collections::BTreeMap;

use serde::Serialize;

use super::address::PciAddress;
use super::device::{PciDevice, SriovRole};
use super::driver::DriverName;
use super::group::{IommuGroup, Viability};
use super::ids::PciNames;
use super::selector::Selector;

/// The host's IOMMU as the kernel reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IommuState {
    /// Hardware units under /sys/class/iommu (dmar0, ivhd0, ...).
    pub units: Vec<String>,
    /// Number of groups under /sys/kernel/iommu_groups.
    pub groups: usize,
}

impl IommuState {
    /// What to do when the IOMMU is off; every message about it says this.
    pub const REMEDY: &'static str = "enable VT-d/AMD-Vi in firmware and add intel_iommu=on iommu=pt (Intel) or iommu=pt (AMD) to the kernel command line";

    pub fn enabled(&self) -> bool {
        !self.units.is_empty() || self.groups > 0
    }
}

/// Why a function travels with another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompanionReason {
    /// Another function of the same display adapter's slot (audio, USB, USB-C).
    SameSlot,
    /// The kernel linked the two (`consumer:pci:*` / `supplier:pci:*`).
    DeviceLink,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Companion {
    pub address: PciAddress,
    pub reason: CompanionReason,
}

#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Sorted by address.
    pub devices: Vec<PciDevice>,
    pub groups: BTreeMap<u32, IommuGroup>,
    pub iommu: IommuState,
    /// The running kernel's release, from the host root.
    pub kernel_release: Option<String>,
    /// PCI drivers registered with the kernel (/sys/bus/pci/drivers).
    pub drivers: Vec<DriverName>,
    pub names: PciNames,
}

/// A selector that matched nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector '{0}' matched no PCI function (see `vfioctl list` for what is present)")]
pub struct NoMatch(pub String);

/// The items matched by any of `selectors` (as `matches` decides), in
/// order; every selector must match at least one, else `NoMatch` names it.
/// No selectors selects everything. The one copy of that rule (`list`,
/// `show`, the change commands, `nodedev`, `nova`).
pub fn select_matching<'i, T>(
    items: &'i [T],
    selectors: &[Selector],
    matches: impl Fn(&T, &Selector) -> bool,
) -> Result<Vec<&'i T>, NoMatch> {
    if let Some(unmatched) = selectors
        .iter()
        .find(|s| !items.iter().any(|item| matches(item, s)))
    {
        return Err(NoMatch(unmatched.text.clone()));
    }
    Ok(items
        .iter()
        .filter(|item| selectors.is_empty() || selectors.iter().any(|s| matches(item, s)))
        .collect())
}

impl Inventory {
    pub fn device(&self, addr: &PciAddress) -> Option<&PciDevice> {
        self.devices
            .binary_search_by(|d| d.address.cmp(addr))
            .ok()
            .map(|i| &self.devices[i])
    }

    /// Functions matched by any of `selectors`, in address order; every
    /// selector must match at least one. No selectors selects everything.
    pub fn select(&self, selectors: &[Selector]) -> Result<Vec<&PciDevice>, NoMatch> {
        select_matching(&self.devices, selectors, |d, s| s.matches(d))
    }

    pub fn group_of(&self, dev: &PciDevice) -> Option<&IommuGroup> {
        self.groups.get(&dev.iommu_group?)
    }

    /// PCI members of a group that are present in the inventory.
    pub fn members<'a>(&'a self, group: &'a IommuGroup) -> impl Iterator<Item = &'a PciDevice> {
        group.pci_members.iter().filter_map(|a| self.device(a))
    }

    /// The group's viability with every member on its current driver.
    pub fn viability(&self, group: &IommuGroup) -> Viability {
        Viability::judge(
            self.members(group).map(|d| (d, d.driver.as_ref())),
            &group.other_members,
        )
    }

    /// Functions that must move together with `dev`: those the kernel linked to
    /// it, and for display adapters the other functions in the same slot
    /// (GPU audio, USB, USB-C controllers). Bridges never count. SR-IOV
    /// functions never travel together: a VF has no companions and is never
    /// one (an A100's VFs sit in its PF's slot, from function .4 on), so a
    /// VF's plan never holds its PF or its sibling VFs.
    pub fn companions(&self, dev: &PciDevice) -> Vec<Companion> {
        let mut out: Vec<Companion> = Vec::new();
        if matches!(dev.sriov, SriovRole::Vf { .. }) {
            return out;
        }
        let mut push = |address: PciAddress, reason| {
            let is_new = address != dev.address && !out.iter().any(|c| c.address == address);
            let joins = self
                .device(&address)
                .is_some_and(|d| !d.is_bridge() && !matches!(d.sriov, SriovRole::Vf { .. }));
            if is_new && joins {
                out.push(Companion { address, reason });
            }
        };
        for addr in dev.consumers.iter().chain(&dev.suppliers) {
            push(*addr, CompanionReason::DeviceLink);
        }
        if dev.class.is_display() {
            for other in self
                .devices
                .iter()
                .filter(|o| o.address.same_slot(&dev.address))
            {
                push(other.address, CompanionReason::SameSlot);
            }
        }
        out.sort_by_key(|c| c.address);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::device::tests::endpoint;

    fn inventory() -> Inventory {
        let mut gpu = endpoint("01:00.0", 0x030000);
        gpu.consumers = vec!["01:00.1".parse().unwrap()];
        gpu.iommu_group = Some(5);
        gpu.driver = Some(DriverName::vfio_pci());
        let mut audio = endpoint("01:00.1", 0x040300);
        audio.suppliers = vec!["01:00.0".parse().unwrap()];
        audio.iommu_group = Some(5);
        audio.driver = Some(DriverName::new("snd_hda_intel"));
        let mut usb = endpoint("01:00.2", 0x0c0330);
        usb.iommu_group = Some(5);
        let mut nic = endpoint("02:00.0", 0x020000);
        nic.iommu_group = Some(6);
        let mut nic_port2 = endpoint("02:00.1", 0x020000);
        nic_port2.iommu_group = Some(7);
        let group = IommuGroup {
            number: 5,
            domain_type: None,
            pci_members: vec![gpu.address, audio.address, usb.address],
            other_members: vec![],
        };
        Inventory {
            devices: vec![gpu, audio, usb, nic, nic_port2],
            groups: [(5, group)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn selects_union_and_reports_unmatched() {
        let inv = inventory();
        let sels: Vec<Selector> = ["class=gpu", "02:00.0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let got: Vec<String> = inv
            .select(&sels)
            .unwrap()
            .iter()
            .map(|d| d.address.to_string())
            .collect();
        assert_eq!(got, ["0000:01:00.0", "0000:02:00.0"]);
        let missing: Vec<Selector> = vec!["class=nvme".parse().unwrap()];
        assert_eq!(
            inv.select(&missing).unwrap_err(),
            NoMatch("class=nvme".into())
        );
        assert_eq!(inv.select(&[]).unwrap().len(), 5);
    }

    #[test]
    fn gpu_companions_are_linked_and_same_slot_functions() {
        let inv = inventory();
        let gpu = inv.device(&"01:00.0".parse().unwrap()).unwrap();
        assert_eq!(
            inv.companions(gpu),
            vec![
                Companion {
                    address: "01:00.1".parse().unwrap(),
                    reason: CompanionReason::DeviceLink
                },
                Companion {
                    address: "01:00.2".parse().unwrap(),
                    reason: CompanionReason::SameSlot
                },
            ]
        );
        // A NIC's other port is not a companion: it may serve the host.
        let nic = inv.device(&"02:00.0".parse().unwrap()).unwrap();
        assert!(inv.companions(nic).is_empty());
    }

    #[test]
    fn sr_iov_functions_are_never_companions() {
        // An A100 PF at 25:00.0 with VFs from function .4 (sriov_offset 4):
        // PF, VFs and a VF's siblings share the slot but never travel together.
        let pf_addr: PciAddress = "25:00.0".parse().unwrap();
        let mut pf = endpoint("25:00.0", 0x030200);
        let vfs: Vec<PciAddress> = ["25:00.4", "25:00.5", "25:00.6"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        pf.sriov = SriovRole::Pf {
            total_vfs: 16,
            num_vfs: 3,
            vfs: vfs.clone(),
        };
        let mut devices = vec![pf];
        for vf in &vfs {
            let mut d = endpoint(&vf.to_string(), 0x030200);
            d.sriov = SriovRole::Vf { physfn: pf_addr };
            devices.push(d);
        }
        let inv = Inventory {
            devices,
            ..Default::default()
        };
        for dev in &inv.devices {
            assert!(inv.companions(dev).is_empty(), "{}", dev.address);
        }
    }

    #[test]
    fn viability_names_the_blocking_member() {
        let inv = inventory();
        let v = inv.viability(&inv.groups[&5]);
        assert!(!v.viable);
        assert_eq!(v.blockers.len(), 1);
        assert_eq!(v.blockers[0].device.to_string(), "0000:01:00.1");
    }
}
