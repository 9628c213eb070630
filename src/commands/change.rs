//! The part `bind`, `restore` and `unbind` share: run the change, print the
//! report, turn a failed apply into the error line and exit status.

use std::io::Write;
use std::time::Duration;

use crate::change::{self, ChangeSpec};
use crate::cli::ChangeArgs;
use crate::host::kernel::SysfsKernel;
use crate::host::HostRoot;
use crate::model::plan::Goal;
use crate::output::{change::render, write_json};

use super::parse_selectors;

pub fn run_change(
    root: &HostRoot,
    goal: Goal,
    args: &ChangeArgs,
    with_group: bool,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let spec = ChangeSpec {
        goal,
        selectors: parse_selectors(&args.selectors)?,
        with_group,
        force: args.force,
        dry_run: args.dry_run,
        timeout: Duration::from_secs(args.timeout),
    };
    let report = change::run(root, &spec, &SysfsKernel::new(root.clone()))?;
    if args.json {
        write_json(out, &report)?;
    } else {
        write!(out, "{}", render(&report))?;
    }
    match change::failure(&report) {
        Some(failed) => Err(failed.into()),
        None => Ok(crate::cli::exit::OK),
    }
}
