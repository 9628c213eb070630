//! `vfioctl sriov`: a PF's VF count, and its VFs bound, in one verified step
//! (`engine::sriov`).

use std::io::Write;
use std::time::Duration;

use crate::cli::SriovArgs;
use crate::engine::sriov::{self, SriovSpec};
use crate::host::kernel::SysfsKernel;
use crate::host::HostRoot;
use crate::model::DriverName;
use crate::output::{report::render_sriov, write_json};

pub fn run(root: &HostRoot, args: &SriovArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let driver = args.driver.as_deref().map(DriverName::parse).transpose()?;
    let spec = SriovSpec {
        selector: args.selector.parse()?,
        numvfs: args.numvfs,
        vf_driver: driver.into(),
        force: args.force,
        dry_run: args.dry_run,
        timeout: Duration::from_secs(args.timeout),
    };
    let report = sriov::run(root, &spec, &SysfsKernel::new(root.clone()))?;
    if args.json {
        write_json(out, &report)?;
    } else {
        write!(out, "{}", render_sriov(&report))?;
    }
    match sriov::failure(&report) {
        Some(failed) => Err(failed.into()),
        None => Ok(crate::cli::exit::OK),
    }
}
