//! Text rendering of `vfioctl reset`'s plan and verdicts, and of `recover`
//! of an interrupted reset.

use std::fmt::Write as _;

use crate::engine::reset::{ResetRecovery, ResetReport, ResetStatus};

use super::escape_controls;

pub fn render(report: &ResetReport) -> String {
    let mut out = String::new();
    let plan = &report.plan;
    let _ = writeln!(
        out,
        "reset plan: {} device(s), {}",
        plan.devices.len(),
        plan.method
            .map_or("the kernel's order of reset methods".to_string(), |m| {
                format!("--method {m} only")
            })
    );
    for d in &plan.devices {
        let methods = d
            .methods
            .as_ref()
            .map_or("not listed (kernel before 5.15)".to_string(), |l| {
                l.join(" ")
            });
        let _ = writeln!(
            out,
            "  {}  {}  reset_method {methods}",
            d.address,
            d.driver
                .as_ref()
                .map_or("no driver".to_string(), ToString::to_string)
        );
        if !d.resets_also.is_empty() {
            let also: Vec<String> = d.resets_also.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "      also resets {}", also.join(", "));
        }
        for step in &d.steps {
            let _ = writeln!(out, "      {step}");
        }
    }
    list(&mut out, "checks passed", &plan.checks);
    list(&mut out, "notes", &plan.notes);
    let Some(result) = &report.result else {
        let _ = writeln!(out, "dry run: nothing written");
        return out;
    };
    for d in &result.devices {
        let status = match d.status {
            ResetStatus::Verified => "verified: fit for the next tenant".to_string(),
            ResetStatus::Unfit => "UNFIT: a verification failed after the reset".to_string(),
            ResetStatus::Failed => "FAILED: not reset as asked".to_string(),
            ResetStatus::Pending => "PENDING: the reset is still in the kernel".to_string(),
            ResetStatus::NotReset => "not reset".to_string(),
        };
        let _ = writeln!(out, "{}  {status}", d.address);
        for f in &d.findings {
            let _ = writeln!(
                out,
                "    {:<4}  {:<9}  {}",
                if f.ok { "ok" } else { "FAIL" },
                f.check.label(),
                escape_controls(&f.message)
            );
        }
        if let Some(e) = &d.error {
            let _ = writeln!(out, "    {}", escape_controls(e));
        }
        if let Some(e) = &d.put_back_error {
            let _ = writeln!(out, "    reset_method NOT put back: {}", escape_controls(e));
        }
    }
    if let Some(e) = &result.state_error {
        let _ = writeln!(out, "NOT recorded: {}", escape_controls(e));
    }
    out
}

fn list(out: &mut String, title: &str, items: &[String]) {
    if !items.is_empty() {
        let _ = writeln!(out, "{title}:");
        for item in items {
            let _ = writeln!(out, "  {}", escape_controls(item));
        }
    }
}

/// `recover` of an interrupted reset: what goes back, and the outcome.
pub fn render_recovery(recovery: &ResetRecovery, dry_run: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "recover plan: no new reset; reset_method back where the reset narrowed it; the devices recorded unverified"
    );
    for d in &recovery.devices {
        let what = match (&d.reset_method, d.present) {
            (_, false) => "no longer present: nothing to put back".to_string(),
            (Some(value), true) => format!("write reset_method = {value} (back as before)"),
            (None, true) => "reset_method as it was: nothing to put back".to_string(),
        };
        let _ = writeln!(out, "  {}  {what}", d.address);
        if let Some(e) = &d.error {
            let _ = writeln!(out, "      FAILED: {}", escape_controls(e));
        }
    }
    if dry_run {
        let _ = writeln!(out, "dry run: nothing written");
        return out;
    }
    if let Some(e) = &recovery.state_error {
        let _ = writeln!(out, "NOT recorded: {}", escape_controls(e));
    }
    let _ = writeln!(
        out,
        "{}",
        if recovery.cleared {
            "recovered: the change record no longer holds the interrupted reset; vfioctl check reports its devices CRITICAL until vfioctl reset verifies them"
        } else {
            "NOT recovered: the interrupted reset stays recorded"
        }
    );
    out
}
