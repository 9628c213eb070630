//! SR-IOV: set a physical function's VF count and bind the new VFs, as one
//! verified change with rollback.
//!
//! The public API (kept stable: `sriov`, `persist apply`, the udev hook and
//! `sriov --persist` call it):
//!
//! - [`plan`]`(inv, facts, request) -> Result<SriovPlan, SriovError>`: pure.
//!   Refuses a device that is not a PF, a count above `sriov_totalvfs`, a PF
//!   without a driver, and destroying VFs the gate refuses (a process holds
//!   one: never overridable). Its [`SriovStep`]s print as the sysfs writes.
//! - [`apply`]`(root, kernel, plan, variants) -> SriovApplied`: runs the steps; binds
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

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::apply::{apply as apply_plan, as_message, Applied};
use crate::engine::gate;
use crate::engine::plan::{plan as make_plan, Facts, Goal, Plan, PlanError, Request};
use crate::engine::refusal::Refusal;
use crate::engine::run::{
    host_facts, privileged, update_record, variants_for, ApplyFailed, NotPrivileged,
};
use crate::host::kernel::{KernelError, PciKernel};
use crate::host::modules::{self, ModuleError};
use crate::host::state::{self, StateError};
use crate::host::sysfs::{
    read_devices, read_selected, read_sriov_autoprobe, read_sriov_layout, InventoryError, Names,
};
use crate::host::usage::HostUsage;
use crate::host::vms::{Pending, VmSource};
use crate::host::HostRoot;
use crate::model::declaration::DeclaredDriver;
use crate::model::driver::Binding;
use crate::model::modalias::Alias;
use crate::model::usage::DeviceUse;
use crate::model::{DriverKind, DriverName, Inventory, PciAddress, Selector, SriovRole};

/// How often the `virtfn` links are looked at while waiting for them.
const POLL: Duration = Duration::from_millis(10);

/// What the operator (or a declaration) asked for.
#[derive(Debug, Clone)]
pub struct SriovRequest {
    /// The command asking (`sriov`, `persist apply`, `udev-hook`), for the intent.
    pub caller: &'static str,
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
    /// The binding engine's facts: usage (for VFs that would be destroyed or
    /// rebound), VFIO variants, the change record, the fabric.
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
    #[error("changing the VF count of {pf} destroys its VFs {}: {}; stop what holds them first", addresses(.vfs), crate::engine::refusal::joined(.refusals))]
    Held {
        pf: PciAddress,
        vfs: Vec<PciAddress>,
        refusals: Vec<Refusal>,
    },
    #[error("changing the VF count of {pf} can interrupt what the host uses it for: {}; some PF drivers reset the PF when SR-IOV is enabled or disabled (ixgbe reinitialises it, dropping its link); use --force to change it anyway; nothing was written", crate::engine::refusal::joined(.refusals))]
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

/// The kind of driver `driver` asks for (`Auto` is a VFIO driver).
fn driver_kind(driver: &DeclaredDriver) -> DriverKind {
    match driver {
        DeclaredDriver::Auto => DriverKind::Vfio,
        DeclaredDriver::Named(d) => d.kind(),
    }
}

/// Plans setting `request.pf`'s VF count; see the module docs.
pub fn plan(
    inv: &Inventory,
    facts: &SriovFacts,
    request: &SriovRequest,
) -> Result<SriovPlan, SriovError> {
    let pf = request.pf;
    let Some(dev) = inv.device(&pf) else {
        return Err(SriovError::NotPf {
            device: pf,
            what: "it is not present".to_string(),
        });
    };
    let (total_vfs, num_vfs, vfs) = match &dev.sriov {
        SriovRole::Pf {
            total_vfs,
            num_vfs,
            vfs,
        } => (*total_vfs, *num_vfs, vfs.clone()),
        SriovRole::Vf { physfn } => {
            return Err(SriovError::NotPf {
                device: pf,
                what: format!("it is a VF of {physfn}"),
            })
        }
        SriovRole::None => {
            return Err(SriovError::NotPf {
                device: pf,
                what: "it has no SR-IOV capability (no sriov_totalvfs)".to_string(),
            })
        }
    };
    if u32::from(request.numvfs) > total_vfs {
        return Err(SriovError::TooMany {
            pf,
            asked: request.numvfs,
            total: total_vfs,
        });
    }
    let numvfs_before = u16::try_from(num_vfs).unwrap_or(u16::MAX);
    let goal = Goal::bind_to(&request.vf_driver);
    let kind = driver_kind(&request.vf_driver);
    if request.numvfs > 0 && kind == DriverKind::Vfio && !inv.iommu.enabled() {
        return Err(PlanError::IommuOff(pf).into());
    }
    let vfs_before: Vec<VfBefore> = vfs
        .iter()
        .map(|a| {
            let vf = inv.device(a);
            VfBefore {
                address: *a,
                driver: vf.and_then(|v| v.driver.clone()),
                driver_override: vf.and_then(|v| v.driver_override.clone()),
            }
        })
        .collect();
    let mut out = SriovPlan {
        pf,
        total_vfs,
        numvfs_before,
        numvfs: request.numvfs,
        vf_driver: request.vf_driver.clone(),
        autoprobe_before: facts.autoprobe,
        vfs_before,
        vfs_after: Vec::new(),
        pf_uses: Vec::new(),
        steps: Vec::new(),
        vf_plan: None,
        keep: request.keep.clone(),
        checks: Vec::new(),
        notes: Vec::new(),
        force: request.force,
        timeout: request.timeout,
    };
    if request.numvfs == numvfs_before {
        if request.numvfs == 0 {
            out.notes
                .push(format!("{pf} has no VFs enabled; left untouched"));
        } else {
            out.notes.push(format!(
                "{pf} already has {numvfs_before} VFs; only their drivers are checked"
            ));
            let targets = out.unkept(&vfs);
            if !targets.is_empty() {
                let vf_request = Request {
                    goal,
                    targets,
                    with_group: false,
                    force: request.force,
                };
                out.vf_plan = Some(make_plan(inv, &facts.engine, &vf_request)?);
            }
        }
        out.note_kept(&vfs);
        return Ok(out);
    }
    if dev.driver.is_none() {
        return Err(SriovError::NoPfDriver { pf });
    }
    // The PF keeps its driver, but a count change can reset it.
    let (uses, verdict) = gate::judge_vf_count(inv, facts.engine.usage, &pf, request.force);
    if !verdict.allowed() {
        return Err(SriovError::InterruptsPf {
            pf,
            refusals: verdict.refusals,
        });
    }
    out.pf_uses = uses;
    out.notes.extend(verdict.forced);
    if out.pf_uses.is_empty() {
        out.checks.push(format!(
            "{pf} not in use by the host (mounts, addresses, routes, console)"
        ));
    }
    if let (Some((offset, stride)), true) = (facts.layout, request.numvfs > 0) {
        out.vfs_after = (0..request.numvfs)
            .filter_map(|i| pf.vf(offset, stride, i))
            .collect();
        if !out.vfs_after.is_empty() {
            out.notes.push(format!(
                "the VFs appear at {} (sriov_offset {offset}, sriov_stride {stride}); only they are bound, never {pf} itself",
                addresses(&out.vfs_after)
            ));
        }
    }
    if numvfs_before > 0 {
        let destroyed: BTreeSet<PciAddress> = vfs.iter().copied().collect();
        let verdict = gate::judge(
            inv,
            facts.engine.usage,
            &destroyed,
            gate::Change::ReleaseNow,
            request.force,
        );
        let mut refusals = verdict.refusals;
        let mut forced = verdict.forced;
        if let Some(vms) = facts.engine.usage.vms() {
            let vm_verdict =
                gate::judge_vms(inv, vms, &destroyed, gate::VmChange::ToHost, request.force);
            refusals.extend(vm_verdict.refusals);
            forced.extend(vm_verdict.forced);
            if let crate::model::domain::VmFacts::NotAsked(why)
            | crate::model::domain::VmFacts::Absent(why) = vms
            {
                out.notes.push(format!("VMs not checked: {why}"));
            }
        }
        if !refusals.is_empty() {
            return Err(SriovError::Held { pf, vfs, refusals });
        }
        out.notes.extend(forced);
        out.checks.push(format!(
            "VFs to destroy not in use (open handles, mounts, addresses, routes): {}",
            addresses(&vfs)
        ));
        if request.numvfs > 0 {
            out.notes.push(format!(
                "the kernel changes a non-zero VF count only through 0: {numvfs_before} -> 0 -> {}",
                request.numvfs
            ));
        }
    }
    let autoprobe_off =
        request.numvfs > 0 && kind != DriverKind::Host && facts.autoprobe == Some(true);
    if autoprobe_off {
        out.steps.push(SriovStep::Autoprobe { pf, on: false });
    }
    if numvfs_before > 0 {
        out.steps.push(SriovStep::Numvfs { pf, count: 0 });
    }
    if request.numvfs > 0 {
        out.steps.push(SriovStep::Numvfs {
            pf,
            count: request.numvfs,
        });
        out.steps.push(SriovStep::WaitVirtfns {
            pf,
            count: request.numvfs,
            seconds: request.timeout.as_secs(),
        });
        out.steps.push(SriovStep::BindVfs {
            count: request.numvfs,
            driver: request.vf_driver.clone(),
        });
    }
    if autoprobe_off {
        out.steps.push(SriovStep::Autoprobe { pf, on: true });
        out.notes.push(
            "sriov_drivers_autoprobe is 0 while the VFs are created, so no native VF driver probes them; then 1 again, as it was"
                .to_string(),
        );
    }
    if request.numvfs > 0 && facts.autoprobe.is_none() && kind != DriverKind::Host {
        out.notes.push(format!(
            "{pf} has no sriov_drivers_autoprobe: a native VF driver may probe the VFs before they are bound"
        ));
    }
    Ok(out)
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

/// Polls until the PF has at least `count` VFs; returns them (the first `count`).
fn wait_virtfns(
    kernel: &dyn PciKernel,
    pf: PciAddress,
    count: u16,
    deadline: Duration,
) -> Result<Vec<PciAddress>, SriovStepError> {
    let start = Instant::now();
    loop {
        let found = kernel.virtfns(pf)?;
        if found.len() >= usize::from(count) {
            return Ok(found.into_iter().take(usize::from(count)).collect());
        }
        if start.elapsed() >= deadline {
            return Err(SriovStepError::NoVirtfns {
                pf,
                expected: count,
                found: found.len(),
                seconds: deadline.as_secs(),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// The driver VFs are bound to, and the VFIO variants' aliases it chooses
/// from (`engine::run::variants_for` of the goal, parsed once).
struct VfTarget<'a> {
    goal: Goal,
    variants: &'a [Alias],
}

/// Plans (from a fresh read of the PF and `vfs`) and applies binding `vfs`
/// to `to.goal` through the binding engine; records the change on success.
/// Returns the plan (when one was made) and what applying it did.
fn bind_vfs(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    pf: PciAddress,
    vfs: &[PciAddress],
    to: VfTarget,
    force: bool,
    timeout: Duration,
) -> (Option<Plan>, Result<Applied, SriovStepError>) {
    let mut seeds = vec![pf];
    seeds.extend_from_slice(vfs);
    let inv = match read_devices(root, &seeds, Names::Skip) {
        Ok(inv) => inv,
        Err(error) => return (None, Err(SriovStepError::Read { pf, error })),
    };
    let mut record = match state::read_record(root) {
        Ok(record) => record,
        Err(error) => return (None, Err(SriovStepError::Record { pf, error })),
    };
    let release = inv.kernel_release.as_deref();
    let usage = HostUsage::new(root, &inv);
    let facts = host_facts(root, &inv, &usage, to.variants, &record);
    let request = Request {
        goal: to.goal,
        targets: vfs.to_vec(),
        with_group: false,
        force,
    };
    let vf_plan = match make_plan(&inv, &facts, &request) {
        Ok(plan) => plan,
        Err(error) => return (None, Err(SriovStepError::Refused { pf, error })),
    };
    // Only the VFs move: never their PF, never another function.
    if let Some(other) = vf_plan
        .actions
        .iter()
        .find(|a| a.changes() && !vfs.contains(&a.address))
    {
        return (
            Some(vf_plan.clone()),
            Err(SriovStepError::NotAVf {
                pf,
                device: other.address,
            }),
        );
    }
    for module in &vf_plan.load_modules {
        if let Err(error) = modules::preflight(root, release, module) {
            return (Some(vf_plan), Err(SriovStepError::Module { pf, error }));
        }
    }
    let applied = apply_plan(&vf_plan, kernel, timeout);
    if applied.succeeded() {
        update_record(&mut record, &vf_plan, &applied);
        if let Err(error) = state::write_record(root, &record) {
            return (Some(vf_plan), Err(SriovStepError::Record { pf, error }));
        }
    }
    (Some(vf_plan), Ok(applied))
}

/// Runs `plan`'s steps; see the module docs. The caller holds the change lock.
/// `variants`: the VFIO variant drivers' aliases for `plan.vf_driver`
/// (`engine::run::variants_for`), parsed once by the caller.
pub fn apply(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    plan: &SriovPlan,
    variants: &[Alias],
) -> SriovApplied {
    let pf = plan.pf;
    let timeout = plan.timeout;
    let goal = Goal::bind_to(&plan.vf_driver);
    let mut out = SriovApplied {
        done: Vec::new(),
        vf_plan: None,
        vf_result: None,
        error: None,
        rolled_back: Vec::new(),
        rollback_errors: Vec::new(),
        numvfs: 0,
        autoprobe: None,
        vfs: Vec::new(),
    };
    // The count stays: only the VFs' drivers change, as `bind` changes them.
    if let Some(vf_plan) = &plan.vf_plan {
        let applied = apply_plan(vf_plan, kernel, timeout);
        if applied.succeeded() {
            let recorded = state::read_record(root).and_then(|mut record| {
                update_record(&mut record, vf_plan, &applied);
                state::write_record(root, &record)
            });
            if let Err(error) = recorded {
                out.error = Some(SriovStepError::Record { pf, error });
            }
        } else if let Some(e) = &applied.error {
            out.error = Some(SriovStepError::Bind {
                pf,
                message: e.to_string(),
            });
        }
        out.vf_plan = Some(vf_plan.clone());
        out.vf_result = Some(applied);
        finish(kernel, plan, &mut out);
        return out;
    }

    let mut created: Vec<PciAddress> = Vec::new();
    for step in &plan.steps {
        let result: Result<(), SriovStepError> = match step {
            SriovStep::Autoprobe { on, .. } => kernel
                .set_sriov_autoprobe(pf, *on)
                .map(|()| out.autoprobe = Some(*on))
                .map_err(Into::into),
            SriovStep::Numvfs { count, .. } => {
                kernel.set_numvfs(pf, *count, timeout).map_err(Into::into)
            }
            SriovStep::WaitVirtfns { count, .. } => {
                wait_virtfns(kernel, pf, *count, timeout).map(|vfs| created = vfs)
            }
            // Only put-back plans rebind (`run_put_back`).
            SriovStep::RebindVfs { .. } => Ok(()),
            SriovStep::BindVfs { .. } if plan.unkept(&created).is_empty() => Ok(()),
            SriovStep::BindVfs { .. } => {
                let (vf_plan, result) = bind_vfs(
                    root,
                    kernel,
                    pf,
                    &plan.unkept(&created),
                    VfTarget {
                        goal: goal.clone(),
                        variants,
                    },
                    plan.force,
                    timeout,
                );
                out.vf_plan = vf_plan;
                result.and_then(|applied| {
                    let error = applied.error.as_ref().map(|e| SriovStepError::Bind {
                        pf,
                        message: e.to_string(),
                    });
                    out.vf_result = Some(applied);
                    error.map_or(Ok(()), Err)
                })
            }
        };
        match result {
            Ok(()) => out.done.push(step.clone()),
            Err(error) => {
                out.error = Some(error);
                break;
            }
        }
    }
    if out.error.is_some() {
        roll_back(root, kernel, plan, &mut out);
    } else if plan.destroys_vfs() {
        forget_destroyed(root, plan, &created, &mut out);
    }
    finish(kernel, plan, &mut out);
    out
}

/// The change record forgets VFs that no longer exist at their address.
fn forget_destroyed(
    root: &HostRoot,
    plan: &SriovPlan,
    created: &[PciAddress],
    out: &mut SriovApplied,
) {
    let gone: Vec<PciAddress> = plan
        .vfs_before
        .iter()
        .map(|v| v.address)
        .filter(|a| !created.contains(a))
        .collect();
    if gone.is_empty() {
        return;
    }
    let result = state::read_record(root).and_then(|mut record| {
        for a in &gone {
            record.forget(*a);
        }
        state::write_record(root, &record)
    });
    if let Err(error) = result {
        out.error = Some(SriovStepError::Record { pf: plan.pf, error });
    }
}

/// Reads the end state: the VF count, and each VF's driver.
fn finish(kernel: &dyn PciKernel, plan: &SriovPlan, out: &mut SriovApplied) {
    let vfs = kernel.virtfns(plan.pf).unwrap_or_default();
    out.numvfs = vfs.len();
    out.vfs = vfs
        .into_iter()
        .map(|address| VfNow {
            address,
            driver: kernel.driver(address).ok().flatten(),
        })
        .collect();
}

/// After a failure: the VF count back to what it was (through 0), the VFs
/// that were on a claiming driver bound to it again, autoprobe as it was
/// (`put_back_steps`, run by `run_put_back`). Each part is verified and
/// reported.
fn roll_back(root: &HostRoot, kernel: &dyn PciKernel, plan: &SriovPlan, out: &mut SriovApplied) {
    let pf = plan.pf;
    // A write still pending in the kernel (a VF held) cannot be undone now.
    let pending = out.error.as_ref().is_some_and(SriovStepError::pending);
    if pending {
        out.rollback_errors.push(format!(
            "{pf}: the sriov_numvfs write is still pending in the kernel; the VF count changes once the holder lets go"
        ));
    }
    let count_written = !pending
        && out
            .done
            .iter()
            .any(|s| matches!(s, SriovStep::Numvfs { .. }));
    let count_now = if count_written {
        match kernel.virtfns(pf) {
            Ok(vfs) => u16::try_from(vfs.len()).unwrap_or(u16::MAX),
            Err(e) => {
                out.rollback_errors.push(format!("{pf}: {e}"));
                plan.numvfs_before
            }
        }
    } else {
        plan.numvfs_before
    };
    let target = PutBack {
        pf,
        count_now,
        count: plan.numvfs_before,
        autoprobe_now: out.autoprobe,
        autoprobe: plan.autoprobe_before,
        vfs_before: &plan.vfs_before,
        timeout: plan.timeout,
    };
    let done = run_put_back(root, kernel, &target, &put_back_steps(&target));
    out.rolled_back.extend(done.rolled_back);
    out.rollback_errors.extend(done.errors);
    if done.autoprobe.is_some() {
        out.autoprobe = done.autoprobe;
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

/// The writes putting `p.pf` back, in order: through 0 when the count
/// differs, autoprobe as it was before the VFs are recreated (they come back
/// as the kernel made them), the old count and its `virtfn` links, each
/// claiming driver's VFs bound again, autoprobe as it was. Pure.
pub fn put_back_steps(p: &PutBack) -> Vec<SriovStep> {
    let pf = p.pf;
    let mut steps = Vec::new();
    let autoprobe = match (p.autoprobe, p.autoprobe_now) {
        (Some(was), Some(now)) if was != now => Some(was),
        _ => None,
    };
    let mut autoprobe_done = false;
    if p.count_now != p.count {
        if p.count_now > 0 {
            steps.push(SriovStep::Numvfs { pf, count: 0 });
        }
        if p.count > 0 {
            if let Some(on) = autoprobe {
                steps.push(SriovStep::Autoprobe { pf, on });
                autoprobe_done = true;
            }
            steps.push(SriovStep::Numvfs { pf, count: p.count });
            steps.push(SriovStep::WaitVirtfns {
                pf,
                count: p.count,
                seconds: p.timeout.as_secs(),
            });
            let drivers: BTreeSet<DriverName> = p
                .vfs_before
                .iter()
                .filter_map(|v| v.driver.clone())
                .filter(|d| d.kind() != DriverKind::Host)
                .collect();
            for driver in drivers {
                let vfs: Vec<PciAddress> = p
                    .vfs_before
                    .iter()
                    .filter(|v| v.driver.as_ref() == Some(&driver))
                    .map(|v| v.address)
                    .collect();
                steps.push(SriovStep::RebindVfs { vfs, driver });
            }
        }
    }
    if let (Some(on), false) = (autoprobe, autoprobe_done) {
        steps.push(SriovStep::Autoprobe { pf, on });
    }
    steps
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

/// Runs `steps` (from `put_back_steps` for `p`): the count is verified by its
/// `virtfn` links; once a count step fails, the VFs are not rebound, but
/// autoprobe is still put back.
pub fn run_put_back(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    p: &PutBack,
    steps: &[SriovStep],
) -> PutBackDone {
    let (pf, timeout) = (p.pf, p.timeout);
    let mut done = PutBackDone::default();
    let mut count_failed = false;
    let verified = |kernel: &dyn PciKernel, count: u16| -> Result<(), SriovStepError> {
        let found = kernel.virtfns(pf)?.len();
        if found == usize::from(count) {
            Ok(())
        } else {
            Err(SriovStepError::NoVirtfns {
                pf,
                expected: count,
                found,
                seconds: timeout.as_secs(),
            })
        }
    };
    for step in steps {
        let result: Result<Option<String>, SriovStepError> = match step {
            SriovStep::Autoprobe { on, .. } => kernel
                .set_sriov_autoprobe(pf, *on)
                .map(|()| {
                    done.autoprobe = Some(*on);
                    Some(format!(
                        "{pf}: sriov_drivers_autoprobe back to {}",
                        u8::from(*on)
                    ))
                })
                .map_err(Into::into),
            _ if count_failed => continue,
            SriovStep::Numvfs { count, .. } => kernel
                .set_numvfs(pf, *count, timeout)
                .map_err(Into::into)
                .and_then(|()| {
                    if *count == 0 && p.count == 0 {
                        verified(kernel, 0).map(|()| {
                            Some(format!(
                                "{pf}: sriov_numvfs back to 0 (verified: 0 virtfn links)"
                            ))
                        })
                    } else {
                        Ok(None)
                    }
                }),
            SriovStep::WaitVirtfns { count, .. } => wait_virtfns(kernel, pf, *count, timeout)
                .and_then(|_| verified(kernel, *count))
                .map(|()| {
                    Some(format!(
                        "{pf}: sriov_numvfs back to {count} (verified: {count} virtfn links)"
                    ))
                }),
            SriovStep::RebindVfs { vfs, driver } => {
                let present: Vec<PciAddress> = kernel
                    .virtfns(pf)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|a| vfs.contains(a))
                    .collect();
                if present.is_empty() {
                    continue;
                }
                let (_, result) = bind_vfs(
                    root,
                    kernel,
                    pf,
                    &present,
                    VfTarget {
                        goal: Goal::Bind(driver.clone()),
                        // A named driver: no variant to choose (`variants_for`).
                        variants: &[],
                    },
                    false,
                    timeout,
                );
                match result {
                    Ok(applied) if applied.succeeded() => Ok(Some(format!(
                        "{} back on {driver} (verified)",
                        addresses(&present)
                    ))),
                    Ok(applied) => {
                        done.errors.push(format!(
                            "{} could not be put back on {driver}: {}",
                            addresses(&present),
                            applied.error.map(|e| e.to_string()).unwrap_or_default()
                        ));
                        continue;
                    }
                    Err(e) => {
                        done.errors.push(format!(
                            "{} could not be put back on {driver}: {e}",
                            addresses(&present)
                        ));
                        continue;
                    }
                }
            }
            SriovStep::BindVfs { .. } => continue,
        };
        match result {
            Ok(Some(line)) => done.rolled_back.push(line),
            Ok(None) => {}
            Err(e) => {
                if !matches!(step, SriovStep::Autoprobe { .. }) {
                    count_failed = true;
                }
                done.errors.push(format!("{pf}: {e}"));
            }
        }
    }
    done
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

/// Reads the facts, plans and (unless `dry_run` or nothing changes) applies.
/// The caller holds the change lock when not a dry run; `inv` must hold the
/// PF, its VFs and their IOMMU groups (`read_devices` of the PF and its VFs).
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
    let usage = HostUsage::new(root, inv).with_vms(Pending::Deferred(request.vms.clone()));
    let facts = SriovFacts {
        autoprobe: read_sriov_autoprobe(root, request.pf),
        layout: read_sriov_layout(root, request.pf),
        engine: host_facts(root, inv, &usage, variants, &record),
    };
    let plan = plan(inv, &facts, request)?;
    if let Some(vf_plan) = &plan.vf_plan {
        for module in &vf_plan.load_modules {
            modules::preflight(root, release, module)?;
        }
    }
    let result = if !dry_run && plan.changes() {
        // The intent first (see `host::state`): a change killed from here on
        // is found by the next change and by `check`, and `recover` puts the
        // VF count, the VFs' drivers and autoprobe back.
        record.intent = Some(intent_for(root, request.caller, &plan));
        state::write_record(root, &record)?;
        let mut applied = apply(root, kernel, &plan, variants);
        finish_intent(root, plan.pf, &mut applied);
        Some(applied)
    } else {
        None
    };
    Ok(SriovReport {
        command: "sriov",
        dry_run,
        plan,
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

/// The PF and its VFs with their IOMMU groups and neighbours (a VF rebound
/// needs its group), not the whole host.
pub fn read_pf(root: &HostRoot, pf: PciAddress) -> anyhow::Result<Inventory> {
    let inv = read_devices(root, &[pf], Names::Skip)?;
    let mut seeds = vec![pf];
    if let Some(SriovRole::Pf { vfs, .. }) = inv.device(&pf).map(|d| &d.sriov) {
        seeds.extend(vfs);
    }
    Ok(read_devices(root, &seeds, Names::Skip)?)
}

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
    let selectors = std::slice::from_ref(&spec.selector);
    let inv = read_selected(root, selectors, Names::Skip)?;
    let matched = inv.select(selectors)?;
    let pf = match matched.as_slice() {
        [one] => one.address,
        many => {
            return Err(SriovError::Ambiguous {
                selector: spec.selector.text.clone(),
                count: many.len(),
                first: many[0].address,
            }
            .into())
        }
    };
    let inv = read_pf(root, pf)?;
    let request = SriovRequest {
        caller: "sriov",
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
