//! Running an SR-IOV plan: [`apply`] (the steps, the VFs bound through the
//! binding engine, the end state read back) and, after a failure, the
//! rollback newest first through [`run_put_back`] (also what `recover` runs).
//! The caller holds the change lock.
//!
//! One small function per kernel step, as the two runners share them:
//! [`set_autoprobe`], [`set_numvfs`], [`wait_virtfns`], [`count_verified`],
//! [`bind_new_vfs`] (and [`rebind_vfs`] for a put-back), each through
//! [`bind_vfs`] and the binding engine.

use std::time::{Duration, Instant};

use super::plan::put_back_steps;
use super::read::read_with_vfs;
use super::{
    addresses, ClearedSriov, PutBack, PutBackDone, SriovApplied, SriovPlan, SriovStep,
    SriovStepError, VfNow,
};
use crate::engine::apply::{apply as apply_plan, Applied};
use crate::engine::plan::{plan as make_plan, Goal, Plan, Request};
use crate::engine::run::{host_facts, judge, update_record};
use crate::gate::{ClearedVfCount, Path, PfWrite};
use crate::host::kernel::PciKernel;
use crate::host::modules;
use crate::host::state;
use crate::host::usage::HostUsage;
use crate::host::vms::{Pending, VmSource};
use crate::host::HostRoot;
use crate::model::modalias::Alias;
use crate::model::{DriverName, PciAddress};

/// How often the `virtfn` links are looked at while waiting for them.
const POLL: Duration = Duration::from_millis(10);

/// Runs `plan`'s steps in order (see the `engine::sriov` docs); the caller
/// holds the change lock.
/// `variants`: the VFIO variant drivers' aliases for `plan.vf_driver`
/// (`engine::run::variants_for`), parsed once by the caller.
pub fn apply(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    cleared: &ClearedSriov,
    variants: &[Alias],
) -> SriovApplied {
    let plan = &cleared.plan;
    let pf = plan.pf;
    let w = cleared.count().pf_write();
    let timeout = plan.timeout;
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
    if let Some(vfs) = cleared.vfs() {
        rebind_present(root, kernel, pf, vfs, timeout, &mut out);
        finish(kernel, plan, &mut out);
        return out;
    }

    let mut created: Vec<PciAddress> = Vec::new();
    for step in &plan.steps {
        let result: Result<(), SriovStepError> = match step {
            SriovStep::Autoprobe { on, .. } => set_autoprobe(kernel, w, *on, &mut out.autoprobe),
            SriovStep::Numvfs { count, .. } => set_numvfs(kernel, w, *count, timeout),
            SriovStep::WaitVirtfns { count, .. } => {
                wait_virtfns(kernel, pf, *count, timeout).map(|vfs| created = vfs)
            }
            // Only put-back plans rebind (`run_put_back`).
            SriovStep::RebindVfs { .. } => Ok(()),
            SriovStep::BindVfs { .. } => {
                bind_new_vfs(root, kernel, cleared, &created, variants, &mut out)
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
        roll_back(root, kernel, cleared.count(), plan, &mut out);
    } else if plan.destroys_vfs() {
        forget_destroyed(root, plan, &created, &mut out);
    }
    finish(kernel, plan, &mut out);
    out
}

/// The count stays: only the VFs' drivers change, as `bind` changes them
/// (`vf_plan`, made from the VFs present), and the change is recorded.
fn rebind_present(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    pf: PciAddress,
    vfs: &crate::gate::Cleared,
    timeout: Duration,
    out: &mut SriovApplied,
) {
    let vf_plan = vfs.plan();
    let applied = apply_plan(vfs, kernel, timeout);
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
}

/// Writes `sriov_drivers_autoprobe`; `written` keeps the value on success.
fn set_autoprobe(
    kernel: &dyn PciKernel,
    w: PfWrite<'_>,
    on: bool,
    written: &mut Option<bool>,
) -> Result<(), SriovStepError> {
    kernel
        .set_sriov_autoprobe(w, on)
        .map(|()| *written = Some(on))
        .map_err(Into::into)
}

/// Writes `sriov_numvfs` (the kernel may block until the VFs are released).
fn set_numvfs(
    kernel: &dyn PciKernel,
    w: PfWrite<'_>,
    count: u16,
    timeout: Duration,
) -> Result<(), SriovStepError> {
    kernel.set_numvfs(w, count, timeout).map_err(Into::into)
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

/// Verifies the VF count: exactly `count` `virtfn` links.
fn count_verified(
    kernel: &dyn PciKernel,
    pf: PciAddress,
    count: u16,
    timeout: Duration,
) -> Result<(), SriovStepError> {
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
}

/// Binds the `created` VFs (less those left to their own `[[binding]]`) to
/// `plan.vf_driver`; keeps the VF plan and its result in `out`.
fn bind_new_vfs(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    cleared: &ClearedSriov,
    created: &[PciAddress],
    variants: &[Alias],
    out: &mut SriovApplied,
) -> Result<(), SriovStepError> {
    let plan = &cleared.plan;
    let pf = plan.pf;
    let vfs = plan.unkept(created);
    if vfs.is_empty() {
        return Ok(());
    }
    let (vf_plan, result) = bind_vfs(
        root,
        kernel,
        pf,
        &vfs,
        VfTarget {
            goal: Goal::bind_to(&plan.vf_driver),
            variants,
        },
        Rebinding::Judged {
            path: cleared.count().path(),
            vms: cleared.vms().clone(),
            force: plan.force,
        },
        plan.timeout,
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

/// The driver VFs are bound to, and the VFIO variants' aliases it chooses
/// from (`engine::run::variants_for` of the goal, parsed once).
struct VfTarget<'a> {
    goal: Goal,
    variants: &'a [Alias],
}

/// How binding VFs is cleared: judged by the gate as `path` (new VFs, and
/// `recover`, a change of its own), or as the rollback of the VF count
/// change `ClearedVfCount` (VFs recreated go back to the claiming drivers
/// they had: `gate::policy::ROLLBACK`).
pub enum Rebinding<'a> {
    Judged {
        path: Path,
        vms: VmSource,
        force: bool,
    },
    Rollback(&'a ClearedVfCount, &'a [super::VfBefore]),
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
    rebinding: Rebinding,
    timeout: Duration,
) -> (Option<Plan>, Result<Applied, SriovStepError>) {
    let inv = match read_with_vfs(root, pf, vfs) {
        Ok(inv) => inv,
        Err(error) => return (None, Err(SriovStepError::Read { pf, error })),
    };
    let mut record = match state::read_record(root) {
        Ok(record) => record,
        Err(error) => return (None, Err(SriovStepError::Record { pf, error })),
    };
    let release = inv.kernel_release.as_deref();
    let facts = host_facts(to.variants, &record);
    let request = Request {
        goal: to.goal,
        targets: vfs.to_vec(),
        with_group: false,
    };
    let planned = match make_plan(&inv, &facts, &request) {
        Ok(plan) => plan,
        Err(error) => return (None, Err(SriovStepError::Refused { pf, error })),
    };
    let cleared = match rebinding {
        Rebinding::Judged { path, vms, force } => {
            let usage = HostUsage::new(root, &inv, Pending::Deferred(vms));
            judge(root, &inv, &usage, planned, path, force)
                .map_err(|error| SriovStepError::Refused { pf, error })
        }
        Rebinding::Rollback(count, before) => {
            let back: Vec<(PciAddress, DriverName)> = before
                .iter()
                .filter_map(|v| Some((v.address, v.driver.clone()?)))
                .collect();
            count
                .put_back(planned, &back)
                .ok_or(SriovStepError::NotPutBack { pf })
        }
    };
    let cleared = match cleared {
        Ok(cleared) => cleared,
        Err(error) => return (None, Err(error)),
    };
    let vf_plan = cleared.plan().clone();
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
    let applied = apply_plan(&cleared, kernel, timeout);
    if applied.succeeded() {
        update_record(&mut record, &vf_plan, &applied);
        if let Err(error) = state::write_record(root, &record) {
            return (Some(vf_plan), Err(SriovStepError::Record { pf, error }));
        }
    }
    (Some(vf_plan), Ok(applied))
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
fn roll_back(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    count: &ClearedVfCount,
    plan: &SriovPlan,
    out: &mut SriovApplied,
) {
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
    let done = run_put_back(
        root,
        kernel,
        count.pf_write(),
        &target,
        &put_back_steps(&target),
        Rebinding::Rollback(count, &plan.vfs_before),
    );
    out.rolled_back.extend(done.rolled_back);
    out.rollback_errors.extend(done.errors);
    if done.autoprobe.is_some() {
        out.autoprobe = done.autoprobe;
    }
}

/// Runs `steps` (from `put_back_steps` for `p`): the count is verified by its
/// `virtfn` links; once a count step fails, the VFs are not rebound, but
/// autoprobe is still put back.
pub fn run_put_back(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    w: PfWrite<'_>,
    p: &PutBack,
    steps: &[SriovStep],
    rebinding: Rebinding,
) -> PutBackDone {
    let (pf, timeout) = (p.pf, p.timeout);
    let mut done = PutBackDone::default();
    let mut count_failed = false;
    for step in steps {
        let result: Result<Option<String>, SriovStepError> = match step {
            SriovStep::Autoprobe { on, .. } => set_autoprobe(kernel, w, *on, &mut done.autoprobe)
                .map(|()| {
                    Some(format!(
                        "{pf}: sriov_drivers_autoprobe back to {}",
                        u8::from(*on)
                    ))
                }),
            _ if count_failed => continue,
            SriovStep::Numvfs { count, .. } => {
                set_numvfs(kernel, w, *count, timeout).and_then(|()| {
                    if *count == 0 && p.count == 0 {
                        count_verified(kernel, pf, 0, timeout).map(|()| {
                            Some(format!(
                                "{pf}: sriov_numvfs back to 0 (verified: 0 virtfn links)"
                            ))
                        })
                    } else {
                        Ok(None)
                    }
                })
            }
            SriovStep::WaitVirtfns { count, .. } => wait_virtfns(kernel, pf, *count, timeout)
                .and_then(|_| count_verified(kernel, pf, *count, timeout))
                .map(|()| {
                    Some(format!(
                        "{pf}: sriov_numvfs back to {count} (verified: {count} virtfn links)"
                    ))
                }),
            SriovStep::RebindVfs { vfs, driver } => {
                match rebind_vfs(root, kernel, pf, vfs, driver, &rebinding, timeout) {
                    Ok(line) => Ok(line),
                    // The count is back: the other drivers' VFs are still rebound.
                    Err(error) => {
                        done.errors.push(error);
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

/// Binds those of `vfs` the kernel shows again back to `driver`, the
/// claiming driver they were on (a put-back step): the line to report once
/// verified (`None`: none of them is back), or what could not be put back.
fn rebind_vfs(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    pf: PciAddress,
    vfs: &[PciAddress],
    driver: &DriverName,
    rebinding: &Rebinding,
    timeout: Duration,
) -> Result<Option<String>, String> {
    let present: Vec<PciAddress> = kernel
        .virtfns(pf)
        .unwrap_or_default()
        .into_iter()
        .filter(|a| vfs.contains(a))
        .collect();
    if present.is_empty() {
        return Ok(None);
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
        match rebinding {
            Rebinding::Judged { path, vms, .. } => Rebinding::Judged {
                path: *path,
                vms: vms.clone(),
                force: false,
            },
            Rebinding::Rollback(count, before) => Rebinding::Rollback(count, before),
        },
        timeout,
    );
    let error = match result {
        Ok(applied) if applied.succeeded() => {
            return Ok(Some(format!(
                "{} back on {driver} (verified)",
                addresses(&present)
            )))
        }
        Ok(applied) => applied.error.map(|e| e.to_string()).unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    Err(format!(
        "{} could not be put back on {driver}: {error}",
        addresses(&present)
    ))
}
