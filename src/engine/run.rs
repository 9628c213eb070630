//! One driver change from start to finish, shared by `bind`, `restore`,
//! `unbind`, `persist apply` and the udev hook:
//! privilege -> variant aliases -> lock -> inventory -> plan -> module checks
//! -> intent -> apply -> record (the intent cleared).
//!
//! An interrupted change recorded this boot (`host::state`) refuses every
//! change, dry runs included, until `vfioctl recover` has put it back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use crate::engine::apply::{apply, Applied, Status};
use crate::engine::plan::{plan as make_plan, Facts, Goal, Plan, PlanError, Request};
use crate::gate::{self, Cleared, Path};
use crate::host::hostfacts;
use crate::host::kernel::PciKernel;
use crate::host::modules;
use crate::host::state::{self, ChangeRecord};
use crate::host::sysfs::{read_selected, Names};
use crate::host::usage::HostUsage;
use crate::host::vms::{self, Pending as VmsPending, VmSource};
use crate::host::HostRoot;
use crate::model::modalias::Alias;
use crate::model::usage::{DeviceUse, UsageFacts};
use crate::model::{DriverName, Inventory, PciAddress, Selector};

/// How a change was asked for.
#[derive(Debug, Clone)]
pub struct ChangeSpec {
    /// The path asking (`bind`, `persist apply`, `udev-hook`...): how the
    /// gate judges it, and the command its intent names.
    pub path: Path,
    pub goal: Goal,
    pub selectors: Vec<Selector>,
    pub with_group: bool,
    pub force: bool,
    pub dry_run: bool,
    pub timeout: Duration,
    /// Where the VM rules' facts come from (libvirt, or never: the udev hook
    /// and `persist apply`, `VmSource::for_path`). Asked only when the gate
    /// judges a device given away from VFIO.
    pub vms: VmSource,
}

/// What was planned and what happened, as printed and as JSON.
#[derive(Debug, Serialize)]
pub struct ChangeReport {
    pub command: &'static str,
    pub dry_run: bool,
    pub plan: Plan,
    /// Null for a dry run.
    pub result: Option<Applied>,
    /// Devices whose unbind is still pending in the kernel, with who holds them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Pending>,
}

/// A device vfioctl stopped waiting for: its unbind is still in the kernel.
#[derive(Debug, Serialize)]
pub struct Pending {
    pub address: PciAddress,
    /// The driver that still has it (until the holder lets go).
    pub driver: Option<DriverName>,
    /// Processes found holding its nodes (empty: none found).
    pub holders: Vec<DeviceUse>,
}

impl Pending {
    fn held_by(&self) -> String {
        if self.holders.is_empty() {
            return "no holder found".to_string();
        }
        self.holders
            .iter()
            .map(|h| match h {
                DeviceUse::Holder { pid, command, path } => {
                    format!("held by PID {pid} ({command}) through {path}")
                }
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{command} needs CAP_SYS_ADMIN to write driver bindings under /sys; run it as root (nothing was written)")]
pub struct NotPrivileged {
    pub command: &'static str,
}

/// Applying failed; everything touched was put back (unless `rollback_failed`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApplyFailed {
    pub message: String,
    pub rollback_failed: bool,
    /// A blocking unbind is still pending in the kernel.
    pub pending: bool,
    /// The failure was a device vanishing from sysfs (exit status: not found).
    pub vanished: bool,
}

/// Whether this process may write driver bindings (CAP_SYS_ADMIN).
pub fn privileged() -> bool {
    caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_ADMIN,
    )
    .unwrap_or(false)
}

/// Work to do after a change succeeds, under the same lock and with the same
/// inventory (`bind --persist` declaring what it bound).
pub type AfterChange<'a> = &'a mut dyn FnMut(&Inventory);

/// Plans and (unless a dry run) applies one change. `Err` only for refusals
/// and environment problems (nothing written); a failed apply comes back as
/// a report whose result carries the error, for the caller to render first.
pub fn run(
    root: &HostRoot,
    spec: &ChangeSpec,
    kernel: &dyn PciKernel,
) -> anyhow::Result<ChangeReport> {
    run_then(root, spec, kernel, None)
}

/// `run`, then `after` (not for a dry run, nor when applying failed).
pub fn run_then(
    root: &HostRoot,
    spec: &ChangeSpec,
    kernel: &dyn PciKernel,
    mut after: Option<AfterChange>,
) -> anyhow::Result<ChangeReport> {
    let command = spec.goal.verb();
    if !spec.dry_run && !privileged() {
        return Err(NotPrivileged { command }.into());
    }
    // The VFIO variant drivers' aliases depend on the kernel release only,
    // not on the devices' state: parsed (modules.alias, over a megabyte)
    // before the lock, so a udev hook does not hold it through that.
    let variants = variants_for(root, &spec.goal);
    // Giving devices to the host asks libvirt which VMs use them: the helper
    // starts now, before the lock, and is waited for only when the gate
    // judges a device given away. A bind to VFIO reads them only if asked.
    let vm_read = if spec.goal.to_vfio() {
        VmsPending::Deferred(spec.vms.clone())
    } else {
        vms::start(&spec.vms)
    };
    let Begun {
        lock: _lock,
        inv,
        targets,
        mut record,
    } = begin(root, &spec.selectors, spec.dry_run, spec.timeout)?;
    let release = inv.kernel_release.as_deref();
    let request = Request {
        goal: spec.goal.clone(),
        targets,
        with_group: spec.with_group,
    };
    // Mounts, routes and the console are cheap to read up front; open handles
    // need a walk of every process's descriptors, done only when the gate
    // asks about devices the plan would release (none, when all is as
    // wanted: the udev hook's usual case).
    let usage = HostUsage::new(root, &inv, vm_read);
    let facts = host_facts(&variants, &record);
    let planned = make_plan(&inv, &facts, &request)?;
    let cleared = judge(root, &inv, &usage, planned, spec.path, spec.force)?;
    let plan = cleared.plan();
    for module in &plan.load_modules {
        modules::preflight(root, release, module)?;
    }
    if spec.dry_run || !plan.changes() {
        if let (false, Some(after)) = (spec.dry_run, after.as_mut()) {
            after(&inv);
        }
        return Ok(ChangeReport {
            command,
            dry_run: spec.dry_run,
            plan: cleared.into_plan(),
            result: None,
            pending: Vec::new(),
        });
    }

    // The intent first: a change killed from here on is found by the next
    // change and by `check`, and `recover` puts it back.
    record.intent = Some(intent_for(root, spec.path.verb(), plan));
    state::write_record(root, &record)?;
    let applied = apply(&cleared, kernel, spec.timeout);
    let pending = pending_devices(&usage, plan, &applied);
    if !pending.is_empty() {
        for p in &pending {
            let before = plan.actions.iter().find(|a| a.address == p.address);
            record.pending(
                p.address,
                p.driver.as_ref(),
                before.and_then(|a| a.before.driver_override.as_ref()),
                command,
                format!(
                    "unbind from {} did not finish; {}",
                    p.driver
                        .as_ref()
                        .map_or_else(|| "its driver".to_string(), ToString::to_string),
                    p.held_by()
                ),
            );
        }
    }
    if applied.succeeded() {
        update_record(&mut record, plan, &applied);
    }
    // Verified, or put back (a pending unbind is recorded as such): the
    // intent is done. A failed rollback keeps it for `check` and `recover`.
    if !unfinished(&applied) {
        record.intent = None;
    }
    state::write_record(root, &record)?;
    if applied.succeeded() {
        if let Some(after) = after.as_mut() {
            after(&inv);
        }
    }
    Ok(ChangeReport {
        command,
        dry_run: false,
        plan: cleared.into_plan(),
        result: Some(applied),
        pending,
    })
}

/// The start every change by selectors shares (a driver change, a reset).
pub struct Begun {
    /// The change lock (none for a dry run).
    pub lock: Option<state::ChangeLock>,
    /// The selected devices and their neighbourhood, read under the lock.
    pub inv: Inventory,
    /// The devices the selectors name.
    pub targets: Vec<PciAddress>,
    pub record: ChangeRecord,
}

/// Takes the lock (not for a dry run) before reading the devices, so a plan
/// describes the state it will be applied to; reads only the selected
/// devices and their neighbourhood (the lock is held for as long as they
/// need); reads the change record and refuses while an interrupted change
/// is recorded.
pub fn begin(
    root: &HostRoot,
    selectors: &[Selector],
    dry_run: bool,
    timeout: Duration,
) -> anyhow::Result<Begun> {
    let lock = if dry_run {
        None
    } else {
        Some(state::lock(root, timeout)?)
    };
    let inv = read_selected(root, selectors, Names::Skip)?;
    let targets: Vec<PciAddress> = inv.select(selectors)?.iter().map(|d| d.address).collect();
    let record = state::read_record(root)?;
    state::refuse_interrupted(root, &record, !dry_run)?;
    Ok(Begun {
        lock,
        inv,
        targets,
        record,
    })
}

/// Asks the gate to clear `plan` with the host's facts (`usage` for host
/// uses, open handles and VMs; the fabric read here): the one way to a
/// plan that can be applied.
pub fn judge(
    root: &HostRoot,
    inv: &Inventory,
    usage: &HostUsage,
    plan: Plan,
    path: Path,
    force: bool,
) -> Result<Cleared, PlanError> {
    let facts = gate::Facts {
        inventory: inv,
        host: usage,
        fabric: hostfacts::fabric_of_host(root, inv),
    };
    gate::clear(plan, &facts, path, force).map_err(PlanError::Refused)
}

/// The intent of applying `plan`: each device it changes, before and target.
pub fn intent_for(root: &HostRoot, caller: &str, plan: &Plan) -> state::Intent {
    state::Intent::new(root, caller, intent_devices(plan), None)
}

/// The devices `plan` changes, as an intent records them.
pub fn intent_devices(plan: &Plan) -> Vec<state::IntentDevice> {
    plan.actions
        .iter()
        .filter(|a| a.changes())
        .map(|a| state::IntentDevice {
            address: a.address,
            before: a.before.clone(),
            target: a.after.clone(),
        })
        .collect()
}

/// A rollback failed on a device still present: the change stays recorded
/// as unfinished.
pub fn unfinished(applied: &Applied) -> bool {
    applied.rollback_errors.iter().any(|e| !vanished(&e.error))
}

/// The VFIO variant drivers' aliases a bind to `goal` chooses from (none
/// unless the goal is vfio-pci or its best variant), from the running
/// kernel's modules.alias. They depend on the kernel release only, so
/// callers parse them (over a megabyte) before taking the change lock.
pub fn variants_for(root: &HostRoot, goal: &Goal) -> Vec<Alias> {
    match goal {
        Goal::BindVfio => modules::vfio_variant_aliases(root, root.kernel_release().as_deref()),
        _ => Vec::new(),
    }
}

/// What the planner needs to know besides the inventory: the VFIO variants
/// and the change record's previous drivers and history.
pub fn host_facts<'a>(variants: &'a [Alias], record: &ChangeRecord) -> Facts<'a> {
    Facts {
        vfio_variants: variants,
        previous: record.previous_drivers(),
        history: record.history_notes(),
        recover_to: BTreeMap::new(),
    }
}

/// The devices left pending, with the processes found holding them.
fn pending_devices(usage: &dyn UsageFacts, plan: &Plan, applied: &Applied) -> Vec<Pending> {
    let addresses: BTreeSet<PciAddress> = applied.pending().map(|d| d.address).collect();
    if addresses.is_empty() {
        return Vec::new();
    }
    let found = usage.usage_of(&addresses);
    addresses
        .iter()
        .map(|a| Pending {
            address: *a,
            driver: plan
                .actions
                .iter()
                .find(|x| x.address == *a)
                .and_then(|x| x.before.driver.clone()),
            holders: found
                .get(a)
                .into_iter()
                .flatten()
                .filter(|u| matches!(u, DeviceUse::Holder { .. }))
                .cloned()
                .collect(),
        })
        .collect()
}

/// Records the devices `applied` changed (`Done`) as changed by `plan`'s goal.
pub fn update_record(record: &mut ChangeRecord, plan: &Plan, applied: &Applied) {
    for action in &plan.actions {
        let done = applied
            .devices
            .iter()
            .any(|d| d.address == action.address && d.status == Status::Done);
        if !done {
            continue;
        }
        match plan.goal {
            Goal::Restore => record.forget(action.address),
            _ => {
                let now = applied
                    .devices
                    .iter()
                    .find(|d| d.address == action.address)
                    .and_then(|d| d.driver.clone());
                record.changed(
                    action.address,
                    now.as_ref(),
                    action.before.driver.as_ref(),
                    action.before.driver_override.as_ref(),
                    plan.goal.verb(),
                );
            }
        }
    }
}

/// The error to return for a report whose apply failed, if it did. It
/// claims only what was verified on each device: a device whose unbind is
/// still pending is never reported as put back.
pub fn failure(report: &ChangeReport) -> Option<ApplyFailed> {
    let result = report.result.as_ref()?;
    let error = result.error.as_ref()?;
    // A device that vanished cannot be put back, nor is it left in an unknown
    // state on this host: only other rollback failures are inconsistent.
    let rollback_failed = result.rollback_errors.iter().any(|e| !vanished(&e.error));
    let mut parts = vec![error.to_string()];
    for p in &report.pending {
        parts.push(format!(
            "{} {}; its override was put back, so once the holder lets go it has no driver: run `vfioctl restore {}` then (`vfioctl show` and `vfioctl check` report it pending)",
            p.address,
            p.held_by(),
            p.address
        ));
    }
    parts.extend(result.rollback_errors.iter().map(ToString::to_string));
    let put_back: Vec<String> = result
        .devices
        .iter()
        .filter(|d| matches!(d.status, Status::RolledBack | Status::Failed))
        .map(|d| d.address.to_string())
        .collect();
    if result.rollback_errors.is_empty() && report.pending.is_empty() {
        parts.push("every device changed was put back (verified on each)".to_string());
    } else if !put_back.is_empty() {
        parts.push(format!("put back (verified): {}", put_back.join(", ")));
    }
    if rollback_failed {
        parts.push(
            "the change stays recorded as unfinished: `vfioctl check` reports it and `vfioctl recover` puts the devices back once the cause is fixed"
                .to_string(),
        );
    }
    Some(ApplyFailed {
        message: parts.join("; "),
        rollback_failed,
        pending: !report.pending.is_empty(),
        vanished: vanished(error),
    })
}

/// A device left sysfs under the change.
fn vanished(error: &crate::engine::apply::StepError) -> bool {
    matches!(
        error,
        crate::engine::apply::StepError::Kernel(crate::host::kernel::KernelError::Vanished { .. })
    )
}
