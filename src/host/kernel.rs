//! The kernel's PCI driver-binding interface, one small function per step.
//!
//! Every write takes a permit from the safety gate (`gate::DeviceWrite`,
//! `gate::PfWrite`, `gate::ModuleLoad`): the device it writes to comes from
//! the permit, and the value is one the permit covers, so no write reaches
//! the kernel without the gate's verdict. Every failure names the device,
//! the file and the OS error. The trait lets the apply engine run against a
//! simulated kernel in tests; `SysfsKernel` is the real thing.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult};

use crate::gate::{DeviceWrite, ModuleLoad, NotCleared, PfWrite, ResetWrite};
use crate::model::{DriverName, PciAddress};

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
    /// A blocking write did not return by the deadline. It is still pending
    /// in the kernel (in a helper process vfioctl no longer waits for): the
    /// driver lets go of the device once whatever holds it closes it.
    #[error("{device}: {step} did not finish within {seconds}s and is still pending in the kernel: the driver keeps the device until the process holding it lets go, then the device is left with no driver")]
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
    /// A write the gate's permit does not cover (a bug), refused.
    #[error(transparent)]
    NotCleared(#[from] NotCleared),
}

/// The steps the apply engine needs from the kernel. Each write takes the
/// gate's permit for its device (see the module docs); reads take an address.
pub trait PciKernel: Sync {
    /// Whether the apply engine must call this kernel from one thread in one
    /// order (the kill-point tests count its calls): the plan's units then
    /// take turns, one step each, instead of a thread each.
    fn one_thread(&self) -> bool {
        false
    }

    /// Writes `driver` to the device's `driver_override`, or clears it (`None`).
    fn set_override(
        &self,
        w: DeviceWrite<'_>,
        driver: Option<&DriverName>,
    ) -> Result<(), KernelError>;
    /// Puts back the override of a device whose unbind is still pending.
    /// Found by tests/vm 75-safety-gpu: on Linux 6.1 reading or writing
    /// `driver_override` takes the device's lock, which the pending unbind
    /// holds, so a plain write would block vfioctl past its deadline. The
    /// write waits in a helper process instead and lands right after the
    /// unbind, once the holder lets go.
    fn set_override_after_unbind(
        &self,
        w: DeviceWrite<'_>,
        driver: Option<&DriverName>,
    ) -> Result<(), KernelError> {
        self.set_override(w, driver)
    }
    /// Writes the address to the driver's `unbind`, abandoning the wait after `deadline`.
    fn unbind(
        &self,
        w: DeviceWrite<'_>,
        driver: &DriverName,
        deadline: Duration,
    ) -> Result<(), KernelError>;
    /// Writes the address to `/sys/bus/pci/drivers_probe`.
    fn probe(&self, w: DeviceWrite<'_>) -> Result<(), KernelError>;
    /// The bound driver now; `Vanished` when the device is gone.
    fn driver(&self, device: PciAddress) -> Result<Option<DriverName>, KernelError>;
    /// Whether `/dev/vfio/<group>` exists.
    fn vfio_group_node(&self, group: u32) -> bool;
    fn load_module(&self, m: ModuleLoad<'_>, deadline: Duration) -> Result<(), KernelError>;
    /// Writes `1` or `0` to the PF's `sriov_drivers_autoprobe`: whether VFs
    /// it creates are probed by a driver on their own (a VF with a
    /// `driver_override` is probed either way).
    fn set_sriov_autoprobe(&self, w: PfWrite<'_>, on: bool) -> Result<(), KernelError>;
    /// Writes `count` to the PF's `sriov_numvfs`, abandoning the wait after
    /// `deadline`: destroying VFs blocks while a process holds one. The
    /// kernel refuses a change between two non-zero counts (EBUSY).
    fn set_numvfs(&self, w: PfWrite<'_>, count: u16, deadline: Duration)
        -> Result<(), KernelError>;
    /// The PF's VFs now, by its `virtfn0`, `virtfn1`, ... links (until one is missing).
    fn virtfns(&self, pf: PciAddress) -> Result<Vec<PciAddress>, KernelError>;
    /// Writes `value` to the device's `reset_method` (a method's name to use
    /// only it, `default` for the kernel's order, or the list before).
    fn set_reset_method(&self, w: ResetWrite<'_>, value: &str) -> Result<(), KernelError>;
    /// Writes `1` to the device's `reset`, abandoning the wait after
    /// `deadline` (a reset waits for the device's lock).
    fn reset(&self, w: ResetWrite<'_>, deadline: Duration) -> Result<(), KernelError>;
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

impl SysfsKernel {
    /// What to write to `driver_override` for `driver`, or to clear it.
    fn override_value(
        &self,
        device: PciAddress,
        driver: Option<&DriverName>,
    ) -> Result<String, KernelError> {
        Ok(match driver {
            Some(d) => self.registered(device, d)?,
            // An empty write does not clear the override; a newline does.
            None => "\n".to_string(),
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
    result.map_err(|source| write_error(device, path, value, source))
}

/// How long an override write behind a pending unbind is waited for before
/// it is left queued in its helper.
const OVERRIDE_WAIT: Duration = Duration::from_millis(200);

/// How long the parent sleeps between looks at a blocking write's helper,
/// where the kernel has no pidfd to wait on.
const HELPER_POLL: Duration = Duration::from_millis(5);

/// Waits for a helper process to exit: on its pidfd (`pidfd_open`, Linux
/// 5.3+), which turns readable when it does, else by sleeping `HELPER_POLL`.
struct ExitWatch(Option<std::os::fd::OwnedFd>);

impl ExitWatch {
    fn new(child: nix::unistd::Pid) -> ExitWatch {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a PID and flags and returns a new
        // descriptor (or -1), which the OwnedFd then owns.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
        ExitWatch(
            i32::try_from(fd)
                .ok()
                .filter(|fd| *fd >= 0)
                .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
        )
    }

    /// Returns once the helper may have exited, or after `at_most`.
    fn wait(&self, at_most: Duration) {
        let Some(fd) = &self.0 else {
            std::thread::sleep(at_most.min(HELPER_POLL));
            return;
        };
        use std::os::fd::AsFd;
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(at_most.as_millis().max(1)).unwrap_or(u16::MAX);
        // EINTR or a timeout: the caller looks again either way.
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
    }
}

/// A write that may block in the kernel for as long as a process holds the
/// device (snd_hda_intel, nvidia and vfio-pci wait for their users). It runs
/// in a short-lived child process; the parent waits until `deadline` and then
/// stops waiting, so vfioctl can report and exit while the kernel still holds
/// the child. (A thread cannot be left behind like that: the process could
/// not exit while the kernel holds the thread.)
fn blocking_write(
    device: PciAddress,
    path: PathBuf,
    value: &str,
    deadline: Duration,
    step: String,
) -> Result<(), KernelError> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| KernelError::Write {
        device,
        path: path.clone(),
        value: value.to_string(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    let bytes = value.as_bytes().to_vec();
    // SAFETY: the child makes only async-signal-safe calls (open, write,
    // _exit) on memory prepared before the fork, then exits.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = unsafe {
                // Hold nothing of the parent's while blocked: not its lock,
                // nor the pipes a caller reads vfioctl's output from.
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    for fd in 0..3 {
                        libc::dup2(null, fd);
                    }
                }
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                let fd = libc::open(c_path.as_ptr(), libc::O_WRONLY | libc::O_TRUNC);
                if fd < 0 || libc::write(fd, bytes.as_ptr().cast(), bytes.len()) < 0 {
                    *libc::__errno_location()
                } else {
                    0
                }
            };
            unsafe { libc::_exit(code.clamp(0, 255)) }
        }
        Ok(ForkResult::Parent { child }) => {
            let start = Instant::now();
            // Woken when the helper exits (its pidfd turns readable), not
            // by polling; kernels without pidfd_open (before 5.3) poll.
            let exit = ExitWatch::new(child);
            loop {
                match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
                    Ok(WaitStatus::Exited(_, errno)) => {
                        let source = io::Error::from_raw_os_error(errno);
                        return Err(write_error(device, path, value, source));
                    }
                    Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
                    Ok(_) => {}
                    Err(errno) => {
                        return Err(write_error(device, path, value, errno.into()));
                    }
                }
                let left = deadline.saturating_sub(start.elapsed());
                if left.is_zero() {
                    return Err(KernelError::Timeout {
                        device,
                        step,
                        seconds: deadline.as_secs(),
                    });
                }
                exit.wait(left);
            }
        }
        // No process to spare: write here, without a deadline.
        Err(_) => write_attr(device, path, value),
    }
}

fn write_error(device: PciAddress, path: PathBuf, value: &str, source: io::Error) -> KernelError {
    {
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
    }
}

impl PciKernel for SysfsKernel {
    fn set_override(
        &self,
        w: DeviceWrite<'_>,
        driver: Option<&DriverName>,
    ) -> Result<(), KernelError> {
        w.check_override(driver)?;
        let device = w.device();
        let value = self.override_value(device, driver)?;
        write_attr(
            device,
            self.device_dir(device).join("driver_override"),
            &value,
        )
    }

    fn set_override_after_unbind(
        &self,
        w: DeviceWrite<'_>,
        driver: Option<&DriverName>,
    ) -> Result<(), KernelError> {
        w.check_override(driver)?;
        let device = w.device();
        let value = self.override_value(device, driver)?;
        match blocking_write(
            device,
            self.device_dir(device).join("driver_override"),
            &value,
            OVERRIDE_WAIT,
            "driver_override".to_string(),
        ) {
            // Queued behind the pending unbind: it lands when that finishes.
            Err(KernelError::Timeout { .. }) => Ok(()),
            other => other,
        }
    }

    fn unbind(
        &self,
        w: DeviceWrite<'_>,
        driver: &DriverName,
        deadline: Duration,
    ) -> Result<(), KernelError> {
        w.check_driver_change("unbind")?;
        let device = w.device();
        let path = self.device_dir(device).join("driver/unbind");
        if !self.device_dir(device).exists() {
            return Err(KernelError::Vanished { device });
        }
        blocking_write(
            device,
            path,
            &device.to_string(),
            deadline,
            format!("unbind from {driver}"),
        )
    }

    fn probe(&self, w: DeviceWrite<'_>) -> Result<(), KernelError> {
        w.check_driver_change("drivers_probe")?;
        let device = w.device();
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

    fn load_module(&self, m: ModuleLoad<'_>, deadline: Duration) -> Result<(), KernelError> {
        Ok(modules::load(&self.root, m.module(), deadline)?)
    }

    fn set_sriov_autoprobe(&self, w: PfWrite<'_>, on: bool) -> Result<(), KernelError> {
        let pf = w.pf();
        if !self.device_dir(pf).exists() {
            return Err(KernelError::Vanished { device: pf });
        }
        write_attr(
            pf,
            self.device_dir(pf).join("sriov_drivers_autoprobe"),
            if on { "1" } else { "0" },
        )
    }

    fn set_numvfs(
        &self,
        w: PfWrite<'_>,
        count: u16,
        deadline: Duration,
    ) -> Result<(), KernelError> {
        w.check_numvfs(count)?;
        let pf = w.pf();
        if !self.device_dir(pf).exists() {
            return Err(KernelError::Vanished { device: pf });
        }
        blocking_write(
            pf,
            self.device_dir(pf).join("sriov_numvfs"),
            &count.to_string(),
            deadline,
            format!("writing {count} to sriov_numvfs"),
        )
    }

    fn set_reset_method(&self, w: ResetWrite<'_>, value: &str) -> Result<(), KernelError> {
        w.check_methods(value)?;
        let device = w.device();
        if !self.device_dir(device).exists() {
            return Err(KernelError::Vanished { device });
        }
        write_attr(device, self.device_dir(device).join("reset_method"), value)
    }

    fn reset(&self, w: ResetWrite<'_>, deadline: Duration) -> Result<(), KernelError> {
        w.check_reset()?;
        let device = w.device();
        if !self.device_dir(device).exists() {
            return Err(KernelError::Vanished { device });
        }
        blocking_write(
            device,
            self.device_dir(device).join("reset"),
            "1",
            deadline,
            "reset".to_string(),
        )
    }

    fn virtfns(&self, pf: PciAddress) -> Result<Vec<PciAddress>, KernelError> {
        let dir = self.device_dir(pf);
        if !dir.exists() {
            return Err(KernelError::Vanished { device: pf });
        }
        Ok((0..)
            .map_while(|index| fs::read_link(dir.join(format!("virtfn{index}"))).ok())
            .filter_map(|target| {
                PciAddress::from_sysfs_name(&target.file_name()?.to_string_lossy())
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blocking write runs in a helper process the parent stops waiting
    /// for at the deadline; the helper still holds the write, which lands
    /// once the kernel lets go (here: a reader opens the FIFO standing in
    /// for a driver's `unbind`). No timing is asserted: only that the parent
    /// returned while the write was still pending.
    #[test]
    fn a_blocking_write_runs_in_a_helper_process_the_parent_stops_waiting_for() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let unbind = dir.path().join("unbind");
        nix::unistd::mkfifo(&unbind, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let device: PciAddress = "0000:08:00.0".parse().unwrap();
        let err = blocking_write(
            device,
            unbind.clone(),
            &device.to_string(),
            Duration::from_millis(200),
            "unbind from snd_hda_intel".to_string(),
        )
        .unwrap_err();
        assert!(matches!(err, KernelError::Timeout { .. }), "{err}");
        // The parent stopped waiting with the write still pending: the
        // helper's open returns only now that a reader comes.
        let mut written = String::new();
        std::fs::File::open(&unbind)
            .unwrap()
            .read_to_string(&mut written)
            .unwrap();
        assert_eq!(written, "0000:08:00.0");
    }
}
