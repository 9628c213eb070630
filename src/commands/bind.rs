//! `vfioctl bind`: devices to vfio-pci (or a named driver) now.

use std::io::Write;

use crate::cli::BindArgs;
use crate::host::HostRoot;
use crate::model::plan::Goal;
use crate::model::DriverName;

use super::change::run_change;

pub fn run(root: &HostRoot, args: &BindArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let goal = match &args.driver {
        Some(name) => Goal::Bind(DriverName::new(name.as_str())),
        None => Goal::BindVfio,
    };
    run_change(root, goal, &args.change, args.with_group, out)
}
