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
//! the lock, through the same gate as every change (a process holding a
//! device refuses it, `--force` never overrides that; VFs to destroy are
//! judged like `sriov`'s; a VF count change on a PF the host uses needs
//! `--force`), and applied with verification and newest-first rollback. Only
//! a verified recovery clears the intent. `--forget` clears it without
//! touching a device, for an operator who has put the devices right by hand.
//!
//! - [`plan`]`(inv, facts, intent, now) -> Result<RecoverPlan, RecoverError>`: pure.
//! - [`run`]`(root, spec, kernel) -> anyhow::Result<RecoverReport>`: privilege
//!   -> lock -> record -> read -> plan -> apply -> record.
//! - [`failure`]`(report) -> Option<ApplyFailed>`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use crate::engine::apply::{apply as apply_plan, Applied};
use crate::engine::gate;
use crate::engine::plan::{plan as make_plan, Facts, Goal, Plan, PlanError, Request};
use crate::engine::run::{host_facts, privileged, unfinished, ApplyFailed, NotPrivileged};
use crate::engine::sriov::{
    put_back_steps, run_put_back, PutBack, PutBackDone, SriovError, SriovStep, VfBefore,
};
use crate::host::kernel::PciKernel;
use crate::host::modules;
use crate::host::state::{self, Intent, IntentState};
use crate::host::sysfs::{read_devices, read_sriov_autoprobe, Names};
use crate::host::usage::HostUsage;
use crate::host::HostRoot;
use crate::model::{Inventory, PciAddress, SriovRole};

/// How `recover` was asked.
#[derive(Debug, Clone)]
pub struct RecoverSpec {
    pub dry_run: bool,
    /// Passed to the gate: uses `--force` may override (never a holder).
    pub force: bool,
    /// Clear the record of the interrupted change without touching a device.
    pub forget: bool,
    pub timeout: Duration,
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
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Sriov(#[from] SriovError),
}

/// Plans putting `intent` back on the devices as they are now (`inv` holds
/// them; `now` the SR-IOV PF's count and autoprobe, when it has a part).
pub fn plan(
    inv: &Inventory,
    facts: &Facts,
    intent: &Intent,
    now: Option<SriovNow>,
    force: bool,
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
                    let current: Vec<PciAddress> = match &pf.sriov {
                        SriovRole::Pf { vfs, .. } => vfs.clone(),
                        _ => Vec::new(),
                    };
                    recreated.extend(&current);
                    recreated.extend(target.vfs_before.iter().map(|v| v.address));
                    let destroyed: BTreeSet<PciAddress> = current.iter().copied().collect();
                    let verdict = gate::judge(
                        inv,
                        facts.usage,
                        &destroyed,
                        gate::Change::ReleaseNow,
                        force,
                    );
                    if !verdict.allowed() {
                        return Err(RecoverError::Refused {
                            what: "destroy the VFs the interrupted change created",
                            error: SriovError::Held {
                                pf: s.pf,
                                vfs: current,
                                refusals: verdict.refusals,
                            }
                            .into(),
                        });
                    }
                    notes.extend(verdict.forced);
                    let (_, verdict) = gate::judge_vf_count(inv, facts.usage, &s.pf, force);
                    if !verdict.allowed() {
                        return Err(RecoverError::Refused {
                            what: "change the VF count back",
                            error: SriovError::InterruptsPf {
                                pf: s.pf,
                                refusals: verdict.refusals,
                            }
                            .into(),
                        });
                    }
                    notes.extend(verdict.forced);
                    checks.push(format!(
                        "{}: VFs to destroy not in use, PF not in use by the host",
                        s.pf
                    ));
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
        recover_to.insert(d.address, d.before.clone());
    }
    let facts = Facts {
        usage: facts.usage,
        vfio_variants: facts.vfio_variants,
        previous: facts.previous.clone(),
        history: BTreeMap::new(),
        fabric: facts.fabric.clone(),
        recover_to,
    };
    let request = Request {
        goal: Goal::Recover,
        targets,
        with_group: false,
        force,
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
    let usage = HostUsage::new(root, &inv);
    let facts = host_facts(root, &inv, &usage, &[], &record);
    let planned = plan(&inv, &facts, &intent, now, spec.force, spec.timeout)?;
    for module in &planned.devices.load_modules {
        modules::preflight(root, inv.kernel_release.as_deref(), module)?;
    }
    if spec.dry_run {
        report.plan = Some(planned);
        return Ok(report);
    }
    let result = apply(root, kernel, &planned, spec.timeout, &mut record);
    report.plan = Some(planned);
    report.result = Some(result);
    Ok(report)
}

/// Runs the SR-IOV steps, then the devices' plan (with the binding engine's
/// verification and newest-first rollback). Only a verified recovery clears
/// the intent, in `record` and on disk; on any failure it stays.
pub fn apply(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    plan: &RecoverPlan,
    timeout: Duration,
    record: &mut state::ChangeRecord,
) -> RecoverResult {
    let sriov = plan
        .sriov_target
        .as_ref()
        .filter(|_| !plan.sriov_steps.is_empty())
        .map(|target| run_put_back(root, kernel, &target.put_back(), &plan.sriov_steps));
    let sriov_ok = sriov.as_ref().is_none_or(|s| s.errors.is_empty());
    let devices =
        (sriov_ok && plan.devices.changes()).then(|| apply_plan(&plan.devices, kernel, timeout));
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
