//! The survey of every PCI function that `check` starts from
//! (`model::survey`): one listing of the devices directory, one of each
//! registered driver's directory (the kernel links every function it has
//! bound there, by address), and each function's `modalias` (its IDs and
//! class in one read). About three syscalls per function, where the whole
//! inventory costs forty.

use std::collections::HashMap;
use std::os::fd::AsFd;

use crate::model::survey::{parse_pci_modalias, Surveyed};
use crate::model::{DriverName, PciAddress};

use super::sysfs::{
    entries, open_devices, open_dir_at, read_all, read_attr, InventoryError, PCI_DRIVERS,
};
use super::HostRoot;

/// What the survey found: every function whose `modalias` it could read,
/// and the addresses it could not (vanished while read, or a format it does
/// not know), which the caller reads in depth to be sure.
#[derive(Debug, Default)]
pub struct Survey {
    pub functions: Vec<Surveyed>,
    pub unread: Vec<PciAddress>,
}

/// Surveys every function under /sys/bus/pci/devices; errors as
/// `read_inventory`'s (no PCI sysfs, a directory that cannot be listed).
pub fn survey(root: &HostRoot) -> Result<Survey, InventoryError> {
    let devices_dir = open_devices(root)?;
    let devices = devices_dir.as_fd();
    let addresses: Vec<PciAddress> = entries(devices)
        .iter()
        .filter_map(|n| PciAddress::from_sysfs_name(n))
        .collect();
    let mut bound: HashMap<PciAddress, DriverName> = HashMap::new();
    if let Ok(drivers_dir) = super::sysfs::open_dir(&root.path(PCI_DRIVERS)) {
        for driver in entries(drivers_dir.as_fd()) {
            let Ok(dir) = open_dir_at(drivers_dir.as_fd(), &driver) else {
                continue;
            };
            for name in entries(dir.as_fd()) {
                if let Some(address) = PciAddress::from_sysfs_name(&name) {
                    bound.insert(address, DriverName::new(driver.as_str()));
                }
            }
        }
    }
    let read = read_all(&addresses, |&address, (): &mut ()| {
        let text = read_attr(devices, &format!("{address}/modalias"));
        Some((address, text.as_deref().and_then(parse_pci_modalias)))
    });
    let mut survey = Survey::default();
    for (address, parsed) in read {
        match parsed {
            Some((ids, class)) => survey.functions.push(Surveyed {
                address,
                ids,
                class,
                driver: bound.get(&address).cloned(),
            }),
            None => survey.unread.push(address),
        }
    }
    survey.functions.sort_by_key(|f| f.address);
    survey.unread.sort();
    Ok(survey)
}
