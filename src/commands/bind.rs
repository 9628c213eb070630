//! `vfioctl bind`: devices to vfio-pci (or a named driver) now.

use std::io::Write;

use crate::cli::BindArgs;
use crate::engine::plan::Goal;
use crate::host::HostRoot;
use crate::model::DriverName;

use crate::host::sysfs::{read_inventory, Names};

use super::parse_selectors;
use super::run_change;
use crate::engine::enforce::declare_and_write;

pub fn run(root: &HostRoot, args: &BindArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let driver = args.driver.as_deref().map(DriverName::new);
    let goal = Goal::bind_to(&driver.clone().into());
    let status = run_change(root, goal, &args.change, args.with_group, out)?;
    if args.persist && !args.change.dry_run {
        let inv = read_inventory(root, Names::Skip)?;
        let selectors = parse_selectors(&args.change.selectors)?;
        // With --json, stdout carries one JSON document: report declarations on stderr.
        if args.change.json {
            declare_and_write(
                root,
                &inv,
                &selectors,
                driver.as_ref(),
                &mut std::io::stderr(),
            )?;
        } else {
            declare_and_write(root, &inv, &selectors, driver.as_ref(), out)?;
        }
    }
    Ok(status)
}
