//! `vfioctl bind`: devices to vfio-pci (or a named driver) now; with
//! `--persist`, declared under the same lock and from the same inventory.

use std::io::Write;

use crate::cli::BindArgs;
use crate::engine::plan::Goal;
use crate::host::HostRoot;
use crate::model::{DriverName, Inventory};

use super::{declare, parse_selectors, run_change, LibvirtOptions};

pub fn run(
    root: &HostRoot,
    libvirt: &LibvirtOptions,
    args: &BindArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let driver = args.driver.as_deref().map(DriverName::parse).transpose()?;
    let goal = Goal::bind_to(&driver.clone().into());
    let selectors = parse_selectors(&args.change.selectors)?;
    if args.persist && !args.change.dry_run {
        may_declare(root, &selectors, driver.as_ref())?;
    }
    // What declaring printed, shown after the change report.
    let mut declared: Vec<u8> = Vec::new();
    let mut persisted: anyhow::Result<()> = Ok(());
    let status = {
        let mut declare = |inv: &Inventory| {
            persisted = declare(
                root,
                inv,
                &selectors,
                driver.as_ref(),
                crate::engine::enforce::DeclareOptions {
                    force: args.change.force,
                    ..Default::default()
                },
                &mut declared,
            );
        };
        let after: Option<crate::engine::run::AfterChange> = if args.persist {
            Some(&mut declare)
        } else {
            None
        };
        run_change(
            root,
            libvirt,
            goal,
            &args.change,
            args.with_group,
            after,
            out,
        )?
    };
    // With --json, stdout carries one JSON document: report declarations on stderr.
    if args.change.json {
        std::io::stderr().write_all(&declared)?;
    } else {
        out.write_all(&declared)?;
    }
    persisted?;
    Ok(status)
}

/// Before any change: `--persist` must be able to write its declarations
/// (no key declared in a file the operator owns, each file vfioctl's), so
/// devices are not bound and then left undeclared. Checked again when
/// written, under the lock.
fn may_declare(
    root: &HostRoot,
    selectors: &[crate::model::Selector],
    driver: Option<&DriverName>,
) -> anyhow::Result<()> {
    let inv = crate::host::sysfs::read_inventory(root, crate::host::sysfs::Names::Skip)?;
    // Selectors that match nothing are the change's to report.
    let Ok(decls) = crate::model::declaration::declare(&inv, selectors, driver) else {
        return Ok(());
    };
    let existing = crate::host::config::load(root)?;
    for decl in &decls {
        crate::host::config::may_add(root, &existing, decl)?;
    }
    Ok(())
}
