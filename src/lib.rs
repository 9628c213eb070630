//! vfioctl: safe, repeatable and checkable PCI passthrough (VFIO) for KVM hosts.
//!
//! Data flows one way: host root -> inventory -> plan (pure) -> apply ->
//! verify -> report. The modules name those stages; each imports only
//! modules listed above it:
//!
//! - `cli`: clap definitions and the exit-status table (`build.rs` renders the man page from both).
//! - `model`: the pure PCI domain: addresses, IDs, drivers, devices, IOMMU groups,
//!   a planned change as data (`plan`), reset methods,
//!   selectors, the inventory, modaliases, declarations (`model/declaration/`), libvirt
//!   domains and Nova metadata, PCIe health facts and thresholds, the HGX fabric, the
//!   XML walks libvirt's readers share. No I/O.
//!   `model::test_support` (test fixtures) is built only for tests and with
//!   the `test-support` feature, which the fuzz crate turns on.
//! - `gate`: the one safety gate, pure: judges a plan (and VF counts,
//!   declarations, boot files, resets) against complete facts and hands out
//!   the permits every kernel write and every claiming file takes; `policy`
//!   says how each path is judged and where one differs (the man page's
//!   table of paths is rendered from it); `refusal` the reasons.
//! - `host`: every read and write of host state under one `HostRoot` (`--root`):
//!   sysfs, kernel steps, modules, usage (`usage`, `usage_net` over `usage_walk`),
//!   the /proc walk for holders, declaration files (`host/config/`), udev I/O, lock
//!   and change record, PCIe health reads and the AER baseline, the libvirt helper
//!   process and the VMs it reports, the programs root runs (`programs`: fixed
//!   paths). Kernel writes (`kernel`) take the gate's permits.
//! - `integrations`: what other programs consume or judge: node health checks
//!   (`integrations/check/`, one file per family), boot files, libvirt node devices,
//!   Nova configuration (`integrations/nova/`), udev rule rendering.
//! - `engine`: `plan` (pure; judges nothing), `apply` (independent units at once,
//!   verification, rollback), `run` (privilege -> lock -> read -> plan -> gate ->
//!   apply -> record), `enforce` (declarations; returns its notes for the command to print),
//!   `sriov/` (a PF's VF count, the VFs bound through `plan` and `apply`; in
//!   `sriov/plan.rs` (pure), `apply.rs`, `read.rs`), `recover` (an interrupted change
//!   put back, from its intent, judged by the gate as a change of its own),
//!   `reset` (devices reset between tenants, verified, their outcome kept).
//! - `output`: tables, labels, JSON records and the change report.
//! - `error`: maps typed errors to one line and one `ExitStatus`; imports no command.
//! - `commands`: one thin file per verb, gluing the stages; no command imports another.

pub mod cli;
pub mod commands;
pub mod engine;
pub mod error;
pub mod gate;
pub mod host;
pub mod integrations;
pub mod model;
pub mod output;

use std::io::Write;

use cli::{Cli, Command};
use host::HostRoot;

/// Whether the command line asks for JSON output (`--json` as an option,
/// not a selector after `--`).
pub fn prints_json(cli: &Cli) -> bool {
    use cli::PersistAction;
    match &cli.command {
        Command::List(a) => a.json,
        Command::Show(a) => a.json,
        Command::Bind(a) => a.change.json,
        Command::Sriov(a) => a.json,
        Command::Restore(a) | Command::Unbind(a) => a.json,
        Command::Recover(a) => a.json,
        Command::Reset(a) => a.json,
        Command::Persist { action } => match action {
            PersistAction::List(a) => a.json,
            PersistAction::Apply(a) => a.json,
            _ => false,
        },
        Command::HostConfig(a) => a.json,
        Command::Check(a) => a.json,
        Command::Nodedev(a) => a.json,
        Command::Nova(a) => a.json,
        Command::UdevHook(_) => false,
    }
}

/// Runs one parsed command line, writing its output to `out`; returns the
/// exit status. Output for people goes through `output::HumanOut`, the one
/// escaping path; JSON goes out as serialized.
pub fn run(cli: &Cli, out: &mut dyn Write) -> anyhow::Result<i32> {
    if prints_json(cli) {
        return run_command(cli, out);
    }
    let mut human = output::HumanOut::new(out);
    let status = run_command(cli, &mut human);
    human.flush()?;
    status
}

fn run_command(cli: &Cli, out: &mut dyn Write) -> anyhow::Result<i32> {
    let root = HostRoot::new(&cli.root);
    let libvirt = commands::LibvirtOptions {
        target: host::libvirt::Target::resolve(cli.connect.as_deref(), &cli.root),
        timeout: std::time::Duration::from_secs(cli.connect_timeout),
        no_libvirt: cli.no_libvirt,
        host: root.is_host(),
    };
    match &cli.command {
        Command::List(args) => commands::list::run(&root, &libvirt, args, out),
        Command::Show(args) => commands::show::run(&root, &libvirt, args, out),
        Command::Bind(args) => commands::bind::run(&root, &libvirt, args, out),
        Command::Sriov(args) => commands::sriov::run(&root, &libvirt, args, out),
        Command::Restore(args) => commands::restore::run(&root, &libvirt, args, out),
        Command::Unbind(args) => commands::unbind::run(&root, &libvirt, args, out),
        Command::Recover(args) => commands::recover::run(&root, &libvirt, args, out),
        Command::Reset(args) => commands::reset::run(&root, &libvirt, args, out),
        Command::Persist { action } => commands::persist::run(&root, &libvirt, action, out),
        Command::HostConfig(args) => commands::host_config::run(&root, args, out),
        Command::Check(args) => commands::check::run(&root, &libvirt, args, out),
        Command::Nodedev(args) => commands::nodedev::run(&root, &libvirt, args, out),
        Command::Nova(args) => commands::nova::run(&root, &libvirt, args, out),
        Command::UdevHook(args) => commands::udev_hook::run(&root, args, out),
    }
}
