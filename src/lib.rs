//! vfioctl: safe, repeatable and checkable PCI passthrough (VFIO) for KVM hosts.
//!
//! Data flows one way: host root -> inventory (`host`) -> decisions (`model`)
//! -> output (`output`), glued per verb in `commands`.

pub mod apply;
pub mod change;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod host;
pub mod host_config;
pub mod model;
pub mod output;
pub mod udev;

use std::io::Write;

use cli::{Cli, Command};
use host::HostRoot;

/// Runs one parsed command line, writing its output to `out`; returns the exit status.
pub fn run(cli: &Cli, out: &mut dyn Write) -> anyhow::Result<i32> {
    let root = HostRoot::new(&cli.root);
    let libvirt = commands::LibvirtOptions {
        target: host::libvirt::Target::resolve(cli.connect.as_deref(), &cli.root),
        timeout: std::time::Duration::from_secs(cli.connect_timeout),
    };
    match &cli.command {
        Command::List(args) => commands::list::run(&root, args, out),
        Command::Show(args) => commands::show::run(&root, args, out),
        Command::Bind(args) => commands::bind::run(&root, args, out),
        Command::Restore(args) => commands::restore::run(&root, args, out),
        Command::Unbind(args) => commands::unbind::run(&root, args, out),
        Command::Persist { action } => commands::persist::run(&root, action, out),
        Command::HostConfig(args) => commands::host_config::run(&root, args, out),
        Command::Check(args) => commands::check::run(&root, &libvirt, args, out),
        Command::Nodedev(args) => commands::nodedev::run(&root, &libvirt, args, out),
        Command::Nova(args) => commands::nova::run(&root, &libvirt, args, out),
        Command::UdevHook(args) => commands::udev_hook::run(&root, args, out),
    }
}
