//! `recover`: puts back what an interrupted change left half done.
//!
//! A change writes its intent to the change record before its first kernel
//! write (`host::state`) and clears it once verified or put back; an intent
//! found later belongs to a change that was killed, or whose own rollback
//! failed. Recover does what that change's rollback would have done: every
//! device it touched back to its binding before (driver and override), and
//! for SR-IOV the PF's VF count, its VFs' claiming drivers and
//! `sriov_drivers_autoprobe` as recorded before (never the 0 a killed change
//! left). It never completes the change: an interrupted change had no
//! verified result, and its own rule on any failure is to put everything
//! back; the operator runs the command again if it is still wanted.
//!
//! The plan is made from the intent and the devices as they are now, under
//! the lock, and judged by the gate as a change of its own
//! (`gate::Path::Recover`): each device by where it goes, so putting back a
//! bind is judged as `restore` (host uses, open handles, running and defined
//! domains; libvirt silent refuses), putting back a restore as `bind` (the
//! IOMMU group, the fabric), a VF count as `sriov` (the VFs destroyed, the
//! PF's uses); `--force` where those commands take it. A claiming
//! driver_override on a device that goes back to a host driver is not
//! written back (the next probe would take the device from the host): the
//! device is left on its host driver without it, and a note says so. It is
//! applied with verification and newest-first rollback. Only a verified
//! recovery clears the intent. `--forget` clears it without touching a
//! device, for an operator who has put the devices right by hand.
//!
//! - [`plan`]`(inv, facts, intent, now) -> Result<RecoverPlan, RecoverError>`: pure.
//! - [`judge`]`(root, inv, usage, plan, force) -> Result<ClearedRecover, RecoverError>`.
//! - [`run`]`(root, spec, kernel) -> anyhow::Result<RecoverReport>`: privilege
//!   -> lock -> record -> read -> plan -> judge -> apply -> record.
//! - [`failure`]`(report) -> Option<ApplyFailed>`.
//!
//! An interrupted reset (`vfioctl reset`) is put back by `engine::reset`:
//! no reset is made again; `reset_method` is written back where the reset
//! narrowed it, and its devices are recorded unverified.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use crate::engine::apply::{apply as apply_plan, Applied};
use crate::engine::plan::{plan as make_plan, Binding, Facts, Goal, Plan, PlanError, Request};
use crate::engine::run::{
    host_facts, judge as judge_plan, privileged, unfinished, ApplyFailed, NotPrivileged,
};
use crate::engine::sriov::{
    put_back_steps, run_put_back, PutBack, PutBackDone, Rebinding, SriovError, SriovStep, VfBefore,
};
use crate::gate::{self, Cleared, ClearedVfCount, Path, VfCount, VfCountRefused};
use crate::host::hostfacts;
use crate::host::kernel::PciKernel;
use crate::host::modules;
use crate::host::state::{self, Intent, IntentState};
use crate::host::sysfs::{read_devices, read_sriov_autoprobe, Names};
use crate::host::usage::HostUsage;
use crate::host::vms::{Pending, VmSource};
use crate::host::HostRoot;
use crate::model::{DriverKind, Inventory, PciAddress, SriovRole};

/// How `recover` was asked.
#[derive(Debug, Clone)]
pub struct RecoverSpec {
    pub dry_run: bool,
    /// Passed to the gate: uses `--force` may override (never a holder).
    pub force: bool,
    /// Clear the record of the interrupted change without touching a device.
    pub forget: bool,
    pub timeout: Duration,
    /// Where the VM rules' facts come from (libvirt, asked only when a
    /// device would be given away from VFIO; `--no-libvirt`).
    pub vms: VmSource,
}

/// What the SR-IOV part of an intent finds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SriovNow {
    /// The PF's VFs now (`virtfn` links).
    pub count: u16,
    /// Its `sriov_drivers_autoprobe` now.
    pub autoprobe: Option<bool>,
}

/// The plan putting an interrupted change back.
#[derive(Debug, Clone, Serialize)]
pub struct RecoverPlan {
    /// The PF's VF count, its VFs' claiming drivers and autoprobe back, as
    /// sysfs writes (empty: nothing to put back there, or no SR-IOV part).
    pub sriov_steps: Vec<SriovStep>,
    /// Each device the change touched back to its binding before (goal
    /// "recover"); devices already there have no steps.
    pub devices: Plan,
    /// Devices the intent names that are no longer present (nothing to put back).
    pub vanished: Vec<PciAddress>,
    pub checks: Vec<String>,
    pub notes: Vec<String>,
    #[serde(skip)]
    pub sriov_target: Option<SriovTarget>,
}

impl RecoverPlan {
    pub fn changes(&self) -> bool {
        !self.sriov_steps.is_empty() || self.devices.changes()
    }
}

/// What the SR-IOV steps put back (for running them).
#[derive(Debug, Clone)]
pub struct SriovTarget {
    pub pf: PciAddress,
    pub count_now: u16,
    pub count: u16,
    pub autoprobe_now: Option<bool>,
    pub autoprobe: Option<bool>,
    pub vfs_before: Vec<VfBefore>,
    pub timeout: Duration,
}

impl SriovTarget {
    fn put_back(&self) -> PutBack<'_> {
        PutBack {
            pf: self.pf,
            count_now: self.count_now,
            count: self.count,
            autoprobe_now: self.autoprobe_now,
            autoprobe: self.autoprobe,
            vfs_before: &self.vfs_before,
            timeout: self.timeout,
        }
    }
}

/// Why the recovery cannot be planned. Nothing has been written.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("recover would {what}: {error}; nothing was written (the interrupted change stays recorded)")]
    Refused {
        what: &'static str,
        error: RefusedBy,
    },
}

/// The refusal behind a `RecoverError`.
#[derive(Debug, thiserror::Error)]
pub enum RefusedBy {
    /// The kernel holds these devices' lock: an unbind the interrupted change
    /// started is still pending, and any write to them would block.
    #[error("an unbind of {} is still pending in the kernel (a process holds the device, so the kernel holds its lock and any write to it would block); stop that process (vfioctl show names holders), then run vfioctl recover again", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Locked(Vec<PciAddress>),
    /// The kernel holds the lock of devices an interrupted reset was
    /// resetting: the reset (or what it waits for) is still in the kernel.
    #[error("the kernel still holds the lock of {} (the interrupted reset, or the unbind or process it waits for, is still in the kernel), and a write to the device would block behind it; once it has finished (vfioctl show names holders), run vfioctl recover again", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    ResetPending(Vec<PciAddress>),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Sriov(#[from] SriovError),
}

/// Plans putting `intent` back on the devices as they are now (`inv` holds
/// them; `now` the SR-IOV PF's count and autoprobe, when it has a part).
/// Pure; judges nothing (see [`judge`]).
pub fn plan(
    inv: &Inventory,
    facts: &Facts,
    intent: &Intent,
    now: Option<SriovNow>,
    timeout: Duration,
) -> Result<RecoverPlan, RecoverError> {
    let mut notes = Vec::new();
    let mut checks = Vec::new();
    let mut vanished: Vec<PciAddress> = Vec::new();
    let mut sriov_steps = Vec::new();
    let mut sriov_target = None;
    // VFs the SR-IOV part destroys or recreates are not put back one by one.
    let mut recreated: BTreeSet<PciAddress> = BTreeSet::new();
    if let Some(s) = &intent.sriov {
        match (inv.device(&s.pf), now) {
            (Some(pf), Some(now)) => {
                let target = SriovTarget {
                    pf: s.pf,
                    count_now: now.count,
                    count: s.numvfs_before,
                    autoprobe_now: now.autoprobe,
                    autoprobe: s.autoprobe_before,
                    vfs_before: s
                        .vfs_before
                        .iter()
                        .map(|v| VfBefore {
                            address: v.address,
                            driver: v.binding.driver.clone(),
                            driver_override: v.binding.driver_override.clone(),
                        })
                        .collect(),
                    timeout,
                };
                if target.count_now != target.count {
                    if let SriovRole::Pf { vfs, .. } = &pf.sriov {
                        recreated.extend(vfs);
                    }
                    recreated.extend(target.vfs_before.iter().map(|v| v.address));
                }
                sriov_steps = put_back_steps(&target.put_back());
                if sriov_steps.is_empty() {
                    checks.push(format!(
                        "{}: sriov_numvfs {} and sriov_drivers_autoprobe as before",
                        s.pf, s.numvfs_before
                    ));
                }
                sriov_target = Some(target);
            }
            _ => vanished.push(s.pf),
        }
    }
    let locked: Vec<PciAddress> = intent
        .addresses()
        .into_iter()
        .filter(|a| inv.device(a).is_some_and(|d| d.device_locked))
        .collect();
    if !locked.is_empty() {
        return Err(RecoverError::Refused {
            what: "write to devices the kernel holds",
            error: RefusedBy::Locked(locked),
        });
    }
    let mut targets = Vec::new();
    let mut recover_to = BTreeMap::new();
    for d in &intent.devices {
        if recreated.contains(&d.address) {
            continue;
        }
        if inv.device(&d.address).is_none() {
            vanished.push(d.address);
            continue;
        }
        targets.push(d.address);
        let (target, dropped) = without_stale_override(&d.before);
        if let Some(driver) = dropped {
            notes.push(format!(
                "{}: its driver_override {driver} is not written back: the device goes back to {} without it (a claiming override on a host driver hands the device to {driver} at its next probe; vfioctl restore clears such overrides)",
                d.address,
                target.driver.as_ref().map_or_else(|| "no driver".to_string(), ToString::to_string),
            ));
        }
        recover_to.insert(d.address, target);
    }
    let facts = Facts {
        vfio_variants: facts.vfio_variants,
        previous: facts.previous.clone(),
        history: BTreeMap::new(),
        recover_to,
    };
    let request = Request {
        goal: Goal::Recover,
        targets,
        with_group: false,
    };
    let devices = make_plan(inv, &facts, &request).map_err(|e| RecoverError::Refused {
        what: "put the devices back",
        error: e.into(),
    })?;
    vanished.sort();
    vanished.dedup();
    if !vanished.is_empty() {
        notes.push(format!(
            "{} no longer present: nothing to put back there",
            vanished
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    notes.push(format!(
        "recover puts back what `vfioctl {}` changed, as its own rollback would have; run it again if the change is still wanted",
        intent.command
    ));
    Ok(RecoverPlan {
        sriov_steps,
        devices,
        vanished,
        checks,
        notes,
        sriov_target,
    })
}

/// A binding to put back, less a claiming driver_override on a host driver
/// (`gate::policy`, recover's row): `before` as it was, or with that
/// override dropped (returned, for the note).
fn without_stale_override(before: &Binding) -> (Binding, Option<crate::model::DriverName>) {
    let on_host = before
        .driver
        .as_ref()
        .is_some_and(|d| d.kind() == DriverKind::Host);
    match &before.driver_override {
        Some(o)
            if on_host && o.kind() != DriverKind::Host && Path::Recover.drops_stale_overrides() =>
        {
            (
                Binding {
                    driver: before.driver.clone(),
                    driver_override: None,
                },
                Some(o.clone()),
            )
        }
        _ => (before.clone(), None),
    }
}

/// A recovery the gate cleared: its VF count (when the intent has an SR-IOV
/// part) and its devices. What [`apply`] takes.
pub struct ClearedRecover {
    /// The plan with the gate's checks and notes, for reports.
    pub plan: RecoverPlan,
    count: Option<ClearedVfCount>,
    devices: Cleared,
    /// Where recreated VFs' rebind gets its VM facts.
    vms: VmSource,
}

/// Has the gate judge `plan` as a change of its own (see the module docs).
pub fn judge(
    root: &HostRoot,
    inv: &Inventory,
    usage: &HostUsage,
    mut plan: RecoverPlan,
    force: bool,
    vms: VmSource,
) -> Result<ClearedRecover, RecoverError> {
    let count = match &plan.sriov_target {
        Some(t) if !plan.sriov_steps.is_empty() => {
            let facts = gate::Facts {
                inventory: inv,
                host: usage,
                fabric: hostfacts::fabric_of_host(root, inv),
            };
            let count = VfCount {
                pf: t.pf,
                from: t.count_now,
                to: t.count,
            };
            let judged = gate::clear_vf_count(&facts, Path::Recover, count, force);
            let cleared = judged.verdict.map_err(|refused| match refused {
                VfCountRefused::Destroys { vfs, refusals } => RecoverError::Refused {
                    what: "destroy the VFs the interrupted change created",
                    error: SriovError::Held {
                        pf: t.pf,
                        vfs,
                        refusals,
                    }
                    .into(),
                },
                VfCountRefused::InterruptsPf(refusals) => RecoverError::Refused {
                    what: "change the VF count back",
                    error: SriovError::InterruptsPf { pf: t.pf, refusals }.into(),
                },
            })?;
            plan.checks.extend(cleared.checks().iter().cloned());
            plan.notes.extend(cleared.notes().iter().cloned());
            Some(cleared)
        }
        _ => None,
    };
    let devices = std::mem::replace(&mut plan.devices, empty_plan());
    let devices = judge_plan(root, inv, usage, devices, Path::Recover, force).map_err(|e| {
        RecoverError::Refused {
            what: "put the devices back",
            error: e.into(),
        }
    })?;
    plan.devices = devices.plan().clone();
    Ok(ClearedRecover {
        plan,
        count,
        devices,
        vms,
    })
}

fn empty_plan() -> Plan {
    Plan {
        goal: Goal::Recover,
        load_modules: Vec::new(),
        actions: Vec::new(),
        notes: Vec::new(),
        checks: Vec::new(),
        with_group: false,
    }
}

/// What applying a recovery did.
#[derive(Debug, Serialize)]
pub struct RecoverResult {
    /// The SR-IOV part (null: none).
    pub sriov: Option<PutBackDone>,
    /// The devices put back (null when none needed it).
    pub devices: Option<Applied>,
    /// Whether the change record no longer holds the interrupted change.
    pub cleared: bool,
}

impl RecoverResult {
    pub fn succeeded(&self) -> bool {
        self.sriov.as_ref().is_none_or(|s| s.errors.is_empty())
            && self.devices.as_ref().is_none_or(Applied::succeeded)
    }
}

/// What `recover` found, planned and did, as printed and as JSON.
#[derive(Debug, Serialize)]
pub struct RecoverReport {
    pub command: &'static str,
    pub dry_run: bool,
    /// The interrupted change recorded (null: none).
    pub interrupted: Option<Intent>,
    /// `interrupted`, `in_progress` (its process still runs) or
    /// `other_boot` (stale: cleared); null when none is recorded.
    pub state: Option<IntentState>,
    /// Null when nothing is recorded, for `--forget`, and while the change
    /// is in progress.
    pub plan: Option<RecoverPlan>,
    /// Null for a dry run, or when nothing was planned.
    pub result: Option<RecoverResult>,
    /// `--forget`: the record cleared, no device touched.
    pub forgotten: bool,
    /// An interrupted reset put back (null unless the interrupted change
    /// was a reset, which has no `plan`).
    pub reset: Option<crate::engine::reset::ResetRecovery>,
}

/// privilege -> lock -> record -> read -> plan -> apply -> record.
pub fn run(
    root: &HostRoot,
    spec: &RecoverSpec,
    kernel: &dyn PciKernel,
) -> anyhow::Result<RecoverReport> {
    if !spec.dry_run && !privileged() {
        return Err(NotPrivileged { command: "recover" }.into());
    }
    let _lock = if spec.dry_run {
        None
    } else {
        Some(state::lock(root, spec.timeout)?)
    };
    let mut record = state::read_record(root)?;
    let mut report = RecoverReport {
        command: "recover",
        dry_run: spec.dry_run,
        interrupted: record.intent.clone(),
        state: None,
        plan: None,
        result: None,
        forgotten: false,
        reset: None,
    };
    let Some(intent) = record.intent.clone() else {
        return Ok(report);
    };
    let found = intent.state(root);
    // Under the lock no change runs: an intent of a live process is one
    // whose own clear failed, so it is left unfinished too.
    let found = match (found, spec.dry_run) {
        (IntentState::InProgress, false) => IntentState::Interrupted,
        (state, _) => state,
    };
    report.state = Some(found);
    match found {
        IntentState::InProgress => return Ok(report),
        IntentState::OtherBoot | IntentState::Interrupted if spec.forget => {
            report.forgotten = !spec.dry_run;
            if !spec.dry_run {
                record.intent = None;
                state::write_record(root, &record)?;
            }
            return Ok(report);
        }
        IntentState::OtherBoot => {
            // The kernel state it describes is gone with that boot.
            if !spec.dry_run {
                record.intent = None;
                state::write_record(root, &record)?;
            }
            return Ok(report);
        }
        IntentState::Interrupted => {}
    }
    if let Some(reset) = &intent.reset {
        // Nothing to reset again: reset_method back, the devices unverified.
        let inv = read_devices(root, &intent.addresses(), Names::Skip)?;
        let locked: Vec<PciAddress> = reset
            .devices
            .iter()
            .map(|d| d.address)
            .filter(|a| inv.device(a).is_some_and(|d| d.device_locked))
            .collect();
        if !locked.is_empty() {
            return Err(RecoverError::Refused {
                what: "write to devices the kernel holds",
                error: RefusedBy::ResetPending(locked),
            }
            .into());
        }
        report.reset = Some(crate::engine::reset::recover(
            root,
            kernel,
            &inv,
            reset,
            spec.dry_run,
            &mut record,
        ));
        return Ok(report);
    }
    let mut seeds = intent.addresses();
    let pf = intent.sriov.as_ref().map(|s| s.pf);
    seeds.extend(pf);
    let inv = read_devices(root, &seeds, Names::Skip)?;
    let now = pf.and_then(|pf| {
        let dev = inv.device(&pf)?;
        let count = match &dev.sriov {
            SriovRole::Pf { vfs, .. } => u16::try_from(vfs.len()).unwrap_or(u16::MAX),
            _ => 0,
        };
        Some(SriovNow {
            count,
            autoprobe: read_sriov_autoprobe(root, pf),
        })
    });
    let usage = HostUsage::new(root, &inv, Pending::Deferred(spec.vms.clone()));
    let facts = host_facts(&[], &record);
    let planned = plan(&inv, &facts, &intent, now, spec.timeout)?;
    let cleared = judge(root, &inv, &usage, planned, spec.force, spec.vms.clone())?;
    for module in &cleared.plan.devices.load_modules {
        modules::preflight(root, inv.kernel_release.as_deref(), module)?;
    }
    if spec.dry_run {
        report.plan = Some(cleared.plan);
        return Ok(report);
    }
    let result = apply(root, kernel, &cleared, spec.timeout, &mut record);
    report.plan = Some(cleared.plan);
    report.result = Some(result);
    Ok(report)
}

/// Runs the SR-IOV steps, then the devices' plan (with the binding engine's
/// verification and newest-first rollback). Only a verified recovery clears
/// the intent, in `record` and on disk; on any failure it stays.
pub fn apply(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    cleared: &ClearedRecover,
    timeout: Duration,
    record: &mut state::ChangeRecord,
) -> RecoverResult {
    let plan = &cleared.plan;
    let sriov = match (&plan.sriov_target, &cleared.count) {
        (Some(target), Some(count)) if !plan.sriov_steps.is_empty() => Some(run_put_back(
            root,
            kernel,
            count.pf_write(),
            &target.put_back(),
            &plan.sriov_steps,
            // Recreated VFs are new devices: their bind is judged.
            Rebinding::Judged {
                path: Path::Recover,
                vms: cleared.vms.clone(),
                force: false,
            },
        )),
        _ => None,
    };
    let sriov_ok = sriov.as_ref().is_none_or(|s| s.errors.is_empty());
    let devices = (sriov_ok && cleared.devices.plan().changes())
        .then(|| apply_plan(&cleared.devices, kernel, timeout));
    let mut result = RecoverResult {
        sriov,
        devices,
        cleared: false,
    };
    if result.succeeded() {
        // The SR-IOV part rewrote the record (VFs rebound): read it again.
        if let Ok(fresh) = state::read_record(root) {
            *record = fresh;
        }
        record.intent = None;
        result.cleared = state::write_record(root, record).is_ok();
    }
    result
}

/// The error to return for a report whose recovery failed, if it did.
pub fn failure(report: &RecoverReport) -> Option<ApplyFailed> {
    if let Some(reset) = &report.reset {
        return (!report.dry_run)
            .then(|| crate::engine::reset::recovery_failure(reset))
            .flatten();
    }
    let result = report.result.as_ref()?;
    let mut parts = Vec::new();
    let mut rollback_failed = false;
    if let Some(s) = &result.sriov {
        // The PF's VF count or autoprobe is not as recorded: unknown state.
        rollback_failed |= !s.errors.is_empty();
        parts.extend(s.errors.iter().cloned());
    }
    if let Some(applied) = &result.devices {
        if let Some(e) = &applied.error {
            parts.push(e.to_string());
            if unfinished(applied) {
                rollback_failed = true;
                parts.extend(applied.rollback_errors.iter().map(ToString::to_string));
            } else {
                parts.push(
                    "the devices recover changed were put back as it found them (verified on each)"
                        .to_string(),
                );
            }
        }
    }
    if parts.is_empty() && !result.cleared {
        parts.push("the devices are back, but the change record could not be cleared".to_string());
    }
    if parts.is_empty() {
        return None;
    }
    parts.push(
        "the interrupted change stays recorded: fix the cause and run `vfioctl recover` again (or `vfioctl recover --forget` once the devices are right)"
            .to_string(),
    );
    Some(ApplyFailed {
        message: format!("recover failed: {}", parts.join("; ")),
        rollback_failed,
        pending: result
            .devices
            .as_ref()
            .is_some_and(|a| a.pending().next().is_some()),
        vanished: false,
    })
}
