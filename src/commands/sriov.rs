//! `vfioctl sriov`: a PF's VF count, and its VFs bound, in one verified step
//! (`engine::sriov`).

use std::io::Write;
use std::time::Duration;

use crate::cli::SriovArgs;
use crate::engine::enforce::declare_sriov;
use crate::engine::sriov::{self, AfterSriov, SriovReport, SriovSpec};
use crate::host::config;
use crate::host::kernel::SysfsKernel;
use crate::host::sysfs::{read_selected, Names};
use crate::host::HostRoot;
use crate::integrations::udev;
use crate::model::{DriverName, Inventory};
use crate::output::{report::render_sriov, write_json};

pub fn run(
    root: &HostRoot,
    libvirt: &super::LibvirtOptions,
    args: &SriovArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let driver = args.driver.as_deref().map(DriverName::parse).transpose()?;
    let spec = SriovSpec {
        selector: args.selector.parse()?,
        numvfs: args.numvfs,
        vf_driver: driver.into(),
        force: args.force,
        dry_run: args.dry_run,
        timeout: Duration::from_secs(args.timeout),
        vms: libvirt.change_source(crate::gate::Path::Sriov),
    };
    if args.persist && !args.dry_run {
        may_declare(root, &spec)?;
    }
    let mut declared = Vec::new();
    let mut declare = |inv: &Inventory, report: &SriovReport| -> anyhow::Result<()> {
        let done = declare_sriov(root, inv, report, udev::render_rules)?;
        super::print_notes(&done.notes);
        declared = done.lines;
        Ok(())
    };
    let after: Option<AfterSriov> = if args.persist {
        Some(&mut declare)
    } else {
        None
    };
    let report = sriov::run_then(root, &spec, &SysfsKernel::new(root.clone()), after)?;
    if args.json {
        write_json(out, &report)?;
    } else {
        write!(out, "{}", render_sriov(&report))?;
        for line in &declared {
            writeln!(out, "{line}")?;
        }
    }
    match sriov::failure(&report) {
        Some(failed) => Err(failed.into()),
        None => Ok(crate::cli::exit::OK),
    }
}

/// Before any change: `--persist` must be able to write its declaration
/// (the PF not declared in a file the operator owns, its file vfioctl's),
/// so the VFs are not changed and then left undeclared. Checked again when
/// written, under the lock.
fn may_declare(root: &HostRoot, spec: &SriovSpec) -> anyhow::Result<()> {
    let selectors = std::slice::from_ref(&spec.selector);
    let inv = read_selected(root, selectors, Names::Skip)?;
    if let [pf] = inv.select(selectors)?.as_slice() {
        config::may_add_sriov(root, &config::load(root)?, pf.address)?;
        crate::engine::enforce::may_declare_sriov(root, &inv, pf.address)?;
    }
    Ok(())
}
