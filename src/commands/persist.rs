//! `vfioctl persist add|remove|list|apply`: declared bindings.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use crate::cli::{
    PersistAction, PersistAddArgs, PersistApplyArgs, PersistListArgs, PersistRemoveArgs,
    PersistRulesArgs,
};
use crate::engine::enforce::{apply_declarations, write_rules_status, DeclareOptions};
use crate::engine::plan::PlanError;
use crate::engine::run::{self, ChangeReport, NotPrivileged};
use crate::engine::sriov::SriovReport;
use crate::gate::{self, ClaimKey};
use crate::host::kernel::SysfsKernel;
use crate::host::sysfs::{read_inventory, Names};
use crate::host::udev::{self as udev_io};
use crate::host::vms;
use crate::host::HostRoot;
use crate::host::{config, state};
use crate::integrations::udev;
use crate::model::declaration::{Declaration, Declarations, Origin, SriovDeclaration};
use crate::model::domain::VmFacts;
use crate::model::selector::Matcher;
use crate::model::{DriverName, Inventory, PciAddress, PciDevice, Selector, SriovRole};
use crate::output::report::{render, render_sriov};
use crate::output::table::Table;
use crate::output::write_json;
use std::collections::BTreeSet;

use super::parse_selectors;
use crate::error::NotDeclared;

pub fn run(
    root: &HostRoot,
    libvirt: &super::LibvirtOptions,
    action: &PersistAction,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    match action {
        PersistAction::Add(args) => add(root, args, out),
        PersistAction::Remove(args) => remove(root, libvirt, args, out),
        PersistAction::List(args) => list(root, args, out),
        PersistAction::Apply(args) => apply(root, args, out),
        PersistAction::Rules(args) => rules(root, args, out),
    }
}

fn require_privilege(command: &'static str) -> Result<(), NotPrivileged> {
    if run::privileged() {
        Ok(())
    } else {
        Err(NotPrivileged { command })
    }
}

fn add(root: &HostRoot, args: &PersistAddArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let selectors = parse_selectors(&args.selectors)?;
    let driver = args.driver.as_deref().map(DriverName::parse).transpose()?;
    // The change lock: parallel adds (and binds) must not lose declarations.
    // A dry run writes nothing and needs neither (as bind --dry-run).
    let _lock = if args.dry_run {
        None
    } else {
        require_privilege("persist add")?;
        Some(state::lock(root, state::CONFIG_LOCK_WAIT)?)
    };
    let inv = read_inventory(root, Names::Skip)?;
    let options = DeclareOptions {
        expect: args.expect.map(|n| n as usize),
        refuse_existing: true,
        force: args.force,
        dry_run: args.dry_run,
    };
    super::declare(root, &inv, &selectors, driver.as_ref(), options, out)?;
    if !args.dry_run {
        writeln!(
            out,
            "run `vfioctl persist apply` to bind now, and `vfioctl host-config` for the boot-time files"
        )?;
    }
    Ok(crate::cli::exit::OK)
}

/// Declarations a selector names: by key for an address or full IDs, else
/// those governing the devices it matches.
fn named_by<'a>(
    decls: &'a Declarations,
    inv: &Inventory,
    selector: &Selector,
) -> Vec<&'a Declaration> {
    let key = match &selector.matcher {
        Matcher::Address(addr) => Some(addr.to_string()),
        Matcher::Ids {
            vendor,
            device: Some(device),
            subsystem,
        } => Some(match subsystem {
            Some((sv, sd)) => format!("{vendor}:{device}:{sv}:{sd}"),
            None => format!("{vendor}:{device}"),
        }),
        _ => None,
    };
    let mut found: Vec<&Declaration> = match key {
        Some(key) => decls.list.iter().filter(|d| d.key() == key).collect(),
        None => Vec::new(),
    };
    if found.is_empty() {
        for dev in inv.devices.iter().filter(|d| selector.matches(d)) {
            // A VF's binding made by its PF's [[sriov]] goes with that.
            if let Some(g) = decls
                .governing(dev)
                .filter(|g| decls.vf_source(g.declaration).is_none())
            {
                if !found.contains(&g.declaration) {
                    found.push(g.declaration);
                }
            }
        }
    }
    found
}

/// `[[sriov]]` declarations a selector names: by the PF's address, or those
/// of the PFs it matches.
fn sriov_named_by<'a>(
    decls: &'a Declarations,
    inv: &Inventory,
    selector: &Selector,
) -> Vec<&'a SriovDeclaration> {
    decls
        .sriov
        .iter()
        .filter(|s| match &selector.matcher {
            Matcher::Address(addr) => *addr == s.address,
            _ => inv
                .device(&s.address)
                .is_some_and(|pf| selector.matches(pf)),
        })
        .collect()
}

fn remove(
    root: &HostRoot,
    libvirt: &super::LibvirtOptions,
    args: &PersistRemoveArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let selectors = parse_selectors(&args.selectors)?;
    if !args.dry_run {
        require_privilege("persist remove")?;
    }
    // Which VMs use the devices the declarations keep on VFIO at boot: the
    // helper runs while the lock is taken and the host read.
    let vm_read = vms::start(&libvirt.change_source(crate::gate::Path::PersistRemove));
    let _lock = if args.dry_run {
        None
    } else {
        Some(state::lock(root, state::CONFIG_LOCK_WAIT)?)
    };
    let inv = read_inventory(root, Names::Skip)?;
    let decls = config::load(root)?.with_vfs(&inv.devices);
    let mut doomed: Vec<&Declaration> = Vec::new();
    let mut doomed_pfs: Vec<&SriovDeclaration> = Vec::new();
    for selector in &selectors {
        let named = named_by(&decls, &inv, selector);
        let pfs = sriov_named_by(&decls, &inv, selector);
        if named.is_empty() && pfs.is_empty() {
            return Err(NotDeclared(selector.text.clone()).into());
        }
        for decl in named {
            if !doomed.contains(&decl) {
                doomed.push(decl);
            }
        }
        for pf in pfs {
            if !doomed_pfs.contains(&pf) {
                doomed_pfs.push(pf);
            }
        }
    }
    // Every file is vfioctl's exactly, or nothing is removed.
    for origin in doomed
        .iter()
        .map(|d| &d.origin)
        .chain(doomed_pfs.iter().map(|p| &p.origin))
    {
        config::may_remove(root, origin)?;
    }
    // Devices no declaration will keep on VFIO at the next boot, and the VFs
    // a removed [[sriov]] declaration will no longer create: the VM rules
    // judge them as given back to the host.
    let remaining = Declarations::with_sriov(
        decls
            .list
            .iter()
            .filter(|d| !doomed.contains(d))
            .cloned()
            .collect(),
        decls
            .sriov
            .iter()
            .filter(|s| !doomed_pfs.contains(s))
            .cloned()
            .collect(),
    )
    .with_vfs(&inv.devices);
    let mut released: BTreeSet<PciAddress> = inv
        .devices
        .iter()
        .filter(|d| decls.governing(d).is_some() && remaining.governing(d).is_none())
        .map(|d| d.address)
        .collect();
    for pf in &doomed_pfs {
        if let Some(SriovRole::Pf { vfs, .. }) = inv.device(&pf.address).map(|d| &d.sriov) {
            released.extend(vfs.iter().copied());
        }
    }
    let vms = if released.is_empty() {
        VmFacts::NotAsked("no device is given back to the host".to_string())
    } else {
        vm_read.finish(root)
    };
    let keys: Vec<ClaimKey> = doomed
        .iter()
        .map(|d| ClaimKey::Binding(d.key()))
        .chain(doomed_pfs.iter().map(|p| ClaimKey::Sriov(p.address)))
        .collect();
    let release = gate::clear_release_at_boot(&inv, &vms, keys, &released, args.force)
        .map_err(PlanError::Refused)?;
    for note in release.notes() {
        crate::output::note(note);
    }
    let removed = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for decl in &doomed {
        if !args.dry_run {
            config::remove(root, &release, decl)?;
        }
        writeln!(
            out,
            "{removed} declaration {} ({})",
            decl.key(),
            decl.origin
        )?;
    }
    for pf in &doomed_pfs {
        if !args.dry_run {
            config::remove_sriov(root, &release, pf)?;
        }
        writeln!(
            out,
            "{removed} SR-IOV declaration {} ({}); its VFs stay as they are",
            pf.key(),
            pf.origin
        )?;
    }
    if args.dry_run {
        writeln!(out, "dry run: nothing written")?;
        return Ok(crate::cli::exit::OK);
    }
    let status = udev_io::install_rules(root, &udev::render_rules(&config::load(root)?))?;
    write_rules_status(out, &status)?;
    super::print_notes(&status.notes);
    writeln!(
        out,
        "devices stay on their current driver; `vfioctl restore` gives them back to the host"
    )?;
    Ok(crate::cli::exit::OK)
}

/// One device a declaration covers, for `persist list`.
#[derive(Serialize)]
struct Covered {
    address: PciAddress,
    driver: Option<DriverName>,
    /// On the declared driver (for `auto`: vfio-pci or a VFIO variant).
    enforced: bool,
    /// Whether udev marked it with VFIOCTL_DRIVER (null: cannot tell).
    udev_marked: Option<bool>,
}

#[derive(Serialize)]
struct ListEntry<'a> {
    key: String,
    #[serde(flatten)]
    declaration: &'a Declaration,
    devices: Vec<Covered>,
    /// The address now holds a different device (IDs found there), or null.
    mismatch: Option<String>,
}

/// One `[[sriov]]` declaration, for `persist list`: `kind` tells it from a
/// binding's entry in the same array.
#[derive(Serialize)]
struct SriovEntry<'a> {
    kind: &'static str,
    key: String,
    #[serde(flatten)]
    declaration: &'a SriovDeclaration,
    /// `sriov_numvfs` now; null when the PF is absent or not SR-IOV capable.
    numvfs_present: Option<u32>,
    /// Its VFs present that its `vf_driver` governs.
    devices: Vec<Covered>,
    mismatch: Option<String>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Entry<'a> {
    Binding(ListEntry<'a>),
    Sriov(SriovEntry<'a>),
}

fn covered(root: &HostRoot, decl: &Declaration, dev: &PciDevice) -> Covered {
    Covered {
        address: dev.address,
        driver: dev.driver.clone(),
        enforced: decl.driver.satisfied_by(dev.driver.as_ref()),
        udev_marked: udev_io::udev_property(root, &dev.address, udev::DRIVER_PROPERTY)
            .map(|v| v.is_some()),
    }
}

fn list(root: &HostRoot, args: &PersistListArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let inv = read_inventory(root, Names::Skip)?;
    let decls = config::load(root)?.with_vfs(&inv.devices);
    let mismatches = decls.mismatches(&inv.devices);
    let coverage = decls.coverage(&inv.devices);
    let entries: Vec<ListEntry> = decls
        .list
        .iter()
        .zip(&coverage)
        .map(|(decl, covered_now)| ListEntry {
            key: decl.key(),
            declaration: decl,
            devices: covered_now.iter().map(|d| covered(root, decl, d)).collect(),
            mismatch: mismatches
                .iter()
                .find(|(m, _)| *m == decl)
                .map(|(_, found)| found.to_string()),
        })
        .collect();
    let vfs = decls.vf_coverage(&inv.devices);
    let sriov_mismatches = decls.sriov_mismatches(&inv.devices);
    let pfs: Vec<SriovEntry> = decls
        .sriov
        .iter()
        .map(|s| SriovEntry {
            kind: "sriov",
            key: s.key(),
            declaration: s,
            numvfs_present: inv.device(&s.address).and_then(|pf| match pf.sriov {
                SriovRole::Pf { num_vfs, .. } => Some(num_vfs),
                _ => None,
            }),
            devices: vfs
                .iter()
                .filter(|(decl, _)| decls.vf_source(decl) == Some(s))
                .map(|(decl, vf)| covered(root, decl, vf))
                .collect(),
            mismatch: sriov_mismatches
                .iter()
                .find(|(m, _)| *m == s)
                .map(|(_, found)| found.to_string()),
        })
        .collect();
    if args.json {
        let all: Vec<Entry> = entries
            .into_iter()
            .map(Entry::Binding)
            .chain(pfs.into_iter().map(Entry::Sriov))
            .collect();
        write_json(out, &all)?;
        return Ok(crate::cli::exit::OK);
    }
    if entries.is_empty() && pfs.is_empty() {
        writeln!(out, "no declarations in {}", config::BINDINGS_DIR)?;
        return Ok(crate::cli::exit::OK);
    }
    if !entries.is_empty() {
        list_bindings(&entries, out)?;
    }
    if !pfs.is_empty() {
        list_sriov(&pfs, out)?;
    }
    Ok(crate::cli::exit::OK)
}

/// The DEVICES column of `persist list`: the addresses, or `none present`.
fn devices_cell(devices: &[Covered]) -> String {
    if devices.is_empty() {
        return "none present".to_string();
    }
    devices
        .iter()
        .map(|d| d.address.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The ENFORCED column: how many of them are on the declared driver.
fn enforced_cell(devices: &[Covered]) -> String {
    let enforced = devices.iter().filter(|d| d.enforced).count();
    format!("{enforced}/{}", devices.len())
}

/// The `[[sriov]]` table of `persist list`: the count present/declared, the
/// VFs' driver and how many of them are on it.
fn list_sriov(pfs: &[SriovEntry], out: &mut dyn Write) -> std::io::Result<()> {
    let mut table = Table::new([
        "SRIOV PF",
        "IDS",
        "NUMVFS",
        "VF DRIVER",
        "VFS",
        "ENFORCED",
        "ORIGIN",
    ]);
    for e in pfs {
        table.row(vec![
            e.key.clone(),
            e.declaration.ids_text(),
            format!(
                "{}/{}",
                e.numvfs_present.map_or("-".to_string(), |n| n.to_string()),
                e.declaration.numvfs
            ),
            e.declaration.vf_driver.to_string(),
            devices_cell(&e.devices),
            enforced_cell(&e.devices),
            e.declaration.origin.to_string(),
        ]);
    }
    write!(out, "{}", table.render(""))?;
    for e in pfs {
        if let Some(found) = &e.mismatch {
            let what = format!("SR-IOV PF {}", e.declaration.ids_text());
            slot_moved(
                out,
                &e.declaration.origin,
                &what,
                &e.key,
                found,
                "configured",
            )?;
        }
    }
    Ok(())
}

/// The warning for a declaration whose address holds another device now.
fn slot_moved(
    out: &mut dyn Write,
    origin: &Origin,
    what: &str,
    key: &str,
    found: &str,
    done: &str,
) -> std::io::Result<()> {
    writeln!(
        out,
        "warning: {origin} declares {what} at {key}, but that slot now holds {found}: not {done} (slot moved or card replaced?)"
    )
}

fn list_bindings(entries: &[ListEntry], out: &mut dyn Write) -> std::io::Result<()> {
    let mut table = Table::new(["KEY", "DRIVER", "DEVICES", "ENFORCED", "ORIGIN"]);
    for e in entries {
        table.row(vec![
            e.key.clone(),
            e.declaration.driver.to_string(),
            devices_cell(&e.devices),
            enforced_cell(&e.devices),
            e.declaration.origin.to_string(),
        ]);
    }
    write!(out, "{}", table.render(""))?;
    for e in entries {
        if let Some(found) = &e.mismatch {
            let what = e.declaration.ids_text();
            slot_moved(out, &e.declaration.origin, &what, &e.key, found, "applied")?;
        }
    }
    Ok(())
}

fn apply(root: &HostRoot, args: &PersistApplyArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    if !args.dry_run {
        require_privilege("persist apply")?;
    }
    let kernel = SysfsKernel::new(root.clone());
    let mut done = apply_declarations(
        root,
        &kernel,
        args.dry_run,
        Duration::from_secs(args.timeout),
    )?;
    if args.json {
        #[derive(Serialize)]
        struct ApplyRecord<'a> {
            sriov: &'a [SriovReport],
            reports: &'a [ChangeReport],
            warnings: &'a [String],
            errors: Vec<String>,
        }
        write_json(
            out,
            &ApplyRecord {
                sriov: &done.sriov,
                reports: &done.reports,
                warnings: &done.warnings,
                errors: done.errors.iter().map(|e| format!("{e:#}")).collect(),
            },
        )?;
    } else {
        if done.sriov.is_empty() && done.reports.is_empty() && done.errors.is_empty() {
            writeln!(
                out,
                "nothing declared is present (see vfioctl persist list)"
            )?;
        }
        for report in &done.sriov {
            write!(out, "{}", render_sriov(report))?;
        }
        for report in &done.reports {
            write!(out, "{}", render(report))?;
        }
        for warning in &done.warnings {
            writeln!(out, "warning: {warning}")?;
        }
        for error in done.errors.iter().skip(1) {
            writeln!(out, "also failed: {error:#}")?;
        }
    }
    if done.errors.is_empty() {
        Ok(crate::cli::exit::OK)
    } else {
        Err(done.errors.remove(0))
    }
}

fn rules(root: &HostRoot, args: &PersistRulesArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    if args.write {
        require_privilege("persist rules --write")?;
        let _lock = state::lock(root, state::CONFIG_LOCK_WAIT)?;
        let decls = config::load(root)?;
        let status = udev_io::install_rules(root, &udev::render_rules(&decls))?;
        if !status.written {
            writeln!(out, "{} is current", udev_io::GENERATED_RULES)?;
        }
        write_rules_status(out, &status)?;
        super::print_notes(&status.notes);
    } else {
        write!(out, "{}", udev::render_rules(&config::load(root)?))?;
    }
    Ok(crate::cli::exit::OK)
}
