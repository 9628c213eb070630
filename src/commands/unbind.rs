//! `vfioctl unbind`: devices left with no driver.

use std::io::Write;

use crate::cli::ChangeArgs;
use crate::engine::plan::Goal;
use crate::host::HostRoot;

use super::run_change;

pub fn run(root: &HostRoot, args: &ChangeArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    run_change(root, Goal::Unbind, args, false, None, out)
}
