//! Reading the PCI inventory from sysfs under the host root.
//!
//! Every device attribute is opened relative to its device directory's
//! descriptor (no path walk from the root per file), each attribute is read
//! once, and a directory is listed only where its listing is the answer (the
//! host's functions, IOMMU group members, a PF's VFs). Device links come from
//! one listing of the kernel's devlink directory instead of one listing per
//! device. On hosts with many functions the reads are spread over the cores.
//! No process is spawned, except to read the `driver_override` of a device
//! an unfinished change touched (`read_guarded`).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fs::{openat, readlinkat, Mode, OFlags, RawDir};
use rustix::io::Errno;

use crate::model::device::HeaderType;
use crate::model::group::OtherMember;
use crate::model::ids::{parse_sysfs_hex, NamesWanted};
use crate::model::selector::Matcher;
use crate::model::{
    ClassCode, DeviceId, DeviceIds, DriverName, Inventory, IommuGroup, IommuState, ModuleName,
    PciAddress, PciDevice, PciNames, Selector, SriovRole, VendorId,
};

use super::root::{HostIoError, HostRoot};

pub const PCI_DEVICES: &str = "/sys/bus/pci/devices";
pub const PCI_DRIVERS: &str = "/sys/bus/pci/drivers";
pub const IOMMU_GROUPS: &str = "/sys/kernel/iommu_groups";
pub const IOMMU_CLASS: &str = "/sys/class/iommu";
/// Where the kernel lists its device links (`pci:SUPPLIER--pci:CONSUMER`):
/// the class directory exists on every kernel that has them in sysfs (5.9+),
/// the devices directory only once a link exists.
pub const DEVLINKS: &[&str] = &["/sys/class/devlink", "/sys/devices/virtual/devlink"];
/// Where distributions put the pci.ids database, in order of preference.
pub const PCI_IDS_PATHS: &[&str] = &["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"];

/// Below this many items a read stays on the calling thread: spawning costs
/// more than it saves.
const PARALLEL_MIN: usize = 256;
/// Items a worker takes at a time.
const CHUNK: usize = 64;

/// Whether names from pci.ids are wanted (tables and JSON) or not (hot paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    Lookup,
    Skip,
}

/// Flags to open a directory to list it.
const LISTING: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);
/// Flags to open a directory only to open names under it (O_PATH).
const LOOKUP: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

pub(super) fn open_path_at(dir: BorrowedFd, name: &str) -> rustix::io::Result<OwnedFd> {
    openat(dir, name, LOOKUP, Mode::empty())
}

pub(super) fn open_dir_at(dir: BorrowedFd, name: &str) -> rustix::io::Result<OwnedFd> {
    openat(dir, name, LISTING, Mode::empty())
}

pub(super) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(path, LISTING, Mode::empty()).map_err(io::Error::from)
}

/// The entry names of a directory opened for listing, without `.` and `..`
/// (getdents64 straight into a buffer: no stat, no fcntl).
pub(super) fn entries(dir: BorrowedFd) -> Vec<String> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
    let mut listing = RawDir::new(dir, &mut buf);
    let mut names = Vec::new();
    while let Some(Ok(entry)) = listing.next() {
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    names
}

/// Reads an attribute under `dir`; `None` when it does not exist or cannot be
/// read (unprivileged reads of some attributes fail, which is not an error
/// here). sysfs returns a whole attribute (at most a page) per read, so one
/// read into a page-sized buffer suffices: no stat for a size hint, no second
/// read for EOF.
pub(super) fn read_attr(dir: BorrowedFd, name: &str) -> Option<String> {
    read_open(open_attr(dir, name).ok()?)
}

pub(super) fn open_attr(dir: BorrowedFd, name: &str) -> rustix::io::Result<fs::File> {
    openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map(fs::File::from)
}

/// Reads an opened attribute (see `read_attr`) into an uninitialized page
/// (no 4 KiB memset per attribute: tens of thousands are read per host).
pub(super) fn read_open(mut file: fs::File) -> Option<String> {
    let mut page = [MaybeUninit::<u8>::uninit(); 4096];
    let (buf, rest) = rustix::io::read(&file, &mut page).ok()?;
    if rest.is_empty() {
        // Longer than a page: not a sysfs attribute; read the rest the slow way.
        let mut all = buf.to_vec();
        file.read_to_end(&mut all).ok()?;
        return String::from_utf8(all).ok();
    }
    let mut len = buf.len();
    while len > 0 && buf[len - 1] == 0 {
        len -= 1;
    }
    std::str::from_utf8(&buf[..len]).ok().map(str::to_string)
}

pub(super) fn read_hex(dir: BorrowedFd, name: &str) -> Option<u32> {
    parse_sysfs_hex(&read_attr(dir, name)?)
}

fn read_u32(dir: BorrowedFd, name: &str) -> Option<u32> {
    read_attr(dir, name)?.trim().parse().ok()
}

/// A symlink's target under `dir`.
pub(super) fn link_target(dir: BorrowedFd, name: &str) -> Option<Vec<u8>> {
    Some(readlinkat(dir, name, Vec::new()).ok()?.into_bytes())
}

/// The last component of a path, as text.
pub(super) fn basename(path: &[u8]) -> Option<String> {
    let base = path.rsplit(|&b| b == b'/').next()?;
    (!base.is_empty()).then(|| String::from_utf8_lossy(base).into_owned())
}

/// The last component of a symlink's target (`driver` -> `.../drivers/nvidia`).
fn link_basename(dir: BorrowedFd, name: &str) -> Option<String> {
    basename(&link_target(dir, name)?)
}

/// The first 64 bytes of config space: readable without privileges.
pub(super) fn read_config_header(dir: BorrowedFd) -> Option<[u8; 64]> {
    let mut buf = [0u8; 64];
    open_attr(dir, "config").ok()?.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// Device links between PCI functions, by function.
#[derive(Default)]
struct Links {
    consumers: Vec<PciAddress>,
    suppliers: Vec<PciAddress>,
}

/// Every PCI-to-PCI device link from one listing of the devlink directory
/// (`pci:0000:01:00.0--pci:0000:01:00.1`); `None` when the kernel has no such
/// directory, and each device's own `consumer:`/`supplier:` links are listed.
fn read_devlinks(root: &HostRoot) -> Option<HashMap<PciAddress, Links>> {
    let dir = DEVLINKS
        .iter()
        .find_map(|path| open_dir(&root.path(path)).ok())?;
    let mut links: HashMap<PciAddress, Links> = HashMap::new();
    for name in entries(dir.as_fd()) {
        let Some((supplier, consumer)) = name.split_once("--") else {
            continue;
        };
        let (Some(supplier), Some(consumer)) = (
            supplier
                .strip_prefix("pci:")
                .and_then(PciAddress::from_sysfs_name),
            consumer
                .strip_prefix("pci:")
                .and_then(PciAddress::from_sysfs_name),
        ) else {
            continue;
        };
        links.entry(supplier).or_default().consumers.push(consumer);
        links.entry(consumer).or_default().suppliers.push(supplier);
    }
    Some(links)
}

/// A device's links from its own directory listing.
fn list_links(dev: BorrowedFd) -> Links {
    let mut links = Links::default();
    if let Ok(dir) = open_dir_at(dev, ".") {
        for name in entries(dir.as_fd()) {
            if let Some(addr) = name.strip_prefix("consumer:pci:") {
                links.consumers.extend(PciAddress::from_sysfs_name(addr));
            } else if let Some(addr) = name.strip_prefix("supplier:pci:") {
                links.suppliers.extend(PciAddress::from_sysfs_name(addr));
            }
        }
    }
    links
}

/// What one reader keeps between devices: the module of each driver seen.
type ModuleCache = HashMap<String, Option<ModuleName>>;

/// Reads one function from its directory under `devices` (the
/// /sys/bus/pci/devices descriptor). `None` when it vanished while being read.
/// `links` are the host's device links, or `None` to list the device's own.
/// `how`: how its `driver_override` is read. Linux serves it under the device
/// lock that a pending unbind holds, so reading it would block until the
/// holder lets go (found by tests/vm 75-safety-gpu: `vfioctl show` hung).
fn read_device(
    devices: BorrowedFd,
    address: PciAddress,
    links: Option<&HashMap<PciAddress, Links>>,
    modules: &mut ModuleCache,
    how: OverrideRead,
) -> Option<PciDevice> {
    let name = address.to_string();
    let fd = open_path_at(devices, &name).ok()?;
    let dir = fd.as_fd();
    let vendor = read_hex(dir, "vendor")?;
    let device = read_hex(dir, "device")?;
    let class = read_hex(dir, "class")?;
    let config = read_config_header(dir);
    // A VF's Vendor and Device ID registers read all ones by the SR-IOV
    // spec (the kernel takes its IDs from the PF); its class register does
    // not (found by tests/vm 87-sriov-boot: every VF looked dead).
    let physfn = link_basename(dir, "physfn");
    let config_dead = config.is_some_and(|c| {
        let probe = if physfn.is_some() {
            &c[0x08..0x0c]
        } else {
            &c[0x00..0x02]
        };
        probe.iter().all(|&b| b == 0xff)
    });

    let ids = DeviceIds {
        vendor: VendorId(vendor as u16),
        device: DeviceId(device as u16),
        subsystem_vendor: VendorId(read_hex(dir, "subsystem_vendor").unwrap_or(0) as u16),
        subsystem_device: DeviceId(read_hex(dir, "subsystem_device").unwrap_or(0) as u16),
    };
    // The revision register is in the config header already read; the
    // `revision` attribute (the value cached at enumeration) only matters when
    // config space cannot be read or reads all ones.
    let revision = match config {
        Some(c) if !config_dead => c[0x08],
        _ => read_hex(dir, "revision")
            .map(|r| r as u8)
            .or(config.map(|c| c[0x08]))
            .unwrap_or(0),
    };

    let driver_name = link_basename(dir, "driver");
    let driver_module = driver_name.as_ref().and_then(|name| {
        modules
            .entry(name.clone())
            .or_insert_with(|| link_basename(dir, "driver/module").map(ModuleName::new))
            .clone()
    });
    let (text, device_locked) = match how {
        OverrideRead::Plain => (read_attr(dir, "driver_override"), false),
        OverrideRead::Skip => (None, false),
        OverrideRead::Guarded => match read_guarded(dir, "driver_override") {
            Ok(text) => (text, false),
            Err(Blocked) => (None, true),
        },
    };
    let driver_override = text
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != "(null)")
        .map(DriverName::new);

    let sriov = match physfn {
        Some(pf) => match PciAddress::from_sysfs_name(&pf) {
            Some(physfn) => SriovRole::Vf { physfn },
            None => SriovRole::None,
        },
        // A present `sriov_totalvfs` makes a PF, even when it cannot be read.
        None => match open_attr(dir, "sriov_totalvfs") {
            Err(Errno::NOENT) => SriovRole::None,
            total => SriovRole::Pf {
                total_vfs: total
                    .ok()
                    .and_then(read_open)
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0),
                num_vfs: read_u32(dir, "sriov_numvfs").unwrap_or(0),
                vfs: read_virtfns(dir),
            },
        },
    };

    // bus/pci/devices/X -> ../../../devices/pci0000:00/PARENT/X
    let parent = link_target(devices, &name).and_then(|target| {
        let mut components = target.rsplit(|&b| b == b'/');
        components.next();
        PciAddress::from_sysfs_name(std::str::from_utf8(components.next()?).ok()?)
    });
    let own_links;
    let links = match links {
        Some(all) => all.get(&address),
        None => {
            own_links = list_links(dir);
            Some(&own_links)
        }
    };
    let mut consumers = links.map(|l| l.consumers.clone()).unwrap_or_default();
    let mut suppliers = links.map(|l| l.suppliers.clone()).unwrap_or_default();
    consumers.sort();
    suppliers.sort();
    // Only VGA-class functions have `boot_vga` (the kernel hides it elsewhere).
    let vga = class >> 8 == 0x0300 || class >> 8 == 0x0001;

    Some(PciDevice {
        address,
        ids,
        class: ClassCode(class),
        revision,
        header_type: config.map(|c| HeaderType::from_config_byte(c[0x0e])),
        config_dead,
        driver: driver_name.map(DriverName::new),
        driver_module,
        driver_override,
        iommu_group: link_basename(dir, "iommu_group").and_then(|n| n.parse().ok()),
        sriov,
        numa_node: read_attr(dir, "numa_node").and_then(|s| s.trim().parse::<u32>().ok()),
        boot_vga: vga && read_attr(dir, "boot_vga").is_some_and(|s| s.trim() == "1"),
        parent,
        consumers,
        suppliers,
        power_state: read_attr(dir, "power_state").map(|s| s.trim().to_string()),
        device_locked,
    })
}

/// How `read_device` reads a device's `driver_override`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OverrideRead {
    Plain,
    /// The change record says its unbind is pending: not read (vfioctl's
    /// rollback put it back).
    Skip,
    /// An unfinished change (its intent in the record) touched it, and may
    /// have left an unbind pending: read by `read_guarded`.
    Guarded,
}

/// A read that did not return by `GUARDED_WAIT`.
#[derive(Debug)]
struct Blocked;

/// How long `read_guarded` waits.
const GUARDED_WAIT_MS: u16 = 300;

/// Reads an attribute that may block in the kernel (`driver_override` behind
/// a pending unbind) in a short-lived child process, waiting up to
/// `GUARDED_WAIT_MS`; a child still blocked is left to finish when the
/// kernel lets it (as `host::kernel`'s blocking writes are).
fn read_guarded(dir: BorrowedFd, name: &str) -> Result<Option<String>, Blocked> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::unistd::{fork, pipe, ForkResult};
    use std::os::fd::AsRawFd;
    // Opening does not take the device lock; reading does.
    let Ok(file) = open_attr(dir, name) else {
        return Ok(None);
    };
    let Ok((rx, tx)) = pipe() else {
        return Ok(read_open(file));
    };
    // SAFETY: the child makes only async-signal-safe calls (read, write,
    // _exit) on descriptors opened before the fork, then exits.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => unsafe {
            // Hold nothing of the parent's while blocked (its lock, the
            // pipes a caller reads its output from): the attribute as fd 3,
            // the pipe as fd 4, /dev/null as 0-2, nothing else.
            let from = libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10);
            let to = libc::fcntl(tx.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if from < 0 || to < 0 || null < 0 {
                libc::_exit(1);
            }
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            libc::dup2(from, 3);
            libc::dup2(to, 4);
            libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32);
            let mut buf = [0u8; 256];
            let n = libc::read(3, buf.as_mut_ptr().cast(), buf.len());
            let code = if n >= 0 && libc::write(4, buf.as_ptr().cast(), n as usize) == n {
                0
            } else {
                1
            };
            libc::_exit(code)
        },
        Ok(ForkResult::Parent { child }) => {
            drop(tx);
            let mut fds = [PollFd::new(rx.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(GUARDED_WAIT_MS)) {
                Ok(0) => return Err(Blocked),
                Ok(_) => {}
                Err(_) => return Ok(None),
            }
            let mut text = String::new();
            let read = fs::File::from(rx).read_to_string(&mut text);
            let _ = nix::sys::wait::waitpid(child, None);
            Ok(read.ok().filter(|n| *n > 0).map(|_| text))
        }
        Err(_) => Ok(read_open(file)),
    }
}

/// A PF's VFs in index order: `virtfn0`, `virtfn1`, ... until one is missing.
fn read_virtfns(dir: BorrowedFd) -> Vec<PciAddress> {
    let mut vfs = Vec::new();
    for index in 0.. {
        let Some(target) = link_target(dir, &format!("virtfn{index}")) else {
            break;
        };
        vfs.extend(basename(&target).and_then(|n| PciAddress::from_sysfs_name(&n)));
    }
    vfs
}

/// Runs `read` over `items` on up to one thread per core, each with its own
/// state; results in no particular order.
pub(super) fn read_all<T, R, S>(
    items: &[T],
    read: impl Fn(&T, &mut S) -> Option<R> + Sync,
) -> Vec<R>
where
    T: Sync,
    R: Send,
    S: Default,
{
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len() / PARALLEL_MIN + 1);
    if threads <= 1 {
        let mut state = S::default();
        return items.iter().filter_map(|i| read(i, &mut state)).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut state = S::default();
        let mut out = Vec::new();
        loop {
            let start = next.fetch_add(CHUNK, Ordering::Relaxed);
            if start >= items.len() {
                return out;
            }
            let end = (start + CHUNK).min(items.len());
            out.extend(items[start..end].iter().filter_map(|i| read(i, &mut state)));
        }
    };
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut all = work();
        for helper in helpers {
            all.extend(helper.join().expect("a sysfs reader panicked"));
        }
        all
    })
}

fn cannot_list(path: PathBuf) -> impl FnOnce(io::Error) -> HostIoError {
    move |source| HostIoError {
        action: "cannot list",
        path,
        source,
    }
}

/// Reads one group under the groups descriptor: its members (`N/devices`)
/// and its domain type (`N/type`).
fn read_group(groups: BorrowedFd, number: u32) -> Result<IommuGroup, (String, io::Error)> {
    let members_dir = format!("{number}/devices");
    let mut pci_members = Vec::new();
    let mut other_members = Vec::new();
    match open_dir_at(groups, &members_dir) {
        Ok(dir) => {
            for member in entries(dir.as_fd()) {
                match PciAddress::from_sysfs_name(&member) {
                    Some(addr) => pci_members.push(addr),
                    None => other_members.push(OtherMember {
                        driver: link_basename(dir.as_fd(), &format!("{member}/driver"))
                            .map(DriverName::new),
                        name: member,
                    }),
                }
            }
        }
        Err(Errno::NOENT) => {}
        Err(e) => return Err((members_dir, e.into())),
    }
    pci_members.sort();
    other_members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(IommuGroup {
        number,
        domain_type: read_attr(groups, &format!("{number}/type")).map(|s| s.trim().to_string()),
        pci_members,
        other_members,
    })
}

fn read_groups(root: &HostRoot) -> Result<BTreeMap<u32, IommuGroup>, HostIoError> {
    let groups_path = root.path(IOMMU_GROUPS);
    let groups_dir = match open_dir(&groups_path) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(cannot_list(groups_path)(e)),
    };
    let groups_fd = groups_dir.as_fd();
    let numbers: Vec<u32> = entries(groups_fd)
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    let read = read_all(&numbers, |&number, (): &mut ()| {
        Some(read_group(groups_fd, number))
    });
    let mut groups = BTreeMap::new();
    for group in read {
        let group = group.map_err(|(rel, e)| cannot_list(groups_path.join(rel))(e))?;
        groups.insert(group.number, group);
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
    let devices = open_dir(&root.path(PCI_DEVICES)).ok()?;
    let how = Unsettled::read(root).how(&address);
    read_device(devices.as_fd(), address, None, &mut HashMap::new(), how)
}

/// A PF's `sriov_drivers_autoprobe`: whether the VFs it creates are probed
/// by a driver on their own. `None` when the kernel has no such file or it
/// cannot be read.
pub fn read_sriov_autoprobe(root: &HostRoot, pf: PciAddress) -> Option<bool> {
    let text = fs::read_to_string(root.path(format!("{PCI_DEVICES}/{pf}/sriov_drivers_autoprobe")))
        .ok()?;
    match text.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// A PF's `sriov_offset` and `sriov_stride` (where its VFs appear), when
/// the kernel shows them.
pub fn read_sriov_layout(root: &HostRoot, pf: PciAddress) -> Option<(u16, u16)> {
    let read = |name: &str| -> Option<u16> {
        fs::read_to_string(root.path(format!("{PCI_DEVICES}/{pf}/{name}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("sriov_offset")?, read("sriov_stride")?))
}

/// What the change record says about devices whose `driver_override` may
/// block: unbinds it records as pending, and the devices of an unfinished
/// change of this boot. A record vfioctl cannot read is reported by the
/// commands that use it.
struct Unsettled {
    pending: std::collections::BTreeSet<PciAddress>,
    guarded: std::collections::BTreeSet<PciAddress>,
}

impl Unsettled {
    fn read(root: &HostRoot) -> Unsettled {
        let record = super::state::read_record(root).unwrap_or_default();
        let guarded = record
            .intent
            .as_ref()
            .filter(|i| i.state(root) != super::state::IntentState::OtherBoot)
            .map(|i| i.addresses().into_iter().collect())
            .unwrap_or_default();
        Unsettled {
            pending: record.pending_devices(),
            guarded,
        }
    }

    /// A device of an unfinished change is read guarded even when its
    /// unbind is recorded pending (a reset of it may wait behind that
    /// unbind): whether the kernel holds its lock is what `check` and
    /// `recover` must know.
    fn how(&self, address: &PciAddress) -> OverrideRead {
        if self.guarded.contains(address) {
            OverrideRead::Guarded
        } else if self.pending.contains(address) {
            OverrideRead::Skip
        } else {
            OverrideRead::Plain
        }
    }
}

/// Opens /sys/bus/pci/devices; a missing one is `NoPciSysfs`.
pub(super) fn open_devices(root: &HostRoot) -> Result<OwnedFd, InventoryError> {
    let devices_path = root.path(PCI_DEVICES);
    match open_dir(&devices_path) {
        Ok(dir) => Ok(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(InventoryError::NoPciSysfs(devices_path))
        }
        Err(e) => Err(cannot_list(devices_path)(e).into()),
    }
}

/// What every inventory carries besides its devices and groups: the IOMMU
/// units, how many groups exist, the registered drivers, names and release.
fn complete(
    root: &HostRoot,
    devices: Vec<PciDevice>,
    groups: BTreeMap<u32, IommuGroup>,
    group_count: usize,
    names: Names,
) -> Result<Inventory, InventoryError> {
    let mut units = list_dir(&root.path(IOMMU_CLASS))?;
    units.sort();
    let drivers = list_dir(&root.path(PCI_DRIVERS))?
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
            groups: group_count,
        },
        devices,
        groups,
        kernel_release: root.kernel_release(),
        drivers,
        names,
    })
}

/// Reads what changing or showing `seeds` needs, without walking the host:
/// each seed, the members of its IOMMU group (`/sys/kernel/iommu_groups/N/
/// devices`), its companions (device links, and the other functions of a
/// display adapter's slot), and the same for each of those; plus a seed VF's
/// PF and a seed PF's VFs. The IOMMU state, drivers and names are as in
/// `read_inventory`. Seeds that do not exist are simply absent, so selecting
/// them fails as it would on the whole host.
pub fn read_devices(
    root: &HostRoot,
    seeds: &[PciAddress],
    names: Names,
) -> Result<Inventory, InventoryError> {
    let devices_dir = open_devices(root)?;
    let groups_path = root.path(IOMMU_GROUPS);
    let groups_dir = match open_dir(&groups_path) {
        Ok(dir) => Some(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(cannot_list(groups_path)(e).into()),
    };
    let mut modules = ModuleCache::new();
    let unsettled = Unsettled::read(root);
    let mut devices: BTreeMap<PciAddress, PciDevice> = BTreeMap::new();
    let mut groups = BTreeMap::new();
    // (function, whether its group and companions are read too)
    let mut queue: Vec<(PciAddress, bool)> = seeds.iter().map(|a| (*a, true)).collect();
    let mut family = Vec::new();
    loop {
        if queue.is_empty() {
            queue.extend(family.drain(..).map(|a| (a, false)));
        }
        let Some((address, expand)) = queue.pop() else {
            break;
        };
        if devices.contains_key(&address) {
            continue;
        }
        let Some(dev) = read_device(
            devices_dir.as_fd(),
            address,
            None,
            &mut modules,
            unsettled.how(&address),
        ) else {
            continue;
        };
        if expand {
            if let (Some(number), Some(dir)) = (dev.iommu_group, &groups_dir) {
                if let std::collections::btree_map::Entry::Vacant(slot) = groups.entry(number) {
                    let group = read_group(dir.as_fd(), number)
                        .map_err(|(rel, e)| cannot_list(groups_path.join(rel))(e))?;
                    queue.extend(group.pci_members.iter().map(|a| (*a, true)));
                    slot.insert(group);
                }
            }
            queue.extend(
                dev.consumers
                    .iter()
                    .chain(&dev.suppliers)
                    .map(|a| (*a, true)),
            );
            if dev.class.is_display() {
                queue.extend(
                    (0..8)
                        .map(|f| PciAddress {
                            function: f,
                            ..address
                        })
                        .map(|a| (a, true)),
                );
            }
        }
        if seeds.contains(&address) {
            match &dev.sriov {
                SriovRole::Vf { physfn } => family.push(*physfn),
                SriovRole::Pf { vfs, .. } => family.extend(vfs),
                SriovRole::None => {}
            }
        }
        devices.insert(address, dev);
    }
    let group_count = groups_dir
        .as_ref()
        .map_or(0, |dir| count_groups(dir.as_fd()));
    complete(
        root,
        devices.into_values().collect(),
        groups,
        group_count,
        names,
    )
}

/// How many groups the groups directory holds. Each group is a
/// subdirectory, and a directory's link count is 2 plus its subdirectories
/// (sysfs keeps it exact), so one fstat answers; a link count that does not
/// follow that rule (1 on filesystems that stop counting) means a listing.
fn count_groups(dir: BorrowedFd) -> usize {
    match rustix::fs::fstat(dir) {
        Ok(stat) if stat.st_nlink >= 2 => (stat.st_nlink - 2) as usize,
        _ => entries(dir)
            .iter()
            .filter(|n| n.parse::<u32>().is_ok())
            .count(),
    }
}

/// Reads the inventory `selectors` need: only the named functions and their
/// neighbourhood (`read_devices`) when every selector is an address, else
/// the whole host.
pub fn read_selected(
    root: &HostRoot,
    selectors: &[Selector],
    names: Names,
) -> Result<Inventory, InventoryError> {
    let addresses: Option<Vec<PciAddress>> = selectors
        .iter()
        .map(|s| match s.matcher {
            Matcher::Address(address) => Some(address),
            _ => None,
        })
        .collect();
    match addresses {
        Some(addresses) if !addresses.is_empty() => read_devices(root, &addresses, names),
        _ => read_inventory(root, names),
    }
}

/// Errors that stop the inventory from being read at all.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("no PCI sysfs at {0} (is sysfs mounted, and is --root right?)")]
    NoPciSysfs(PathBuf),
    #[error(transparent)]
    Io(#[from] HostIoError),
}

/// Lists a directory's entry names; a missing directory is empty.
fn list_dir(path: &Path) -> Result<Vec<String>, HostIoError> {
    match open_dir(path) {
        Ok(dir) => Ok(entries(dir.as_fd())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(cannot_list(path.to_path_buf())(e)),
    }
}

/// Reads every PCI function, IOMMU group and the IOMMU state under `root`.
pub fn read_inventory(root: &HostRoot, names: Names) -> Result<Inventory, InventoryError> {
    let devices_dir = open_devices(root)?;
    let devices_fd = devices_dir.as_fd();
    let addresses: Vec<PciAddress> = entries(devices_fd)
        .iter()
        .filter_map(|n| PciAddress::from_sysfs_name(n))
        .collect();
    let links = read_devlinks(root);
    let unsettled = Unsettled::read(root);
    let mut devices = read_all(&addresses, |&addr, modules: &mut ModuleCache| {
        read_device(
            devices_fd,
            addr,
            links.as_ref(),
            modules,
            unsettled.how(&addr),
        )
    });
    devices.sort_by_key(|d| d.address);
    let groups = read_groups(root)?;
    let group_count = groups.len();
    complete(root, devices, groups, group_count, names)
}
