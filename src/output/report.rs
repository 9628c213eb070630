//! Text rendering of a change's plan and result.

use std::fmt::Write as _;

use crate::engine::apply::Status;
use crate::engine::plan::{describe, Why};
use crate::engine::run::ChangeReport;
use crate::model::CompanionReason;

pub fn render(report: &ChangeReport) -> String {
    let plan = &report.plan;
    let mut out = String::new();
    let changing = plan.actions.iter().filter(|a| a.changes()).count();
    let _ = writeln!(
        out,
        "{} plan: {changing} of {} device(s) to change",
        report.command,
        plan.actions.len()
    );
    for module in &plan.load_modules {
        let _ = writeln!(out, "  load module {module}");
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
        let _ = writeln!(out, "  {}  {change}  [{why}]", action.address);
        for step in &action.steps {
            let _ = writeln!(out, "      {step}");
        }
    }
    if !plan.checks.is_empty() {
        let _ = writeln!(out, "checks passed:");
        for check in &plan.checks {
            let _ = writeln!(out, "  {check}");
        }
    }
    if !plan.notes.is_empty() {
        let _ = writeln!(out, "notes:");
        for note in &plan.notes {
            let _ = writeln!(out, "  {note}");
        }
    }
    match &report.result {
        None if report.dry_run => {
            let _ = writeln!(out, "dry run: nothing written");
        }
        None => {
            let _ = writeln!(out, "nothing to do");
        }
        Some(result) => {
            for device in &result.devices {
                let status = match device.status {
                    Status::Unchanged => "unchanged",
                    Status::Done => "done",
                    Status::RolledBack => "rolled back",
                    Status::Failed => "FAILED (put back)",
                    Status::RollbackFailed => "FAILED, NOT PUT BACK",
                };
                let driver = device
                    .driver
                    .as_ref()
                    .map_or_else(|| "no driver".to_string(), |d| d.to_string());
                let _ = writeln!(out, "{}  {status}: now on {driver}", device.address);
            }
        }
    }
    out
}
