//! `vfioctl reset`: devices reset between tenants and verified (`engine::reset`).

use std::io::Write;
use std::time::Duration;

use crate::cli::ResetArgs;
use crate::engine::reset::{self, ResetSpec};
use crate::gate::Path;
use crate::host::kernel::SysfsKernel;
use crate::host::HostRoot;
use crate::model::reset::ResetMethod;
use crate::output::{reset::render, write_json};

use super::{parse_selectors, LibvirtOptions};

pub fn run(
    root: &HostRoot,
    libvirt: &LibvirtOptions,
    args: &ResetArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let spec = ResetSpec {
        selectors: parse_selectors(&args.selectors)?,
        method: args
            .method
            .as_deref()
            .map(str::parse::<ResetMethod>)
            .transpose()?,
        dry_run: args.dry_run,
        timeout: Duration::from_secs(args.timeout),
        vms: libvirt.change_source(Path::Reset),
    };
    let report = reset::run(root, &spec, &SysfsKernel::new(root.clone()))?;
    if args.json {
        write_json(out, &report)?;
    } else {
        write!(out, "{}", render(&report))?;
    }
    match reset::failure(&report) {
        Some(failed) => Err(failed.into()),
        None => Ok(crate::cli::exit::OK),
    }
}
