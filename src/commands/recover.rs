//! `vfioctl recover`: an interrupted change put back (`engine::recover`).

use std::io::Write;
use std::time::Duration;

use crate::cli::RecoverArgs;
use crate::engine::recover::{self, RecoverSpec};
use crate::host::kernel::SysfsKernel;
use crate::host::HostRoot;
use crate::output::{report::render_recover, write_json};

pub fn run(
    root: &HostRoot,
    libvirt: &super::LibvirtOptions,
    args: &RecoverArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let spec = RecoverSpec {
        dry_run: args.dry_run,
        force: args.force,
        forget: args.forget,
        timeout: Duration::from_secs(args.timeout),
        vms: libvirt.change_source(crate::gate::Path::Recover),
    };
    let report = recover::run(root, &spec, &SysfsKernel::new(root.clone()))?;
    if args.json {
        write_json(out, &report)?;
    } else {
        write!(out, "{}", render_recover(&report))?;
    }
    match recover::failure(&report) {
        Some(failed) => Err(failed.into()),
        None => Ok(crate::cli::exit::OK),
    }
}
