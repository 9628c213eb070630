//! `reset`: resets passthrough devices between tenants and proves them fit.
//!
//! privilege -> libvirt started -> lock -> read (the devices, their reset
//! methods, every function a bus reset of them also resets) -> plan (pure)
//! -> gate (`gate::clear_reset`) -> fitness before -> intent -> apply (per
//! device: `reset_method` narrowed to `--method`, the `reset` write under
//! the deadline, `reset_method` put back) -> verify (`model::reset::verify`)
//! -> record (/var/lib/vfioctl/reset.json, then the intent cleared) ->
//! report.
//!
//! A reset cannot be undone: a device whose reset failed, did not return by
//! the deadline or failed verification stays recorded as unverified, and
//! `check` reports it CRITICAL until a later reset verifies it. A reset
//! that did not return by the deadline (it waits for the device's lock) is
//! left to its helper process and reported pending (exit status 8); its
//! intent stays recorded, so the next changes and reads of that device are
//! guarded until `recover` has found it finished. `recover` of an
//! interrupted reset ([`recover`]) makes no reset: it writes back the
//! `reset_method` the reset changed and marks its devices unverified.
//!
//! - [`plan`]`(inv, targets, method, found) -> Result<ResetPlan, ResetError>`: pure.
//! - [`judge`]`(root, inv, usage, plan) -> Result<(ResetPlan, ClearedReset), ResetError>`.
//! - [`run`]`(root, spec, kernel) -> anyhow::Result<ResetReport>`.
//! - [`failure`]`(report) -> Option<ApplyFailed>`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::engine::run::{privileged, ApplyFailed, NotPrivileged};
use crate::gate::{self, ClearedReset, Refusal, RefusalKind, ResetRequest, ResetWrite};
use crate::host::hostfacts;
use crate::host::kernel::{KernelError, PciKernel};
use crate::host::reset as host_reset;
use crate::host::state::{self, ChangeRecord, IntentReset, IntentResetDevice};
use crate::host::sysfs::{read_devices, Names};
use crate::host::usage::HostUsage;
use crate::host::vms::{self, VmSource};
use crate::host::HostRoot;
use crate::model::domain::VmFacts;
use crate::model::health::ResetMethods;
use crate::model::reset::{
    ids_text, may_reset_the_bus, verify, Finding, Fitness, Outcome, ResetEntry, ResetMethod,
};
use crate::model::{DriverKind, DriverName, Inventory, PciAddress, PciDevice, Selector};

/// How `reset` was asked.
#[derive(Debug, Clone)]
pub struct ResetSpec {
    pub selectors: Vec<Selector>,
    /// `--method`: that one only (`None`: the kernel's order).
    pub method: Option<ResetMethod>,
    pub dry_run: bool,
    /// Bounds the lock wait and each `reset` write.
    pub timeout: Duration,
    /// Where the VM rules' facts come from (libvirt; `--no-libvirt`).
    pub vms: VmSource,
}

/// What was read of one device before planning: its `reset_method`, and
/// (when its reset may reset the bus) every function below the bridge
/// above it, or why they cannot be read.
#[derive(Debug, Clone)]
pub struct Found {
    pub methods: ResetMethods,
    pub below_bridge: Option<Result<Vec<PciAddress>, String>>,
}

/// Whether a reset of a device listing `methods` may reset its bus: the
/// method asked for, else the worst one listed; a kernel without
/// `reset_method` (before 5.15) may use any.
pub fn reaches_bus(methods: &ResetMethods, method: Option<ResetMethod>) -> bool {
    match methods {
        ResetMethods::Listed(listed) => may_reset_the_bus(listed, method),
        ResetMethods::Unlisted => method.is_none_or(ResetMethod::resets_the_bus),
        ResetMethods::None | ResetMethods::Unreadable => false,
    }
}

/// The reset planned for every device.
#[derive(Debug, Clone, Serialize)]
pub struct ResetPlan {
    /// `--method` (null: the kernel's order in each device's `reset_method`).
    pub method: Option<ResetMethod>,
    pub devices: Vec<DevicePlan>,
    pub checks: Vec<String>,
    pub notes: Vec<String>,
}

/// One device's reset.
#[derive(Debug, Clone, Serialize)]
pub struct DevicePlan {
    pub address: PciAddress,
    pub driver: Option<DriverName>,
    pub iommu_group: Option<u32>,
    /// `reset_method` before, in the kernel's order; null: the kernel has
    /// no `reset_method` (before 5.15), only `reset`.
    pub methods: Option<Vec<String>>,
    /// Every function the reset may also reset (a bus reset: below the
    /// bridge above the device).
    pub resets_also: Vec<PciAddress>,
    pub steps: Vec<ResetStep>,
}

impl DevicePlan {
    /// What `reset_method` held before, as written back.
    fn methods_before(&self) -> Option<String> {
        self.methods.as_ref().map(|l| l.join(" "))
    }
}

/// One step of a device's reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum ResetStep {
    /// `--method`: `reset_method` narrowed to that method.
    SetResetMethod { value: String },
    /// `1` written to `reset`, waited for until `--timeout`.
    Reset,
    /// `reset_method` back as it was.
    PutBackResetMethod { value: String },
    /// The device read again and compared with before.
    Verify { vfio_group: Option<u32> },
}

impl fmt::Display for ResetStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetStep::SetResetMethod { value } => {
                write!(f, "write reset_method = {value} (that method only)")
            }
            ResetStep::Reset => write!(f, "write 1 to reset (waited for until --timeout)"),
            ResetStep::PutBackResetMethod { value } => {
                write!(f, "write reset_method = {value} (back as before)")
            }
            ResetStep::Verify { vfio_group } => {
                write!(
                    f,
                    "verify config space IDs, BARs, link, AER, power state and driver"
                )?;
                match vfio_group {
                    Some(g) => write!(f, ", and /dev/vfio/{g}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Why a device is not reset. Nothing has been written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetRefusal {
    /// The gate refused resetting `target` (the refusal's device is
    /// `target` or a function its reset also resets).
    Gate {
        target: PciAddress,
        refusal: Refusal,
    },
    /// The kernel offers no reset method, or it cannot be read.
    NoMethod { device: PciAddress, why: NoMethod },
    /// `--method` names a method the device's `reset_method` does not list.
    NotListed {
        device: PciAddress,
        method: ResetMethod,
        listed: Vec<String>,
    },
    /// `--method` on a kernel without `reset_method` (before 5.15).
    Unlisted {
        device: PciAddress,
        method: ResetMethod,
    },
    /// The reset may reset the bus, and what is below the bridge cannot be read.
    BusUnknown { device: PciAddress, error: String },
    /// A function the reset may also reset cannot be read.
    Unread {
        device: PciAddress,
        function: PciAddress,
    },
    /// A bridge or port: its reset reaches everything below it.
    Bridge { device: PciAddress },
    /// The kernel holds the device's lock (an unbind or a reset pending).
    Locked { device: PciAddress },
}

/// Why a device has no reset method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoMethod {
    /// Neither `reset_method` nor `reset`.
    NoneFound,
    /// `reset_method` is empty: every method was disabled.
    Disabled,
    Unreadable,
}

impl fmt::Display for ResetRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetRefusal::Gate { target, refusal } => gate_text(f, *target, refusal),
            ResetRefusal::NoMethod { device, why } => {
                let why = match why {
                    NoMethod::NoneFound => "the kernel found no reset method for it (no reset_method, no reset)".to_string(),
                    NoMethod::Disabled => format!("its reset_method is empty: every method was disabled (echo default > /sys/bus/pci/devices/{device}/reset_method restores the kernel's)"),
                    NoMethod::Unreadable => "its reset_method cannot be read".to_string(),
                };
                write!(
                    f,
                    "{device} cannot be reset: {why}; it is not fit to hand from one tenant to the next"
                )
            }
            ResetRefusal::NotListed {
                device,
                method,
                listed,
            } => write!(
                f,
                "{device}: --method {method} is not one of its reset methods ({}); the kernel would refuse it: choose one of them, or leave --method out for the kernel's order",
                listed.join(" ")
            ),
            ResetRefusal::Unlisted { device, method } => write!(
                f,
                "{device}: --method {method} needs reset_method (Linux 5.15 on), which this kernel does not have; leave --method out for the kernel's order"
            ),
            ResetRefusal::BusUnknown { device, error } => write!(
                f,
                "{device}: its reset may reset its bus, but the functions below the bridge above it cannot be read ({error}); refusing rather than guessing what else it resets"
            ),
            ResetRefusal::Unread { device, function } => write!(
                f,
                "resetting {device} may also reset {function} (below the same bridge), which cannot be read; refusing rather than guessing"
            ),
            ResetRefusal::Bridge { device } => write!(
                f,
                "{device} is a bridge or port: its reset reaches every function below it; vfioctl resets endpoints only"
            ),
            ResetRefusal::Locked { device } => write!(
                f,
                "{device}: the kernel holds its lock (an unbind or a reset is still pending), so a reset would wait behind it; once that has finished, run vfioctl reset again"
            ),
        }
    }
}

/// A gate refusal as a reset says it: no `--force` to offer, and the
/// function concerned named through the device asked for.
fn gate_text(f: &mut fmt::Formatter<'_>, target: PciAddress, refusal: &Refusal) -> fmt::Result {
    let device = refusal.device;
    let through = if device == target {
        format!("{device}")
    } else {
        format!("resetting {target} also resets {device} (below the same bridge), which")
    };
    match &refusal.kind {
        RefusalKind::InUse(used) => write!(
            f,
            "{through} {used}; a reset under it would disrupt it: refused (reset has no --force)"
        ),
        RefusalKind::Vm(vm) => write!(
            f,
            "{through} {vm}; shut the domain down or detach the device first"
        ),
        RefusalKind::VmUnknown { error } => write!(
            f,
            "{device}: whether a VM uses it is unknown, as libvirt did not answer ({error}); refused (--no-libvirt resets without asking libvirt)"
        ),
        _ => write!(f, "{refusal}"),
    }
}

/// Why nothing was reset.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("{}; nothing was written", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Refused(Vec<ResetRefusal>),
}

/// Plans resetting `targets` (pure): each must have a reset method (the one
/// `method` names among them), and every function its reset may also reset
/// must be known. Who uses them is the gate's to judge ([`judge`]).
pub fn plan(
    inv: &Inventory,
    targets: &[PciAddress],
    method: Option<ResetMethod>,
    found: &BTreeMap<PciAddress, Found>,
) -> Result<ResetPlan, ResetError> {
    let mut refusals = Vec::new();
    let mut devices = Vec::new();
    for &address in targets {
        let (Some(dev), Some(f)) = (inv.device(&address), found.get(&address)) else {
            continue;
        };
        match plan_device(inv, dev, method, f) {
            Ok(d) => devices.push(d),
            Err(mut r) => refusals.append(&mut r),
        }
    }
    if !refusals.is_empty() {
        return Err(ResetError::Refused(refusals));
    }
    let mut checks = Vec::new();
    for d in &devices {
        let listed = d
            .methods
            .as_ref()
            .map_or("not listed (kernel before 5.15)".to_string(), |l| {
                l.join(" ")
            });
        let reach = if d.resets_also.is_empty() {
            "the function alone".to_string()
        } else {
            format!(
                "the function and {} below the same bridge",
                listed_addresses(&d.resets_also)
            )
        };
        checks.push(format!(
            "{}: reset_method {listed}; {} resets {reach}",
            d.address,
            method.map_or("the kernel's order".to_string(), |m| format!(
                "--method {m}"
            )),
        ));
    }
    Ok(ResetPlan {
        method,
        devices,
        checks,
        notes: Vec::new(),
    })
}

fn plan_device(
    inv: &Inventory,
    dev: &PciDevice,
    method: Option<ResetMethod>,
    found: &Found,
) -> Result<DevicePlan, Vec<ResetRefusal>> {
    let device = dev.address;
    if dev.is_bridge() {
        return Err(vec![ResetRefusal::Bridge { device }]);
    }
    if dev.device_locked {
        return Err(vec![ResetRefusal::Locked { device }]);
    }
    let no_method = |why| Err(vec![ResetRefusal::NoMethod { device, why }]);
    let methods = match &found.methods {
        ResetMethods::Listed(l) if l.is_empty() => return no_method(NoMethod::Disabled),
        ResetMethods::Listed(l) => Some(l.clone()),
        ResetMethods::Unlisted => None,
        ResetMethods::None => return no_method(NoMethod::NoneFound),
        ResetMethods::Unreadable => return no_method(NoMethod::Unreadable),
    };
    match (method, &methods) {
        (Some(m), Some(listed)) if !listed.iter().any(|n| n == m.name()) => {
            return Err(vec![ResetRefusal::NotListed {
                device,
                method: m,
                listed: listed.clone(),
            }])
        }
        (Some(m), None) => {
            return Err(vec![ResetRefusal::Unlisted { device, method: m }]);
        }
        _ => {}
    }
    let resets_also = if reaches_bus(&found.methods, method) {
        match &found.below_bridge {
            Some(Ok(below)) => below.clone(),
            Some(Err(error)) => {
                return Err(vec![ResetRefusal::BusUnknown {
                    device,
                    error: error.clone(),
                }])
            }
            None => {
                return Err(vec![ResetRefusal::BusUnknown {
                    device,
                    error: "not read".to_string(),
                }])
            }
        }
    } else {
        Vec::new()
    };
    let unread: Vec<ResetRefusal> = resets_also
        .iter()
        .filter(|a| inv.device(a).is_none())
        .map(|&function| ResetRefusal::Unread { device, function })
        .collect();
    if !unread.is_empty() {
        return Err(unread);
    }
    let vfio_group = dev
        .driver
        .as_ref()
        .filter(|d| d.kind() == DriverKind::Vfio)
        .and(dev.iommu_group);
    let mut steps = Vec::new();
    if let Some(m) = method {
        steps.push(ResetStep::SetResetMethod {
            value: m.name().to_string(),
        });
    }
    steps.push(ResetStep::Reset);
    if method.is_some() {
        steps.push(ResetStep::PutBackResetMethod {
            value: methods
                .as_ref()
                .map_or("default".to_string(), |l| l.join(" ")),
        });
    }
    steps.push(ResetStep::Verify { vfio_group });
    Ok(DevicePlan {
        address: device,
        driver: dev.driver.clone(),
        iommu_group: dev.iommu_group,
        methods,
        resets_also,
        steps,
    })
}

fn listed_addresses<'a>(addresses: impl IntoIterator<Item = &'a PciAddress>) -> String {
    addresses
        .into_iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Asks the gate to clear `plan` (`gate::clear_reset`) with the host's
/// facts; the plan gains the checks that passed.
pub fn judge(
    root: &HostRoot,
    inv: &Inventory,
    usage: &HostUsage,
    mut plan: ResetPlan,
) -> Result<(ResetPlan, ClearedReset), ResetError> {
    let facts = gate::Facts {
        inventory: inv,
        host: usage,
        fabric: hostfacts::fabric_of_host(root, inv),
    };
    let requests = plan
        .devices
        .iter()
        .map(|d| ResetRequest {
            device: d.address,
            method: plan.method,
            methods_before: d.methods_before(),
            also: d.resets_also.clone(),
        })
        .collect();
    let cleared = gate::clear_reset(&facts, requests).map_err(|refusals| {
        ResetError::Refused(
            refusals
                .into_iter()
                .map(|refusal| ResetRefusal::Gate {
                    target: target_of(&plan, refusal.device),
                    refusal,
                })
                .collect(),
        )
    })?;
    let affected: BTreeSet<PciAddress> = plan
        .devices
        .iter()
        .flat_map(|d| std::iter::once(d.address).chain(d.resets_also.iter().copied()))
        .collect();
    plan.checks.push(format!(
        "on a VFIO driver or none, held by no process and not used by the host: {}",
        listed_addresses(&affected)
    ));
    match crate::gate::HostFacts::vms(usage) {
        VmFacts::Known { uri, domains } => plan.checks.push(format!(
            "no running libvirt domain uses {} ({} domains at {uri})",
            listed_addresses(&affected),
            domains.len()
        )),
        VmFacts::NotAsked(why) | VmFacts::Absent(why) => {
            plan.notes.push(format!("VMs not checked: {why}"));
        }
        VmFacts::Failed(_) => {}
    }
    Ok((plan, cleared))
}

/// The device asked for whose reset reaches `function`.
fn target_of(plan: &ResetPlan, function: PciAddress) -> PciAddress {
    plan.devices
        .iter()
        .find(|d| d.address == function)
        .or_else(|| {
            plan.devices
                .iter()
                .find(|d| d.resets_also.contains(&function))
        })
        .map_or(function, |d| d.address)
}

/// How one device's reset ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetStatus {
    /// Reset and every verification passed: fit for the next tenant.
    Verified,
    /// Reset, and a verification failed.
    Unfit,
    /// A write failed (`reset_method` put back where it was changed).
    Failed,
    /// The reset did not return by the deadline: still in the kernel.
    Pending,
    /// Not tried: an earlier device's reset failed or is pending.
    NotReset,
}

/// What happened to one device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReset {
    pub address: PciAddress,
    pub status: ResetStatus,
    pub before: Fitness,
    /// Null unless the reset returned.
    pub after: Option<Fitness>,
    pub findings: Vec<Finding>,
    pub error: Option<String>,
    /// `reset_method` could not be written back (`recover` does it).
    pub put_back_error: Option<String>,
    #[serde(skip)]
    vanished: bool,
}

/// What applying a reset plan did.
#[derive(Debug, Clone, Serialize)]
pub struct ResetResult {
    pub devices: Vec<DeviceReset>,
    /// Why /var/lib/vfioctl/reset.json could not be written, if it could not.
    pub state_error: Option<String>,
}

/// What `reset` planned and did, as printed and as JSON.
#[derive(Debug, Serialize)]
pub struct ResetReport {
    pub command: &'static str,
    pub dry_run: bool,
    pub plan: ResetPlan,
    /// Null for a dry run.
    pub result: Option<ResetResult>,
}

/// privilege -> lock -> read -> plan -> gate -> intent -> apply -> verify -> record.
pub fn run(
    root: &HostRoot,
    spec: &ResetSpec,
    kernel: &dyn PciKernel,
) -> anyhow::Result<ResetReport> {
    if !spec.dry_run && !privileged() {
        return Err(NotPrivileged { command: "reset" }.into());
    }
    // libvirt answers while sysfs is read.
    let vm_read = vms::start(&spec.vms);
    let crate::engine::run::Begun {
        lock: _lock,
        inv,
        targets,
        mut record,
    } = crate::engine::run::begin(root, &spec.selectors, spec.dry_run, spec.timeout)?;
    let devices: Vec<&PciDevice> = targets.iter().filter_map(|a| inv.device(a)).collect();
    let readings = host_reset::read(root, &inv, &devices);
    let found: BTreeMap<PciAddress, Found> = readings
        .iter()
        .map(|(address, r)| {
            let below = reaches_bus(&r.methods, spec.method)
                .then(|| host_reset::below_bridge(root, *address));
            (
                *address,
                Found {
                    methods: r.methods.clone(),
                    below_bridge: below,
                },
            )
        })
        .collect();
    // Every function a reset may also reset is judged: read it too.
    let missing: BTreeSet<PciAddress> = found
        .values()
        .filter_map(|f| f.below_bridge.as_ref()?.as_ref().ok())
        .flatten()
        .filter(|a| inv.device(a).is_none())
        .copied()
        .collect();
    let inv = if missing.is_empty() {
        inv
    } else {
        let seeds: Vec<PciAddress> = targets.iter().chain(&missing).copied().collect();
        read_devices(root, &seeds, Names::Skip)?
    };
    let planned = plan(&inv, &targets, spec.method, &found)?;
    let usage = HostUsage::new(root, &inv, vm_read);
    let (plan, cleared) = judge(root, &inv, &usage, planned)?;
    if spec.dry_run {
        return Ok(ResetReport {
            command: "reset",
            dry_run: true,
            plan,
            result: None,
        });
    }
    let mut before = BTreeMap::new();
    for d in &plan.devices {
        let mut fitness = readings[&d.address].fitness.clone();
        fill_from_kernel(kernel, &mut fitness, d.address)?;
        before.insert(d.address, fitness);
    }
    // The intent first: a reset killed from here on is found by `check`
    // and the next change, and `recover` puts reset_method back.
    record.intent = Some(intent_for(root, &plan));
    state::write_record(root, &record)?;
    let mut result = apply(root, kernel, &inv, &plan, &cleared, &before, spec.timeout);
    // The outcome first, then the intent cleared: killed in between, the
    // devices are found unverified by `recover`, never verified by mistake.
    result.state_error = host_reset::save_state(root, &entries(root, &inv, &plan, &result)).err();
    let left: BTreeSet<PciAddress> = result
        .devices
        .iter()
        .filter(|d| d.status == ResetStatus::Pending || d.put_back_error.is_some())
        .map(|d| d.address)
        .collect();
    if left.is_empty() {
        record.intent = None;
    } else if let Some(reset) = record.intent.as_mut().and_then(|i| i.reset.as_mut()) {
        for d in &mut reset.devices {
            d.pending = result
                .devices
                .iter()
                .any(|r| r.address == d.address && r.status == ResetStatus::Pending);
        }
    }
    state::write_record(root, &record)?;
    Ok(ResetReport {
        command: "reset",
        dry_run: false,
        plan,
        result: Some(result),
    })
}

/// The driver (and for a VFIO driver, `/dev/vfio/N`) as the kernel has them now.
fn fill_from_kernel(
    kernel: &dyn PciKernel,
    fitness: &mut Fitness,
    address: PciAddress,
) -> Result<(), KernelError> {
    fitness.driver = kernel.driver(address)?;
    fitness.vfio_node = match (&fitness.driver, fitness.iommu_group) {
        (Some(d), Some(group)) if d.kind() == DriverKind::Vfio => {
            Some(kernel.vfio_group_node(group))
        }
        _ => None,
    };
    Ok(())
}

/// The intent of a reset: every device, the method and `reset_method` before.
fn intent_for(root: &HostRoot, plan: &ResetPlan) -> state::Intent {
    let mut intent = state::Intent::new(root, "reset", Vec::new(), None);
    intent.reset = Some(IntentReset {
        devices: plan
            .devices
            .iter()
            .map(|d| IntentResetDevice {
                address: d.address,
                method: plan.method.map(|m| m.name().to_string()),
                methods_before: d.methods_before(),
                pending: false,
            })
            .collect(),
    });
    intent
}

/// Resets each device in order; after a failed or pending one the rest are
/// not tried (a reset cannot be undone, and what blocked one may block the
/// next).
fn apply(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    inv: &Inventory,
    plan: &ResetPlan,
    cleared: &ClearedReset,
    before: &BTreeMap<PciAddress, Fitness>,
    timeout: Duration,
) -> ResetResult {
    let mut devices = Vec::new();
    let mut stopped = false;
    for (d, w) in plan.devices.iter().zip(cleared.writes()) {
        let was = &before[&d.address];
        if stopped {
            devices.push(DeviceReset {
                address: d.address,
                status: ResetStatus::NotReset,
                before: was.clone(),
                after: None,
                findings: Vec::new(),
                error: None,
                put_back_error: None,
                vanished: false,
            });
            continue;
        }
        let done = reset_one(root, kernel, inv, plan.method, d, w, was, timeout);
        stopped = matches!(done.status, ResetStatus::Failed | ResetStatus::Pending);
        devices.push(done);
    }
    ResetResult {
        devices,
        state_error: None,
    }
}

#[allow(clippy::too_many_arguments)]
fn reset_one(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    inv: &Inventory,
    method: Option<ResetMethod>,
    d: &DevicePlan,
    w: ResetWrite<'_>,
    was: &Fitness,
    timeout: Duration,
) -> DeviceReset {
    let mut out = DeviceReset {
        address: d.address,
        status: ResetStatus::Failed,
        before: was.clone(),
        after: None,
        findings: Vec::new(),
        error: None,
        put_back_error: None,
        vanished: false,
    };
    let failed = |out: &mut DeviceReset, e: KernelError| {
        out.vanished = matches!(e, KernelError::Vanished { .. });
        let why = match &e {
            KernelError::Write { source, .. } if source.raw_os_error() == Some(libc::ENOTTY) => {
                " (ENOTTY: the kernel could use none of its methods now: it refuses a bus reset while other functions share the bus, and gives one up when the link does not come back; its log says which)"
            }
            _ => "",
        };
        out.error = Some(format!("{e}{why}"));
    };
    if let Some(m) = method {
        if let Err(e) = kernel.set_reset_method(w, m.name()) {
            failed(&mut out, e);
            return out;
        }
    }
    let put_back = |out: &mut DeviceReset| {
        if method.is_none() {
            return;
        }
        let value = d.methods_before().unwrap_or_else(|| "default".to_string());
        if let Err(e) = kernel.set_reset_method(w, &value) {
            out.put_back_error = Some(e.to_string());
        }
    };
    match kernel.reset(w, timeout) {
        Ok(()) => {}
        Err(KernelError::Timeout { seconds, .. }) => {
            // reset_method stays as the pending reset needs it.
            out.status = ResetStatus::Pending;
            out.error = Some(format!(
                "{}: the reset did not return within {seconds}s and is still pending in the kernel (it waits for the device's lock: an unbind or another reset in progress, or a driver that holds it)",
                d.address
            ));
            return out;
        }
        Err(e) => {
            failed(&mut out, e);
            put_back(&mut out);
            return out;
        }
    }
    put_back(&mut out);
    let after = fitness_now(root, kernel, inv, d.address);
    out.findings = verify(was, &after);
    out.status = if out.findings.iter().all(|f| f.ok) {
        ResetStatus::Verified
    } else {
        ResetStatus::Unfit
    };
    out.after = Some(after);
    out
}

/// The device read again after its reset.
fn fitness_now(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    inv: &Inventory,
    address: PciAddress,
) -> Fitness {
    let dev = inv
        .device(&address)
        .expect("a planned device is in the inventory");
    let mut fitness = host_reset::read(root, inv, &[dev])
        .remove(&address)
        .expect("read returns every device asked")
        .fitness;
    if fill_from_kernel(kernel, &mut fitness, address).is_err() {
        fitness.driver = None;
        fitness.vfio_node = None;
    }
    fitness
}

/// The reset state's entries for the devices reset (or tried).
fn entries(
    root: &HostRoot,
    inv: &Inventory,
    plan: &ResetPlan,
    result: &ResetResult,
) -> BTreeMap<PciAddress, ResetEntry> {
    let boot_id = state::boot_id(root);
    let now = state::now_unix();
    result
        .devices
        .iter()
        .filter_map(|d| {
            let outcome = match d.status {
                ResetStatus::Verified => Outcome::Verified,
                ResetStatus::Unfit => Outcome::Unfit,
                ResetStatus::Failed => Outcome::Failed,
                ResetStatus::Pending => Outcome::Pending,
                ResetStatus::NotReset => return None,
            };
            let dev = inv.device(&d.address)?;
            let mut findings: Vec<String> = d
                .findings
                .iter()
                .filter(|f| !f.ok)
                .map(|f| format!("{}: {}", f.check.label(), f.message))
                .collect();
            findings.extend(d.error.clone());
            Some((
                d.address,
                ResetEntry {
                    outcome,
                    at: now,
                    boot_id: boot_id.clone(),
                    ids: ids_text(dev.ids.vendor, dev.ids.device),
                    method: plan.method.map(|m| m.name().to_string()),
                    findings,
                },
            ))
        })
        .collect()
}

/// The error to return for a report whose reset did not verify every
/// device, if it did not.
pub fn failure(report: &ResetReport) -> Option<ApplyFailed> {
    let result = report.result.as_ref()?;
    let mut parts = Vec::new();
    let (mut pending, mut put_back_failed, mut vanished) = (false, false, false);
    for d in &result.devices {
        let address = d.address;
        let error = d.error.clone().unwrap_or_default();
        match d.status {
            ResetStatus::Verified => {}
            ResetStatus::Unfit => parts.push(format!(
                "{address} failed verification after its reset ({}): it is not fit for the next tenant; vfioctl check reports it CRITICAL until a reset verifies it",
                d.findings
                    .iter()
                    .filter(|f| !f.ok)
                    .map(|f| format!("{} {}", f.check.label(), f.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            ResetStatus::Failed => parts.push(format!(
                "{error}; {address} was not reset as asked: vfioctl check reports it CRITICAL until a reset verifies it"
            )),
            ResetStatus::Pending => {
                pending = true;
                parts.push(format!(
                    "{error}; vfioctl stopped waiting for it. The reset stays recorded: vfioctl check reports it, other changes are refused, and once it has finished vfioctl recover clears it{}; then run vfioctl reset {address} again to verify the device",
                    if report.plan.method.is_some() { " and puts reset_method back" } else { "" }
                ));
            }
            ResetStatus::NotReset => parts.push(format!(
                "{address} was not reset (an earlier reset did not finish)"
            )),
        }
        if let Some(e) = &d.put_back_error {
            put_back_failed = true;
            parts.push(format!(
                "{address}: reset_method could not be put back ({e}); the reset stays recorded and vfioctl recover puts it back"
            ));
        }
        vanished |= d.vanished;
    }
    if let Some(e) = &result.state_error {
        parts.push(format!(
            "the outcome could not be recorded in {}: {e}",
            host_reset::state_path()
        ));
    }
    if parts.is_empty() {
        return None;
    }
    Some(ApplyFailed {
        message: parts.join("; "),
        rollback_failed: put_back_failed,
        pending,
        vanished,
    })
}

/// What `recover` did with an interrupted reset.
#[derive(Debug, Serialize)]
pub struct ResetRecovery {
    pub devices: Vec<RecoveredReset>,
    /// The devices' outcome recorded as interrupted (unverified).
    pub state_error: Option<String>,
    /// Whether the change record no longer holds the interrupted reset.
    pub cleared: bool,
}

/// One device of an interrupted reset.
#[derive(Debug, Serialize)]
pub struct RecoveredReset {
    pub address: PciAddress,
    pub present: bool,
    /// What is written back to `reset_method` (null: nothing: no method was
    /// chosen, or it is as before already).
    pub reset_method: Option<String>,
    pub error: Option<String>,
}

/// `recover` of an interrupted reset: no reset is made; `reset_method` is
/// written back where the reset narrowed it (a permit from
/// `gate::clear_reset_method_put_back`), each present device is recorded
/// unverified, and the intent is cleared. `inv` holds the devices now (the
/// caller refused devices whose lock the kernel holds). A dry run writes
/// nothing.
pub fn recover(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    inv: &Inventory,
    reset: &IntentReset,
    dry_run: bool,
    record: &mut ChangeRecord,
) -> ResetRecovery {
    let mut devices = Vec::new();
    let mut updates = BTreeMap::new();
    let boot_id = state::boot_id(root);
    for d in &reset.devices {
        let Some(dev) = inv.device(&d.address) else {
            devices.push(RecoveredReset {
                address: d.address,
                present: false,
                reset_method: None,
                error: None,
            });
            continue;
        };
        let now = host_reset::read(root, inv, &[dev])
            .remove(&d.address)
            .map(|r| r.methods);
        let before = d.methods_before.clone();
        let as_before = match (&now, &before) {
            (Some(ResetMethods::Listed(l)), Some(b)) => l.join(" ") == *b,
            _ => false,
        };
        let method = d.method.as_deref().and_then(|m| m.parse().ok());
        let permit = (d.method.is_some() && !as_before)
            .then(|| gate::clear_reset_method_put_back(d.address, method, before.clone()))
            .flatten();
        let value = before.clone().unwrap_or_else(|| "default".to_string());
        let mut out = RecoveredReset {
            address: d.address,
            present: true,
            reset_method: permit.as_ref().map(|_| value.clone()),
            error: None,
        };
        if d.method.is_some() && !as_before && permit.is_none() {
            out.error = Some(format!(
                "{}: the recorded method {:?} is not a reset method; reset_method not put back (write it by hand: echo {value} > /sys/bus/pci/devices/{}/reset_method)",
                d.address,
                d.method.as_deref().unwrap_or_default(),
                d.address
            ));
        }
        if let (Some(permit), false) = (&permit, dry_run) {
            let w = permit.writes().next().expect("one permit");
            if let Err(e) = kernel.set_reset_method(w, &value) {
                out.error = Some(e.to_string());
            }
        }
        updates.insert(
            d.address,
            ResetEntry {
                outcome: Outcome::Interrupted,
                at: state::now_unix(),
                boot_id: boot_id.clone(),
                ids: ids_text(dev.ids.vendor, dev.ids.device),
                method: d.method.clone(),
                findings: vec![
                    "the reset was interrupted: whether it ran, and how the device came back, is unknown"
                        .to_string(),
                ],
            },
        );
        devices.push(out);
    }
    let mut recovery = ResetRecovery {
        devices,
        state_error: None,
        cleared: false,
    };
    if dry_run || recovery.devices.iter().any(|d| d.error.is_some()) {
        return recovery;
    }
    recovery.state_error = host_reset::save_state(root, &updates).err();
    if recovery.state_error.is_none() {
        record.intent = None;
        recovery.cleared = state::write_record(root, record).is_ok();
    }
    recovery
}

/// The error `recover` returns for an interrupted reset it could not put
/// back, if it could not.
pub fn recovery_failure(recovery: &ResetRecovery) -> Option<ApplyFailed> {
    let mut parts: Vec<String> = recovery
        .devices
        .iter()
        .filter_map(|d| d.error.clone())
        .collect();
    parts.extend(recovery.state_error.iter().map(|e| {
        format!(
            "the devices could not be recorded unverified in {}: {e}",
            host_reset::state_path()
        )
    }));
    if parts.is_empty() {
        if recovery.cleared {
            return None;
        }
        parts.push("the change record could not be cleared".to_string());
    }
    Some(ApplyFailed {
        message: format!(
            "recover failed: {}; the interrupted reset stays recorded: fix the cause and run vfioctl recover again",
            parts.join("; ")
        ),
        rollback_failed: true,
        pending: false,
        vanished: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_support::endpoint;

    fn found(methods: &str, below: Option<Vec<&str>>) -> Found {
        Found {
            methods: ResetMethods::parse(methods),
            below_bridge: below
                .map(|b| Ok(b.iter().map(|a| a.parse().unwrap()).collect::<Vec<_>>())),
        }
    }

    fn inv() -> Inventory {
        let mut gpu = endpoint("41:00.0", 0x030200);
        gpu.driver = Some(DriverName::vfio_pci());
        gpu.iommu_group = Some(60);
        let mut audio = endpoint("41:00.1", 0x040300);
        audio.driver = Some(DriverName::vfio_pci());
        Inventory {
            devices: vec![gpu, audio],
            ..Default::default()
        }
    }

    fn refusal(r: Result<ResetPlan, ResetError>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(p) => panic!("planned {p:?}"),
        }
    }

    #[test]
    fn the_worst_listed_method_decides_what_else_is_reset() {
        let a: PciAddress = "41:00.0".parse().unwrap();
        let inv = inv();
        let with = |methods, method| {
            BTreeMap::from([(
                a,
                Found {
                    below_bridge: reaches_bus(&ResetMethods::parse(methods), method)
                        .then(|| Ok(vec!["41:00.1".parse().unwrap()])),
                    ..found(methods, None)
                },
            )])
        };
        let p = plan(&inv, &[a], None, &with("flr bus", None)).unwrap();
        assert_eq!(
            p.devices[0].resets_also,
            ["0000:41:00.1".parse::<PciAddress>().unwrap()]
        );
        assert_eq!(
            p.devices[0].steps,
            [
                ResetStep::Reset,
                ResetStep::Verify {
                    vfio_group: Some(60)
                }
            ]
        );
        let flr = Some(ResetMethod::Flr);
        let p = plan(&inv, &[a], flr, &with("flr bus", flr)).unwrap();
        assert!(p.devices[0].resets_also.is_empty());
        assert_eq!(
            p.devices[0].steps[..3],
            [
                ResetStep::SetResetMethod {
                    value: "flr".into()
                },
                ResetStep::Reset,
                ResetStep::PutBackResetMethod {
                    value: "flr bus".into()
                }
            ]
        );
        // An unknown name counts as a bus reset; no reset_method (before
        // 5.15) may be any method.
        assert!(reaches_bus(&ResetMethods::parse("flr warp"), None));
        assert!(reaches_bus(&ResetMethods::Unlisted, None));
        assert!(!reaches_bus(&ResetMethods::Unlisted, flr));
    }

    #[test]
    fn a_device_without_a_method_or_with_another_method_is_refused() {
        let a: PciAddress = "41:00.0".parse().unwrap();
        let inv = inv();
        let one = |f: Found| BTreeMap::from([(a, f)]);
        let empty = refusal(plan(&inv, &[a], None, &one(found("", None))));
        assert!(empty.contains("its reset_method is empty"), "{empty}");
        let none = Found {
            methods: ResetMethods::None,
            below_bridge: None,
        };
        let text = refusal(plan(&inv, &[a], None, &one(none)));
        assert!(
            text.contains("the kernel found no reset method for it"),
            "{text}"
        );
        let text = refusal(plan(
            &inv,
            &[a],
            Some(ResetMethod::Flr),
            &one(found("pm bus", Some(vec![]))),
        ));
        assert!(
            text.contains("--method flr is not one of its reset methods (pm bus)"),
            "{text}"
        );
        let unlisted = Found {
            methods: ResetMethods::Unlisted,
            below_bridge: Some(Ok(vec![])),
        };
        let text = refusal(plan(&inv, &[a], Some(ResetMethod::Flr), &one(unlisted)));
        assert!(
            text.contains("needs reset_method (Linux 5.15 on)"),
            "{text}"
        );
        // A bus reset whose neighbours cannot be read or listed.
        let text = refusal(plan(
            &inv,
            &[a],
            None,
            &one(Found {
                methods: ResetMethods::parse("bus"),
                below_bridge: Some(Err("EACCES".into())),
            }),
        ));
        assert!(text.contains("cannot be read (EACCES)"), "{text}");
        let text = refusal(plan(
            &inv,
            &[a],
            None,
            &one(found("bus", Some(vec!["41:00.2"]))),
        ));
        assert!(
            text.contains(
                "may also reset 0000:41:00.2 (below the same bridge), which cannot be read"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_gate_refusal_names_the_function_through_the_device_asked_for() {
        let plan = ResetPlan {
            method: None,
            devices: vec![DevicePlan {
                address: "41:00.0".parse().unwrap(),
                driver: None,
                iommu_group: None,
                methods: Some(vec!["bus".into()]),
                resets_also: vec!["41:00.1".parse().unwrap()],
                steps: vec![],
            }],
            checks: vec![],
            notes: vec![],
        };
        let held = Refusal {
            device: "41:00.1".parse().unwrap(),
            kind: RefusalKind::InUse(crate::model::usage::DeviceUse::Holder {
                pid: 42,
                command: "aplay".into(),
                path: "/dev/snd/controlC0".into(),
            }),
        };
        let text = ResetRefusal::Gate {
            target: target_of(&plan, held.device),
            refusal: held,
        }
        .to_string();
        assert_eq!(
            text,
            "resetting 0000:41:00.0 also resets 0000:41:00.1 (below the same bridge), which is held open by PID 42 (aplay) through /dev/snd/controlC0; a reset under it would disrupt it: refused (reset has no --force)"
        );
    }
}
