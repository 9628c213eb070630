//! kill -9 at a chosen step boundary, without a hook in vfioctl.
//!
//! A change runs in a child process (this test binary again, running one
//! `#[test]` that acts only when `KILL_ROOT` is set) against the simulated
//! kernel, wrapped in [`KillAt`]: right before its Nth kernel call the child
//! sends itself SIGKILL, exactly as `kill -9` (or the OOM killer) would stop
//! it there: no destructor, no rollback, no record update runs; the kernel
//! releases its lock. The calls are counted, writes and reads alike, so a
//! first run without a kill (in the parent, on its own copy of the host)
//! lists every boundary: before each write, and after the last call (every
//! step verified, the record not yet updated). Deterministic: the simulated
//! kernel answers at once, so every run makes the same calls.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use vfioctl::gate::{DeviceWrite, ModuleLoad, PfWrite, ResetWrite};
use vfioctl::host::kernel::{KernelError, PciKernel};
use vfioctl::model::{DriverName, PciAddress};

/// The fake root the child changes.
pub const KILL_ROOT: &str = "VFIOCTL_TEST_KILL_ROOT";
/// The 1-based kernel call the child is killed before.
pub const KILL_AT: &str = "VFIOCTL_TEST_KILL_AT";

/// One kernel call: its position and whether it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub index: usize,
    pub write: bool,
    pub what: String,
}

/// A kernel that counts its calls and SIGKILLs this process right before call `at`.
pub struct KillAt<'a> {
    inner: &'a dyn PciKernel,
    at: Option<usize>,
    calls: Mutex<Vec<Call>>,
    count: AtomicUsize,
}

impl<'a> KillAt<'a> {
    pub fn new(inner: &'a dyn PciKernel, at: Option<usize>) -> KillAt<'a> {
        KillAt {
            inner,
            at,
            calls: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn call(&self, write: bool, what: String) {
        let index = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if self.at == Some(index) {
            // SAFETY: kill(2) on this process; it does not return.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_secs(60));
        }
        self.calls.lock().unwrap().push(Call { index, write, what });
    }
}

impl PciKernel for KillAt<'_> {
    /// One order of calls, so the Nth call is the same step in every run
    /// (several units still in flight at once, taking turns).
    fn one_thread(&self) -> bool {
        true
    }
    fn set_override(
        &self,
        w: DeviceWrite<'_>,
        driver: Option<&DriverName>,
    ) -> Result<(), KernelError> {
        self.call(true, format!("override {}", w.device()));
        self.inner.set_override(w, driver)
    }
    fn set_override_after_unbind(
        &self,
        w: DeviceWrite<'_>,
        driver: Option<&DriverName>,
    ) -> Result<(), KernelError> {
        self.call(true, format!("override (after unbind) {}", w.device()));
        self.inner.set_override_after_unbind(w, driver)
    }
    fn unbind(
        &self,
        w: DeviceWrite<'_>,
        driver: &DriverName,
        deadline: Duration,
    ) -> Result<(), KernelError> {
        self.call(true, format!("unbind {}", w.device()));
        self.inner.unbind(w, driver, deadline)
    }
    fn probe(&self, w: DeviceWrite<'_>) -> Result<(), KernelError> {
        self.call(true, format!("probe {}", w.device()));
        self.inner.probe(w)
    }
    fn driver(&self, device: PciAddress) -> Result<Option<DriverName>, KernelError> {
        self.call(false, format!("driver {device}"));
        self.inner.driver(device)
    }
    fn vfio_group_node(&self, group: u32) -> bool {
        self.call(false, format!("vfio node {group}"));
        self.inner.vfio_group_node(group)
    }
    fn load_module(&self, m: ModuleLoad<'_>, deadline: Duration) -> Result<(), KernelError> {
        self.call(true, format!("load {}", m.module()));
        self.inner.load_module(m, deadline)
    }
    fn set_sriov_autoprobe(&self, w: PfWrite<'_>, on: bool) -> Result<(), KernelError> {
        self.call(true, format!("autoprobe {} {}", w.pf(), u8::from(on)));
        self.inner.set_sriov_autoprobe(w, on)
    }
    fn set_numvfs(
        &self,
        w: PfWrite<'_>,
        count: u16,
        deadline: Duration,
    ) -> Result<(), KernelError> {
        self.call(true, format!("numvfs {} {count}", w.pf()));
        self.inner.set_numvfs(w, count, deadline)
    }
    fn virtfns(&self, pf: PciAddress) -> Result<Vec<PciAddress>, KernelError> {
        self.call(false, format!("virtfns {pf}"));
        self.inner.virtfns(pf)
    }
    fn set_reset_method(&self, w: ResetWrite<'_>, value: &str) -> Result<(), KernelError> {
        self.call(true, format!("reset_method {} {value}", w.device()));
        self.inner.set_reset_method(w, value)
    }
    fn reset(&self, w: ResetWrite<'_>, deadline: Duration) -> Result<(), KernelError> {
        self.call(true, format!("reset {}", w.device()));
        self.inner.reset(w, deadline)
    }
}

/// The kill points of a run that made `calls`: before each write, and
/// before its last call when that is a read (every write done and verified,
/// the change record not yet updated).
pub fn boundaries(calls: &[Call]) -> Vec<usize> {
    let mut out: Vec<usize> = calls.iter().filter(|c| c.write).map(|c| c.index).collect();
    if let Some(last) = calls.last() {
        if !last.write {
            out.push(last.index);
        }
    }
    out
}

/// The child's kill point and root, when this process is the child.
pub fn child() -> Option<(std::path::PathBuf, usize)> {
    let root = std::env::var_os(KILL_ROOT)?;
    let at = std::env::var(KILL_AT).ok()?.parse().ok()?;
    Some((root.into(), at))
}

/// Runs the `#[test]` named `test` of this binary as the child, on `root`,
/// killed before call `at`; returns the signal that ended it (None: it exited).
pub fn run_child(test: &str, root: &Path, at: usize) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let status = Command::new(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(KILL_ROOT, root)
        .env(KILL_AT, at.to_string())
        .env_remove("VFIOCTL_ROOT")
        .output()
        .expect("run the child");
    status.status.signal()
}
