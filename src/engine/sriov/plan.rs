//! The pure part of an SR-IOV change: [`plan`] (what cannot be asked, then
//! the sysfs writes in order) and [`put_back_steps`] (the writes undoing a
//! change). No I/O: everything comes from the inventory and the facts. The
//! gate judges the plan afterwards (`engine::sriov::change`).

use std::collections::BTreeSet;

use super::{
    addresses, PutBack, SriovError, SriovFacts, SriovPlan, SriovRequest, SriovStep, VfBefore,
};
use crate::engine::plan::{plan as make_plan, Goal, PlanError, Request};
use crate::model::declaration::DeclaredDriver;
use crate::model::{DriverKind, DriverName, Inventory, PciAddress, SriovRole};

/// The kind of driver `driver` asks for (`Auto` is a VFIO driver).
fn driver_kind(driver: &DeclaredDriver) -> DriverKind {
    match driver {
        DeclaredDriver::Auto => DriverKind::Vfio,
        DeclaredDriver::Named(d) => d.kind(),
    }
}

/// Plans setting `request.pf`'s VF count; see the `engine::sriov` docs.
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
    let (total_vfs, num_vfs, vfs) = pf_counts(pf, &dev.sriov)?;
    if u32::from(request.numvfs) > total_vfs {
        return Err(SriovError::TooMany {
            pf,
            asked: request.numvfs,
            total: total_vfs,
        });
    }
    let numvfs_before = u16::try_from(num_vfs).unwrap_or(u16::MAX);
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
        count_stays(inv, facts, request, &vfs, &mut out)?;
        return Ok(out);
    }
    if dev.driver.is_none() {
        return Err(SriovError::NoPfDriver { pf });
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
    if numvfs_before > 0 && request.numvfs > 0 {
        out.notes.push(format!(
            "the kernel changes a non-zero VF count only through 0: {numvfs_before} -> 0 -> {}",
            request.numvfs
        ));
    }
    push_steps(facts, request, kind, &mut out);
    Ok(out)
}

/// The PF's `sriov_totalvfs`, `sriov_numvfs` and VFs; refused when `pf` is
/// not a PF.
fn pf_counts(pf: PciAddress, role: &SriovRole) -> Result<(u32, u32, Vec<PciAddress>), SriovError> {
    match role {
        SriovRole::Pf {
            total_vfs,
            num_vfs,
            vfs,
        } => Ok((*total_vfs, *num_vfs, vfs.clone())),
        SriovRole::Vf { physfn } => Err(SriovError::NotPf {
            device: pf,
            what: format!("it is a VF of {physfn}"),
        }),
        SriovRole::None => Err(SriovError::NotPf {
            device: pf,
            what: "it has no SR-IOV capability (no sriov_totalvfs)".to_string(),
        }),
    }
}

/// The count stays: no step; the VFs present (less those left to their
/// own `[[binding]]`) are planned onto the VF driver by the binding engine.
fn count_stays(
    inv: &Inventory,
    facts: &SriovFacts,
    request: &SriovRequest,
    vfs: &[PciAddress],
    out: &mut SriovPlan,
) -> Result<(), SriovError> {
    let pf = request.pf;
    if request.numvfs == 0 {
        out.notes
            .push(format!("{pf} has no VFs enabled; left untouched"));
    } else {
        out.notes.push(format!(
            "{pf} already has {} VFs; only their drivers are checked",
            out.numvfs_before
        ));
        let targets = out.unkept(vfs);
        if !targets.is_empty() {
            let vf_request = Request {
                goal: Goal::bind_to(&request.vf_driver),
                targets,
                with_group: false,
            };
            out.vf_plan = Some(make_plan(inv, &facts.engine, &vf_request)?);
        }
    }
    out.note_kept(vfs);
    Ok(())
}

/// The sysfs writes, in the order the kernel needs them: autoprobe 0, the
/// count through 0, the new count, its `virtfn` links, the VFs bound,
/// autoprobe 1 again.
fn push_steps(facts: &SriovFacts, request: &SriovRequest, kind: DriverKind, out: &mut SriovPlan) {
    let (pf, numvfs_before) = (request.pf, out.numvfs_before);
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
