//! A simulated kernel over a fake host: driver_override, unbind, probe and
//! module loading move the fake tree's links the way the real kernel moves
//! sysfs. Failures can be injected. It proves the engine's logic; the QEMU
//! test bed proves the kernel facts it relies on.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::Mutex;
use std::time::Duration;

use vfioctl::host::kernel::{KernelError, PciKernel};
use vfioctl::model::{DriverKind, DriverName, ModuleName, PciAddress};

use super::fakehost::FakeHost;

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
}

pub struct SimKernel<'a> {
    pub host: &'a FakeHost,
    /// The driver each device gets when probed without an override.
    pub native: BTreeMap<String, String>,
    pub faults: Faults,
    /// Every write, in order, for assertions: "override 0000:01:00.0 vfio-pci".
    pub log: Mutex<Vec<String>>,
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
    fn set_override(
        &self,
        device: PciAddress,
        driver: Option<&DriverName>,
    ) -> Result<(), KernelError> {
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
        device: PciAddress,
        driver: &DriverName,
        deadline: Duration,
    ) -> Result<(), KernelError> {
        if !self.dir(device).exists() {
            return Err(KernelError::Vanished { device });
        }
        self.note(format!("unbind {device} {driver}"));
        let addr = device.to_string();
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

    fn probe(&self, device: PciAddress) -> Result<(), KernelError> {
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
        let wanted = if over == "(null)" {
            self.native.get(&addr).cloned()
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

    fn load_module(&self, module: &ModuleName, _deadline: Duration) -> Result<(), KernelError> {
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
}
