//! A fake host root faithful to the kernel's sysfs layout, for tests.
//!
//! Devices live under `sys/devices/pciDDDD:BB/.../DDDD:BB:DD.F` in their bridge's
//! directory; `sys/bus/pci/devices/*`, `driver`, `iommu_group`, `physfn`,
//! `virtfnN` and device links are relative symlinks, as the kernel makes them,
//! so every path resolves inside the temp dir.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

pub struct FakeHost {
    /// Owned (removed on drop) unless attached to a tree another process made.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    /// Device directories (relative to the root), by address.
    devices: BTreeMap<String, PathBuf>,
}

/// One function to add. Built with the `endpoint`/`bridge` constructors and setters.
#[derive(Clone, Debug)]
pub struct Dev {
    pub address: String,
    pub parent: Option<String>,
    pub vendor: u16,
    pub device: u16,
    pub subsystem: (u16, u16),
    pub class: u32,
    pub revision: u8,
    pub header_type: u8,
    pub driver: Option<(String, Option<String>)>,
    pub group: Option<u32>,
    pub numa: i32,
    pub sriov_total: Option<u32>,
    /// `sriov_offset` and `sriov_stride` of a PF (default 2 and 1).
    pub sriov_layout: (u16, u16),
    pub physfn: Option<String>,
    pub boot_vga: Option<bool>,
    pub suppliers: Vec<String>,
    pub override_: Option<String>,
    pub dead_config: bool,
    /// (current speed, current width, max speed, max width); `None`: a
    /// conventional PCI function (no link attributes).
    pub link: Option<(String, u32, String, u32)>,
    /// AER counters (aer_dev_*), all 0; root ports also get
    /// aer_rootport_total_err_* and the AER service (pcie002).
    pub aer: bool,
    /// `reset_method`'s text; `None`: neither reset_method nor reset.
    pub reset_method: Option<String>,
}

/// A Gen4 x16 link trained as it should.
pub fn gen4_x16() -> Option<(String, u32, String, u32)> {
    Some((
        "16.0 GT/s PCIe".to_string(),
        16,
        "16.0 GT/s PCIe".to_string(),
        16,
    ))
}

impl Dev {
    pub fn endpoint(address: &str, vendor: u16, device: u16, class: u32) -> Dev {
        Dev {
            address: address.to_string(),
            parent: None,
            vendor,
            device,
            subsystem: (vendor, device),
            class,
            revision: 0xa1,
            header_type: 0,
            driver: None,
            group: None,
            numa: -1,
            sriov_total: None,
            sriov_layout: (2, 1),
            physfn: None,
            boot_vga: None,
            suppliers: vec![],
            override_: None,
            dead_config: false,
            link: gen4_x16(),
            aer: true,
            reset_method: Some("flr bus".to_string()),
        }
    }

    /// A PCIe port or PCI bridge (type-1 header), bound to pcieport.
    pub fn bridge(address: &str, vendor: u16, device: u16) -> Dev {
        let mut dev = Dev::endpoint(address, vendor, device, 0x060400);
        dev.header_type = 0x01;
        dev.driver = Some(("pcieport".into(), None));
        dev.reset_method = Some("pm bus".to_string());
        dev
    }

    pub fn parent(mut self, parent: &str) -> Dev {
        self.parent = Some(parent.to_string());
        self
    }
    pub fn subsystem(mut self, vendor: u16, device: u16) -> Dev {
        self.subsystem = (vendor, device);
        self
    }
    pub fn revision(mut self, revision: u8) -> Dev {
        self.revision = revision;
        self
    }
    /// Bound to `driver`, provided by `module` (None: built in).
    pub fn driver(mut self, driver: &str, module: Option<&str>) -> Dev {
        self.driver = Some((driver.to_string(), module.map(str::to_string)));
        self
    }
    pub fn unbound(mut self) -> Dev {
        self.driver = None;
        self
    }
    pub fn group(mut self, group: u32) -> Dev {
        self.group = Some(group);
        self
    }
    pub fn numa(mut self, node: i32) -> Dev {
        self.numa = node;
        self
    }
    pub fn sriov(mut self, total_vfs: u32) -> Dev {
        self.sriov_total = Some(total_vfs);
        self
    }
    /// Where the PF's VFs appear: its SR-IOV First VF Offset and VF Stride.
    pub fn sriov_layout(mut self, offset: u16, stride: u16) -> Dev {
        self.sriov_layout = (offset, stride);
        self
    }
    /// A virtual function of `pf` (which must already be added).
    pub fn vf_of(mut self, pf: &str) -> Dev {
        self.physfn = Some(pf.to_string());
        self
    }
    pub fn boot_vga(mut self, on: bool) -> Dev {
        self.boot_vga = Some(on);
        self
    }
    /// The kernel linked this function as a consumer of `supplier` (GPU audio).
    pub fn supplier(mut self, supplier: &str) -> Dev {
        self.suppliers.push(supplier.to_string());
        self
    }
    pub fn driver_override(mut self, driver: &str) -> Dev {
        self.override_ = Some(driver.to_string());
        self
    }
    /// Config space reads all ones (device gone or in D3cold).
    pub fn dead_config(mut self) -> Dev {
        self.dead_config = true;
        self
    }
    /// Link attributes as the kernel prints them.
    pub fn link(mut self, speed: &str, width: u32, max_speed: &str, max_width: u32) -> Dev {
        self.link = Some((speed.into(), width, max_speed.into(), max_width));
        self
    }
    /// A conventional PCI function: no link attributes.
    pub fn no_link(mut self) -> Dev {
        self.link = None;
        self
    }
    /// No AER capability (no aer_dev_* files; no AER service on a root port).
    pub fn no_aer(mut self) -> Dev {
        self.aer = false;
        self
    }
    /// `reset_method`'s text, or `None` for a device the kernel cannot reset.
    pub fn reset_method(mut self, methods: Option<&str>) -> Dev {
        self.reset_method = methods.map(str::to_string);
        self
    }
}

/// An AER counter file as the kernel prints it: the named types, then the total.
pub fn aer_file(kind: &str, counts: &[(&str, u64)]) -> String {
    let total: u64 = counts.iter().map(|(_, c)| c).sum();
    let names: &[&str] = match kind {
        "COR" => &[
            "RxErr",
            "BadTLP",
            "BadDLLP",
            "Rollover",
            "Timeout",
            "NonFatalErr",
            "CorrIntErr",
            "HeaderOF",
        ],
        _ => &[
            "Undefined",
            "DLP",
            "SDES",
            "TLP",
            "FCP",
            "CmpltTO",
            "CmpltAbrt",
            "UnxCmplt",
            "RxOF",
            "MalfTLP",
            "ECRC",
            "UnsupReq",
            "ACSViol",
            "UncorrIntErr",
            "BlockedTLP",
            "AtomicOpBlocked",
            "TLPBlockedErr",
            "PoisonTLPBlocked",
        ],
    };
    let mut text = String::new();
    for name in names {
        let count = counts
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, c)| *c);
        text.push_str(&format!("{name} {count}\n"));
    }
    text.push_str(&format!("TOTAL_ERR_{kind} {total}\n"));
    text
}

/// The relative path from directory `from` to `to` (both relative to the root).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &to[common..] {
        rel.push(c);
    }
    rel
}

fn modalias(d: &Dev) -> String {
    format!(
        "pci:v{:08X}d{:08X}sv{:08X}sd{:08X}bc{:02X}sc{:02X}i{:02X}",
        d.vendor,
        d.device,
        d.subsystem.0,
        d.subsystem.1,
        d.class >> 16,
        (d.class >> 8) & 0xff,
        d.class & 0xff
    )
}

fn config_space(d: &Dev) -> Vec<u8> {
    if d.dead_config {
        return vec![0xff; 256];
    }
    let mut c = vec![0u8; 256];
    c[0..2].copy_from_slice(&d.vendor.to_le_bytes());
    c[2..4].copy_from_slice(&d.device.to_le_bytes());
    c[0x08] = d.revision;
    c[0x09] = d.class as u8;
    c[0x0a] = (d.class >> 8) as u8;
    c[0x0b] = (d.class >> 16) as u8;
    c[0x0e] = d.header_type;
    if d.header_type == 0 {
        c[0x2c..0x2e].copy_from_slice(&d.subsystem.0.to_le_bytes());
        c[0x2e..0x30].copy_from_slice(&d.subsystem.1.to_le_bytes());
    }
    if let Some(bar) = bar0(d) {
        c[0x10..0x14].copy_from_slice(&bar.to_le_bytes());
    }
    c
}

/// A 32-bit memory BAR0 the firmware assigned an endpoint (a VF's BARs read
/// 0: they are set in its PF).
fn bar0(d: &Dev) -> Option<u32> {
    if d.header_type != 0 || d.physfn.is_some() {
        return None;
    }
    let (_, rest) = d.address.split_once(':')?;
    let bus = u32::from_str_radix(&rest[..2], 16).ok()?;
    let slot = u32::from_str_radix(&rest[3..5], 16).ok()?;
    let function = u32::from_str_radix(&rest[6..7], 16).ok()?;
    Some(0x8000_0000 | (bus << 20) | (slot << 15) | (function << 12))
}

impl FakeHost {
    /// An empty host: PCI bus, no devices, no IOMMU, kernel 6.1.0-fake.
    pub fn new() -> FakeHost {
        let dir = tempfile::tempdir().expect("temp dir");
        let host = FakeHost {
            root: dir.path().to_path_buf(),
            dir: Some(dir),
            devices: BTreeMap::new(),
        };
        for dir in [
            "sys/bus/pci/devices",
            "sys/bus/pci/drivers",
            "sys/class/iommu",
            "sys/module",
            "sys/devices/virtual/devlink",
            "sys/class/devlink",
            "proc/sys/kernel",
            "dev",
            "etc",
            "run",
        ] {
            fs::create_dir_all(host.root().join(dir)).unwrap();
        }
        host.write("sys/bus/pci/drivers_probe", "");
        host.write("sys/bus/pci/rescan", "");
        host.write("proc/sys/kernel/osrelease", "6.1.0-fake\n");
        host
    }

    /// An empty host with the IOMMU on (one unit, dmar0) and vfio-pci loaded.
    pub fn with_vfio() -> FakeHost {
        let mut host = FakeHost::new();
        host.iommu_unit("dmar0");
        host.register_driver("vfio-pci", Some("vfio_pci"));
        host
    }

    /// A tree made by another process (a test's parent), used in place and
    /// never removed by this handle; functions are found by their bus links.
    pub fn attach(root: &Path) -> FakeHost {
        FakeHost {
            dir: None,
            root: root.to_path_buf(),
            devices: BTreeMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Keeps the tree on disk after the builder is dropped (for benchmarks).
    pub fn keep(self) -> PathBuf {
        self.dir.expect("an owned tree").keep()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// Writes a file (creating directories) relative to the root.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    /// Creates `link` (relative to the root) pointing at `target` (relative to the root),
    /// as a relative symlink.
    pub fn link(&self, link: &Path, target: &Path) {
        let abs = self.root().join(link);
        fs::create_dir_all(abs.parent().unwrap()).unwrap();
        let _ = fs::remove_file(&abs);
        symlink(relative(link.parent().unwrap(), target), abs).unwrap();
    }

    /// A mediated device (a vGPU) created on `addr`, as the kernel shows
    /// one: a directory UUID in the parent's, its `mdev_type` link into the
    /// parent's `mdev_supported_types/TYPE`, and `/sys/bus/mdev/devices/UUID`.
    pub fn mdev(&self, addr: &str, uuid: &str, mdev_type: &str) -> &Self {
        let parent = self.rel_dir(addr);
        let dir = parent.join(uuid);
        let ty = parent.join("mdev_supported_types").join(mdev_type);
        fs::create_dir_all(self.root().join(&dir)).unwrap();
        fs::create_dir_all(self.root().join(&ty)).unwrap();
        self.link(&dir.join("mdev_type"), &ty);
        self.link(&Path::new("sys/bus/mdev/devices").join(uuid), &dir);
        self
    }

    /// Turns the IOMMU on: one hardware unit (e.g. `dmar0`).
    pub fn iommu_unit(&mut self, name: &str) -> &mut Self {
        let target = PathBuf::from("sys/devices/virtual/iommu").join(name);
        fs::create_dir_all(self.root().join(&target)).unwrap();
        self.link(&Path::new("sys/class/iommu").join(name), &target);
        fs::create_dir_all(self.path("sys/kernel/iommu_groups")).unwrap();
        self
    }

    pub fn pci_ids(&mut self, text: &str) -> &mut Self {
        self.write("usr/share/misc/pci.ids", text);
        self
    }

    pub fn device_dir(&self, address: &str) -> PathBuf {
        self.root().join(self.rel_dir(address))
    }

    /// A function's directory relative to the root: from the builder, or
    /// (for a VF the simulated kernel created) from its bus link.
    fn rel_dir(&self, address: &str) -> PathBuf {
        if let Some(dir) = self.devices.get(address) {
            return dir.clone();
        }
        let bus = Path::new("sys/bus/pci/devices");
        let target = fs::read_link(self.root().join(bus).join(address))
            .unwrap_or_else(|_| panic!("{address} is not in the fake tree"));
        bus.join(target)
            .components()
            .fold(PathBuf::new(), |mut acc, c| {
                if c == Component::ParentDir {
                    acc.pop();
                } else {
                    acc.push(c);
                }
                acc
            })
    }

    /// Endpoints `(address, vendor, device, class, driver)`, each bound to
    /// its driver (from the module of the same name) and alone in an IOMMU
    /// group, numbered in order on from the highest group the tree has (from
    /// 1 on a host without groups).
    pub fn add_bound_endpoints(&mut self, devices: &[(&str, u16, u16, u32, &str)]) -> &mut Self {
        let first = fs::read_dir(self.path("sys/kernel/iommu_groups"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .max()
            .map_or(1, |highest| highest + 1);
        for (group, &(addr, vendor, device, class, driver)) in (first..).zip(devices) {
            self.add(
                Dev::endpoint(addr, vendor, device, class)
                    .driver(driver, Some(driver))
                    .group(group),
            );
        }
        self
    }

    /// Adds one function with all its attributes and links.
    pub fn add(&mut self, d: Dev) -> &mut Self {
        let dir = match &d.parent {
            Some(parent) => self.devices[parent].join(&d.address),
            None => {
                let (domain, rest) = d.address.split_once(':').unwrap();
                let bus = &rest[..2];
                PathBuf::from(format!("sys/devices/pci{domain}:{bus}")).join(&d.address)
            }
        };
        self.devices.insert(d.address.clone(), dir.clone());
        self.write_function(&d, &dir);
        self
    }

    /// Adds a VF the way the kernel does when `sriov_numvfs` is written: in
    /// the PF's parent directory, linked as the PF's next `virtfnN`. It is
    /// found by its bus link afterwards (the builder's map is not changed).
    pub fn add_vf(&self, d: Dev) -> &Self {
        let pf = d.physfn.as_ref().expect("a VF names its PF");
        let dir = self.rel_dir(pf).parent().unwrap().join(&d.address);
        self.write_function(&d, &dir);
        self
    }

    /// Removes a function the simulated kernel created (a VF), with its
    /// bus, driver and IOMMU group links, as the kernel does on `sriov_numvfs` 0.
    pub fn remove_function(&self, addr: &str) -> &Self {
        let dir = self.rel_dir(addr);
        self.unbind(addr);
        if let Ok(target) = fs::read_link(self.root().join(&dir).join("iommu_group")) {
            let group = target.file_name().unwrap().to_string_lossy().into_owned();
            let group_dir = self.path(&format!("sys/kernel/iommu_groups/{group}"));
            let _ = fs::remove_file(group_dir.join("devices").join(addr));
            if fs::read_dir(group_dir.join("devices")).is_ok_and(|mut d| d.next().is_none()) {
                let _ = fs::remove_dir_all(&group_dir);
            }
        }
        let _ = fs::remove_file(self.path(&format!("sys/bus/pci/devices/{addr}")));
        fs::remove_dir_all(self.root().join(&dir)).unwrap();
        self
    }

    /// Writes one function's attributes and links at `dir`.
    fn write_function(&self, d: &Dev, dir: &Path) {
        let addr = &d.address;
        let rel = |name: &str| format!("{}/{name}", dir.display());
        self.write(&rel("vendor"), format!("0x{:04x}\n", d.vendor));
        self.write(&rel("device"), format!("0x{:04x}\n", d.device));
        self.write(
            &rel("subsystem_vendor"),
            format!("0x{:04x}\n", d.subsystem.0),
        );
        self.write(
            &rel("subsystem_device"),
            format!("0x{:04x}\n", d.subsystem.1),
        );
        self.write(&rel("class"), format!("0x{:06x}\n", d.class));
        self.write(&rel("revision"), format!("0x{:02x}\n", d.revision));
        self.write(&rel("config"), config_space(d));
        self.write(
            &rel("driver_override"),
            format!("{}\n", d.override_.as_deref().unwrap_or("(null)")),
        );
        self.write(&rel("numa_node"), format!("{}\n", d.numa));
        self.write(
            &rel("power_state"),
            if d.dead_config { "D3cold\n" } else { "D0\n" },
        );
        // vfio-pci enables a device only while a user (a VM) has it open.
        let idle = d.driver.as_ref().is_none_or(|(name, _)| name == "vfio-pci");
        self.write(&rel("enable"), if idle { "0\n" } else { "1\n" });
        self.write_health(d, dir);
        self.write(&rel("modalias"), format!("{}\n", modalias(d)));
        self.write(&rel("remove"), "");
        self.write(&rel("rescan"), "");
        if let Some(on) = d.boot_vga {
            self.write(&rel("boot_vga"), if on { "1\n" } else { "0\n" });
        }
        self.link(&dir.join("subsystem"), Path::new("sys/bus/pci"));
        self.link(&Path::new("sys/bus/pci/devices").join(addr), dir);

        if let Some(total) = d.sriov_total {
            self.write(&rel("sriov_totalvfs"), format!("{total}\n"));
            self.write(&rel("sriov_numvfs"), "0\n");
            self.write(&rel("sriov_drivers_autoprobe"), "1\n");
            self.write(&rel("sriov_offset"), format!("{}\n", d.sriov_layout.0));
            self.write(&rel("sriov_stride"), format!("{}\n", d.sriov_layout.1));
        }
        if let Some(pf) = &d.physfn {
            let pf_dir = self.rel_dir(pf);
            self.link(&dir.join("physfn"), &pf_dir);
            // The PF's next virtfn index and its enabled count follow the VFs added.
            let index = fs::read_dir(self.root().join(&pf_dir))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("virtfn")
                })
                .count();
            self.link(&pf_dir.join(format!("virtfn{index}")), dir);
            self.write(
                &format!("{}/sriov_numvfs", pf_dir.display()),
                format!("{}\n", index + 1),
            );
        }
        if let Some(group) = d.group {
            let group_dir = PathBuf::from(format!("sys/kernel/iommu_groups/{group}"));
            if !self.root().join(&group_dir).exists() {
                self.write(&format!("{}/type", group_dir.display()), "DMA\n");
            }
            self.link(&group_dir.join("devices").join(addr), dir);
            self.link(&dir.join("iommu_group"), &group_dir);
        }
        for supplier in &d.suppliers {
            let link_dir = PathBuf::from(format!(
                "sys/devices/virtual/devlink/pci:{supplier}--pci:{addr}"
            ));
            self.link(&link_dir.join("supplier"), &self.rel_dir(supplier));
            self.link(&link_dir.join("consumer"), dir);
            self.link(
                &Path::new("sys/class/devlink").join(link_dir.file_name().unwrap()),
                &link_dir,
            );
            self.link(&dir.join(format!("supplier:pci:{supplier}")), &link_dir);
            let supplier_dir = self.rel_dir(supplier);
            self.link(
                &supplier_dir.join(format!("consumer:pci:{addr}")),
                &link_dir,
            );
        }
        if let Some((driver, module)) = &d.driver {
            self.bind(addr, driver, module.as_deref());
        }
    }

    /// The health attributes: link, AER counters (and a root port's AER
    /// service), reset method, BAR0's resource.
    fn write_health(&self, d: &Dev, dir: &Path) {
        let rel = |name: &str| format!("{}/{name}", dir.display());
        if let Some((speed, width, max_speed, max_width)) = &d.link {
            let (speed, width) = if d.dead_config {
                ("Unknown", 63)
            } else {
                (speed.as_str(), *width)
            };
            self.write(&rel("current_link_speed"), format!("{speed}\n"));
            self.write(&rel("current_link_width"), format!("{width}\n"));
            self.write(&rel("max_link_speed"), format!("{max_speed}\n"));
            self.write(&rel("max_link_width"), format!("{max_width}\n"));
        }
        if d.aer {
            self.write(&rel("aer_dev_correctable"), aer_file("COR", &[]));
            self.write(&rel("aer_dev_nonfatal"), aer_file("NONFATAL", &[]));
            self.write(&rel("aer_dev_fatal"), aer_file("FATAL", &[]));
        }
        let root_port = d.header_type == 1 && d.parent.is_none();
        if root_port && d.aer {
            for severity in ["cor", "fatal", "nonfatal"] {
                self.write(&rel(&format!("aer_rootport_total_err_{severity}")), "0\n");
            }
            let service = dir.join(format!("{}:pcie002", d.address));
            self.write(&format!("{}/uevent", service.display()), "");
            self.link(
                &Path::new("sys/bus/pci_express/devices").join(format!("{}:pcie002", d.address)),
                &service,
            );
        }
        let methods = match (&d.reset_method, &d.physfn) {
            (Some(_), Some(_)) => Some("flr"),
            (m, _) => m.as_deref(),
        };
        if let Some(methods) = methods {
            self.write(&rel("reset_method"), format!("{methods}\n"));
            self.write(&rel("reset"), "");
        }
        let resource = match bar0(d) {
            Some(start) => format!(
                "0x{start:016x} 0x{:016x} 0x0000000000040200\n",
                start + 0xfff
            ),
            None => "0x0000000000000000 0x0000000000000000 0x0000000000000000\n".to_string(),
        };
        self.write(&rel("resource"), resource);
    }

    /// Sets a function's link as the kernel would show it now.
    pub fn set_link(&self, addr: &str, speed: &str, width: u32) -> &Self {
        let dir = self.rel_dir(addr);
        self.write(
            &format!("{}/current_link_speed", dir.display()),
            format!("{speed}\n"),
        );
        self.write(
            &format!("{}/current_link_width", dir.display()),
            format!("{width}\n"),
        );
        self
    }

    /// Sets a function's AER counters: (error type, count) per file.
    pub fn aer_counts(
        &self,
        addr: &str,
        cor: &[(&str, u64)],
        nonfatal: &[(&str, u64)],
        fatal: &[(&str, u64)],
    ) -> &Self {
        let dir = self.rel_dir(addr);
        self.write(
            &format!("{}/aer_dev_correctable", dir.display()),
            aer_file("COR", cor),
        );
        self.write(
            &format!("{}/aer_dev_nonfatal", dir.display()),
            aer_file("NONFATAL", nonfatal),
        );
        self.write(
            &format!("{}/aer_dev_fatal", dir.display()),
            aer_file("FATAL", fatal),
        );
        self
    }

    /// The boot id (/proc/sys/kernel/random/boot_id): a new one is a reboot.
    pub fn boot_id(&self, id: &str) -> &Self {
        self.write("proc/sys/kernel/random/boot_id", format!("{id}\n"));
        self
    }

    /// Registers a PCI driver (and its module) with no devices yet, like a
    /// loaded vfio-pci.
    pub fn register_driver(&self, driver: &str, module: Option<&str>) -> &Self {
        let driver_dir = PathBuf::from("sys/bus/pci/drivers").join(driver);
        if self.root().join(&driver_dir).exists() {
            return self;
        }
        for f in ["bind", "unbind", "new_id", "remove_id", "uevent"] {
            self.write(&format!("{}/{f}", driver_dir.display()), "");
        }
        if let Some(module) = module {
            let module_dir = PathBuf::from("sys/module").join(module);
            self.write(&format!("{}/initstate", module_dir.display()), "live\n");
            self.link(&driver_dir.join("module"), &module_dir);
            self.link(
                &module_dir.join("drivers").join(format!("pci:{driver}")),
                &driver_dir,
            );
        }
        self
    }

    /// Binds a device to a driver (registering the driver and its module if new).
    pub fn bind(&self, addr: &str, driver: &str, module: Option<&str>) -> &Self {
        self.register_driver(driver, module);
        let driver_dir = PathBuf::from("sys/bus/pci/drivers").join(driver);
        let dir = self.rel_dir(addr);
        self.link(&dir.join("driver"), &driver_dir);
        self.link(&driver_dir.join(addr), &dir);
        self
    }

    /// Leaves a device without a driver.
    pub fn unbind(&self, addr: &str) -> &Self {
        let dir = self.device_dir(addr);
        if let Ok(target) = fs::read_link(dir.join("driver")) {
            let driver = target.file_name().unwrap().to_string_lossy().into_owned();
            let _ = fs::remove_file(self.path(&format!("sys/bus/pci/drivers/{driver}/{addr}")));
            fs::remove_file(dir.join("driver")).unwrap();
        }
        self
    }

    fn append(&self, rel: &str, line: &str) {
        let path = self.path(rel);
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        text.push_str(line);
        text.push('\n');
        self.write(rel, text);
    }

    /// A block device on a PCI function (e.g. an NVMe namespace), registered
    /// under /sys/class/block and /sys/dev/block like the kernel does.
    pub fn block_device(&self, addr: &str, name: &str, major_minor: &str) -> &Self {
        let dir = self.devices[addr].join("nvme/nvme0").join(name);
        self.write(
            &format!("{}/dev", dir.display()),
            format!("{major_minor}\n"),
        );
        self.link(&Path::new("sys/class/block").join(name), &dir);
        self.link(&Path::new("sys/dev/block").join(major_minor), &dir);
        self
    }

    /// A virtual block device (device mapper) built on `slaves`.
    pub fn virtual_block_device(&self, name: &str, major_minor: &str, slaves: &[&str]) -> &Self {
        let dir = PathBuf::from("sys/devices/virtual/block").join(name);
        self.write(
            &format!("{}/dev", dir.display()),
            format!("{major_minor}\n"),
        );
        for slave in slaves {
            let target = fs::read_link(self.path(&format!("sys/class/block/{slave}"))).unwrap();
            let slave_dir = Path::new("sys/class/block").join(target);
            let slave_dir: PathBuf = slave_dir.components().fold(PathBuf::new(), |mut acc, c| {
                if c == Component::ParentDir {
                    acc.pop();
                } else {
                    acc.push(c);
                }
                acc
            });
            self.link(&dir.join("slaves").join(slave), &slave_dir);
        }
        self.link(&Path::new("sys/class/block").join(name), &dir);
        self.link(&Path::new("sys/dev/block").join(major_minor), &dir);
        self
    }

    /// A line of /proc/self/mountinfo for a filesystem on `major_minor`.
    pub fn mount(&self, major_minor: &str, mountpoint: &str, source: &str) -> &Self {
        let n =
            fs::read_to_string(self.path("proc/self/mountinfo")).map_or(0, |t| t.lines().count());
        self.append(
            "proc/self/mountinfo",
            &format!(
                "{} 1 {major_minor} / {mountpoint} rw,relatime shared:1 - ext4 {source} rw",
                20 + n
            ),
        );
        self
    }

    pub fn swap(&self, device: &str) -> &Self {
        if !self.path("proc/swaps").exists() {
            self.write("proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n");
        }
        self.append(
            "proc/swaps",
            &format!("{device}\tpartition\t8388604\t0\t-2"),
        );
        self
    }

    /// A network interface on a PCI function.
    pub fn netdev(&self, addr: &str, iface: &str) -> &Self {
        let dir = self.devices[addr].join("net").join(iface);
        self.write(&format!("{}/ifindex", dir.display()), "2\n");
        self.link(&Path::new("sys/class/net").join(iface), &dir);
        self
    }

    /// A virtual interface (bridge, bond) over `lowers`.
    pub fn virtual_netdev(&self, iface: &str, lowers: &[&str]) -> &Self {
        let dir = PathBuf::from("sys/devices/virtual/net").join(iface);
        self.write(&format!("{}/ifindex", dir.display()), "9\n");
        for lower in lowers {
            let target = fs::canonicalize(self.path(&format!("sys/class/net/{lower}"))).unwrap();
            let rel = target
                .strip_prefix(fs::canonicalize(self.root()).unwrap())
                .unwrap()
                .to_path_buf();
            self.link(&dir.join(format!("lower_{lower}")), &rel);
        }
        self.link(&Path::new("sys/class/net").join(iface), &dir);
        self
    }

    /// An IPv4 route on `iface` in /proc/net/route (default: 0.0.0.0/0).
    pub fn route(&self, iface: &str, default: bool) -> &Self {
        if !self.path("proc/net/route").exists() {
            self.write(
                "proc/net/route",
                "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n",
            );
        }
        let (dest, gw, mask) = if default {
            ("00000000", "0100A8C0", "00000000")
        } else {
            ("0000A8C0", "00000000", "00FFFFFF")
        };
        self.append(
            "proc/net/route",
            &format!("{iface}\t{dest}\t{gw}\t0003\t0\t0\t100\t{mask}\t0\t0\t0"),
        );
        self
    }

    /// fbcon bound to a virtual terminal, drawing on fb0 of `addr`.
    pub fn fb_console(&self, addr: &str) -> &Self {
        let fb = PathBuf::from("sys/devices/virtual/graphics/fb0");
        let dir = self.devices[addr].clone();
        self.link(&fb.join("device"), &dir);
        self.link(Path::new("sys/class/graphics/fb0"), &fb);
        self.write(
            "sys/class/vtconsole/vtcon1/name",
            "(M) frame buffer device\n",
        );
        self.write("sys/class/vtconsole/vtcon1/bind", "1\n");
        self
    }

    /// A process with open files (`/dev/vfio/12`, ...).
    pub fn process(&self, pid: u32, comm: &str, open: &[&str]) -> &Self {
        self.write(&format!("proc/{pid}/comm"), format!("{comm}\n"));
        // Every process but a kernel thread has its executable's link.
        let _ = symlink(
            format!("/usr/bin/{comm}"),
            self.path(&format!("proc/{pid}/exe")),
        );
        fs::create_dir_all(self.path(&format!("proc/{pid}/fd"))).unwrap();
        for (fd, target) in open.iter().enumerate() {
            symlink(target, self.path(&format!("proc/{pid}/fd/{}", fd + 3))).unwrap();
        }
        self
    }

    /// nvidia's per-GPU information file, which names its /dev/nvidiaN minor.
    pub fn nvidia_minor(&self, addr: &str, minor: u32) -> &Self {
        self.write(
            &format!("proc/driver/nvidia/gpus/{addr}/information"),
            format!("Model: \t\t NVIDIA A100-SXM4-40GB\nDevice Minor: \t {minor}\n"),
        );
        self
    }

    /// modules.dep and modules.alias of the fake kernel release.
    pub fn modules(&self, dep: &str, alias: &str) -> &Self {
        self.write("lib/modules/6.1.0-fake/modules.dep", dep);
        self.write("lib/modules/6.1.0-fake/modules.alias", alias);
        self
    }

    /// A virtio 9p transport on a PCI function, exporting `tag`.
    pub fn virtio_9p(&self, addr: &str, virtio: &str, tag: &str) -> &Self {
        let dir = self.devices[addr].join(virtio);
        self.write(&format!("{}/mount_tag", dir.display()), tag);
        self.link(&Path::new("sys/bus/virtio/devices").join(virtio), &dir);
        self
    }

    /// A raw line of /proc/self/mountinfo.
    pub fn mountinfo_line(&self, line: &str) -> &Self {
        self.append("proc/self/mountinfo", line);
        self
    }

    /// An NVMe namespace seen through native multipath, as kernel 6.1 shows
    /// it: the block device is a virtual head in nvme-subsystem/nvme-subsysN,
    /// a directory that links to the subsystem's controllers.
    pub fn nvme_multipath(
        &self,
        addr: &str,
        head: &str,
        controller: &str,
        major_minor: &str,
    ) -> &Self {
        let controller_dir = self.devices[addr].join("nvme").join(controller);
        self.write(&format!("{}/dev", controller_dir.display()), "246:0\n");
        let subsystem = PathBuf::from("sys/devices/virtual/nvme-subsystem/nvme-subsys0");
        self.link(&subsystem.join(controller), &controller_dir);
        let head_dir = subsystem.join(head);
        self.write(
            &format!("{}/dev", head_dir.display()),
            format!("{major_minor}\n"),
        );
        fs::create_dir_all(self.root().join(&head_dir).join("slaves")).unwrap();
        self.link(&Path::new("sys/class/block").join(head), &head_dir);
        self.link(&Path::new("sys/dev/block").join(major_minor), &head_dir);
        self
    }
}
