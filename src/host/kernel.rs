//! The kernel's PCI driver-binding interface, one small function per step.
//!
//! Every failure names the device, the file and the OS error. The trait lets
//! the apply engine run against a simulated kernel in tests; `SysfsKernel`
//! is the real thing.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use crate::model::{DriverName, ModuleName, PciAddress};

use super::modules;
use super::root::HostRoot;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{device}: writing {value:?} to {path} failed: {source}")]
    Write {
        device: PciAddress,
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("{device}: {step} did not finish within {seconds}s (a process may still hold the device; the kernel write is still pending)")]
    Timeout {
        device: PciAddress,
        step: String,
        seconds: u64,
    },
    #[error("{device} vanished from /sys/bus/pci/devices")]
    Vanished { device: PciAddress },
    #[error("{device}: driver {driver} is not registered (no /sys/bus/pci/drivers/{driver}); load its module first")]
    NoSuchDriver {
        device: PciAddress,
        driver: DriverName,
    },
    #[error(transparent)]
    Module(#[from] modules::ModuleError),
}

/// The steps the apply engine needs from the kernel.
pub trait PciKernel {
    /// Writes `driver` to the device's `driver_override`, or clears it (`None`).
    fn set_override(
        &self,
        device: PciAddress,
        driver: Option<&DriverName>,
    ) -> Result<(), KernelError>;
    /// Writes the address to the driver's `unbind`, abandoning the wait after `deadline`.
    fn unbind(
        &self,
        device: PciAddress,
        driver: &DriverName,
        deadline: Duration,
    ) -> Result<(), KernelError>;
    /// Writes the address to `/sys/bus/pci/drivers_probe`.
    fn probe(&self, device: PciAddress) -> Result<(), KernelError>;
    /// The bound driver now; `Vanished` when the device is gone.
    fn driver(&self, device: PciAddress) -> Result<Option<DriverName>, KernelError>;
    /// Whether `/dev/vfio/<group>` exists.
    fn vfio_group_node(&self, group: u32) -> bool;
    fn load_module(&self, module: &ModuleName, deadline: Duration) -> Result<(), KernelError>;
}

pub struct SysfsKernel {
    root: HostRoot,
}

impl SysfsKernel {
    pub fn new(root: HostRoot) -> SysfsKernel {
        SysfsKernel { root }
    }

    fn device_dir(&self, device: PciAddress) -> PathBuf {
        self.root.path(format!("/sys/bus/pci/devices/{device}"))
    }

    /// The driver's name as registered, whatever `-`/`_` spelling was asked
    /// for: the kernel compares `driver_override` byte for byte.
    fn registered(&self, device: PciAddress, driver: &DriverName) -> Result<String, KernelError> {
        let dir = self.root.path("/sys/bus/pci/drivers");
        fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|name| &DriverName::new(name.as_str()) == driver)
            .ok_or_else(|| KernelError::NoSuchDriver {
                device,
                driver: driver.clone(),
            })
    }
}

/// One `write(2)` of `value`: sysfs attributes take a whole value per write.
fn write_attr(device: PciAddress, path: PathBuf, value: &str) -> Result<(), KernelError> {
    // O_TRUNC as a shell's `>` does: ignored by sysfs, faithful on fake roots.
    let result = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write(value.as_bytes()).map(|_| ()));
    result.map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound && !path.parent().is_some_and(|p| p.exists()) {
            KernelError::Vanished { device }
        } else {
            KernelError::Write {
                device,
                path,
                value: value.to_string(),
                source,
            }
        }
    })
}

impl PciKernel for SysfsKernel {
    fn set_override(
        &self,
        device: PciAddress,
        driver: Option<&DriverName>,
    ) -> Result<(), KernelError> {
        let value = match driver {
            Some(d) => self.registered(device, d)?,
            // An empty write does not clear the override; a newline does.
            None => "\n".to_string(),
        };
        write_attr(
            device,
            self.device_dir(device).join("driver_override"),
            &value,
        )
    }

    fn unbind(
        &self,
        device: PciAddress,
        driver: &DriverName,
        deadline: Duration,
    ) -> Result<(), KernelError> {
        let path = self.device_dir(device).join("driver/unbind");
        if !self.device_dir(device).exists() {
            return Err(KernelError::Vanished { device });
        }
        let address = device.to_string();
        let (done, wait) = mpsc::channel();
        // The write blocks until the driver lets go (nvidia waits for its users),
        // so it runs on its own thread and is abandoned at the deadline.
        std::thread::spawn(move || {
            let _ = done.send(write_attr(device, path, &address));
        });
        match wait.recv_timeout(deadline) {
            Ok(result) => result,
            Err(_) => Err(KernelError::Timeout {
                device,
                step: format!("unbind from {driver}"),
                seconds: deadline.as_secs(),
            }),
        }
    }

    fn probe(&self, device: PciAddress) -> Result<(), KernelError> {
        if !self.device_dir(device).exists() {
            return Err(KernelError::Vanished { device });
        }
        write_attr(
            device,
            self.root.path("/sys/bus/pci/drivers_probe"),
            &device.to_string(),
        )
    }

    fn driver(&self, device: PciAddress) -> Result<Option<DriverName>, KernelError> {
        let dir = self.device_dir(device);
        match fs::read_link(dir.join("driver")) {
            Ok(target) => Ok(target
                .file_name()
                .map(|n| DriverName::new(n.to_string_lossy().into_owned()))),
            Err(_) if dir.exists() => Ok(None),
            Err(_) => Err(KernelError::Vanished { device }),
        }
    }

    fn vfio_group_node(&self, group: u32) -> bool {
        self.root.path(format!("/dev/vfio/{group}")).exists()
    }

    fn load_module(&self, module: &ModuleName, deadline: Duration) -> Result<(), KernelError> {
        Ok(modules::load(&self.root, module, deadline)?)
    }
}
