//! What the running host uses each PCI device for: mounted filesystems, swap,
//! network addresses and routes, the console, and processes holding device
//! nodes. Everything is read under the host root, so fake roots can stage
//! every case.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::model::usage::{DeviceUse, UsageFacts, UsageMap};
use crate::model::{DriverKind, Inventory, PciAddress};

use super::root::HostRoot;
use super::usage_net::Scope;
use super::usage_walk::{
    add, block_to_pci, netdev_to_pci, parse_mountinfo, pci_ancestor, MountLine,
};

/// The virtio device whose 9p mount tag is `tag`.
fn virtio_9p_device(root: &HostRoot, tag: &str) -> Option<PathBuf> {
    fs::read_dir(root.path("/sys/bus/virtio/devices"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|dev| {
            fs::read_to_string(dev.join("mount_tag"))
                .is_ok_and(|t| t.trim_end_matches(['\0', '\n']) == tag)
        })
}

/// PCI functions a mount depends on: its block device (through dm/md), the
/// virtio device of a 9p share, or for overlayfs the mounts holding its layers.
fn mount_to_pci(
    root: &HostRoot,
    mounts: &[MountLine],
    m: &MountLine,
    out: &mut BTreeSet<PciAddress>,
    depth: u32,
) {
    if depth > 4 {
        return;
    }
    let by_number = root.path("/sys/dev/block").join(&m.majmin);
    if by_number.exists() {
        block_to_pci(&by_number, out, 0);
    } else if let Some(name) = m.source.strip_prefix("/dev/") {
        // btrfs and friends report an anonymous device number.
        block_to_pci(&root.path("/sys/class/block").join(name), out, 0);
    } else if m.fstype == "9p" && m.options.contains("trans=virtio") {
        if let Some(addr) = virtio_9p_device(root, &m.source).and_then(|d| pci_ancestor(&d)) {
            out.insert(addr);
        }
    } else if m.fstype == "overlay" {
        for opt in m.options.split(',') {
            let Some((key, value)) = opt.split_once('=') else {
                continue;
            };
            if !matches!(key, "lowerdir" | "upperdir" | "workdir") {
                continue;
            }
            for layer in value.split(':').filter(|l| l.starts_with('/')) {
                // The mount holding the layer: the longest mountpoint prefix.
                let holder = mounts
                    .iter()
                    .filter(|c| c.mountpoint != m.mountpoint || c.fstype != "overlay")
                    .filter(|c| Path::new(layer).starts_with(&c.mountpoint))
                    .max_by_key(|c| c.mountpoint.len());
                if let Some(holder) = holder {
                    mount_to_pci(root, mounts, holder, out, depth + 1);
                }
            }
        }
    }
}

fn mounts(root: &HostRoot, map: &mut UsageMap) {
    let Ok(text) = fs::read_to_string(root.path("/proc/self/mountinfo")) else {
        return;
    };
    let lines = parse_mountinfo(&text);
    for m in &lines {
        let mut addrs = BTreeSet::new();
        mount_to_pci(root, &lines, m, &mut addrs, 0);
        if addrs.is_empty() {
            continue;
        }
        let block = m.source.clone();
        let what = if m.mountpoint == "/" {
            DeviceUse::RootFilesystem { block }
        } else {
            DeviceUse::Mount {
                mountpoint: m.mountpoint.clone(),
                block,
            }
        };
        add(map, &addrs, what);
    }
}

fn swaps(root: &HostRoot, map: &mut UsageMap) {
    let Ok(text) = fs::read_to_string(root.path("/proc/swaps")) else {
        return;
    };
    for line in text.lines().skip(1) {
        let Some(device) = line.split_whitespace().next() else {
            continue;
        };
        let Some(name) = device.strip_prefix("/dev/") else {
            continue;
        };
        let mut addrs = BTreeSet::new();
        block_to_pci(&root.path("/sys/class/block").join(name), &mut addrs, 0);
        add(
            map,
            &addrs,
            DeviceUse::Swap {
                block: device.to_string(),
            },
        );
    }
}

fn network(root: &HostRoot, map: &mut UsageMap) {
    // Interface -> (has addresses, has the default route).
    let mut ifaces: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    if let Ok(text) = fs::read_to_string(root.path("/proc/net/route")) {
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                continue;
            }
            let entry = ifaces.entry(f[0].to_string()).or_default();
            entry.0 = true;
            if f[1] == "00000000" && f[7] == "00000000" {
                entry.1 = true;
            }
        }
    }
    if let Ok(text) = fs::read_to_string(root.path("/proc/net/if_inet6")) {
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            // address ifindex prefixlen scope flags name; scope 0x20 is link-local, 0x10 host.
            if f.len() == 6 && !matches!(f[3], "20" | "10") {
                ifaces.entry(f[5].to_string()).or_default().0 = true;
            }
        }
    }
    if let Ok(text) = fs::read_to_string(root.path("/proc/net/ipv6_route")) {
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() == 10 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[9] != "lo" {
                ifaces.entry(f[9].to_string()).or_default().1 = true;
            }
        }
    }
    for (iface, (addresses, default_route)) in ifaces {
        if iface == "lo" {
            continue;
        }
        let mut addrs = BTreeSet::new();
        netdev_to_pci(root, &iface, &mut addrs, 0);
        if default_route {
            add(
                map,
                &addrs,
                DeviceUse::DefaultRoute {
                    interface: iface.clone(),
                },
            );
        }
        if addresses {
            add(map, &addrs, DeviceUse::Addresses { interface: iface });
        }
    }
}

/// The framebuffer console: fbcon bound to a virtual terminal draws on fb0.
fn console(root: &HostRoot, map: &mut UsageMap) {
    let fbcon_bound = fs::read_dir(root.path("/sys/class/vtconsole"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|vt| {
            let dir = vt.path();
            let name = fs::read_to_string(dir.join("name")).unwrap_or_default();
            let bound = fs::read_to_string(dir.join("bind")).unwrap_or_default();
            name.contains("frame buffer") && bound.trim() == "1"
        });
    if !fbcon_bound {
        return;
    }
    let mut addrs = BTreeSet::new();
    if let Some(addr) = pci_ancestor(&root.path("/sys/class/graphics/fb0/device")) {
        addrs.insert(addr);
    }
    add(
        map,
        &addrs,
        DeviceUse::Console {
            what: "framebuffer console (fb0)".to_string(),
        },
    );
}

/// A device node through which a process can use a PCI function.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Node {
    /// `/dev/...`, as a process's descriptor link names it.
    path: String,
    /// The device number (`dev` in sysfs) and whether it is a block device.
    number: Option<(u64, bool)>,
}

/// `major:minor` from a sysfs `dev` file.
fn parse_dev(text: &str) -> Option<u64> {
    let (major, minor) = text.trim().split_once(':')?;
    Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
}

/// Every `dev` file under a function's sysfs directory (DRM cards and
/// render nodes, sound controls and PCMs, InfiniBand verbs, NVMe
/// controllers and namespaces, misc and class devices...), not descending
/// into other PCI functions or following links.
fn sysfs_nodes(dir: &Path, out: &mut Vec<Node>, depth: u32) {
    if depth > 8 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if kind.is_dir() && PciAddress::from_sysfs_name(&name).is_none() {
            sysfs_nodes(&entry.path(), out, depth + 1);
        } else if kind.is_file() && name == "dev" {
            let Some(number) = fs::read_to_string(entry.path())
                .ok()
                .and_then(|t| parse_dev(&t))
            else {
                continue;
            };
            let devname = fs::read_to_string(dir.join("uevent"))
                .ok()
                .and_then(|u| {
                    u.lines()
                        .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_string))
                })
                .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()));
            let block = fs::read_link(dir.join("subsystem"))
                .ok()
                .and_then(|t| t.file_name().map(|n| n == "block"))
                .unwrap_or(false);
            if let Some(devname) = devname {
                out.push(Node {
                    path: format!("/dev/{devname}"),
                    number: Some((number, block)),
                });
            }
        }
    }
}

/// The namespaces of an NVMe controller under native multipath (the
/// default of Debian's and RHEL's kernels): their block devices are heads
/// under `/sys/devices/virtual/nvme-subsystem/nvme-subsysN`, not under the
/// PCI function, so `sysfs_nodes` does not see them. A subsystem whose
/// directory links to one of this function's controllers (`nvme/nvmeN`)
/// has its heads (`nvmeXnY`, each with a `dev`) added.
fn nvme_heads(root: &HostRoot, function: &Path, out: &mut Vec<Node>) {
    let Ok(controllers) = fs::read_dir(function.join("nvme")) else {
        return;
    };
    let ours: Vec<String> = controllers
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let Ok(subsystems) = fs::read_dir(root.path("/sys/devices/virtual/nvme-subsystem")) else {
        return;
    };
    for subsystem in subsystems.flatten().map(|e| e.path()) {
        let serves = ours.iter().any(|c| {
            fs::canonicalize(subsystem.join(c)).is_ok_and(|real| real.starts_with(function))
        });
        if !serves {
            continue;
        }
        for head in fs::read_dir(&subsystem).into_iter().flatten().flatten() {
            let name = head.file_name().to_string_lossy().into_owned();
            let is_head = name
                .strip_prefix("nvme")
                .and_then(|rest| rest.split_once('n'))
                .is_some_and(|(a, b)| {
                    !a.is_empty()
                        && !b.is_empty()
                        && a.bytes().all(|c| c.is_ascii_digit())
                        && b.bytes().all(|c| c.is_ascii_digit())
                });
            let number = fs::read_to_string(head.path().join("dev"))
                .ok()
                .and_then(|t| parse_dev(&t));
            if let (true, Some(number)) = (is_head, number) {
                out.push(Node {
                    path: format!("/dev/{name}"),
                    number: Some((number, true)),
                });
            }
        }
    }
}

fn named(path: String) -> Node {
    Node { path, number: None }
}

/// The `Device Minor:` an nvidia driver states in
/// `/proc/driver/<dir>/information` (its /dev node's number).
fn device_minor(root: &HostRoot, dir: &str) -> Option<u32> {
    let text = fs::read_to_string(root.path(format!("/proc/driver/{dir}/information"))).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Device Minor:"))
        .and_then(|m| m.trim().parse().ok())
}

/// Device nodes through which a process can be using `addr` right now: what
/// sysfs shows under the function, plus what it does not show (the VFIO
/// group and cdev, nvidia's /dev/nvidiaN and NVSwitch nodes).
fn device_nodes(root: &HostRoot, inv: &Inventory, addr: &PciAddress) -> Vec<Node> {
    let Some(dev) = inv.device(addr) else {
        return vec![];
    };
    let dir = root.path(format!("/sys/bus/pci/devices/{addr}"));
    let mut nodes = Vec::new();
    if let Ok(real) = fs::canonicalize(&dir) {
        sysfs_nodes(&real, &mut nodes, 0);
        nvme_heads(root, &real, &mut nodes);
    }
    if let (Some(DriverKind::Vfio), Some(group)) =
        (dev.driver.as_ref().map(|d| d.kind()), dev.iommu_group)
    {
        nodes.push(named(format!("/dev/vfio/{group}")));
    }
    // mdevs created on the function (vGPUs): each has its own VFIO group.
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if crate::model::domain::valid_uuid(&name) && entry.path().join("mdev_type").exists() {
                nodes.extend(mdev_nodes(root, &name));
            }
        }
    }
    // The per-device cdev of newer kernels (iommufd), also found by the walk.
    if let Ok(entries) = fs::read_dir(dir.join("vfio-dev")) {
        for entry in entries.flatten() {
            nodes.push(named(format!(
                "/dev/vfio/devices/{}",
                entry.file_name().to_string_lossy()
            )));
        }
    }
    if dev.driver.as_ref().is_some_and(|d| d.as_str() == "nvidia") {
        if let Some(minor) = device_minor(root, &format!("nvidia/gpus/{addr}")) {
            nodes.push(named(format!("/dev/nvidia{minor}")));
        }
    }
    if dev
        .driver
        .as_ref()
        .is_some_and(|d| d.as_str() == "nvidia-nvswitch" || d.as_str() == "nvidia_nvswitch")
    {
        if let Some(minor) = device_minor(root, &format!("nvidia-nvswitch/devices/{addr}")) {
            nodes.push(named(format!("/dev/nvidia-nvswitch{minor}")));
        }
    }
    nodes.sort();
    nodes.dedup();
    nodes
}

/// What the walk looks for: each node with its identity under the root.
fn wanted(root: &HostRoot, nodes: &[Node]) -> Vec<super::proc_walk::Wanted> {
    nodes
        .iter()
        .map(|n| super::proc_walk::Wanted::new(root, &n.path, n.number))
        .collect()
}

/// Processes holding any of `nodes` open, or mapping them: (node path, pid, command).
fn holders(root: &HostRoot, nodes: &[Node]) -> Vec<(String, u32, String)> {
    let mut found: Vec<(String, u32, String)> = Vec::new();
    for (i, pid) in super::proc_walk::holders(root, &wanted(root, nodes)) {
        let path = nodes[i].path.clone();
        if found.iter().any(|(p, q, _)| *p == path && *q == pid) {
            continue;
        }
        let command = fs::read_to_string(proc_path(root, pid as i32, "comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| "?".to_string());
        found.push((path, pid, command));
    }
    found
}

/// The VFIO group node of mdev `uuid` (`/dev/vfio/N`, from its iommu_group).
fn mdev_nodes(root: &HostRoot, uuid: &str) -> Vec<Node> {
    if !crate::model::domain::valid_uuid(uuid) {
        return Vec::new();
    }
    fs::read_link(root.path(format!("/sys/bus/mdev/devices/{uuid}/iommu_group")))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .map(|n| vec![named(format!("/dev/vfio/{n}"))])
        .unwrap_or_default()
}

/// Whether process `pid` holds one of the nodes through which `addr` (or,
/// with `mdev`, that mdev on it) is used: a running VM's QEMU holds its
/// VFIO group or cdev. `None` when the process's descriptors cannot be read
/// (it is gone, or vfioctl runs without root).
pub fn pid_holds(
    root: &HostRoot,
    inv: &Inventory,
    pid: u32,
    addr: &PciAddress,
    mdev: Option<&str>,
) -> Option<bool> {
    let nodes = match mdev {
        Some(uuid) => mdev_nodes(root, uuid),
        None => device_nodes(root, inv, addr),
    };
    super::proc_walk::pid_holds(root, pid, &wanted(root, &nodes))
}

fn proc_path(root: &HostRoot, pid: i32, file: &str) -> PathBuf {
    root.path(format!("/proc/{pid}/{file}"))
}

/// Reads what the host uses its devices for that costs little to read:
/// mounts, swap, network addresses and routes, the console, and interfaces
/// moved to other network namespaces (a look at every Ethernet function).
pub fn read_usage(root: &HostRoot) -> UsageMap {
    let mut map = read_host_wide(root);
    super::usage_net::other_namespaces(root, Scope::Host, &mut map);
    map
}

/// The facts read from host-wide files (mounts, swaps, routes, /sys/class),
/// whose cost does not grow with the number of PCI functions: every device
/// the host uses but for open handles and interfaces in other namespaces.
pub fn read_host_wide(root: &HostRoot) -> UsageMap {
    let mut map = UsageMap::new();
    mounts(root, &mut map);
    swaps(root, &mut map);
    network(root, &mut map);
    console(root, &mut map);
    super::usage_net::read(root, &mut map);
    map
}

/// Adds the processes holding `candidates` open. This walks every process's
/// descriptors and device mappings, so callers limit it to the devices a
/// change could touch.
pub fn add_holders(
    root: &HostRoot,
    inv: &Inventory,
    candidates: &BTreeSet<PciAddress>,
    map: &mut UsageMap,
) {
    let per_device: Vec<(PciAddress, Vec<Node>)> = candidates
        .iter()
        .map(|a| (*a, device_nodes(root, inv, a)))
        .collect();
    let wanted: Vec<Node> = per_device
        .iter()
        .flat_map(|(_, n)| n.iter().cloned())
        .collect();
    let held = holders(root, &wanted);
    for (addr, nodes) in per_device {
        for node in nodes {
            for (_, pid, command) in held.iter().filter(|(p, _, _)| *p == node.path) {
                add(
                    map,
                    &BTreeSet::from([addr]),
                    DeviceUse::Holder {
                        pid: *pid,
                        command: command.clone(),
                        path: node.path.clone(),
                    },
                );
            }
        }
    }
}

/// Devices whose open handles matter: those to be released, their
/// companions, every member of their IOMMU groups, and a PF's VFs (releasing
/// a PF destroys them).
fn candidates(inv: &Inventory, targets: &BTreeSet<PciAddress>) -> BTreeSet<PciAddress> {
    let mut set = targets.clone();
    for addr in targets {
        let Some(dev) = inv.device(addr) else {
            continue;
        };
        if let crate::model::device::SriovRole::Pf { vfs, .. } = &dev.sriov {
            set.extend(vfs.iter().copied());
        }
        set.extend(inv.companions(dev).iter().map(|c| c.address));
        if let Some(group) = inv.group_of(dev) {
            set.extend(group.pci_members.iter().copied());
        }
    }
    set
}

/// The host's facts for the gate (`gate::HostFacts`): mounts, swap, network
/// and console read once; open handles and other namespaces looked up only
/// for the devices a rule asks about; the libvirt domains collected the
/// first time a rule asks.
pub struct HostUsage<'a> {
    root: &'a HostRoot,
    inv: &'a Inventory,
    base: UsageMap,
    /// The libvirt read, started (or deferred) by the caller, collected
    /// when the gate first asks about VMs.
    vms_pending: std::cell::RefCell<Option<super::vms::Pending>>,
    vms: std::cell::OnceCell<crate::model::domain::VmFacts>,
}

impl<'a> HostUsage<'a> {
    /// `vms`: where the domains come from (`vms::start`, or
    /// `Pending::Deferred` to read them only if a rule asks).
    pub fn new(root: &'a HostRoot, inv: &'a Inventory, vms: super::vms::Pending) -> HostUsage<'a> {
        HostUsage {
            root,
            inv,
            base: read_host_wide(root),
            vms_pending: std::cell::RefCell::new(Some(vms)),
            vms: std::cell::OnceCell::new(),
        }
    }
}

/// Test builds only: set to 1 to skip the search for processes holding
/// device nodes, so the QEMU test bed can drive a blocked unbind into its
/// deadline. It exists only with the `test-hooks` cargo feature, which
/// tests/vm/run turns on; `make build`, the .deb and the .rpm are built
/// without it, and there the variable is ignored (no safety rule is ever
/// switched off by the environment).
#[cfg(feature = "test-hooks")]
pub const TEST_NO_HOLDERS_ENV: &str = "VFIOCTL_TEST_NO_HOLDERS";

/// Whether the holder search is skipped: never, except in a `test-hooks`
/// build with `TEST_NO_HOLDERS_ENV` set to 1.
fn holders_skipped() -> bool {
    #[cfg(feature = "test-hooks")]
    {
        std::env::var_os(TEST_NO_HOLDERS_ENV).is_some_and(|v| v == "1")
    }
    #[cfg(not(feature = "test-hooks"))]
    {
        false
    }
}

impl UsageFacts for HostUsage<'_> {
    fn usage_of(&self, releasing: &BTreeSet<PciAddress>) -> UsageMap {
        let mut map = self.base.clone();
        let candidates = candidates(self.inv, releasing);
        super::usage_net::other_namespaces(self.root, Scope::Devices(&candidates), &mut map);
        for (parent, uuid, mdev_type) in super::vms::mdevs(self.root) {
            if candidates.contains(&parent) {
                let made = DeviceUse::Mdev {
                    uuid,
                    mdev_type,
                    of: None,
                };
                add(&mut map, &BTreeSet::from([parent]), made);
            }
        }
        if holders_skipped() {
            return map;
        }
        add_holders(self.root, self.inv, &candidates, &mut map);
        map
    }
}

impl crate::gate::HostFacts for HostUsage<'_> {
    fn vms(&self) -> &crate::model::domain::VmFacts {
        self.vms.get_or_init(|| {
            let pending = self.vms_pending.borrow_mut().take();
            match pending {
                Some(p) => p.finish(self.root),
                // Only reachable if `get_or_init` re-entered: fail closed.
                None => crate::model::domain::VmFacts::Failed(
                    "the libvirt read was already collected".to_string(),
                ),
            }
        })
    }
}
