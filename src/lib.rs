//! vfioctl: safe, repeatable and checkable PCI passthrough (VFIO) for KVM hosts.
//!
//! Data flows one way: host root -> inventory -> plan (pure) -> apply ->
//! verify -> report. The modules name those stages, and imports point down
//! this list only:
//!
//! - `cli`: clap definitions and the exit-status table (`build.rs` renders the man page from both).
//! - `error`: maps typed errors to one line and one `ExitStatus`; imports no command.
//! - `model`: the pure PCI domain: addresses, IDs, drivers, devices, IOMMU groups,
//!   selectors, the inventory, modaliases, declarations. No I/O.
//! - `host`: every read and write of host state under one `HostRoot` (`--root`):
//!   sysfs, kernel steps, modules, usage, declaration files, udev I/O, lock and
//!   change record, the libvirt helper process.
//! - `engine`: `plan` (pure), `apply` (verification, rollback), `run`
//!   (privilege -> lock -> read -> plan -> apply -> record), `enforce` (declarations),
//!   `sriov` (a PF's VF count, the VFs bound through `plan` and `apply`).
//! - `integrations`: what other programs consume or judge: health checks, boot
//!   files, libvirt node devices, Nova configuration, udev rule rendering.
//! - `output`: tables, labels, JSON records and the change report.
//! - `commands`: one thin file per verb, gluing the stages; no command imports another.

pub mod cli;
pub mod commands;
pub mod engine;
pub mod error;
pub mod host;
pub mod integrations;
pub mod model;
pub mod output;

use std::io::Write;

use cli::{Cli, Command};
use host::HostRoot;

/// Runs one parsed command line, writing its output to `out`; returns the exit status.
pub fn run(cli: &Cli, out: &mut dyn Write) -> anyhow::Result<i32> {
    let root = HostRoot::new(&cli.root);
    let libvirt = commands::LibvirtOptions {
        target: host::libvirt::Target::resolve(cli.connect.as_deref(), &cli.root),
        timeout: std::time::Duration::from_secs(cli.connect_timeout),
        no_libvirt: cli.no_libvirt,
    };
    match &cli.command {
        Command::List(args) => commands::list::run(&root, &libvirt, args, out),
        Command::Show(args) => commands::show::run(&root, &libvirt, args, out),
        Command::Bind(args) => commands::bind::run(&root, &libvirt, args, out),
        Command::Sriov(args) => commands::sriov::run(&root, &libvirt, args, out),
        Command::Restore(args) => commands::restore::run(&root, &libvirt, args, out),
        Command::Unbind(args) => commands::unbind::run(&root, &libvirt, args, out),
        Command::Persist { action } => commands::persist::run(&root, &libvirt, action, out),
        Command::HostConfig(args) => commands::host_config::run(&root, args, out),
        Command::Check(args) => commands::check::run(&root, &libvirt, args, out),
        Command::Nodedev(args) => commands::nodedev::run(&root, &libvirt, args, out),
        Command::Nova(args) => commands::nova::run(&root, &libvirt, args, out),
        Command::UdevHook(args) => commands::udev_hook::run(&root, args, out),
    }
}
