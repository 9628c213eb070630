//! The gate's verdicts as values, and the permits they hand out. Their
//! fields are private and they have no public constructor: only the gate
//! (`gate::clear`, `clear_vf_count`, `clear_claims`,
//! `clear_release_at_boot`) makes them, so every function that writes to
//! the kernel or claims devices in a file, and takes one, can only run
//! after the gate said yes. A permit also bounds what may be written: the
//! device it was judged for, and the values of the judged change or of its
//! rollback (the binding, VF count or autoprobe before), checked by the
//! writer (`NotCleared` otherwise).
//!
//! ```compile_fail
//! // Outside the gate a verdict cannot be made up...
//! let plan: vfioctl::model::plan::Plan = unimplemented!();
//! let cleared = vfioctl::gate::Cleared { plan, path: vfioctl::gate::Path::Bind };
//! ```
//!
//! ```compile_fail
//! // ...nor a permit to write to a device.
//! fn write(kernel: &dyn vfioctl::host::kernel::PciKernel, addr: vfioctl::model::PciAddress) {
//!     kernel.probe(addr).unwrap();
//! }
//! ```
//!
//! ```compile_fail
//! // ...nor a permit to write declarations.
//! let claims = vfioctl::gate::ClearedClaims { keys: Default::default(), path: vfioctl::gate::Path::PersistAdd, notes: vec![] };
//! ```

use std::collections::BTreeSet;

use crate::model::plan::{Action, Plan};
use crate::model::{DriverName, ModuleName, PciAddress};

use super::policy::Path;

/// An SR-IOV PF's VF count from `from` to `to`, as judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VfCount {
    pub pf: PciAddress,
    pub from: u16,
    pub to: u16,
}

/// One device to reset, as asked: the method (`None`: the kernel's order in
/// `reset_method`), the `reset_method` list to put back afterwards, and
/// every function the reset also resets (a bus reset: every function below
/// the bridge above it), which the planner found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetRequest {
    pub device: PciAddress,
    pub method: Option<crate::model::reset::ResetMethod>,
    /// `reset_method` before (what `--method` puts back).
    pub methods_before: Option<String>,
    /// Functions the reset resets besides `device`.
    pub also: Vec<PciAddress>,
}

/// A write the permit does not cover: a bug in the caller, refused before
/// the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{device}: {what} was not cleared by the safety gate; nothing was written")]
pub struct NotCleared {
    pub device: PciAddress,
    pub what: String,
}

/// A plan the gate cleared (see `gate::clear`).
#[derive(Debug)]
pub struct Cleared {
    plan: Plan,
    path: Path,
}

impl Cleared {
    pub(super) fn new(plan: Plan, path: Path) -> Cleared {
        Cleared { plan, path }
    }

    /// The plan as cleared, with the gate's checks and notes.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The path it was judged as.
    pub fn path(&self) -> Path {
        self.path
    }

    /// The plan, for reports; the permits go with the verdict.
    pub fn into_plan(self) -> Plan {
        self.plan
    }

    /// One permit per action, in the plan's order.
    pub fn writes(&self) -> impl Iterator<Item = DeviceWrite<'_>> {
        self.plan
            .actions
            .iter()
            .map(|action| DeviceWrite { action })
    }

    /// The permit for `address`'s action, when the plan has one.
    pub fn write(&self, address: &PciAddress) -> Option<DeviceWrite<'_>> {
        self.writes().find(|w| w.device() == *address)
    }

    /// One permit per module the plan loads before any device is touched.
    pub fn module_loads(&self) -> impl Iterator<Item = ModuleLoad<'_>> {
        self.plan
            .load_modules
            .iter()
            .map(|module| ModuleLoad { module })
    }
}

/// The permit to write to one device of a cleared plan: its
/// driver_override (the target, or the value before for a rollback),
/// its driver's `unbind` and `drivers_probe` (when the action changes its
/// driver, forward or back).
#[derive(Debug, Clone, Copy)]
pub struct DeviceWrite<'a> {
    action: &'a Action,
}

impl<'a> DeviceWrite<'a> {
    pub fn device(self) -> PciAddress {
        self.action.address
    }

    /// The judged action: its steps, its binding before and after.
    pub fn action(self) -> &'a Action {
        self.action
    }

    /// Whether `driver` may be written to the override: the action's target,
    /// or the override it had before (its rollback).
    pub fn check_override(self, driver: Option<&DriverName>) -> Result<(), NotCleared> {
        let a = self.action;
        if driver == a.after.driver_override.as_ref() || driver == a.before.driver_override.as_ref()
        {
            return Ok(());
        }
        Err(NotCleared {
            device: a.address,
            what: format!(
                "driver_override = {}",
                driver.map_or("(none)".to_string(), ToString::to_string)
            ),
        })
    }

    /// Whether the device's driver may be unbound or probed: the action
    /// changes its driver (forward, or back in a rollback).
    pub fn check_driver_change(self, what: &str) -> Result<(), NotCleared> {
        if self.action.changes_driver() {
            return Ok(());
        }
        Err(NotCleared {
            device: self.action.address,
            what: what.to_string(),
        })
    }
}

/// The permit to load one module of a cleared plan.
#[derive(Debug, Clone, Copy)]
pub struct ModuleLoad<'a> {
    module: &'a ModuleName,
}

impl<'a> ModuleLoad<'a> {
    pub fn module(self) -> &'a ModuleName {
        self.module
    }
}

/// An SR-IOV PF's VF count change the gate cleared (`gate::clear_vf_count`).
#[derive(Debug)]
pub struct ClearedVfCount {
    count: VfCount,
    path: Path,
    notes: Vec<String>,
    checks: Vec<String>,
}

impl ClearedVfCount {
    pub(super) fn new(
        count: VfCount,
        path: Path,
        notes: Vec<String>,
        checks: Vec<String>,
    ) -> ClearedVfCount {
        ClearedVfCount {
            count,
            path,
            notes,
            checks,
        }
    }

    pub fn count(&self) -> VfCount {
        self.count
    }

    pub fn path(&self) -> Path {
        self.path
    }

    /// What `--force` overrode, and other notes.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The checks that passed.
    pub fn checks(&self) -> &[String] {
        &self.checks
    }

    /// The permit to write the PF's `sriov_numvfs` and
    /// `sriov_drivers_autoprobe`.
    pub fn pf_write(&self) -> PfWrite<'_> {
        PfWrite { cleared: self }
    }

    /// The VFs recreated by a rollback of this change go back to the
    /// claiming drivers they had before it (`policy::ROLLBACK`): a plan
    /// doing only that is cleared without a new verdict. `None` when the
    /// plan does anything else.
    pub fn put_back(&self, plan: Plan, before: &[(PciAddress, DriverName)]) -> Option<Cleared> {
        let only_back = plan.actions.iter().all(|a| {
            !a.changes()
                || before
                    .iter()
                    .any(|(vf, driver)| *vf == a.address && a.after.driver.as_ref() == Some(driver))
        });
        only_back.then(|| Cleared::new(plan, self.path))
    }
}

/// The permit to write one PF's `sriov_numvfs` (the judged count, 0 on the
/// way, or the count before for a rollback) and `sriov_drivers_autoprobe`.
#[derive(Debug, Clone, Copy)]
pub struct PfWrite<'a> {
    cleared: &'a ClearedVfCount,
}

impl PfWrite<'_> {
    pub fn pf(self) -> PciAddress {
        self.cleared.count.pf
    }

    pub fn check_numvfs(self, count: u16) -> Result<(), NotCleared> {
        let c = self.cleared.count;
        if count == 0 || count == c.from || count == c.to {
            return Ok(());
        }
        Err(NotCleared {
            device: c.pf,
            what: format!("sriov_numvfs = {count}"),
        })
    }
}

/// What a declaration permit names: a `[[binding]]` by its key (address or
/// IDs), or a PF's `[[sriov]]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClaimKey {
    Binding(String),
    Sriov(PciAddress),
    /// The boot files (`host-config --write`), made from every declaration.
    BootFiles,
}

impl std::fmt::Display for ClaimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimKey::Binding(key) => write!(f, "{key}"),
            ClaimKey::Sriov(pf) => write!(f, "[[sriov]] of {pf}"),
            ClaimKey::BootFiles => write!(f, "the boot files"),
        }
    }
}

/// Declarations (or boot files made from them) the gate cleared to claim
/// their devices at every boot (`gate::clear_claims`).
#[derive(Debug)]
pub struct ClearedClaims {
    keys: BTreeSet<ClaimKey>,
    path: Path,
    notes: Vec<String>,
}

impl ClearedClaims {
    pub(super) fn new(keys: BTreeSet<ClaimKey>, path: Path, notes: Vec<String>) -> ClearedClaims {
        ClearedClaims { keys, path, notes }
    }

    /// Whether the declaration (or the boot files) `key` names was judged.
    pub fn check_key(&self, key: &ClaimKey) -> Result<(), NotClearedKey> {
        if self.keys.contains(key) {
            return Ok(());
        }
        Err(NotClearedKey {
            key: key.to_string(),
        })
    }

    pub fn path(&self) -> Path {
        self.path
    }

    /// What `--force` overrode.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

/// A declaration (or its removal) the gate did not judge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the declaration {key} was not cleared by the safety gate; nothing was written")]
pub struct NotClearedKey {
    pub key: String,
}

/// Declarations the gate cleared to be removed (`gate::clear_release_at_boot`).
#[derive(Debug)]
pub struct ClearedRelease {
    keys: Vec<ClaimKey>,
    notes: Vec<String>,
}

impl ClearedRelease {
    pub(super) fn new(keys: Vec<ClaimKey>, notes: Vec<String>) -> ClearedRelease {
        ClearedRelease { keys, notes }
    }

    pub fn check_key(&self, key: &ClaimKey) -> Result<(), NotClearedKey> {
        if self.keys.iter().any(|k| k == key) {
            return Ok(());
        }
        Err(NotClearedKey {
            key: key.to_string(),
        })
    }

    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

/// Resets the gate cleared (`gate::clear_reset`), or only the put-back of
/// `reset_method` after an interrupted reset (`gate::clear_reset_method_put_back`).
#[derive(Debug)]
pub struct ClearedReset {
    requests: Vec<ResetRequest>,
    put_back_only: bool,
}

impl ClearedReset {
    pub(super) fn new(requests: Vec<ResetRequest>) -> ClearedReset {
        ClearedReset {
            requests,
            put_back_only: false,
        }
    }

    pub(super) fn put_back(request: ResetRequest) -> ClearedReset {
        ClearedReset {
            requests: vec![request],
            put_back_only: true,
        }
    }

    /// One permit per device, in the order asked.
    pub fn writes(&self) -> impl Iterator<Item = ResetWrite<'_>> {
        self.requests.iter().map(|request| ResetWrite {
            request,
            put_back_only: self.put_back_only,
        })
    }
}

/// The permit to reset one device: write its `reset` (and, for a chosen
/// method, its `reset_method`: that method, then the list before or the
/// kernel's `default` back). A put-back permit writes `reset_method` back
/// only: never `reset`.
#[derive(Debug, Clone, Copy)]
pub struct ResetWrite<'a> {
    request: &'a ResetRequest,
    put_back_only: bool,
}

impl<'a> ResetWrite<'a> {
    pub fn device(self) -> PciAddress {
        self.request.device
    }

    pub fn request(self) -> &'a ResetRequest {
        self.request
    }

    /// Whether `value` may be written to `reset_method`.
    pub fn check_methods(self, value: &str) -> Result<(), NotCleared> {
        let r = self.request;
        let chosen = !self.put_back_only && r.method.is_some_and(|m| m.name() == value);
        let ok = value == "default"
            || chosen
            || r.methods_before.as_deref().map(str::trim) == Some(value.trim());
        if ok && (r.method.is_some() || value == "default") {
            return Ok(());
        }
        Err(NotCleared {
            device: r.device,
            what: format!("reset_method = {value}"),
        })
    }

    /// Whether the device's `reset` may be written (not with a put-back permit).
    pub fn check_reset(self) -> Result<(), NotCleared> {
        if self.put_back_only {
            return Err(NotCleared {
                device: self.request.device,
                what: "reset".to_string(),
            });
        }
        Ok(())
    }
}
