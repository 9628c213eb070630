//! SR-IOV: set a physical function's VF count and bind the new VFs, as one
//! verified change with rollback.
//!
//! The public API (kept stable: `sriov`, `persist apply`, the udev hook and
//! `sriov --persist` call it):
//!
//! - [`plan`](fn@plan)`(inv, facts, request) -> Result<SriovPlan, SriovError>`: pure.
//!   Refuses a device that is not a PF, a count above `sriov_totalvfs`, a PF
//!   without a driver, and destroying VFs the gate refuses (a process holds
//!   one: never overridable). Its [`SriovStep`]s print as the sysfs writes.
//! - [`apply`](fn@apply)`(root, kernel, plan, variants) -> SriovApplied`: runs the steps; binds
//!   the VFs once their `virtfnN` links appear, through the binding engine
//!   (`engine::plan` and `engine::apply`: gate, refusals, verification,
//!   newest-first rollback); on failure puts the VF count and autoprobe
//!   back. The caller holds the change lock.
//! - [`change`]`(root, kernel, inv, request, variants, dry_run) -> anyhow::Result<SriovReport>`:
//!   reads the facts the plan needs (autoprobe, usage, change record), plans
//!   and applies. The caller holds the change lock (when not a dry run) and
//!   has parsed `variants` (`engine::run::variants_for`) before taking it.
//!   A refusal is a `SriovError` in the chain (nothing written); a failed
//!   apply is an `Ok` report whose [`failure`] is `Some`.
//! - [`run`]`(root, spec, kernel) -> anyhow::Result<SriovReport>`: privilege ->
//!   lock -> per-device read -> [`change`]; what the `sriov` command runs.
//! - [`failure`]`(report) -> Option<ApplyFailed>`: the error line and exit
//!   status of a report whose apply failed.
//!
//! The kernel steps are `PciKernel::set_sriov_autoprobe`, `set_numvfs` and
//! `virtfns`.
//!
//! Order: autoprobe 0 (when the VFs go to a claiming driver and autoprobe is
//! 1, so no native VF driver ever probes them) -> numvfs 0 (when changing a
//! non-zero count: the kernel refuses N -> M) -> numvfs N -> wait for the
//! `virtfn` links -> bind the VFs -> autoprobe back to 1.
//!
//! The files, read in this order: this one (the types, the flow `change`
//! and `run`, the intent), `plan` (pure: the steps and the refusals, the
//! put-back steps), `apply` (one small function per kernel step,
//! verification, newest-first rollback), `read` (the PF and its VFs from
//! the host). `apply` uses `plan` and `read`; neither of those uses another.

mod apply;
mod plan;
mod read;

pub use apply::{apply, run_put_back, Rebinding};
pub use plan::{plan, put_back_steps};
pub use read::read_pf;

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::engine::apply::{as_message, Applied};
use crate::engine::plan::{Facts, Goal, Plan, PlanError};
use crate::engine::run::{host_facts, privileged, variants_for, ApplyFailed, NotPrivileged};
use crate::gate::{self, Cleared, ClearedVfCount, Path, Refusal, VfCount, VfCountRefused};
use crate::host::hostfacts;
use crate::host::kernel::{KernelError, PciKernel};
use crate::host::modules::{self, ModuleError};
use crate::host::state::{self, StateError};
use crate::host::sysfs::{read_sriov_autoprobe, read_sriov_layout, InventoryError};
use crate::host::usage::HostUsage;
use crate::host::vms::{Pending, VmSource};
use crate::host::HostRoot;
use crate::model::declaration::DeclaredDriver;
use crate::model::driver::Binding;
use crate::model::modalias::Alias;
use crate::model::usage::DeviceUse;
use crate::model::{DriverName, Inventory, PciAddress, Selector};

/// What the operator (or a declaration) asked for.
#[derive(Debug, Clone)]
pub struct SriovRequest {
    /// The path asking (`sriov`, `persist apply`, `udev-hook`): how the gate
    /// judges it, and the command its intent names.
    pub path: Path,
    pub pf: PciAddress,
    pub numvfs: u16,
    /// The VFs' driver: `Auto` is vfio-pci or each VF's best VFIO variant.
    pub vf_driver: DeclaredDriver,
    /// Release VFs the host uses in ways `--force` may override (never a holder).
    pub force: bool,
    /// Deadline of each blocking write, of the wait for the VFs and of each
    /// VF's verification.
    pub timeout: Duration,
    /// Addresses a `[[binding]]` names: a VF among them is left to its own
    /// declaration (created with the others, never bound to `vf_driver`
    /// first). Empty for the `sriov` command, which binds every VF.
    pub keep: BTreeSet<PciAddress>,
    /// Where the VM rules' facts come from: libvirt for the `sriov` command
    /// (asked only when VFs would be destroyed or rebound away from VFIO),
    /// never for `persist apply` and the udev hook.
    pub vms: VmSource,
}

/// What the planner needs besides the inventory.
pub struct SriovFacts<'a> {
    /// The PF's `sriov_drivers_autoprobe` now (`None`: the kernel has none).
    pub autoprobe: Option<bool>,
    /// The PF's `sriov_offset` and `sriov_stride`: where new VFs appear.
    pub layout: Option<(u16, u16)>,
    /// The binding engine's facts: VFIO variants, the change record.
    pub engine: Facts<'a>,
}

/// One step of an SR-IOV change; printed as the sysfs write it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum SriovStep {
    /// Write 1 or 0 to `sriov_drivers_autoprobe`.
    Autoprobe { pf: PciAddress, on: bool },
    /// Write the count to `sriov_numvfs`.
    Numvfs { pf: PciAddress, count: u16 },
    /// Poll until `virtfn0` .. `virtfn{count-1}` exist.
    WaitVirtfns {
        pf: PciAddress,
        count: u16,
        seconds: u64,
    },
    /// Bind the new VFs through the binding engine (its plan is made once
    /// they exist: override, probe, verify for each).
    BindVfs { count: u16, driver: DeclaredDriver },
    /// Bind recreated VFs back to the claiming driver they were on (a
    /// rollback, `recover`), through the binding engine.
    RebindVfs {
        vfs: Vec<PciAddress>,
        driver: DriverName,
    },
}

impl fmt::Display for SriovStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SriovStep::Autoprobe { pf, on } => write!(
                f,
                "echo {} > /sys/bus/pci/devices/{pf}/sriov_drivers_autoprobe",
                u8::from(*on)
            ),
            SriovStep::Numvfs { pf, count } => {
                write!(f, "echo {count} > /sys/bus/pci/devices/{pf}/sriov_numvfs")
            }
            SriovStep::WaitVirtfns { count, seconds, .. } => {
                write!(f, "wait for {} (deadline {seconds}s)", virtfn_range(*count))
            }
            SriovStep::BindVfs { count, driver } => {
                let driver = match driver {
                    DeclaredDriver::Auto => "vfio-pci or its VFIO variant".to_string(),
                    DeclaredDriver::Named(d) => d.to_string(),
                };
                write!(
                    f,
                    "bind {} to {driver} (per VF: driver_override, drivers_probe, verify; rolled back newest first on failure)",
                    virtfn_range(*count)
                )
            }
            SriovStep::RebindVfs { vfs, driver } => write!(
                f,
                "bind {} back to {driver} (per VF: driver_override, drivers_probe, verify)",
                addresses(vfs)
            ),
        }
    }
}

/// `virtfn0`, `virtfn0..virtfn6`.
fn virtfn_range(count: u16) -> String {
    match count {
        0 | 1 => "virtfn0".to_string(),
        n => format!("virtfn0..virtfn{}", n - 1),
    }
}

/// A VF as it was before the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VfBefore {
    pub address: PciAddress,
    pub driver: Option<DriverName>,
    pub driver_override: Option<DriverName>,
}

/// The planned change of one PF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SriovPlan {
    pub pf: PciAddress,
    pub total_vfs: u32,
    pub numvfs_before: u16,
    pub numvfs: u16,
    /// `null`: vfio-pci or the best VFIO variant.
    pub vf_driver: DeclaredDriver,
    pub autoprobe_before: Option<bool>,
    /// The VFs now; destroyed when the count changes.
    pub vfs_before: Vec<VfBefore>,
    /// The VFs the count creates, from `sriov_offset` and `sriov_stride`
    /// (empty when the count stays, goes to 0, or the kernel shows no layout).
    pub vfs_after: Vec<PciAddress>,
    /// What the host uses the PF for, when its VF count changes: a change
    /// can interrupt it (refused without `--force`).
    pub pf_uses: Vec<DeviceUse>,
    /// The sysfs writes and waits, in order.
    pub steps: Vec<SriovStep>,
    /// When the count stays: the binding engine's plan for the VFs present.
    pub vf_plan: Option<Plan>,
    /// Addresses left to their own `[[binding]]` (see `SriovRequest::keep`).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub keep: BTreeSet<PciAddress>,
    pub checks: Vec<String>,
    pub notes: Vec<String>,
    #[serde(skip)]
    pub force: bool,
    #[serde(skip)]
    pub timeout: Duration,
}

impl SriovPlan {
    /// `vfs` less those left to their own `[[binding]]`.
    pub fn unkept(&self, vfs: &[PciAddress]) -> Vec<PciAddress> {
        vfs.iter()
            .copied()
            .filter(|a| !self.keep.contains(a))
            .collect()
    }

    /// Says which of `vfs` are left to their own declaration.
    fn note_kept(&mut self, vfs: &[PciAddress]) {
        let kept: Vec<PciAddress> = vfs
            .iter()
            .copied()
            .filter(|a| self.keep.contains(a))
            .collect();
        if !kept.is_empty() {
            self.notes.push(format!(
                "{} left to the [[binding]] naming each: not bound to the VF driver",
                addresses(&kept)
            ));
        }
    }

    pub fn changes(&self) -> bool {
        !self.steps.is_empty() || self.vf_plan.as_ref().is_some_and(Plan::changes)
    }

    /// Whether the VFs are destroyed (the count changes and some exist).
    pub fn destroys_vfs(&self) -> bool {
        self.numvfs != self.numvfs_before && self.numvfs_before > 0
    }
}

/// Why an SR-IOV change cannot be planned. Nothing has been written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SriovError {
    #[error("{device} is not an SR-IOV physical function: {what}; name a PF (vfioctl list shows PF in the SRIOV column)")]
    NotPf { device: PciAddress, what: String },
    #[error(
        "{pf} supports at most {total} VFs (sriov_totalvfs), not {asked}; ask for 0 to {total}"
    )]
    TooMany {
        pf: PciAddress,
        asked: u16,
        total: u32,
    },
    #[error("{pf} has no driver, and the PF's driver creates the VFs; bind it to its host driver first (vfioctl restore {pf})")]
    NoPfDriver { pf: PciAddress },
    #[error("changing the VF count of {pf} destroys its VFs {}: {}; stop what holds them first", addresses(.vfs), crate::gate::joined(.refusals))]
    Held {
        pf: PciAddress,
        vfs: Vec<PciAddress>,
        refusals: Vec<Refusal>,
    },
    #[error("changing the VF count of {pf} can interrupt what the host uses it for: {}; some PF drivers reset the PF when SR-IOV is enabled or disabled (ixgbe reinitialises it, dropping its link); use --force to change it anyway; nothing was written", crate::gate::joined(.refusals))]
    InterruptsPf {
        pf: PciAddress,
        refusals: Vec<Refusal>,
    },
    #[error("selector '{selector}' matches {count} functions ({first}, ...); name one PF by its address")]
    Ambiguous {
        selector: String,
        count: usize,
        first: PciAddress,
    },
    /// Rebinding the VFs present (the count stays) was refused.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

fn addresses(list: &[PciAddress]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A step of the change that failed.
#[derive(Debug, thiserror::Error)]
pub enum SriovStepError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("{pf}: expected {expected} VFs (virtfn links) within {seconds}s but found {found}")]
    NoVirtfns {
        pf: PciAddress,
        expected: u16,
        found: usize,
        seconds: u64,
    },
    #[error("{pf}: reading the new VFs failed: {error}")]
    Read {
        pf: PciAddress,
        error: InventoryError,
    },
    #[error("{pf}: binding the VFs needs a module: {error}")]
    Module { pf: PciAddress, error: ModuleError },
    #[error("binding the new VFs of {pf} was refused: {error}")]
    Refused { pf: PciAddress, error: PlanError },
    #[error("binding the VFs of {pf} would also change {device}, which is not one of them; refused (only the VFs move)")]
    NotAVf { pf: PciAddress, device: PciAddress },
    /// Rebinding recreated VFs would do more than put back the drivers they
    /// had before the change (a rollback is cleared for nothing else).
    #[error("putting the VFs of {pf} back would do more than give them back the drivers they had; refused")]
    NotPutBack { pf: PciAddress },
    #[error("binding the VFs of {pf} failed: {message}")]
    Bind { pf: PciAddress, message: String },
    /// The change record could not be read or updated.
    #[error("{pf}: the change record could not be read or written: {error}")]
    Record { pf: PciAddress, error: StateError },
}

impl SriovStepError {
    fn pending(&self) -> bool {
        matches!(self, SriovStepError::Kernel(KernelError::Timeout { .. }))
    }
    fn vanished(&self) -> bool {
        matches!(self, SriovStepError::Kernel(KernelError::Vanished { .. }))
    }
}

/// A VF at the end of the change (after verification or rollback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VfNow {
    pub address: PciAddress,
    pub driver: Option<DriverName>,
}

/// What applying a plan did.
#[derive(Debug, Serialize)]
pub struct SriovApplied {
    /// The steps that ran to completion, in order.
    pub done: Vec<SriovStep>,
    /// The binding engine's plan for the VFs, made once they existed.
    pub vf_plan: Option<Plan>,
    /// What the binding engine did with it (its own rollback included).
    pub vf_result: Option<Applied>,
    /// The first failure; `null` on success.
    #[serde(serialize_with = "as_message")]
    pub error: Option<SriovStepError>,
    /// What was put back after a failure, each verified.
    pub rolled_back: Vec<String>,
    /// What could not be put back.
    pub rollback_errors: Vec<String>,
    /// The VF count at the end (`virtfn` links counted).
    pub numvfs: usize,
    /// `sriov_drivers_autoprobe` as last written (`null`: not written).
    pub autoprobe: Option<bool>,
    /// The VFs at the end, with their drivers.
    pub vfs: Vec<VfNow>,
}

impl SriovApplied {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// A PF to put back as it was before a change: after a failed change
/// (`apply`'s rollback) and after an interrupted one (`recover`).
#[derive(Debug, Clone)]
pub struct PutBack<'a> {
    pub pf: PciAddress,
    /// VFs now (`virtfn` links).
    pub count_now: u16,
    /// VFs before the change.
    pub count: u16,
    /// `sriov_drivers_autoprobe` now (`None`: not known or not written).
    pub autoprobe_now: Option<bool>,
    /// `sriov_drivers_autoprobe` before the change.
    pub autoprobe: Option<bool>,
    /// The VFs before, with their drivers: those on a claiming driver
    /// (VFIO, pci-stub) are bound to it again once recreated.
    pub vfs_before: &'a [VfBefore],
    pub timeout: Duration,
}

/// What running `put_back_steps` did.
#[derive(Debug, Default, Serialize)]
pub struct PutBackDone {
    /// What was put back, each verified.
    pub rolled_back: Vec<String>,
    /// What could not be.
    pub errors: Vec<String>,
    /// `sriov_drivers_autoprobe` as last written (`null`: not written).
    pub autoprobe: Option<bool>,
}

/// What was planned and what happened, as printed and as JSON.
#[derive(Debug, Serialize)]
pub struct SriovReport {
    pub command: &'static str,
    pub dry_run: bool,
    pub plan: SriovPlan,
    /// Null for a dry run or when there was nothing to do.
    pub result: Option<SriovApplied>,
}

/// An SR-IOV plan the gate cleared: the PF's VF count (and autoprobe) and,
/// when the count stays, the VFs present rebound. What [`apply`] takes.
pub struct ClearedSriov {
    /// The plan, with the gate's checks and notes (and the VFs' cleared plan
    /// as `vf_plan`), for reports.
    pub plan: SriovPlan,
    count: ClearedVfCount,
    vfs: Option<Cleared>,
    /// Where the new VFs' bind gets its VM facts (asked only if it gives
    /// them to a host driver).
    vms: VmSource,
}

impl ClearedSriov {
    pub(crate) fn count(&self) -> &ClearedVfCount {
        &self.count
    }
    pub(crate) fn vfs(&self) -> Option<&Cleared> {
        self.vfs.as_ref()
    }
    pub(crate) fn vms(&self) -> &VmSource {
        &self.vms
    }
}

/// Asks the gate to clear `plan` (made for `request`): the VF count change
/// (the PF's uses, the VFs it destroys) and, when the count stays, the VFs'
/// bind. Refused: a `SriovError`, nothing written.
pub fn judge(
    root: &HostRoot,
    inv: &Inventory,
    usage: &HostUsage,
    mut plan: SriovPlan,
    request: &SriovRequest,
) -> Result<ClearedSriov, SriovError> {
    let pf = plan.pf;
    let facts = gate::Facts {
        inventory: inv,
        host: usage,
        fabric: hostfacts::fabric_of_host(root, inv),
    };
    let count = VfCount {
        pf,
        from: plan.numvfs_before,
        to: plan.numvfs,
    };
    let judged = gate::clear_vf_count(&facts, request.path, count, request.force);
    plan.pf_uses = judged.pf_uses;
    let count = judged.verdict.map_err(|refused| match refused {
        VfCountRefused::InterruptsPf(refusals) => SriovError::InterruptsPf { pf, refusals },
        VfCountRefused::Destroys { vfs, refusals } => SriovError::Held { pf, vfs, refusals },
    })?;
    plan.checks.extend(count.checks().iter().cloned());
    plan.notes.extend(count.notes().iter().cloned());
    let vfs = match plan.vf_plan.take() {
        Some(vf_plan) => {
            let cleared = gate::clear(vf_plan, &facts, request.path, request.force)
                .map_err(|r| SriovError::Plan(PlanError::Refused(r)))?;
            plan.vf_plan = Some(cleared.plan().clone());
            Some(cleared)
        }
        None => None,
    };
    Ok(ClearedSriov {
        plan,
        count,
        vfs,
        vms: request.vms.clone(),
    })
}

/// Reads the facts, plans, has the gate judge and (unless `dry_run` or
/// nothing changes) applies. The caller holds the change lock when not a
/// dry run; `inv` must hold the PF, its VFs and their IOMMU groups
/// (`read_devices` of the PF and its VFs).
pub fn change(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    inv: &Inventory,
    request: &SriovRequest,
    variants: &[Alias],
    dry_run: bool,
) -> anyhow::Result<SriovReport> {
    let mut record = state::read_record(root)?;
    state::refuse_interrupted(root, &record, !dry_run)?;
    let release = inv.kernel_release.as_deref();
    let usage = HostUsage::new(root, inv, Pending::Deferred(request.vms.clone()));
    let facts = SriovFacts {
        autoprobe: read_sriov_autoprobe(root, request.pf),
        layout: read_sriov_layout(root, request.pf),
        engine: host_facts(variants, &record),
    };
    let planned = plan(inv, &facts, request)?;
    let cleared = judge(root, inv, &usage, planned, request)?;
    if let Some(vf_plan) = &cleared.plan.vf_plan {
        for module in &vf_plan.load_modules {
            modules::preflight(root, release, module)?;
        }
    }
    let result = if !dry_run && cleared.plan.changes() {
        // The intent first (see `host::state`): a change killed from here on
        // is found by the next change and by `check`, and `recover` puts the
        // VF count, the VFs' drivers and autoprobe back.
        record.intent = Some(intent_for(root, request.path.verb(), &cleared.plan));
        state::write_record(root, &record)?;
        let mut applied = apply(root, kernel, &cleared, variants);
        finish_intent(root, cleared.plan.pf, &mut applied);
        Some(applied)
    } else {
        None
    };
    Ok(SriovReport {
        command: "sriov",
        dry_run,
        plan: cleared.plan,
        result,
    })
}

/// The intent of applying `plan`: the VF count and autoprobe before, the VFs
/// before, and (when the count stays) the VFs' binding changes.
pub fn intent_for(root: &HostRoot, caller: &str, plan: &SriovPlan) -> state::Intent {
    let sriov = state::IntentSriov {
        pf: plan.pf,
        numvfs_before: plan.numvfs_before,
        numvfs: plan.numvfs,
        autoprobe_before: plan.autoprobe_before,
        vfs_before: plan
            .vfs_before
            .iter()
            .map(|v| state::IntentVf {
                address: v.address,
                binding: Binding {
                    driver: v.driver.clone(),
                    driver_override: v.driver_override.clone(),
                },
            })
            .collect(),
    };
    let devices = plan
        .vf_plan
        .as_ref()
        .map(crate::engine::run::intent_devices)
        .unwrap_or_default();
    state::Intent::new(root, caller, devices, Some(sriov))
}

/// Clears the intent once the change is verified or put back; a failed
/// rollback (or a count write still pending in the kernel) keeps it.
fn finish_intent(root: &HostRoot, pf: PciAddress, applied: &mut SriovApplied) {
    let unfinished = !applied.rollback_errors.is_empty()
        || applied
            .vf_result
            .as_ref()
            .is_some_and(crate::engine::run::unfinished);
    if unfinished {
        return;
    }
    let cleared = state::read_record(root).and_then(|mut record| {
        record.intent = None;
        state::write_record(root, &record)
    });
    if let Err(error) = cleared {
        let error = SriovStepError::Record { pf, error };
        match applied.error {
            None => applied.error = Some(error),
            Some(_) => applied.rollback_errors.push(error.to_string()),
        }
    }
}

/// How the `sriov` command was asked.
#[derive(Debug, Clone)]
pub struct SriovSpec {
    /// Must match exactly one function, the PF.
    pub selector: Selector,
    pub numvfs: u16,
    pub vf_driver: DeclaredDriver,
    pub force: bool,
    pub dry_run: bool,
    pub timeout: Duration,
    /// Where the VM rules' facts come from (see `SriovRequest::vms`).
    pub vms: VmSource,
}

/// Work after a verified change, under the same lock and with the inventory
/// read before it (`sriov --persist` declaring the count it set).
pub type AfterSriov<'a> = &'a mut dyn FnMut(&Inventory, &SriovReport) -> anyhow::Result<()>;

/// privilege -> lock -> read the PF and its VFs -> [`change`].
pub fn run(
    root: &HostRoot,
    spec: &SriovSpec,
    kernel: &dyn PciKernel,
) -> anyhow::Result<SriovReport> {
    run_then(root, spec, kernel, None)
}

/// [`run`], then `after` (not for a dry run, nor when the change failed).
pub fn run_then(
    root: &HostRoot,
    spec: &SriovSpec,
    kernel: &dyn PciKernel,
    after: Option<AfterSriov>,
) -> anyhow::Result<SriovReport> {
    if !spec.dry_run && !privileged() {
        return Err(NotPrivileged { command: "sriov" }.into());
    }
    let variants = variants_for(root, &Goal::bind_to(&spec.vf_driver));
    let _lock = if spec.dry_run {
        None
    } else {
        Some(state::lock(root, spec.timeout)?)
    };
    let pf = read::find_pf(root, &spec.selector)?;
    let inv = read_pf(root, pf)?;
    let request = SriovRequest {
        path: Path::Sriov,
        pf,
        numvfs: spec.numvfs,
        vf_driver: spec.vf_driver.clone(),
        force: spec.force,
        timeout: spec.timeout,
        keep: BTreeSet::new(),
        vms: spec.vms.clone(),
    };
    let report = change(root, kernel, &inv, &request, &variants, spec.dry_run)?;
    if let Some(after) = after {
        if !spec.dry_run && failure(&report).is_none() {
            after(&inv, &report)?;
        }
    }
    Ok(report)
}

/// The error to return for a report whose apply failed, if it did: what
/// failed, what was put back (verified) and what was not.
pub fn failure(report: &SriovReport) -> Option<ApplyFailed> {
    let result = report.result.as_ref()?;
    let error = result.error.as_ref()?;
    let mut parts = vec![error.to_string()];
    if let Some(applied) = &result.vf_result {
        let put_back: Vec<String> = applied
            .devices
            .iter()
            .filter(|d| {
                matches!(
                    d.status,
                    crate::engine::apply::Status::RolledBack | crate::engine::apply::Status::Failed
                )
            })
            .map(|d| d.address.to_string())
            .collect();
        if !put_back.is_empty() {
            parts.push(format!("VFs put back (verified): {}", put_back.join(", ")));
        }
        parts.extend(applied.rollback_errors.iter().map(ToString::to_string));
    }
    parts.extend(result.rolled_back.iter().cloned());
    parts.extend(result.rollback_errors.iter().cloned());
    let vf_rollback_failed = result
        .vf_result
        .as_ref()
        .is_some_and(|a| !a.rollback_errors.is_empty());
    Some(ApplyFailed {
        message: parts.join("; "),
        rollback_failed: !result.rollback_errors.is_empty() || vf_rollback_failed,
        pending: error.pending(),
        vanished: error.vanished(),
    })
}
