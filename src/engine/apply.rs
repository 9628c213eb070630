//! Runs a cleared plan against the kernel, verifying each change. Devices
//! that do not depend on each other change at once: the plan's units (a
//! function and its companions travel in order; anything else is
//! independent: the kernel takes each device's own lock, and an IOMMU group
//! is viable once all its members are bound, whatever their order) run in
//! a thread each, so a board of slow unbinds takes about the time of its
//! slowest unit. On any failure the other units stop after their current
//! step, and every device touched in every unit is put back to its previous
//! driver and override, newest first in each unit: the change is all or
//! nothing, as before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::plan::{Binding, Expect, Step};
use crate::gate::{Cleared, DeviceWrite};
use crate::host::kernel::{KernelError, PciKernel};
use crate::model::{DriverKind, DriverName, PciAddress};

/// How long to wait between polls of the driver link, at most: a probe is
/// usually done when `drivers_probe` returns, so the first looks come
/// sooner (1, 2, 4, 8 ms) and the wait grows to this.
const POLL: Duration = Duration::from_millis(10);

/// A step that did not have the effect it should have.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("{device}: expected {expected} after {seconds}s but found {found}")]
    NotBound {
        device: PciAddress,
        expected: String,
        found: String,
        seconds: u64,
    },
    #[error("{device}: bound to {driver} but /dev/vfio/{group} did not appear within {seconds}s")]
    NoVfioNode {
        device: PciAddress,
        driver: DriverName,
        group: u32,
        seconds: u64,
    },
}

/// What happened to one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Unchanged,
    Done,
    /// Changed, then put back after a later failure.
    RolledBack,
    /// This device's step failed (and it was put back).
    Failed,
    /// Putting it back failed: the device needs attention.
    RollbackFailed,
    /// Its unbind did not return by the deadline and is still pending in the
    /// kernel: the driver keeps it until the holder lets go, then it is left
    /// with no driver. Only its override was put back.
    Pending,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceResult {
    pub address: PciAddress,
    pub status: Status,
    /// The driver found at the end (after verification or rollback).
    pub driver: Option<DriverName>,
}

/// Putting one device back failed.
#[derive(Debug, thiserror::Error)]
#[error("rollback of {device} failed: {error}")]
pub struct RollbackError {
    pub device: PciAddress,
    #[source]
    pub error: StepError,
}

/// Errors serialise as their one-line message (the JSON schema's strings).
pub(crate) fn as_message<E: std::fmt::Display, S: serde::Serializer>(
    error: &Option<E>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match error {
        Some(e) => serializer.serialize_str(&e.to_string()),
        None => serializer.serialize_none(),
    }
}

fn as_messages<E: std::fmt::Display, S: serde::Serializer>(
    errors: &[E],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(errors.iter().map(ToString::to_string))
}

/// The outcome of applying a plan.
#[derive(Debug, Serialize)]
pub struct Applied {
    pub devices: Vec<DeviceResult>,
    /// The first failure, if any (the rest was rolled back).
    #[serde(serialize_with = "as_message")]
    pub error: Option<StepError>,
    /// Rollback failures: each leaves a device in an unknown state.
    #[serde(serialize_with = "as_messages")]
    pub rollback_errors: Vec<RollbackError>,
}

impl Applied {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }

    /// Devices whose unbind is still pending in the kernel.
    pub fn pending(&self) -> impl Iterator<Item = &DeviceResult> {
        self.devices.iter().filter(|d| d.status == Status::Pending)
    }
}

impl StepError {
    /// A blocking write that did not return by the deadline (still pending).
    pub fn is_pending(&self) -> bool {
        matches!(self, StepError::Kernel(KernelError::Timeout { .. }))
    }
}

/// Polls until the device's driver satisfies `expect`.
fn wait_for(
    kernel: &dyn PciKernel,
    device: PciAddress,
    expect: &Expect,
    vfio_group: Option<u32>,
    deadline: Duration,
) -> Result<Option<DriverName>, StepError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let driver = kernel.driver(device)?;
        let matches = match expect {
            Expect::Driver(want) => driver.as_ref() == Some(want),
            Expect::HostDriverOrNone => {
                driver.as_ref().is_none_or(|d| d.kind() == DriverKind::Host)
            }
            Expect::NoDriver => driver.is_none(),
        };
        let node_ready = vfio_group.is_none_or(|g| kernel.vfio_group_node(g));
        if matches && node_ready {
            return Ok(driver);
        }
        if start.elapsed() >= deadline {
            let seconds = deadline.as_secs();
            if let (true, Some(group), Some(driver)) = (matches, vfio_group, driver.clone()) {
                return Err(StepError::NoVfioNode {
                    device,
                    driver,
                    group,
                    seconds,
                });
            }
            return Err(StepError::NotBound {
                device,
                expected: match expect {
                    Expect::Driver(d) => format!("driver {d}"),
                    Expect::HostDriverOrNone => "a host driver or none".to_string(),
                    Expect::NoDriver => "no driver".to_string(),
                },
                found: driver.map_or_else(|| "no driver".to_string(), |d| format!("driver {d}")),
                seconds,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(POLL);
    }
}

fn run_step(
    kernel: &dyn PciKernel,
    w: DeviceWrite<'_>,
    step: &Step,
    deadline: Duration,
) -> Result<(), StepError> {
    let device = w.device();
    match step {
        Step::SetOverride { driver } => kernel.set_override(w, driver.as_ref())?,
        Step::Unbind { driver } => {
            // Skip when the driver already let go (e.g. hot-unplug raced us).
            if kernel.driver(device)?.is_some() {
                kernel.unbind(w, driver, deadline)?;
            }
        }
        Step::Probe => kernel.probe(w)?,
        Step::Verify { expect, vfio_group } => {
            wait_for(kernel, device, expect, *vfio_group, deadline)?;
        }
    }
    Ok(())
}

/// Puts a device back to `before`: override first (so the next probe picks
/// the old driver), then unbind and probe if the driver differs. The
/// change's own permit covers it (`gate::policy::ROLLBACK`).
fn roll_back(
    kernel: &dyn PciKernel,
    w: DeviceWrite<'_>,
    before: &Binding,
    deadline: Duration,
) -> Result<Option<DriverName>, StepError> {
    let device = w.device();
    kernel.set_override(w, before.driver_override.as_ref())?;
    let now = kernel.driver(device)?;
    if now == before.driver {
        return Ok(now);
    }
    if let Some(current) = &now {
        kernel.unbind(w, current, deadline)?;
    }
    match &before.driver {
        Some(previous) => {
            kernel.probe(w)?;
            wait_for(
                kernel,
                device,
                &Expect::Driver(previous.clone()),
                None,
                deadline,
            )
        }
        None => Ok(None),
    }
}

/// Loads the plan's modules, then changes the plan's units (see
/// [`Plan::units`](crate::model::plan::Plan::units)) at once, each unit's
/// devices and steps in order; see the module docs. Only a plan the gate
/// cleared can be applied. The outcome is in the plan's order whichever unit
/// finished first.
pub fn apply(cleared: &Cleared, kernel: &dyn PciKernel, deadline: Duration) -> Applied {
    let plan = cleared.plan();
    for module in cleared.module_loads() {
        if let Err(e) = kernel.load_module(module, deadline) {
            return Applied {
                devices: plan
                    .actions
                    .iter()
                    .map(|a| DeviceResult {
                        address: a.address,
                        status: Status::Unchanged,
                        driver: a.before.driver.clone(),
                    })
                    .collect(),
                error: Some(e.into()),
                rollback_errors: vec![],
            };
        }
    }
    let writes: Vec<DeviceWrite<'_>> = cleared.writes().collect();
    let mut units: Vec<Unit<'_>> = plan
        .units()
        .into_iter()
        .map(|members| Unit::new(members.into_iter().map(|i| writes[i]).collect()))
        .collect();
    let stop = AtomicBool::new(false);
    drive(kernel, &mut units, |unit| {
        unit.forward(kernel, deadline, &stop)
    });
    if !stop.load(Ordering::SeqCst) {
        let mut devices: Vec<DeviceResult> = units.into_iter().flat_map(|u| u.results).collect();
        devices.sort_by_key(|r| r.address);
        return Applied {
            devices,
            error: None,
            rollback_errors: vec![],
        };
    }
    // Undo, newest first in each unit, every device touched in every unit
    // (the failed ones included): the change is all or nothing.
    drive(kernel, &mut units, |unit| unit.roll_back(kernel, deadline));
    let mut error = None;
    let mut rollback_errors = Vec::new();
    let mut devices = Vec::new();
    for unit in units {
        if let (None, Some((_, e))) = (&error, unit.failure) {
            error = Some(e);
        }
        rollback_errors.extend(unit.rollback_errors);
        devices.extend(unit.results);
    }
    devices.sort_by_key(|r| r.address);
    Applied {
        devices,
        error,
        rollback_errors,
    }
}

/// Runs `work` on every unit: each in its own thread, or (a kernel that
/// must see one order of calls: `PciKernel::one_thread`) one step of each
/// unit in turn, round robin, on this thread. `work` does one step and
/// says whether the unit has more to do.
fn drive<'a>(
    kernel: &dyn PciKernel,
    units: &mut [Unit<'a>],
    work: impl Fn(&mut Unit<'a>) -> bool + Sync,
) {
    if kernel.one_thread() || units.len() < 2 {
        let mut busy = true;
        while busy {
            busy = false;
            for unit in units.iter_mut() {
                busy |= work(unit);
            }
        }
        return;
    }
    std::thread::scope(|scope| {
        for unit in units.iter_mut() {
            let work = &work;
            scope.spawn(move || while work(unit) {});
        }
    });
}

/// Devices that change together, in the plan's order (a function and its
/// companions), and how far they got.
struct Unit<'a> {
    writes: Vec<DeviceWrite<'a>>,
    /// The next action and its next step.
    next: (usize, usize),
    /// Devices whose steps started, in order.
    touched: Vec<DeviceWrite<'a>>,
    results: Vec<DeviceResult>,
    failure: Option<(PciAddress, StepError)>,
    rollback_errors: Vec<RollbackError>,
    /// How many of `touched` (from the newest) were put back.
    undone: usize,
}

impl<'a> Unit<'a> {
    fn new(writes: Vec<DeviceWrite<'a>>) -> Unit<'a> {
        Unit {
            writes,
            next: (0, 0),
            touched: Vec::new(),
            results: Vec::new(),
            failure: None,
            rollback_errors: Vec::new(),
            undone: 0,
        }
    }

    /// One step forward: `false` once the unit is done, failed, or another
    /// unit failed (`stop`; a step under way finishes first).
    fn forward(&mut self, kernel: &dyn PciKernel, deadline: Duration, stop: &AtomicBool) -> bool {
        let (i, j) = self.next;
        let Some(w) = self.writes.get(i).copied() else {
            return false;
        };
        if self.failure.is_some() || stop.load(Ordering::SeqCst) {
            return false;
        }
        let action = w.action();
        if !action.changes() {
            self.results.push(DeviceResult {
                address: action.address,
                status: Status::Unchanged,
                driver: action.before.driver.clone(),
            });
            self.next = (i + 1, 0);
            return true;
        }
        if j == 0 {
            self.touched.push(w);
        }
        match run_step(kernel, w, &action.steps[j], deadline) {
            Ok(()) if j + 1 < action.steps.len() => self.next = (i, j + 1),
            Ok(()) => {
                self.results.push(DeviceResult {
                    address: action.address,
                    status: Status::Done,
                    driver: kernel.driver(action.address).ok().flatten(),
                });
                self.next = (i + 1, 0);
            }
            Err(e) => {
                self.failure = Some((action.address, e));
                stop.store(true, Ordering::SeqCst);
                return false;
            }
        }
        true
    }

    /// Puts back one more touched device, newest first: `false` once all
    /// are back (or could not be). A device whose unbind is still pending
    /// cannot be put back: the kernel holds it. Only its override is
    /// restored, in a helper queued behind the unbind (the kernel takes the
    /// same device lock for both), so the next probe after the holder lets
    /// go picks its old driver.
    fn roll_back(&mut self, kernel: &dyn PciKernel, deadline: Duration) -> bool {
        if self.undone == 0 {
            // Devices never reached stay as they were.
            let reached = self.touched.len();
            for w in &self.writes[self.next.0.min(self.writes.len())..] {
                let a = w.action();
                if !self.touched.iter().any(|t| t.device() == a.address)
                    && !self.results.iter().any(|r| r.address == a.address)
                {
                    self.results.push(DeviceResult {
                        address: a.address,
                        status: Status::Unchanged,
                        driver: a.before.driver.clone(),
                    });
                }
            }
            if reached == 0 {
                return false;
            }
        }
        let Some(&w) = self.touched.iter().rev().nth(self.undone) else {
            return false;
        };
        self.undone += 1;
        let action = w.action();
        let failed = self.failure.as_ref().filter(|(a, _)| *a == action.address);
        let status = if failed.is_some_and(|(_, e)| e.is_pending()) {
            match kernel.set_override_after_unbind(w, action.before.driver_override.as_ref()) {
                Ok(()) => Status::Pending,
                Err(e) => {
                    self.rollback_errors.push(RollbackError {
                        device: action.address,
                        error: e.into(),
                    });
                    Status::RollbackFailed
                }
            }
        } else {
            match roll_back(kernel, w, &action.before, deadline) {
                Ok(_) if failed.is_some() => Status::Failed,
                Ok(_) => Status::RolledBack,
                Err(e) => {
                    self.rollback_errors.push(RollbackError {
                        device: action.address,
                        error: e,
                    });
                    Status::RollbackFailed
                }
            }
        };
        let result = DeviceResult {
            address: action.address,
            status,
            driver: kernel.driver(action.address).ok().flatten(),
        };
        match self
            .results
            .iter_mut()
            .find(|r| r.address == result.address)
        {
            Some(r) => *r = result,
            None => self.results.push(result),
        }
        self.undone < self.touched.len()
    }
}
