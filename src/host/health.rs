//! Reads the health of the devices judged, and of the ports above them,
//! from sysfs: link, AER counters, reset methods, power state, BAR0, the
//! enable count; whether the OS owns AER below each root port; the boot id.
//! Nothing else is read: on a host of thousands of functions, only the
//! judged ones and their paths to the root complex cost a read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use crate::model::health::{
    parse_aer_file, AerCounters, AerTotals, Bar0, FunctionHealth, HealthFacts, Link, ResetMethods,
};
use crate::model::{Inventory, PciAddress, PciDevice, SriovRole};

use super::sysfs::{
    link_target, open_attr, open_dir, open_dir_at, open_path_at, read_all, read_attr, read_hex,
    PCI_DEVICES,
};
use super::HostRoot;

/// The PCIe port services; `<root port>:pcie002` is its AER service.
pub const PORT_SERVICES: &str = "/sys/bus/pci_express/devices";
pub const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// What the caller needs beyond what the checks judge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// Root ports' `aer_rootport_total_err_*` (metrics and `show`; not judged).
    pub rootport_totals: bool,
    /// Every judged device's enable count (`show`); else it is read only
    /// where a verdict depends on it (D3cold, a hop slower than its path allows).
    pub enable: bool,
}

/// What to read of one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Want {
    /// Judged itself: reset method, BAR0, serial.
    judged: bool,
    /// Link, AER, enable count and path: judged, or the PF a VF is judged by.
    full: bool,
}

/// The identity a baseline remembers, from what the inventory read.
pub fn identity(dev: &PciDevice) -> String {
    format!(
        "{}:{}:{}:{} rev {:02x}",
        dev.ids.vendor,
        dev.ids.device,
        dev.ids.subsystem_vendor,
        dev.ids.subsystem_device,
        dev.revision
    )
}

fn read_u32(dir: BorrowedFd, name: &str) -> Option<u32> {
    read_attr(dir, name)?.trim().parse().ok()
}

/// The link attributes; `None` when the function has none (conventional
/// PCI). One that exists but cannot be read (the kernel answers EINVAL when
/// it cannot reach the function's config space: disconnected, or given up
/// after a failed error recovery) marks the link unreadable.
fn read_link(dir: BorrowedFd) -> Option<Link> {
    let mut present = false;
    let mut unreadable = false;
    let mut attr = |name| match open_attr(dir, name) {
        Err(_) => None,
        Ok(file) => {
            present = true;
            let text = super::sysfs::read_open(file).map(|s| s.trim().to_string());
            unreadable |= text.is_none();
            text
        }
    };
    let current_speed = attr("current_link_speed");
    let max_speed = attr("max_link_speed");
    let current_width = attr("current_link_width");
    let max_width = attr("max_link_width");
    let width = |t: Option<String>| t.and_then(|t| t.parse().ok());
    present.then(|| Link {
        current_speed,
        max_speed,
        current_width: width(current_width),
        max_width: width(max_width),
        unreadable,
    })
}

fn read_aer(dir: BorrowedFd) -> Option<AerCounters> {
    let mut counters = AerCounters::default();
    for (file, kind) in [
        ("aer_dev_correctable", "correctable"),
        ("aer_dev_nonfatal", "nonfatal"),
        ("aer_dev_fatal", "fatal"),
    ] {
        let (total, nonzero) = parse_aer_file(&read_attr(dir, file)?)?;
        match kind {
            "correctable" => counters.totals.correctable = total,
            "nonfatal" => counters.totals.nonfatal = total,
            _ => counters.totals.fatal = total,
        }
        counters
            .nonzero
            .extend(nonzero.into_iter().map(|(n, c)| format!("{kind} {n} {c}")));
    }
    Some(counters)
}

fn read_rootport_aer(dir: BorrowedFd) -> Option<AerTotals> {
    let count = |name| read_attr(dir, name)?.trim().parse::<u64>().ok();
    Some(AerTotals {
        correctable: count("aer_rootport_total_err_cor")?,
        nonfatal: count("aer_rootport_total_err_nonfatal")?,
        fatal: count("aer_rootport_total_err_fatal")?,
    })
}

/// `reset_method` (and `reset` when it is absent) of the function whose
/// directory `dir` is, or under it at `prefix` (`ADDRESS/`).
fn read_reset(dir: BorrowedFd, prefix: &str) -> ResetMethods {
    match open_attr(dir, &format!("{prefix}reset_method")) {
        Ok(file) => super::sysfs::read_open(file)
            .map_or(ResetMethods::Unreadable, |t| ResetMethods::parse(&t)),
        Err(rustix::io::Errno::NOENT) => match open_attr(dir, &format!("{prefix}reset")) {
            Err(rustix::io::Errno::NOENT) => ResetMethods::None,
            _ => ResetMethods::Unlisted,
        },
        Err(_) => ResetMethods::Unreadable,
    }
}

/// BAR0 from the config header, and the PCIe Device Serial Number from
/// extended config space (root only: others read the first 64 bytes), both
/// through one descriptor.
fn read_config(dir: BorrowedFd) -> (Option<Bar0>, Option<String>) {
    let Ok(file) = open_attr(dir, "config") else {
        return (None, None);
    };
    let mut header = [0u8; 64];
    let bar0 = file
        .read_exact_at(&mut header, 0)
        .ok()
        .map(|()| Bar0::from_header(&header));
    let dword = |at: u64| {
        let mut buf = [0u8; 4];
        file.read_exact_at(&mut buf, at).ok()?;
        Some(u32::from_le_bytes(buf))
    };
    let serial = (|| {
        let mut at = 0x100u64;
        for _ in 0..64 {
            let cap = dword(at)?;
            if cap == 0 || cap == u32::MAX {
                return None;
            }
            if cap & 0xffff == 0x0003 {
                let (low, high) = (dword(at + 4)?, dword(at + 8)?);
                return Some(format!("{:016x}", (u64::from(high) << 32) | u64::from(low)));
            }
            at = u64::from((cap >> 20) & 0xffc);
            if at < 0x100 {
                return None;
            }
        }
        None
    })();
    (bar0, serial)
}

/// Whether the kernel assigned BAR0 an address: the first `resource` line
/// (`start end flags`) is not all zero.
fn bar0_assigned(dir: BorrowedFd) -> Option<bool> {
    let text = read_attr(dir, "resource")?;
    let first = text.lines().next()?;
    let mut fields = first.split_whitespace();
    let start = u64::from_str_radix(fields.next()?.trim_start_matches("0x"), 16).ok()?;
    let end = u64::from_str_radix(fields.next()?.trim_start_matches("0x"), 16).ok()?;
    Some(start != 0 || end != 0)
}

/// The ports above a function, nearest first: from the inventory's parent
/// links when it read them all (`check`), else from the function's place
/// under /sys/devices (`.../pci0000:00/0000:00:01.0/0000:01:00.0/X`).
fn upstream_of(devices: BorrowedFd, inv: &Inventory, address: PciAddress) -> Vec<PciAddress> {
    let mut chain = Vec::new();
    let mut at = inv.device(&address);
    while let Some(dev) = at {
        match dev.parent {
            None => return chain,
            Some(parent) => {
                chain.push(parent);
                at = inv.device(&parent);
            }
        }
    }
    // A parent the inventory did not read: ask sysfs for the whole path.
    upstream_from_sysfs(devices, address)
}

fn upstream_from_sysfs(devices: BorrowedFd, address: PciAddress) -> Vec<PciAddress> {
    let Some(target) = link_target(devices, &address.to_string()) else {
        return Vec::new();
    };
    let mut path: Vec<PciAddress> = target
        .split(|&b| b == b'/')
        .filter_map(|c| PciAddress::from_sysfs_name(std::str::from_utf8(c).ok()?))
        .collect();
    path.pop(); // the function itself
    path.reverse();
    path
}

/// The other functions on the bus `address` is on: its parent's children.
fn bus_siblings(devices: BorrowedFd, address: PciAddress) -> Vec<PciAddress> {
    let Ok(parent) = open_dir_at(devices, &format!("{address}/..")) else {
        return Vec::new();
    };
    let mut siblings: Vec<PciAddress> = super::sysfs::entries(parent.as_fd())
        .iter()
        .filter_map(|n| PciAddress::from_sysfs_name(n))
        .filter(|a| a.domain == address.domain && a.bus == address.bus && *a != address)
        .collect();
    siblings.sort();
    siblings
}

/// Reads one function; `dev` is the inventory's view when it has one.
fn read_function(
    devices: BorrowedFd,
    inv: &Inventory,
    address: PciAddress,
    want: Want,
    reading: Reading,
) -> Option<(FunctionHealth, Option<Vec<PciAddress>>)> {
    let dev = inv.device(&address);
    let mut h = FunctionHealth::new(address);
    let is_vf = dev.is_some_and(|d| matches!(d.sriov, SriovRole::Vf { .. }));
    if let (Some(d), true, false) = (dev, is_vf, want.full) {
        // A VF judged by its PF: its own reset and power only, read by
        // name from the devices directory (no descriptor of its own).
        let prefix = format!("{address}/");
        h.power_state = d.power_state.clone();
        h.identity = Some(identity(d));
        h.reset = Some(read_reset(devices, &prefix));
        if reading.enable || h.power_state.as_deref() == Some("D3cold") {
            h.enable = read_u32(devices, &format!("{prefix}enable"));
        }
        return Some((h, None));
    }
    let fd = open_path_at(devices, &address.to_string()).ok()?;
    let dir = fd.as_fd();
    // The power state first: reading the others may wake the device.
    h.power_state = match dev {
        Some(d) => d.power_state.clone(),
        None => read_attr(dir, "power_state").map(|s| s.trim().to_string()),
    };
    // The same text from the attributes when the inventory did not read it
    // (`show` reads only a device's neighbourhood).
    h.identity = match dev {
        Some(d) => Some(identity(d)),
        None => Some(format!(
            "{:04x}:{:04x}:{:04x}:{:04x} rev {:02x}",
            read_hex(dir, "vendor")?,
            read_hex(dir, "device")?,
            read_hex(dir, "subsystem_vendor").unwrap_or(0),
            read_hex(dir, "subsystem_device").unwrap_or(0),
            read_hex(dir, "revision").unwrap_or(0)
        )),
    };
    if want.judged {
        h.reset = Some(read_reset(dir, ""));
        if h.reset == Some(ResetMethods::Listed(vec!["bus".to_string()])) {
            h.bus_siblings = bus_siblings(devices, address);
        }
        if dev.is_some_and(|d| !d.is_bridge()) && !is_vf {
            (h.bar0, h.serial) = read_config(dir);
            if let Some(bar) = &mut h.bar0 {
                if bar.address() == 0 {
                    bar.assigned = bar0_assigned(dir);
                }
            }
        }
    }
    let judged_here = want.judged || want.full;
    if judged_here && (reading.enable || h.power_state.as_deref() == Some("D3cold")) {
        h.enable = read_u32(dir, "enable");
    }
    if want.full || !want.judged {
        h.link = read_link(dir);
        h.aer = read_aer(dir);
    }
    let upstream = want.full.then(|| upstream_of(devices, inv, address));
    Some((h, upstream))
}

/// Reads the health of `judged` (a VF is judged by its PF, whose link and
/// AER counters are read instead of its own) and of every port above them.
pub fn read_health(
    root: &HostRoot,
    inv: &Inventory,
    judged: &[&PciDevice],
    reading: Reading,
) -> HealthFacts {
    let mut facts = HealthFacts {
        boot_id: fs::read_to_string(root.path(BOOT_ID))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        ..HealthFacts::default()
    };
    let Ok(devices_dir) = open_dir(&root.path(PCI_DEVICES)) else {
        return facts;
    };
    let devices = devices_dir.as_fd();
    let mut wanted: BTreeMap<PciAddress, Want> = BTreeMap::new();
    for dev in judged {
        let is_vf = match dev.sriov {
            SriovRole::Vf { physfn } => {
                wanted
                    .entry(physfn)
                    .or_insert(Want {
                        judged: false,
                        full: true,
                    })
                    .full = true;
                true
            }
            _ => false,
        };
        let want = wanted.entry(dev.address).or_insert(Want {
            judged: true,
            full: false,
        });
        want.judged = true;
        want.full |= !is_vf;
    }
    let first: Vec<(PciAddress, Want)> = wanted.into_iter().collect();
    let read = read_all(&first, |&(address, want), (): &mut ()| {
        read_function(devices, inv, address, want, reading)
    });
    let mut ports = BTreeSet::new();
    let mut roots = BTreeSet::new();
    for (h, upstream) in read {
        if let Some(upstream) = upstream {
            ports.extend(upstream.iter().copied());
            roots.extend(upstream.last().copied());
            facts.upstream.insert(h.address, upstream);
        }
        facts.functions.insert(h.address, h);
    }
    // Ports that are judged devices themselves were read already.
    let ports: Vec<PciAddress> = ports
        .into_iter()
        .filter(|a| !facts.functions.contains_key(a))
        .collect();
    let port_want = Want {
        judged: false,
        full: false,
    };
    let read = read_all(&ports, |&address, (): &mut ()| {
        read_function(devices, inv, address, port_want, reading)
    });
    for (h, _) in read {
        facts.functions.insert(h.address, h);
    }
    for root_port in roots {
        if reading.rootport_totals {
            if let Ok(fd) = open_path_at(devices, &root_port.to_string()) {
                if let Some(h) = facts.functions.get_mut(&root_port) {
                    h.rootport_aer = read_rootport_aer(fd.as_fd());
                }
            }
        }
        let service = root.path(format!("{PORT_SERVICES}/{root_port}:pcie002"));
        facts.aer_service.insert(root_port, service.exists());
    }
    // The enable count decides a slow hop's verdict (slow while idle):
    // read where a hop of the path runs below the path's speed.
    if !reading.enable {
        let slow: Vec<PciAddress> = facts
            .upstream
            .keys()
            .copied()
            .filter(|a| {
                let (_, speed) = facts.expected(*a);
                facts
                    .linked_path(*a)
                    .iter()
                    .filter_map(|f| f.link.as_ref()?.current_gts())
                    .any(|now| speed.is_some_and(|s| now < s))
            })
            .collect();
        for address in slow {
            let enable = read_u32(devices, &format!("{address}/enable"));
            if let Some(h) = facts.functions.get_mut(&address) {
                h.enable = enable;
            }
        }
    }
    facts
}

/// The kernel's name for a function's AER service, for messages.
pub fn aer_service_path(root_port: PciAddress) -> String {
    format!("{PORT_SERVICES}/{root_port}:pcie002")
}
