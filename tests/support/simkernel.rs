//! A simulated kernel over a fake host: driver_override, unbind, probe and
//! module loading move the fake tree's links the way the real kernel moves
//! sysfs. Failures can be injected. It proves the engine's logic; the QEMU
//! test bed proves the kernel facts it relies on.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::Mutex;
use std::time::Duration;

use vfioctl::gate::{DeviceWrite, ModuleLoad, PfWrite, ResetWrite};
use vfioctl::host::kernel::{KernelError, PciKernel};
use vfioctl::model::{DriverKind, DriverName, ModuleName, PciAddress};

use super::fakehost::{Dev, FakeHost};

#[derive(Default)]
pub struct Faults {
    /// (device, driver): the driver's probe rejects the device.
    pub rejects: BTreeSet<(String, String)>,
    /// Devices whose unbind never returns (a busy GPU).
    pub hung_unbind: BTreeSet<String>,
    /// Devices removed from the tree when they are probed.
    pub vanish_on_probe: BTreeSet<String>,
    /// Modules that load (creating their driver); others fail.
    pub loadable: BTreeSet<String>,
    /// PFs whose `sriov_numvfs` write fails (ENOMEM, as a PF short of resources).
    pub numvfs_fails: BTreeSet<String>,
    /// Devices whose reset never returns (their lock held).
    pub hung_reset: BTreeSet<String>,
    /// Devices whose unbind waits until every one of them is being unbound:
    /// they return only if the engine unbinds them all at once (each in its
    /// own thread); one at a time, the first waits in vain (60 s, then an
    /// error).
    pub rendezvous_unbind: BTreeSet<String>,
    /// Devices that do not come back from a reset: config space reads all
    /// ones, the link is down, a fatal AER error is counted, D3cold.
    pub reset_breaks: BTreeSet<String>,
}

pub struct SimKernel<'a> {
    pub host: &'a FakeHost,
    /// The driver each device gets when probed without an override.
    pub native: BTreeMap<String, String>,
    pub faults: Faults,
    /// Every write, in order, for assertions: "override 0000:01:00.0 vfio-pci".
    /// The kernel's own binds are logged too: "autobind 0000:3b:00.2 mlx5_core"
    /// (a VF probed on creation because autoprobe is 1).
    pub log: Mutex<Vec<String>>,
    /// The native driver of each PF's VFs ("0000:3b:00.0" -> "igbvf"): what
    /// probes a new VF while `sriov_drivers_autoprobe` is 1.
    pub vf_native: BTreeMap<String, String>,
    /// Let the engine run the plan's units in a thread each, as on a real
    /// kernel (default: one thread, the units taking turns, so every run
    /// makes the same calls in the same order).
    pub threads: bool,
    /// The rendezvous devices whose unbind has started.
    arrived: (Mutex<BTreeSet<String>>, std::sync::Condvar),
}

impl<'a> SimKernel<'a> {
    /// Native drivers are taken from the devices' current drivers.
    pub fn new(host: &'a FakeHost) -> SimKernel<'a> {
        let mut native = BTreeMap::new();
        for entry in fs::read_dir(host.path("sys/bus/pci/devices"))
            .unwrap()
            .flatten()
        {
            let addr = entry.file_name().to_string_lossy().into_owned();
            if let Ok(target) = fs::read_link(entry.path().join("driver")) {
                let driver = target.file_name().unwrap().to_string_lossy().into_owned();
                if DriverName::new(driver.as_str()).kind() == DriverKind::Host {
                    native.insert(addr, driver);
                }
            }
        }
        SimKernel {
            host,
            native,
            faults: Faults::default(),
            log: Mutex::new(Vec::new()),
            vf_native: BTreeMap::new(),
            threads: false,
            arrived: (Mutex::new(BTreeSet::new()), std::sync::Condvar::new()),
        }
    }

    /// The PF of a VF, from its `physfn` link.
    fn physfn(&self, device: PciAddress) -> Option<String> {
        fs::read_link(self.dir(device).join("physfn"))
            .ok()
            .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
    }

    fn autoprobe(&self, pf: &str) -> bool {
        fs::read_to_string(
            self.host
                .path(&format!("sys/bus/pci/devices/{pf}/sriov_drivers_autoprobe")),
        )
        .is_ok_and(|t| t.trim() == "1")
    }

    /// The driver a device gets when probed without an override.
    fn native_of(&self, device: PciAddress) -> Option<String> {
        self.native.get(&device.to_string()).cloned().or_else(|| {
            self.physfn(device)
                .and_then(|pf| self.vf_native.get(&pf).cloned())
        })
    }

    fn attr(&self, device: PciAddress, name: &str) -> String {
        fs::read_to_string(self.dir(device).join(name))
            .unwrap()
            .trim()
            .to_string()
    }

    /// The next unused IOMMU group number (None without an IOMMU).
    fn next_group(&self) -> Option<u32> {
        let groups = fs::read_dir(self.host.path("sys/kernel/iommu_groups")).ok()?;
        Some(
            groups
                .flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
                .max()
                .map_or(0, |m| m + 1),
        )
    }

    /// VF `index` of `pf`, where the kernel puts it: the PF's routing ID
    /// plus `sriov_offset` plus index times `sriov_stride` (the fake
    /// topologies default to 2 and 1: 3b:00.0 -> 3b:00.2, 3b:00.3, ...; an
    /// A100's are 4 and 1: 25:00.4 .. 25:00.7, 25:01.0, ...).
    fn vf_address(&self, pf: PciAddress, index: u16) -> PciAddress {
        let offset: u16 = self.attr(pf, "sriov_offset").parse().unwrap();
        let stride: u16 = self.attr(pf, "sriov_stride").parse().unwrap();
        let rid = u32::from(pf.bus) << 8 | u32::from(pf.device) << 3 | u32::from(pf.function);
        let vf = rid + u32::from(offset) + u32::from(index) * u32::from(stride);
        PciAddress {
            bus: (vf >> 8) as u8,
            device: ((vf >> 3) & 0x1f) as u8,
            function: (vf & 7) as u8,
            ..pf
        }
    }

    fn busy(pf: PciAddress, path: std::path::PathBuf, value: String, errno: i32) -> KernelError {
        KernelError::Write {
            device: pf,
            path,
            value,
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    pub fn writes(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn note(&self, entry: String) {
        self.log.lock().unwrap().push(entry);
    }

    fn dir(&self, device: PciAddress) -> std::path::PathBuf {
        self.host.path(&format!("sys/bus/pci/devices/{device}"))
    }

    fn group(&self, device: PciAddress) -> Option<u32> {
        fs::read_link(self.dir(device).join("iommu_group"))
            .ok()
            .and_then(|t| t.file_name()?.to_string_lossy().parse().ok())
    }

    fn registered(&self, driver: &str) -> Option<String> {
        fs::read_dir(self.host.path("sys/bus/pci/drivers"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| DriverName::new(n.as_str()) == DriverName::new(driver))
    }
}

impl PciKernel for SimKernel<'_> {
    fn one_thread(&self) -> bool {
        !self.threads
    }

    fn set_override(
        &self,
        w: DeviceWrite<'_>,
        driver: Option<&DriverName>,
    ) -> Result<(), KernelError> {
        // The permit bounds the value, as in the real kernel's writer.
        w.check_override(driver)?;
        let device = w.device();
        if !self.dir(device).exists() {
            return Err(KernelError::Vanished { device });
        }
        let value = driver.map_or("(null)".to_string(), |d| d.to_string());
        self.note(format!("override {device} {value}"));
        fs::write(
            self.dir(device).join("driver_override"),
            format!("{value}\n"),
        )
        .unwrap();
        Ok(())
    }

    fn unbind(
        &self,
        w: DeviceWrite<'_>,
        driver: &DriverName,
        deadline: Duration,
    ) -> Result<(), KernelError> {
        w.check_driver_change("unbind")?;
        let device = w.device();
        if !self.dir(device).exists() {
            return Err(KernelError::Vanished { device });
        }
        self.note(format!("unbind {device} {driver}"));
        let addr = device.to_string();
        if self.faults.rendezvous_unbind.contains(&addr) {
            let (lock, all_here) = &self.arrived;
            let mut arrived = lock.lock().unwrap();
            arrived.insert(addr.clone());
            all_here.notify_all();
            let (arrived, wait) = all_here
                .wait_timeout_while(arrived, Duration::from_secs(60), |a| {
                    !self.faults.rendezvous_unbind.is_subset(a)
                })
                .unwrap();
            if wait.timed_out() {
                return Err(Self::busy(
                    device,
                    self.dir(device).join("driver/unbind"),
                    format!("waited alone: only {arrived:?} came"),
                    libc::ETIMEDOUT,
                ));
            }
        }
        if self.faults.hung_unbind.contains(&addr) {
            std::thread::sleep(deadline);
            return Err(KernelError::Timeout {
                device,
                step: format!("unbind from {driver}"),
                seconds: deadline.as_secs(),
            });
        }
        if let Some(group) = self.group(device) {
            if self
                .driver(device)?
                .is_some_and(|d| d.kind() == DriverKind::Vfio)
            {
                let _ = fs::remove_file(self.host.path(&format!("dev/vfio/{group}")));
            }
        }
        self.host.unbind(&addr);
        Ok(())
    }

    fn probe(&self, w: DeviceWrite<'_>) -> Result<(), KernelError> {
        w.check_driver_change("drivers_probe")?;
        let device = w.device();
        let addr = device.to_string();
        if !self.dir(device).exists() {
            return Err(KernelError::Vanished { device });
        }
        self.note(format!("probe {device}"));
        if self.faults.vanish_on_probe.contains(&addr) {
            fs::remove_file(self.dir(device)).unwrap();
            return Err(KernelError::Vanished { device });
        }
        if self.driver(device)?.is_some() {
            return Ok(());
        }
        let over = fs::read_to_string(self.dir(device).join("driver_override")).unwrap();
        let over = over.trim();
        // Like pci_device_can_probe: a VF of a PF with autoprobe 0 is
        // probed only when it has an override.
        if over == "(null)" && self.physfn(device).is_some_and(|pf| !self.autoprobe(&pf)) {
            return Ok(());
        }
        let wanted = if over == "(null)" {
            self.native_of(device)
        } else {
            Some(over.to_string())
        };
        // Like the kernel: a missing or rejecting driver leaves the device unbound.
        let Some(driver) = wanted.and_then(|w| self.registered(&w)) else {
            return Ok(());
        };
        if self
            .faults
            .rejects
            .contains(&(addr.clone(), driver.clone()))
        {
            return Ok(());
        }
        // Like vfio_pci_core_register_device: "Cannot bind to PF with
        // SR-IOV enabled" (EBUSY), the PF left unbound.
        if DriverName::new(driver.as_str()).kind() == DriverKind::Vfio
            && self.dir(device).join("virtfn0").exists()
        {
            self.note(format!("refused {device} {driver}: PF with SR-IOV enabled"));
            return Ok(());
        }
        self.host.bind(&addr, &driver, None);
        if DriverName::new(driver.as_str()).kind() == DriverKind::Vfio {
            if let Some(group) = self.group(device) {
                self.host.write(&format!("dev/vfio/{group}"), "");
            }
        }
        Ok(())
    }

    fn driver(&self, device: PciAddress) -> Result<Option<DriverName>, KernelError> {
        let dir = self.dir(device);
        if !dir.exists() {
            return Err(KernelError::Vanished { device });
        }
        Ok(fs::read_link(dir.join("driver"))
            .ok()
            .map(|t| DriverName::new(t.file_name().unwrap().to_string_lossy().into_owned())))
    }

    fn vfio_group_node(&self, group: u32) -> bool {
        self.host.path(&format!("dev/vfio/{group}")).exists()
    }

    fn load_module(&self, m: ModuleLoad<'_>, _deadline: Duration) -> Result<(), KernelError> {
        let module = m.module();
        self.note(format!("load {module}"));
        if !self
            .faults
            .loadable
            .iter()
            .any(|m| &ModuleName::new(m.as_str()) == module)
        {
            return Err(KernelError::Module(
                vfioctl::host::modules::ModuleError::LoadFailed {
                    module: module.clone(),
                    detail: "simulated failure".into(),
                },
            ));
        }
        let driver = module.as_str().replace('_', "-");
        let dir = format!("sys/bus/pci/drivers/{driver}");
        for f in ["bind", "unbind", "new_id", "remove_id", "uevent"] {
            self.host.write(&format!("{dir}/{f}"), "");
        }
        let module_dir = format!("sys/module/{}", module.as_str().replace('-', "_"));
        self.host
            .write(&format!("{module_dir}/initstate"), "live\n");
        Ok(())
    }

    fn set_sriov_autoprobe(&self, w: PfWrite<'_>, on: bool) -> Result<(), KernelError> {
        let pf = w.pf();
        if !self.dir(pf).exists() {
            return Err(KernelError::Vanished { device: pf });
        }
        let value = u8::from(on);
        self.note(format!("autoprobe {pf} {value}"));
        fs::write(
            self.dir(pf).join("sriov_drivers_autoprobe"),
            format!("{value}\n"),
        )
        .unwrap();
        Ok(())
    }

    /// Like sriov_numvfs_store: the same count is a no-op, N -> M (both
    /// non-zero) is EBUSY, above sriov_totalvfs ERANGE; 0 removes every VF
    /// (and its /dev/vfio node), N creates VFs with IOMMU groups of their
    /// own, probed by the PF's native VF driver when autoprobe is 1.
    fn set_numvfs(
        &self,
        w: PfWrite<'_>,
        count: u16,
        _deadline: Duration,
    ) -> Result<(), KernelError> {
        w.check_numvfs(count)?;
        self.write_numvfs(w.pf(), count)
    }

    fn set_reset_method(&self, w: ResetWrite<'_>, value: &str) -> Result<(), KernelError> {
        w.check_methods(value)?;
        let device = w.device();
        if !self.dir(device).exists() {
            return Err(KernelError::Vanished { device });
        }
        self.note(format!("reset_method {device} {value}"));
        fs::write(self.dir(device).join("reset_method"), format!("{value}\n")).unwrap();
        Ok(())
    }

    /// Like pci_reset_function: the device is reset (counted in `resets`);
    /// a device in `hung_reset` never returns (its lock held).
    fn reset(&self, w: ResetWrite<'_>, deadline: Duration) -> Result<(), KernelError> {
        w.check_reset()?;
        let device = w.device();
        if !self.dir(device).exists() {
            return Err(KernelError::Vanished { device });
        }
        self.note(format!("reset {device}"));
        if self.faults.hung_reset.contains(&device.to_string()) {
            std::thread::sleep(deadline);
            return Err(KernelError::Timeout {
                device,
                step: "reset".to_string(),
                seconds: deadline.as_secs(),
            });
        }
        if self.faults.reset_breaks.contains(&device.to_string()) {
            let dir = self.dir(device);
            fs::write(dir.join("config"), vec![0xffu8; 256]).unwrap();
            fs::write(dir.join("current_link_speed"), "Unknown\n").unwrap();
            fs::write(dir.join("current_link_width"), "63\n").unwrap();
            fs::write(dir.join("power_state"), "D3cold\n").unwrap();
            fs::write(
                dir.join("aer_dev_fatal"),
                super::fakehost::aer_file("FATAL", &[("SDES", 1)]),
            )
            .unwrap();
        }
        Ok(())
    }

    fn virtfns(&self, pf: PciAddress) -> Result<Vec<PciAddress>, KernelError> {
        if !self.dir(pf).exists() {
            return Err(KernelError::Vanished { device: pf });
        }
        Ok((0..)
            .map_while(|i| fs::read_link(self.dir(pf).join(format!("virtfn{i}"))).ok())
            .map(|t| t.file_name().unwrap().to_string_lossy().parse().unwrap())
            .collect())
    }
}

impl SimKernel<'_> {
    /// An operator writing `count` to `pf`'s sriov_numvfs by hand (no
    /// vfioctl, so no permit): what the kernel does with it.
    pub fn by_hand_numvfs(&self, pf: PciAddress, count: u16) -> Result<(), KernelError> {
        self.write_numvfs(pf, count)
    }

    fn write_numvfs(&self, pf: PciAddress, count: u16) -> Result<(), KernelError> {
        if !self.dir(pf).exists() {
            return Err(KernelError::Vanished { device: pf });
        }
        self.note(format!("numvfs {pf} {count}"));
        let path = self.dir(pf).join("sriov_numvfs");
        let current: u16 = self.attr(pf, "sriov_numvfs").parse().unwrap();
        let total: u16 = self.attr(pf, "sriov_totalvfs").parse().unwrap();
        if self.faults.numvfs_fails.contains(&pf.to_string()) && count > 0 {
            return Err(Self::busy(pf, path, count.to_string(), libc::ENOMEM));
        }
        if count == current {
            return Ok(());
        }
        if count > total {
            return Err(Self::busy(pf, path, count.to_string(), libc::ERANGE));
        }
        if current != 0 && count != 0 {
            return Err(Self::busy(pf, path, count.to_string(), libc::EBUSY));
        }
        if count == 0 {
            for (index, vf) in self.virtfns(pf)?.iter().enumerate().rev() {
                if let Some(group) = self.group(*vf) {
                    if self
                        .driver(*vf)?
                        .is_some_and(|d| d.kind() == DriverKind::Vfio)
                    {
                        let _ = fs::remove_file(self.host.path(&format!("dev/vfio/{group}")));
                    }
                }
                self.host.remove_function(&vf.to_string());
                fs::remove_file(self.dir(pf).join(format!("virtfn{index}"))).unwrap();
            }
            fs::write(&path, "0\n").unwrap();
            return Ok(());
        }
        let vendor = u16::from_str_radix(&self.attr(pf, "vendor")[2..], 16).unwrap();
        let device = u16::from_str_radix(&self.attr(pf, "device")[2..], 16).unwrap();
        let class = u32::from_str_radix(&self.attr(pf, "class")[2..], 16).unwrap();
        for index in 0..count {
            let vf = self.vf_address(pf, index);
            let mut dev =
                Dev::endpoint(&vf.to_string(), vendor, device + 1, class).vf_of(&pf.to_string());
            if let Some(group) = self.next_group() {
                dev = dev.group(group);
            }
            self.host.add_vf(dev);
            if self.autoprobe(&pf.to_string()) {
                if let Some(driver) = self.vf_native.get(&pf.to_string()) {
                    self.note(format!("autobind {vf} {driver}"));
                    self.host.bind(&vf.to_string(), driver, Some(driver));
                }
            }
        }
        fs::write(&path, format!("{count}\n")).unwrap();
        Ok(())
    }
}
