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
use super::{HostIoError, HostRoot};

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
    // A driver directory that cannot be listed would hide what is bound to
    // it (a function on vfio-pci taken for driverless): an error, as the
    // inventory's listing of the drivers is. None at all: no driver.
    let drivers_path = root.path(PCI_DRIVERS);
    let cannot_list = |path: std::path::PathBuf, e: std::io::Error| HostIoError {
        action: "cannot list",
        path,
        source: e,
    };
    let mut bound: HashMap<PciAddress, DriverName> = HashMap::new();
    match super::sysfs::open_dir(&drivers_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(cannot_list(drivers_path, e).into()),
        Ok(drivers_dir) => {
            for driver in entries(drivers_dir.as_fd()) {
                let dir = match open_dir_at(drivers_dir.as_fd(), &driver) {
                    Ok(dir) => dir,
                    // Not a driver's directory.
                    Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::NOENT) => continue,
                    Err(e) => return Err(cannot_list(drivers_path.join(&driver), e.into()).into()),
                };
                for name in entries(dir.as_fd()) {
                    if let Some(address) = PciAddress::from_sysfs_name(&name) {
                        bound.insert(address, DriverName::new(driver.as_str()));
                    }
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
