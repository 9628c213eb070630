//! One driver change from start to finish, shared by `bind`, `restore`,
//! `unbind`, `persist apply` and the udev hook:
//! privilege -> lock -> inventory -> plan -> module checks -> apply -> record.

use std::time::Duration;

use serde::Serialize;

use crate::engine::apply::{apply, Applied, Status};
use crate::engine::plan::{plan as make_plan, Facts, Goal, Plan, Request};
use crate::host::kernel::PciKernel;
use crate::host::modules;
use crate::host::state::{self, ChangeRecord};
use crate::host::sysfs::{read_selected, Names};
use crate::host::usage::HostUsage;
use crate::host::HostRoot;
use crate::model::{Inventory, PciAddress, Selector};

/// How a change was asked for.
#[derive(Debug, Clone)]
pub struct ChangeSpec {
    pub goal: Goal,
    pub selectors: Vec<Selector>,
    pub with_group: bool,
    pub force: bool,
    pub dry_run: bool,
    pub timeout: Duration,
}

/// What was planned and what happened, as printed and as JSON.
#[derive(Debug, Serialize)]
pub struct ChangeReport {
    pub command: &'static str,
    pub dry_run: bool,
    pub plan: Plan,
    /// Null for a dry run.
    pub result: Option<Applied>,
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
    // The lock is taken before reading anything, so the plan describes the
    // state it will be applied to.
    let _lock = if spec.dry_run {
        None
    } else {
        Some(state::lock(root, spec.timeout)?)
    };
    // Devices named by address: only they and their neighbourhood are read,
    // so the lock is held for as long as those devices need.
    let inv = read_selected(root, &spec.selectors, Names::Skip)?;
    let targets: Vec<PciAddress> = inv
        .select(&spec.selectors)?
        .iter()
        .map(|d| d.address)
        .collect();
    let mut record = state::read_record(root)?;
    let release = inv.kernel_release.as_deref();
    let variants = match spec.goal {
        Goal::BindVfio => modules::vfio_variant_aliases(root, release),
        _ => Vec::new(),
    };
    let request = Request {
        goal: spec.goal.clone(),
        targets,
        with_group: spec.with_group,
        force: spec.force,
    };
    // Mounts, routes and the console are cheap to read up front; open handles
    // need a walk of every process's descriptors, done only when the planner
    // asks about devices it would release (none, when all is as wanted: the
    // udev hook's usual case).
    let usage = HostUsage::new(root, &inv);
    let facts = Facts {
        usage: &usage,
        vfio_variants: &variants,
        previous: record.previous_drivers(),
        history: record.history_notes(),
    };
    let plan = make_plan(&inv, &facts, &request)?;
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
            plan,
            result: None,
        });
    }

    let applied = apply(&plan, kernel, spec.timeout);
    if applied.succeeded() {
        update_record(&mut record, &plan, &applied);
        state::write_record(root, &record)?;
        if let Some(after) = after.as_mut() {
            after(&inv);
        }
    }
    Ok(ChangeReport {
        command,
        dry_run: false,
        plan,
        result: Some(applied),
    })
}

fn update_record(record: &mut ChangeRecord, plan: &Plan, applied: &Applied) {
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

/// The error to return for a report whose apply failed, if it did.
pub fn failure(report: &ChangeReport) -> Option<ApplyFailed> {
    let result = report.result.as_ref()?;
    let error = result.error.as_ref()?;
    let rollback_failed = !result.rollback_errors.is_empty();
    let message = if rollback_failed {
        format!("{error}; {}", result.rollback_errors.join("; "))
    } else {
        format!("{error}; every device changed was put back")
    };
    Some(ApplyFailed {
        message,
        rollback_failed,
    })
}
