//! `vfioctl restore`: devices back to their host drivers now.

use std::io::Write;

use crate::cli::ChangeArgs;
use crate::host::HostRoot;
use crate::model::plan::Goal;

use super::change::run_change;

pub fn run(root: &HostRoot, args: &ChangeArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    run_change(root, Goal::Restore, args, false, out)
}
