//! Declarations: writing them (`persist add`, `bind --persist`) and
//! enforcing them now (`persist apply`, the udev hook), one change per
//! declared driver through `run`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use crate::engine::plan::Goal;
use crate::engine::run::{self, ChangeReport, ChangeSpec};
use crate::host::config;
use crate::host::kernel::PciKernel;
use crate::host::sysfs::{read_devices, read_inventory, Names};
use crate::host::udev::{self as udev_io, RulesStatus};
use crate::host::HostRoot;
use crate::integrations::udev;
use crate::model::declaration::{declare, Declaration, Declarations, DeclaredDriver};
use crate::model::{DriverName, Inventory, PciAddress, Selector};

pub fn print_rules_status(out: &mut dyn Write, status: &RulesStatus) -> std::io::Result<()> {
    if status.written {
        writeln!(
            out,
            "rewrote {}{}",
            udev_io::GENERATED_RULES,
            if status.reloaded {
                " and reloaded udev"
            } else {
                ""
            }
        )?;
    }
    for note in &status.notes {
        writeln!(out, "note: {note}")?;
    }
    Ok(())
}

fn driver_label(decl: &Declaration) -> String {
    match &decl.driver {
        DeclaredDriver::Named(d) => d.to_string(),
        DeclaredDriver::Auto => "vfio-pci (or its variant)".to_string(),
    }
}

/// Declares the devices, then bind --persist and persist add share this.
pub fn declare_and_write(
    root: &HostRoot,
    inv: &Inventory,
    selectors: &[Selector],
    driver: Option<&DriverName>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let decls = declare(inv, selectors, driver)?;
    for decl in &decls {
        let path = config::add(root, decl)?;
        let present = inv
            .devices
            .iter()
            .filter(|d| decl.fit(d) == crate::model::declaration::Fit::Applies)
            .count();
        writeln!(
            out,
            "declared {} on {} in {}{}",
            decl.key(),
            driver_label(decl),
            path.strip_prefix(root.base())
                .map_or(path.display().to_string(), |p| format!("/{}", p.display())),
            if present == 0 {
                " (no such device present now)"
            } else {
                ""
            }
        )?;
    }
    let all = config::load(root)?;
    print_rules_status(
        out,
        &udev_io::install_rules(root, &udev::render_rules(&all))?,
    )?;
    Ok(())
}

/// Devices to bind per declared driver (keyed by its label), with the goal.
type GoalSets = BTreeMap<String, (Goal, Vec<PciAddress>)>;

/// The goal and devices each declared driver needs, and warnings.
fn enforcement(inv: &Inventory, decls: &Declarations) -> (GoalSets, Vec<String>) {
    let mut goals = GoalSets::new();
    let mut warnings = Vec::new();
    for (decl, found) in decls.mismatches(&inv.devices) {
        warnings.push(format!(
            "{}: {} declares {} but the slot holds {}; not applied",
            decl.origin,
            decl.key(),
            decl.ids_text(),
            found
        ));
    }
    for dev in &inv.devices {
        let Some(governing) = decls.governing(dev) else {
            continue;
        };
        let declared = &governing.declaration.driver;
        let (key, goal) = (declared.to_string(), Goal::bind_to(declared));
        goals
            .entry(key)
            .or_insert((goal, Vec::new()))
            .1
            .push(dev.address);
    }
    (goals, warnings)
}

/// Enforces every declaration now; also what udev-hook does for one device.
pub fn enforce(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    goal: Goal,
    devices: &[PciAddress],
    dry_run: bool,
    timeout: Duration,
) -> anyhow::Result<ChangeReport> {
    let spec = ChangeSpec {
        goal,
        selectors: devices
            .iter()
            .map(|a| a.to_string().parse().expect("addresses are selectors"))
            .collect(),
        with_group: false,
        force: false,
        dry_run,
        timeout,
    };
    run::run(root, &spec, kernel)
}

/// The outcome of enforcing every declaration.
pub struct Enforced {
    pub reports: Vec<ChangeReport>,
    pub warnings: Vec<String>,
    /// Refusals and failures, in order; the first decides the exit status.
    pub errors: Vec<anyhow::Error>,
}

/// Enforces every declaration now: one change per declared driver.
pub fn apply_declarations(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    dry_run: bool,
    timeout: Duration,
) -> anyhow::Result<Enforced> {
    let decls = config::load(root)?;
    // Declarations by address need only those devices; any by IDs, the host.
    let addresses: Option<Vec<PciAddress>> = decls.list.iter().map(|d| d.address).collect();
    let inv = match addresses {
        Some(addresses) => read_devices(root, &addresses, Names::Skip)?,
        None => read_inventory(root, Names::Skip)?,
    };
    let (goals, warnings) = enforcement(&inv, &decls);
    let mut done = Enforced {
        reports: Vec::new(),
        warnings,
        errors: Vec::new(),
    };
    for (goal, devices) in goals.into_values() {
        match enforce(root, kernel, goal, &devices, dry_run, timeout) {
            Ok(report) => {
                if let Some(failed) = run::failure(&report) {
                    done.errors.push(failed.into());
                }
                done.reports.push(report);
            }
            Err(e) => done.errors.push(e),
        }
    }
    Ok(done)
}
