//! `vfioctl unbind`: devices left with no driver.

use std::io::Write;

use crate::cli::ChangeArgs;
use crate::engine::plan::Goal;
use crate::host::HostRoot;

use super::{run_change, LibvirtOptions};

pub fn run(
    root: &HostRoot,
    libvirt: &LibvirtOptions,
    args: &ChangeArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    run_change(root, libvirt, Goal::Unbind, args, false, None, out)
}
