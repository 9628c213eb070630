//! Reading the PCI inventory from sysfs under the host root.
//!
//! One directory listing per device tells which optional attributes exist,
//! then each attribute is read once. No process is spawned.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::model::device::HeaderType;
use crate::model::group::OtherMember;
use crate::model::ids::{parse_sysfs_hex, NamesWanted};
use crate::model::{
    ClassCode, DeviceId, DeviceIds, DriverName, Inventory, IommuGroup, IommuState, ModuleName,
    PciAddress, PciDevice, PciNames, SriovRole, VendorId,
};

use super::root::{HostIoError, HostRoot};

pub const PCI_DEVICES: &str = "/sys/bus/pci/devices";
pub const PCI_DRIVERS: &str = "/sys/bus/pci/drivers";
pub const IOMMU_GROUPS: &str = "/sys/kernel/iommu_groups";
pub const IOMMU_CLASS: &str = "/sys/class/iommu";
/// Where distributions put the pci.ids database, in order of preference.
pub const PCI_IDS_PATHS: &[&str] = &["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"];

/// Whether names from pci.ids are wanted (tables and JSON) or not (hot paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    Lookup,
    Skip,
}

/// Reads an attribute; `None` when it does not exist or cannot be read
/// (unprivileged reads of some attributes fail, which is not an error here).
/// sysfs returns a whole attribute (at most a page) per read, so one read into
/// a page-sized buffer suffices: no stat for a size hint, no second read for EOF.
fn read_attr(dir: &Path, name: &str) -> Option<String> {
    let mut file = fs::File::open(dir.join(name)).ok()?;
    let mut buf = [0u8; 4096];
    let mut len = file.read(&mut buf).ok()?;
    if len == buf.len() {
        // Longer than a page: not a sysfs attribute; read the rest the slow way.
        let mut rest = Vec::from(&buf[..]);
        file.read_to_end(&mut rest).ok()?;
        return String::from_utf8(rest).ok();
    }
    while len > 0 && buf[len - 1] == 0 {
        len -= 1;
    }
    std::str::from_utf8(&buf[..len]).ok().map(str::to_string)
}

fn read_hex(dir: &Path, name: &str) -> Option<u32> {
    parse_sysfs_hex(&read_attr(dir, name)?)
}

fn read_u32(dir: &Path, name: &str) -> Option<u32> {
    read_attr(dir, name)?.trim().parse().ok()
}

/// The last component of a symlink's target (`driver` -> `.../drivers/nvidia`).
fn link_basename(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Lists a directory's entry names; a missing directory is empty.
fn list_dir(path: &Path) -> io::Result<Vec<String>> {
    match fs::read_dir(path) {
        Ok(entries) => Ok(entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The first 64 bytes of config space: readable without privileges.
fn read_config_header(dir: &Path) -> Option<[u8; 64]> {
    let mut buf = [0u8; 64];
    let mut file = fs::File::open(dir.join("config")).ok()?;
    file.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// What one listing of a device directory revealed.
#[derive(Default)]
struct DirEntries {
    virtfns: Vec<(u32, String)>,
    consumers: Vec<PciAddress>,
    suppliers: Vec<PciAddress>,
    has_physfn: bool,
    has_sriov: bool,
    has_boot_vga: bool,
    has_power_state: bool,
    has_revision: bool,
}

fn scan_device_dir(dir: &Path) -> io::Result<DirEntries> {
    let mut found = DirEntries::default();
    for name in list_dir(dir)? {
        if let Some(index) = name.strip_prefix("virtfn") {
            if let Ok(index) = index.parse() {
                found.virtfns.push((index, name));
            }
        } else if let Some(addr) = name.strip_prefix("consumer:pci:") {
            found.consumers.extend(PciAddress::from_sysfs_name(addr));
        } else if let Some(addr) = name.strip_prefix("supplier:pci:") {
            found.suppliers.extend(PciAddress::from_sysfs_name(addr));
        } else {
            match name.as_str() {
                "physfn" => found.has_physfn = true,
                "sriov_totalvfs" => found.has_sriov = true,
                "boot_vga" => found.has_boot_vga = true,
                "power_state" => found.has_power_state = true,
                "revision" => found.has_revision = true,
                _ => {}
            }
        }
    }
    found.virtfns.sort();
    found.consumers.sort();
    found.suppliers.sort();
    Ok(found)
}

/// Reads one function. `None` when it vanished while being read.
/// `pending`: its unbind is still pending in the kernel (the change record
/// says so). Linux serves `driver_override` under the device lock that the
/// pending unbind holds, so reading it would block until the holder lets go
/// (found by tests/vm 75-safety-gpu: `vfioctl show` hung); it is not read
/// then, and vfioctl's rollback puts it back anyway.
fn read_device(
    devices_dir: &Path,
    address: PciAddress,
    modules: &mut HashMap<String, Option<ModuleName>>,
    pending: bool,
) -> Option<PciDevice> {
    let link = devices_dir.join(address.to_string());
    let dir = link.as_path();
    let entries = scan_device_dir(dir).ok()?;
    let vendor = read_hex(dir, "vendor")?;
    let device = read_hex(dir, "device")?;
    let class = read_hex(dir, "class")?;
    let config = read_config_header(dir);

    let ids = DeviceIds {
        vendor: VendorId(vendor as u16),
        device: DeviceId(device as u16),
        subsystem_vendor: VendorId(read_hex(dir, "subsystem_vendor").unwrap_or(0) as u16),
        subsystem_device: DeviceId(read_hex(dir, "subsystem_device").unwrap_or(0) as u16),
    };
    let revision = if entries.has_revision {
        read_hex(dir, "revision").map(|r| r as u8)
    } else {
        None
    }
    .or(config.map(|c| c[0x08]))
    .unwrap_or(0);

    let driver_name = link_basename(&dir.join("driver"));
    let driver_module = driver_name.as_ref().and_then(|name| {
        modules
            .entry(name.clone())
            .or_insert_with(|| link_basename(&dir.join("driver/module")).map(ModuleName::new))
            .clone()
    });
    let driver_override = (!pending)
        .then(|| read_attr(dir, "driver_override"))
        .flatten()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != "(null)")
        .map(DriverName::new);

    let sriov = if entries.has_physfn {
        match link_basename(&dir.join("physfn")).and_then(|n| PciAddress::from_sysfs_name(&n)) {
            Some(physfn) => SriovRole::Vf { physfn },
            None => SriovRole::None,
        }
    } else if entries.has_sriov {
        SriovRole::Pf {
            total_vfs: read_u32(dir, "sriov_totalvfs").unwrap_or(0),
            num_vfs: read_u32(dir, "sriov_numvfs").unwrap_or(0),
            vfs: entries
                .virtfns
                .iter()
                .filter_map(|(_, name)| link_basename(&dir.join(name)))
                .filter_map(|n| PciAddress::from_sysfs_name(&n))
                .collect(),
        }
    } else {
        SriovRole::None
    };

    let parent = fs::read_link(dir).ok().and_then(|target| {
        let parent = target.parent()?.file_name()?.to_string_lossy().into_owned();
        PciAddress::from_sysfs_name(&parent)
    });

    Some(PciDevice {
        address,
        ids,
        class: ClassCode(class),
        revision,
        header_type: config.map(|c| HeaderType::from_config_byte(c[0x0e])),
        config_dead: config.is_some_and(|c| c[0] == 0xff && c[1] == 0xff),
        driver: driver_name.map(DriverName::new),
        driver_module,
        driver_override,
        iommu_group: link_basename(&dir.join("iommu_group")).and_then(|n| n.parse().ok()),
        sriov,
        numa_node: read_attr(dir, "numa_node").and_then(|s| s.trim().parse::<u32>().ok()),
        boot_vga: entries.has_boot_vga
            && read_attr(dir, "boot_vga").is_some_and(|s| s.trim() == "1"),
        parent,
        consumers: entries.consumers,
        suppliers: entries.suppliers,
        power_state: if entries.has_power_state {
            read_attr(dir, "power_state").map(|s| s.trim().to_string())
        } else {
            None
        },
    })
}

fn read_groups(root: &HostRoot) -> Result<BTreeMap<u32, IommuGroup>, HostIoError> {
    let groups_dir = root.path(IOMMU_GROUPS);
    let wrap = |path: PathBuf| {
        move |source| HostIoError {
            action: "cannot list",
            path,
            source,
        }
    };
    let mut groups = BTreeMap::new();
    for name in list_dir(&groups_dir).map_err(wrap(groups_dir.clone()))? {
        let Ok(number) = name.parse::<u32>() else {
            continue;
        };
        let group_dir = groups_dir.join(&name);
        let devices_dir = group_dir.join("devices");
        let mut pci_members = Vec::new();
        let mut other_members = Vec::new();
        for member in list_dir(&devices_dir).map_err(wrap(devices_dir.clone()))? {
            match PciAddress::from_sysfs_name(&member) {
                Some(addr) => pci_members.push(addr),
                None => other_members.push(OtherMember {
                    driver: link_basename(&devices_dir.join(&member).join("driver"))
                        .map(DriverName::new),
                    name: member,
                }),
            }
        }
        pci_members.sort();
        other_members.sort_by(|a, b| a.name.cmp(&b.name));
        groups.insert(
            number,
            IommuGroup {
                number,
                domain_type: read_attr(&group_dir, "type").map(|s| s.trim().to_string()),
                pci_members,
                other_members,
            },
        );
    }
    Ok(groups)
}

/// Looks up names for the inventory's devices in the first pci.ids found.
pub fn read_names(root: &HostRoot, devices: &[PciDevice]) -> PciNames {
    let Some(text) = PCI_IDS_PATHS
        .iter()
        .find_map(|p| fs::read_to_string(root.path(p)).ok())
    else {
        return PciNames::default();
    };
    let mut wanted = NamesWanted::default();
    for dev in devices {
        wanted.add(dev.ids, dev.class);
    }
    PciNames::parse(&text, &wanted)
}

/// Reads one function alone (no groups, no names): what the udev hook needs
/// to find the declaration covering a device before it takes the lock.
pub fn read_one(root: &HostRoot, address: PciAddress) -> Option<PciDevice> {
    let pending = pending_unbinds(root).contains(&address);
    read_device(
        &root.path(PCI_DEVICES),
        address,
        &mut HashMap::new(),
        pending,
    )
}

/// The devices whose unbind the change record says is pending. A record
/// vfioctl cannot read is reported by the commands that use it.
fn pending_unbinds(root: &HostRoot) -> std::collections::BTreeSet<PciAddress> {
    super::state::read_record(root)
        .map(|r| r.pending_devices())
        .unwrap_or_default()
}

/// Errors that stop the inventory from being read at all.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("no PCI sysfs at {0} (is sysfs mounted, and is --root right?)")]
    NoPciSysfs(PathBuf),
    #[error(transparent)]
    Io(#[from] HostIoError),
}

/// Reads every PCI function, IOMMU group and the IOMMU state under `root`.
pub fn read_inventory(root: &HostRoot, names: Names) -> Result<Inventory, InventoryError> {
    let devices_dir = root.path(PCI_DEVICES);
    let entries = match fs::read_dir(&devices_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(InventoryError::NoPciSysfs(devices_dir))
        }
        Err(source) => {
            return Err(HostIoError {
                action: "cannot list",
                path: devices_dir,
                source,
            }
            .into())
        }
    };
    let mut modules = HashMap::new();
    let pending = pending_unbinds(root);
    let mut devices: Vec<PciDevice> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| PciAddress::from_sysfs_name(&e.file_name().to_string_lossy()))
        .filter_map(|addr| read_device(&devices_dir, addr, &mut modules, pending.contains(&addr)))
        .collect();
    devices.sort_by_key(|d| d.address);

    let groups = read_groups(root)?;
    let iommu_class = root.path(IOMMU_CLASS);
    let mut units = list_dir(&iommu_class).map_err(|source| HostIoError {
        action: "cannot list",
        path: iommu_class,
        source,
    })?;
    units.sort();
    let drivers_dir = root.path(PCI_DRIVERS);
    let drivers = list_dir(&drivers_dir)
        .map_err(|source| HostIoError {
            action: "cannot list",
            path: drivers_dir,
            source,
        })?
        .into_iter()
        .map(DriverName::new)
        .collect();
    let names = match names {
        Names::Lookup => read_names(root, &devices),
        Names::Skip => PciNames::default(),
    };
    Ok(Inventory {
        iommu: IommuState {
            units,
            groups: groups.len(),
        },
        devices,
        groups,
        kernel_release: root.kernel_release(),
        drivers,
        names,
    })
}
