//! Text rendering of a change's plan and result.

use std::fmt::Write as _;

use crate::engine::apply::{Applied, Status};
use crate::engine::plan::{describe, Plan, Why};
use crate::engine::recover::RecoverReport;
use crate::engine::run::ChangeReport;
use crate::engine::sriov::SriovReport;
use crate::host::state::IntentState;
use crate::model::declaration::DeclaredDriver;
use crate::model::CompanionReason;

use super::table::{or_dash, Table};

pub fn render(report: &ChangeReport) -> String {
    let mut out = String::new();
    plan_lines(&mut out, report.command, &report.plan, "");
    match &report.result {
        None if report.dry_run => {
            let _ = writeln!(out, "dry run: nothing written");
        }
        None => {
            let _ = writeln!(out, "nothing to do");
        }
        Some(result) => result_lines(&mut out, result, ""),
    }
    out
}

/// A binding plan: devices, their steps, checks and notes, indented by `indent`.
fn plan_lines(out: &mut String, command: &str, plan: &Plan, indent: &str) {
    let changing = plan.actions.iter().filter(|a| a.changes()).count();
    let _ = writeln!(
        out,
        "{indent}{command} plan: {changing} of {} device(s) to change",
        plan.actions.len()
    );
    for module in &plan.load_modules {
        let _ = writeln!(out, "{indent}  load module {module}");
    }
    for action in &plan.actions {
        let why = match &action.why {
            Why::Requested => "requested".to_string(),
            Why::Companion { of, link } => format!(
                "companion of {of}, {}",
                match link {
                    CompanionReason::DeviceLink => "kernel device link",
                    CompanionReason::SameSlot => "same slot",
                }
            ),
            Why::GroupMember { of, group } => format!("IOMMU group {group} of {of}"),
            Why::Interrupted => "touched by the interrupted change".to_string(),
        };
        let change = if action.changes() {
            format!(
                "{} -> {}",
                describe(&action.before),
                describe(&action.after)
            )
        } else {
            format!("{} (unchanged)", describe(&action.before))
        };
        let _ = writeln!(out, "{indent}  {}  {change}  [{why}]", action.address);
        for step in &action.steps {
            let _ = writeln!(out, "{indent}      {step}");
        }
    }
    list(out, "checks passed", &plan.checks, indent);
    list(out, "notes", &plan.notes, indent);
}

fn list(out: &mut String, title: &str, items: &[String], indent: &str) {
    if !items.is_empty() {
        let _ = writeln!(out, "{indent}{title}:");
        // Notes carry outside strings (domain and Nova instance names).
        for item in items {
            let _ = writeln!(out, "{indent}  {}", super::escape_controls(item));
        }
    }
}

/// One line per device of an applied plan.
fn result_lines(out: &mut String, result: &Applied, indent: &str) {
    for device in &result.devices {
        let status = match device.status {
            Status::Unchanged => "unchanged",
            Status::Done => "done",
            Status::RolledBack => "rolled back",
            Status::Failed => "FAILED (put back)",
            Status::RollbackFailed => "FAILED, NOT PUT BACK",
            Status::Pending => "PENDING (unbind still in the kernel)",
        };
        let driver = device
            .driver
            .as_ref()
            .map_or_else(|| "no driver".to_string(), |d| d.to_string());
        let _ = writeln!(out, "{indent}{}  {status}: now on {driver}", device.address);
    }
}

/// `vfioctl sriov`: the sysfs writes, then (once applied) the VFs' binding
/// plan and result, and a table of the VFs at the end.
pub fn render_sriov(report: &SriovReport) -> String {
    let plan = &report.plan;
    let mut out = String::new();
    let driver = match &plan.vf_driver {
        DeclaredDriver::Auto => "vfio-pci or its VFIO variant".to_string(),
        DeclaredDriver::Named(d) => d.to_string(),
    };
    let _ = writeln!(
        out,
        "sriov plan: {} VFs {} -> {} (sriov_totalvfs {}), VF driver {driver}",
        plan.pf, plan.numvfs_before, plan.numvfs, plan.total_vfs
    );
    for step in &plan.steps {
        let _ = writeln!(out, "  {step}");
    }
    list(&mut out, "checks passed", &plan.checks, "");
    list(&mut out, "notes", &plan.notes, "");
    let Some(result) = &report.result else {
        if let Some(vf_plan) = &plan.vf_plan {
            plan_lines(&mut out, "bind VFs", vf_plan, "");
        }
        let _ = writeln!(
            out,
            "{}",
            if report.dry_run {
                "dry run: nothing written"
            } else {
                "nothing to do"
            }
        );
        return out;
    };
    if let Some(vf_plan) = &result.vf_plan {
        plan_lines(&mut out, "bind VFs", vf_plan, "");
    }
    if let Some(applied) = &result.vf_result {
        result_lines(&mut out, applied, "  ");
    }
    list(&mut out, "rolled back", &result.rolled_back, "");
    list(&mut out, "NOT ROLLED BACK", &result.rollback_errors, "");
    let _ = writeln!(
        out,
        "{}: {} VFs now (virtfn links), sriov_drivers_autoprobe {}",
        plan.pf,
        result.numvfs,
        or_dash(result.autoprobe.or(plan.autoprobe_before).map(u8::from))
    );
    if !result.vfs.is_empty() {
        let mut table = Table::new(["VF", "DRIVER"]);
        for vf in &result.vfs {
            table.row(vec![vf.address.to_string(), or_dash(vf.driver.as_ref())]);
        }
        out.push_str(&table.render("  "));
    }
    out
}

/// `vfioctl recover`: what was interrupted, the plan putting it back, and
/// (once applied) what was put back.
pub fn render_recover(report: &RecoverReport) -> String {
    let mut out = String::new();
    let Some(intent) = &report.interrupted else {
        let _ = writeln!(out, "no interrupted change is recorded; nothing to recover");
        return out;
    };
    let _ = writeln!(out, "recorded: {}", intent.summary());
    for d in &intent.devices {
        let _ = writeln!(
            out,
            "  {}  before {}; target {}",
            d.address,
            describe(&d.before),
            describe(&d.target)
        );
    }
    for d in intent.reset.iter().flat_map(|r| &r.devices) {
        let _ = writeln!(
            out,
            "  {}  reset, {}; reset_method before {}{}",
            d.address,
            d.method
                .as_deref()
                .map_or("the kernel's order".to_string(), |m| format!(
                    "--method {m}"
                )),
            d.methods_before.as_deref().unwrap_or("not listed"),
            if d.pending {
                "; vfioctl stopped waiting for it (pending in the kernel)"
            } else {
                ""
            }
        );
    }
    if let Some(s) = &intent.sriov {
        let _ = writeln!(
            out,
            "  {}  sriov_numvfs {} -> {}; sriov_drivers_autoprobe before {}",
            s.pf,
            s.numvfs_before,
            s.numvfs,
            or_dash(s.autoprobe_before.map(u8::from))
        );
    }
    match report.state {
        Some(IntentState::InProgress) => {
            let _ = writeln!(
                out,
                "its process (PID {}) still runs: the change is in progress; nothing to recover",
                intent.pid
            );
            return out;
        }
        Some(IntentState::OtherBoot) => {
            let _ = writeln!(
                out,
                "recorded in an earlier boot: the kernel state it describes is gone; {}",
                if report.dry_run {
                    "recover would clear it"
                } else {
                    "cleared"
                }
            );
            return out;
        }
        _ => {}
    }
    if report.forgotten {
        let _ = writeln!(
            out,
            "forgotten: the record no longer holds it; no device was touched"
        );
        return out;
    }
    if let Some(reset) = &report.reset {
        out.push_str(&super::reset::render_recovery(reset, report.dry_run));
        return out;
    }
    let Some(plan) = &report.plan else {
        if report.dry_run {
            let _ = writeln!(out, "dry run: --forget would clear it; nothing written");
        }
        return out;
    };
    if !plan.sriov_steps.is_empty() {
        let _ = writeln!(out, "recover plan: the PF back as it was");
        for step in &plan.sriov_steps {
            let _ = writeln!(out, "  {step}");
        }
    }
    plan_lines(&mut out, "recover", &plan.devices, "");
    list(&mut out, "checks passed", &plan.checks, "");
    list(&mut out, "notes", &plan.notes, "");
    let Some(result) = &report.result else {
        let _ = writeln!(out, "dry run: nothing written");
        return out;
    };
    if let Some(s) = &result.sriov {
        list(&mut out, "put back", &s.rolled_back, "");
        list(&mut out, "NOT PUT BACK", &s.errors, "");
    }
    if let Some(applied) = &result.devices {
        result_lines(&mut out, applied, "");
    }
    let _ = writeln!(
        out,
        "{}",
        if result.cleared {
            "recovered: the change record no longer holds the interrupted change"
        } else {
            "NOT recovered: the interrupted change stays recorded"
        }
    );
    out
}
