//! Declarations: writing them (`persist add`, `bind --persist`) and
//! enforcing them now (`persist apply`, the udev hook), one change per
//! declared driver through `run`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use crate::engine::plan::{Goal, PlanError};
use crate::engine::run::{self, ChangeReport, ChangeSpec};
use crate::engine::sriov::{self, read_pf, SriovReport, SriovRequest};
use crate::gate::{self, ClaimKey, ClearedClaims, Path};
use crate::host::config;
use crate::host::hostfacts;
use crate::host::kernel::PciKernel;
use crate::host::state;
use crate::host::sysfs::{read_devices, read_inventory, Names};
use crate::host::udev::{self as udev_io, RulesStatus};
use crate::host::usage::read_usage;
use crate::host::vms::VmSource;
use crate::host::HostRoot;
use crate::model::declaration::{
    declare, Declaration, Declarations, DeclaredDriver, Fit, Origin, SriovDeclaration,
};
use crate::model::{DriverName, Inventory, PciAddress, Selector};

/// Writes what installing the udev rules did ("rewrote ..."); its notes
/// (`status.notes`) are the caller's to print, through the note policy.
pub fn write_rules_status(out: &mut dyn Write, status: &RulesStatus) -> std::io::Result<()> {
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
    Ok(())
}

fn driver_label(driver: &DeclaredDriver) -> String {
    match driver {
        DeclaredDriver::Named(d) => d.to_string(),
        DeclaredDriver::Auto => "vfio-pci (or its variant)".to_string(),
    }
}

/// Renders the udev rules for the declarations (`integrations::udev`,
/// passed in by the command: the engine does not import integrations).
pub type RenderRules = fn(&Declarations) -> String;

/// How `persist add` declares, beyond the driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeclareOptions {
    /// `--expect N`: the count ID declarations must cover (default: the count covered now).
    pub expect: Option<usize>,
    /// Refuse a declaration whose key is already declared (identical or
    /// conflicting); `bind --persist` replaces its own instead.
    pub refuse_existing: bool,
    /// `--force`: declare devices the host uses in ways `--force` may override.
    pub force: bool,
    /// `--dry-run`: every check and refusal, then say what would be
    /// declared and write nothing.
    pub dry_run: bool,
}

/// A declaration `persist add` refuses: its key is already declared.
#[derive(Debug, thiserror::Error)]
#[error("{key} is already declared at {origin} ({detail}); nothing was written")]
pub struct AlreadyDeclared {
    pub key: String,
    pub origin: String,
    pub detail: String,
}

/// Declarations `judge_declarations` let through, not written yet.
pub struct Judged {
    pub decls: Vec<Declaration>,
    /// What `--force` overrode, for the caller to print before anything
    /// is written.
    pub notes: Vec<String>,
    /// The gate's permit to write them.
    pub claims: ClearedClaims,
}

/// The first half of declaring (`bind --persist`, `persist add`): the
/// declarations for the devices, refused when one is declared already
/// (with `refuse_existing`) or in a file vfioctl does not own, or when the
/// gate refuses a device a new declaration covers now (an ID or class
/// declaration may cover many) as claimed at every boot, or an NVSwitch
/// Fabric Manager keeps. Writes nothing; [`write_declarations`] is the
/// second half, with the gate's permit.
pub fn judge_declarations(
    root: &HostRoot,
    inv: &Inventory,
    selectors: &[Selector],
    driver: Option<&DriverName>,
    options: DeclareOptions,
) -> anyhow::Result<Judged> {
    let mut decls = declare(inv, selectors, driver)?;
    for decl in decls.iter_mut().filter(|d| d.address.is_none()) {
        if options.expect.is_some() {
            decl.expect = options.expect;
        }
    }
    if options.refuse_existing {
        let existing = config::load(root)?;
        for decl in &decls {
            if let Some(old) = existing.list.iter().find(|d| d.key() == decl.key()) {
                let detail = if old.driver == decl.driver {
                    "identical: nothing to do".to_string()
                } else {
                    format!(
                        "on {}, conflicting with {}: persist remove it first",
                        old.driver, decl.driver
                    )
                };
                return Err(AlreadyDeclared {
                    key: decl.key(),
                    origin: old.origin.to_string(),
                    detail,
                }
                .into());
            }
        }
    }
    // vfioctl replaces only its own file for a key, and never makes a
    // second declaration of a key the operator declared by hand.
    let existing = config::load(root)?;
    for decl in &decls {
        config::may_add(root, &existing, decl)?;
    }
    let covered: BTreeSet<PciAddress> = inv
        .devices
        .iter()
        .filter(|d| decls.iter().any(|decl| decl.fit(d) == Fit::Applies))
        .map(|d| d.address)
        .collect();
    let claims = gate::clear_claims(
        inv,
        &read_usage(root),
        hostfacts::fabric_of_host(root, inv).as_ref(),
        decls.iter().map(|d| ClaimKey::Binding(d.key())).collect(),
        &covered,
        Path::PersistAdd,
        options.force,
    )
    .map_err(PlanError::Refused)?;
    Ok(Judged {
        decls,
        notes: claims.notes().to_vec(),
        claims,
    })
}

/// The second half of declaring: each declaration [`judge_declarations`]
/// let through written to its bindings.d file (with the gate's permit) and
/// said on `out`, then the udev rules regenerated. Returns the notes of
/// installing the rules, for the caller to print. A dry run writes nothing.
pub fn write_declarations(
    root: &HostRoot,
    inv: &Inventory,
    judged: &Judged,
    options: DeclareOptions,
    render_rules: RenderRules,
    out: &mut dyn Write,
) -> anyhow::Result<Vec<String>> {
    let decls = &judged.decls;
    for decl in decls {
        let path = if options.dry_run {
            root.path(config::BINDINGS_DIR)
                .join(config::file_name(decl))
        } else {
            config::add(root, &judged.claims, decl)?
        };
        let present = inv
            .devices
            .iter()
            .filter(|d| decl.fit(d) == Fit::Applies)
            .count();
        writeln!(
            out,
            "{} {} on {} in {}{}",
            if options.dry_run {
                "would declare"
            } else {
                "declared"
            },
            decl.key(),
            driver_label(&decl.driver),
            path.strip_prefix(root.base())
                .map_or(path.display().to_string(), |p| format!("/{}", p.display())),
            if present == 0 {
                " (no such device present now)"
            } else {
                ""
            }
        )?;
    }
    if options.dry_run {
        writeln!(out, "dry run: nothing written")?;
        return Ok(Vec::new());
    }
    let all = config::load(root)?;
    let status = udev_io::install_rules(root, &render_rules(&all))?;
    write_rules_status(out, &status)?;
    Ok(status.notes)
}

/// `sriov --persist` on a PF the host uses: at boot the udev hook and
/// `persist apply` change its VF count without `--force`, so they would
/// refuse the declaration; it is not written.
#[derive(Debug, thiserror::Error)]
#[error("the VF count of {pf} cannot be declared: at every boot the udev hook and persist apply change it without --force, and {reasons}; nothing was declared (declare it once the host no longer uses the PF, or set the count at boot another way)")]
pub struct SriovNotDeclared {
    pub pf: PciAddress,
    pub reasons: String,
}

/// The gate's permit to declare `pf`'s VF count (`gate::clear_sriov_claim`).
fn sriov_claim(
    root: &HostRoot,
    inv: &Inventory,
    pf: PciAddress,
) -> Result<ClearedClaims, SriovNotDeclared> {
    gate::clear_sriov_claim(inv, &read_usage(root), pf).map_err(|refusals| SriovNotDeclared {
        pf,
        reasons: gate::joined(&refusals),
    })
}

/// Before `sriov --persist` changes anything: whether its declaration would
/// be cleared, so a count is never changed and then left undeclared.
pub fn may_declare_sriov(
    root: &HostRoot,
    inv: &Inventory,
    pf: PciAddress,
) -> Result<(), SriovNotDeclared> {
    sriov_claim(root, inv, pf).map(|_| ())
}

/// What `sriov --persist` declared: the lines to print after the change
/// report, and the notes of installing the rules, for the caller to print.
pub struct SriovDeclared {
    pub lines: Vec<String>,
    pub notes: Vec<String>,
}

/// `sriov --persist`: declares the PF's count and VF driver just set and
/// verified (`[[sriov]]` in its own bindings.d file, replacing an earlier
/// one for the PF) and regenerates the udev rules; run under the change's
/// lock with the inventory read before it.
pub fn declare_sriov(
    root: &HostRoot,
    inv: &Inventory,
    report: &SriovReport,
    render_rules: RenderRules,
) -> anyhow::Result<SriovDeclared> {
    let pf = report.plan.pf;
    let dev = inv
        .device(&pf)
        .ok_or_else(|| anyhow::anyhow!("{pf} vanished before its declaration was written"))?;
    let decl = SriovDeclaration {
        address: pf,
        vendor: dev.ids.vendor,
        device: dev.ids.device,
        numvfs: report.plan.numvfs,
        vf_driver: report.plan.vf_driver.clone(),
        origin: Origin {
            file: String::new(),
            line: 0,
        },
    };
    config::may_add_sriov(root, &config::load(root)?, pf)?;
    let claims = sriov_claim(root, inv, pf)?;
    let path = config::add_sriov(root, &claims, &decl)?;
    let mut lines = vec![format!(
        "declared {} VF(s) of {pf} on {} in /{}",
        decl.numvfs,
        driver_label(&decl.vf_driver),
        path.strip_prefix(root.base()).unwrap_or(&path).display()
    )];
    let status = udev_io::install_rules(root, &render_rules(&config::load(root)?))?;
    let mut written = Vec::new();
    write_rules_status(&mut written, &status)?;
    lines.extend(
        String::from_utf8_lossy(&written)
            .lines()
            .map(str::to_string),
    );
    Ok(SriovDeclared {
        lines,
        notes: status.notes,
    })
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
/// `path` (`persist apply`, `udev-hook`) is how the gate judges it, and the
/// command recorded in the change's intent.
pub fn enforce(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    path: Path,
    goal: Goal,
    devices: &[PciAddress],
    dry_run: bool,
    timeout: Duration,
) -> anyhow::Result<ChangeReport> {
    let spec = ChangeSpec {
        path,
        goal,
        selectors: devices
            .iter()
            .map(|a| a.to_string().parse().expect("addresses are selectors"))
            .collect(),
        with_group: false,
        force: false,
        dry_run,
        timeout,
        // The boot paths never ask libvirt; any other path is refused by the
        // gate for want of VM facts if it gives a device away.
        vms: VmSource::AtBoot,
    };
    run::run(root, &spec, kernel)
}

/// The outcome of enforcing every declaration.
pub struct Enforced {
    /// One per `[[sriov]]` declaration applied (its PF present, the declared card).
    pub sriov: Vec<SriovReport>,
    pub reports: Vec<ChangeReport>,
    pub warnings: Vec<String>,
    /// Refusals and failures, in order; the first decides the exit status.
    pub errors: Vec<anyhow::Error>,
}

/// What applying one `[[sriov]]` declaration came to.
pub enum SriovOutcome {
    /// Planned (and applied unless a dry run); the report says what happened.
    Changed(Box<SriovReport>),
    /// Nothing done, and why: the PF is absent, another card holds the slot,
    /// or the PF has no driver yet (its driver's bind event comes later).
    Skipped(String),
}

/// Applies one `[[sriov]]` declaration through `engine::sriov`: the VF count
/// (autoprobe off first when the VFs go to VFIO, so no native VF driver
/// binds) and the VFs' driver. Holds the change lock only while it reads
/// and changes this PF and its VFs.
/// `decls` are all the declarations: a VF whose address a `[[binding]]`
/// names is left to that declaration, not bound to `vf_driver` first.
pub fn apply_sriov(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    path: Path,
    decls: &Declarations,
    decl: &SriovDeclaration,
    dry_run: bool,
    timeout: Duration,
) -> anyhow::Result<SriovOutcome> {
    let variants = run::variants_for(root, &Goal::bind_to(&decl.vf_driver));
    let _lock = if dry_run {
        None
    } else {
        Some(state::lock(root, timeout)?)
    };
    let inv = read_pf(root, decl.address)?;
    let Some(pf) = inv.device(&decl.address) else {
        return Ok(SriovOutcome::Skipped(format!(
            "{}: declared SR-IOV PF {} is not present",
            decl.origin,
            decl.key()
        )));
    };
    if let Fit::Mismatch { found } = decl.fit(pf) {
        return Ok(SriovOutcome::Skipped(format!(
            "{}: {} declares SR-IOV PF {} but the slot holds {found}; its VFs are not configured",
            decl.origin,
            decl.key(),
            decl.ids_text()
        )));
    }
    if pf.driver.is_none() {
        return Ok(SriovOutcome::Skipped(format!(
            "{}: SR-IOV PF {} has no driver yet; its VFs are created once it binds one",
            decl.origin,
            decl.key()
        )));
    }
    let request = SriovRequest {
        path,
        pf: decl.address,
        numvfs: decl.numvfs,
        vf_driver: decl.vf_driver.clone(),
        force: false,
        timeout,
        keep: decls.list.iter().filter_map(|d| d.address).collect(),
        // The boot paths never ask libvirt; any other path is refused by the
        // gate for want of VM facts if it gives a device away.
        vms: VmSource::AtBoot,
    };
    Ok(SriovOutcome::Changed(Box::new(sriov::change(
        root, kernel, &inv, &request, &variants, dry_run,
    )?)))
}

/// Enforces every declaration now: each declared PF's VF count first (so
/// its VFs exist), then one change per declared driver. An interrupted
/// change recorded this boot refuses the whole run up front (each change
/// checks again under the lock).
pub fn apply_declarations(
    root: &HostRoot,
    kernel: &dyn PciKernel,
    dry_run: bool,
    timeout: Duration,
) -> anyhow::Result<Enforced> {
    state::refuse_interrupted(root, &state::read_record(root)?, false)?;
    let decls = config::load(root)?;
    let mut sriov_reports = Vec::new();
    let (mut errors, mut skipped) = (Vec::new(), Vec::new());
    // Declared twice in ways that disagree: refused, nothing applied for
    // it (`Declarations::governing` and `sriov_in_force` leave it out).
    errors.extend(decls.conflicts().into_iter().map(anyhow::Error::from));
    for decl in decls.sriov_in_force() {
        match apply_sriov(
            root,
            kernel,
            Path::PersistApply,
            &decls,
            decl,
            dry_run,
            timeout,
        ) {
            Ok(SriovOutcome::Changed(report)) => {
                if let Some(failed) = sriov::failure(&report) {
                    errors.push(failed.into());
                }
                sriov_reports.push(*report);
            }
            Ok(SriovOutcome::Skipped(why)) => skipped.push(why),
            Err(e) => errors.push(e.context(format!("{}: {}", decl.origin, decl.key()))),
        }
    }
    // Declarations by address need only those devices; any by IDs (or a
    // PF's, whose VFs are found by reading), the host.
    let addresses: Option<Vec<PciAddress>> = decls
        .list
        .iter()
        .map(|d| d.address)
        .chain(decls.sriov.iter().map(|_| None))
        .collect();
    let inv = match addresses {
        Some(addresses) => read_devices(root, &addresses, Names::Skip)?,
        None => read_inventory(root, Names::Skip)?,
    };
    let decls = decls.with_vfs(&inv.devices);
    let (goals, mut warnings) = enforcement(&inv, &decls);
    warnings.extend(skipped);
    let mut done = Enforced {
        sriov: sriov_reports,
        reports: Vec::new(),
        warnings,
        errors,
    };
    for (goal, devices) in goals.into_values() {
        match enforce(
            root,
            kernel,
            Path::PersistApply,
            goal,
            &devices,
            dry_run,
            timeout,
        ) {
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
