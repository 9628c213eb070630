//! The ground that `usage` and `usage_net` share: /proc/self/mountinfo
//! parsed, and the sysfs walks from a block device, a network interface or
//! any sysfs device path up to the PCI functions behind it. Both usage
//! modules build on this one and not on each other.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::model::usage::{DeviceUse, UsageMap};
use crate::model::PciAddress;

use super::root::HostRoot;

/// The nearest PCI function above a sysfs device path (the canonical path
/// contains every ancestor: `.../0000:00:02.0/0000:02:00.0/nvme/nvme0/nvme0n1`).
pub(super) fn pci_ancestor(path: &Path) -> Option<PciAddress> {
    let real = fs::canonicalize(path).ok()?;
    real.components()
        .rev()
        .find_map(|c| PciAddress::from_sysfs_name(&c.as_os_str().to_string_lossy()))
}

/// PCI functions behind a block device, following `slaves/` through device
/// mapper and md RAID, and from an NVMe multipath head (a virtual disk under
/// nvme-subsystem, the default for namespaces of an NVMe subsystem) to the
/// subsystem's controllers.
pub(super) fn block_to_pci(sys_block: &Path, out: &mut BTreeSet<PciAddress>, depth: u32) {
    if let Some(addr) = pci_ancestor(sys_block) {
        out.insert(addr);
        return;
    }
    if depth > 8 {
        return;
    }
    let below = |dir: &Path| -> Vec<PathBuf> {
        fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for slave in below(&sys_block.join("slaves")) {
        block_to_pci(&slave, out, depth + 1);
    }
    // .../nvme-subsystem/nvme-subsysN/nvmeXnY: the subsystem directory links
    // to its controllers (nvme0, nvme1...), which sit under PCI functions.
    let Ok(real) = fs::canonicalize(sys_block) else {
        return;
    };
    let Some(subsystem) = real.parent() else {
        return;
    };
    if subsystem
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "nvme-subsystem")
    {
        for controller in below(subsystem) {
            let name = controller
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let is_controller = name
                .strip_prefix("nvme")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if is_controller {
                if let Some(addr) = pci_ancestor(&controller) {
                    out.insert(addr);
                }
            }
        }
    }
}

/// PCI functions behind a network interface, following `lower_*` links
/// through bridges, bonds and VLANs.
pub(super) fn netdev_to_pci(
    root: &HostRoot,
    iface: &str,
    out: &mut BTreeSet<PciAddress>,
    depth: u32,
) {
    let dir = root.path("/sys/class/net").join(iface);
    if let Some(addr) = pci_ancestor(&dir) {
        out.insert(addr);
        return;
    }
    if depth > 8 {
        return;
    }
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(lower) = name.strip_prefix("lower_") {
                netdev_to_pci(root, lower, out, depth + 1);
            }
        }
    }
}

/// Records `what` once for each of `addrs`.
pub(super) fn add(map: &mut UsageMap, addrs: &BTreeSet<PciAddress>, what: DeviceUse) {
    for addr in addrs {
        let uses = map.entry(*addr).or_default();
        if !uses.contains(&what) {
            uses.push(what.clone());
        }
    }
}

/// One line of /proc/self/mountinfo, the fields that matter here.
pub(super) struct MountLine {
    pub majmin: String,
    pub mountpoint: String,
    pub fstype: String,
    pub source: String,
    /// The filesystem's own options (NFS: `addr=`; overlayfs: its layers).
    pub options: String,
}

pub(super) fn parse_mountinfo(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter_map(|line| {
            // id parent major:minor root mountpoint options [optional...] - fstype source superopts
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(MountLine {
                majmin: fields.get(2)?.to_string(),
                mountpoint: unescape(fields.get(4)?),
                fstype: fields.get(dash + 1)?.to_string(),
                source: fields.get(dash + 2).map_or(String::new(), |s| unescape(s)),
                options: fields
                    .get(dash + 3)
                    .map_or(String::new(), |s| s.to_string()),
            })
        })
        .collect()
}

/// mountinfo escapes spaces and friends as `\040`.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.clone().take(3).collect();
            if let Ok(byte) = u8::from_str_radix(&code, 8) {
                out.push(byte as char);
                chars.nth(2);
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_fields() {
        assert_eq!(unescape("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
