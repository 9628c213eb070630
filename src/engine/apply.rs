//! Runs a plan against the kernel, one device at a time, verifying each
//! change; on any failure every device already touched is put back to its
//! previous driver and override, newest first.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::plan::{Binding, Expect, Step};
use crate::gate::{Cleared, DeviceWrite};
use crate::host::kernel::{KernelError, PciKernel};
use crate::model::{DriverKind, DriverName, PciAddress};

/// How long to wait between polls of the driver link.
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
        std::thread::sleep(POLL);
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

/// Loads the plan's modules, then changes each device; see the module docs.
/// Only a plan the gate cleared can be applied.
pub fn apply(cleared: &Cleared, kernel: &dyn PciKernel, deadline: Duration) -> Applied {
    let plan = cleared.plan();
    let mut results: Vec<DeviceResult> = Vec::new();
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

    let mut touched: Vec<DeviceWrite<'_>> = Vec::new();
    let mut failure: Option<(PciAddress, StepError)> = None;
    for w in cleared.writes() {
        let action = w.action();
        if !action.changes() {
            results.push(DeviceResult {
                address: action.address,
                status: Status::Unchanged,
                driver: action.before.driver.clone(),
            });
            continue;
        }
        touched.push(w);
        let outcome = action
            .steps
            .iter()
            .try_for_each(|step| run_step(kernel, w, step, deadline));
        match outcome {
            Ok(()) => results.push(DeviceResult {
                address: action.address,
                status: Status::Done,
                driver: kernel.driver(action.address).ok().flatten(),
            }),
            Err(e) => {
                failure = Some((action.address, e));
                break;
            }
        }
    }

    let Some((failed, error)) = failure else {
        return Applied {
            devices: results,
            error: None,
            rollback_errors: vec![],
        };
    };

    // Undo, newest first, every device touched (the failed one included).
    // A device whose unbind is still pending cannot be put back: the kernel
    // holds it. Only its override is restored, in a helper queued behind the
    // unbind (the kernel takes the same device lock for both), so the next
    // probe after the holder lets go picks its old driver.
    let mut rollback_errors = Vec::new();
    let mut undone: Vec<DeviceResult> = Vec::new();
    for w in touched.iter().rev() {
        let action = w.action();
        let status = if action.address == failed && error.is_pending() {
            match kernel.set_override_after_unbind(*w, action.before.driver_override.as_ref()) {
                Ok(()) => Status::Pending,
                Err(e) => {
                    rollback_errors.push(RollbackError {
                        device: action.address,
                        error: e.into(),
                    });
                    Status::RollbackFailed
                }
            }
        } else {
            match roll_back(kernel, *w, &action.before, deadline) {
                Ok(_) if action.address == failed => Status::Failed,
                Ok(_) => Status::RolledBack,
                Err(e) => {
                    rollback_errors.push(RollbackError {
                        device: action.address,
                        error: e,
                    });
                    Status::RollbackFailed
                }
            }
        };
        undone.push(DeviceResult {
            address: action.address,
            status,
            driver: kernel.driver(action.address).ok().flatten(),
        });
    }
    for result in &mut results {
        if let Some(u) = undone.iter().find(|u| u.address == result.address) {
            *result = u.clone();
        }
    }
    for u in undone {
        if !results.iter().any(|r| r.address == u.address) {
            results.push(u);
        }
    }
    // Devices after the failure were never reached.
    for action in &plan.actions {
        if !results.iter().any(|r| r.address == action.address) {
            results.push(DeviceResult {
                address: action.address,
                status: Status::Unchanged,
                driver: action.before.driver.clone(),
            });
        }
    }
    results.sort_by_key(|r| r.address);
    Applied {
        devices: results,
        error: Some(error),
        rollback_errors,
    }
}
