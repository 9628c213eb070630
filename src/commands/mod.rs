//! One thin file per verb, gluing the stages: read through `host`, decide
//! and change through `engine` (or `integrations`), render with `output`.
//! No command imports another; what two verbs share lives here or in a stage.

pub mod bind;
pub mod check;
pub mod host_config;
pub mod list;
pub mod nodedev;
pub mod nova;
pub mod persist;
pub mod recover;
pub mod reset;
pub mod restore;
pub mod show;
pub mod sriov;
pub mod udev_hook;
pub mod unbind;

use std::io::Write;
use std::time::Duration;

use crate::cli::ChangeArgs;
use crate::engine::enforce::{self, DeclareOptions};
use crate::engine::plan::Goal;
use crate::engine::run::{self, ChangeSpec};
use crate::gate::Path;
use crate::host::kernel::SysfsKernel;
use crate::host::libvirt::{self, Target};
use crate::host::vms::VmSource;
use crate::host::HostRoot;
use crate::integrations::nodedev::NodeDevice;
use crate::model::domain::VmFacts;
use crate::model::{DriverName, Inventory, Selector, SelectorError};
use crate::output::{report::render, write_json};

/// How to reach libvirt, from the global options; only the commands that
/// need libvirt use it.
#[derive(Debug, Clone)]
pub struct LibvirtOptions {
    pub target: Target,
    pub timeout: Duration,
    /// `--no-libvirt`: VM facts are not asked for.
    pub no_libvirt: bool,
    /// The host root is this machine's own `/` (`HostRoot::is_host`).
    pub host: bool,
}

impl LibvirtOptions {
    /// Where VM facts come from for a command that only reads.
    pub fn vm_source(&self) -> VmSource {
        if self.no_libvirt {
            VmSource::Skipped
        } else {
            VmSource::Libvirt {
                target: self.target.clone(),
                timeout: self.timeout,
            }
        }
    }

    /// Where VM facts come from for a change an operator asks for on `path`
    /// (`gate::policy` says whether it asks libvirt).
    /// libvirt's test driver (`test:///...`, from `--connect` or
    /// `VFIOCTL_CONNECT`) never speaks for this host's own VMs: on the real
    /// root a change that gives a device away is refused with it, as with a
    /// libvirt that does not answer (`--no-libvirt` is the way to skip).
    pub fn change_source(&self, path: Path) -> VmSource {
        VmSource::for_path(path, || {
            match &self.target {
            Target::Uri(uri) if self.host && !self.no_libvirt && uri.starts_with("test:") => {
                VmSource::Unfit(format!(
                    "{uri} is libvirt's test driver, not this host's hypervisor; name the host's URI with --connect, or --no-libvirt"
                ))
            }
            _ => self.vm_source(),
        }
        })
    }
}

/// libvirt's PCI node devices at `uri`, parsed; malformed XML fails naming the device.
pub fn node_devices(uri: &str, timeout: Duration) -> anyhow::Result<Vec<NodeDevice>> {
    libvirt::pci_node_devices(uri, timeout)?
        .iter()
        .map(|listed| NodeDevice::parse(&listed.name, &listed.xml).map_err(Into::into))
        .collect()
}

/// The note `list` and `show` print about VMs they could not learn of:
/// libvirt there but silent, or no libvirt on this host. Nothing when the
/// operator chose (`--no-libvirt`) or `--root` names another host.
pub fn vm_note(vms: &VmFacts) -> Option<String> {
    match vms {
        VmFacts::Known { .. } => None,
        VmFacts::Failed(error) => Some(format!(
            "VMs unknown (VM column ?): {error}; the holder search still names processes that hold a device"
        )),
        VmFacts::Absent(why) => Some(format!(
            "VMs unknown (VM column ?): {why}; the holder search still names processes that hold a device"
        )),
        VmFacts::NotAsked(_) => None,
    }
}

/// Prints notes an engine step returned, in order, through the note policy.
pub fn print_notes(notes: &[String]) {
    for text in notes {
        crate::output::note(text);
    }
}

/// Declares `selectors` (`bind --persist`, `persist add`): the refusals
/// first, what `--force` overrode printed before anything is written, then
/// the declarations and udev rules written and the rules' notes printed.
pub fn declare(
    root: &HostRoot,
    inv: &Inventory,
    selectors: &[Selector],
    driver: Option<&DriverName>,
    options: DeclareOptions,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let judged = enforce::judge_declarations(root, inv, selectors, driver, options)?;
    print_notes(&judged.notes);
    let notes = enforce::write_declarations(
        root,
        inv,
        &judged,
        options,
        crate::integrations::udev::render_rules,
        out,
    )?;
    print_notes(&notes);
    Ok(())
}

/// Parses every selector, failing on the first malformed one.
pub fn parse_selectors(texts: &[String]) -> Result<Vec<Selector>, SelectorError> {
    texts.iter().map(|t| t.parse()).collect()
}

/// The part `bind`, `restore` and `unbind` share: run the change, print the
/// report, turn a failed apply into the error line and exit status.
pub fn run_change(
    root: &HostRoot,
    libvirt: &LibvirtOptions,
    goal: Goal,
    args: &ChangeArgs,
    with_group: bool,
    after: Option<run::AfterChange>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let path = crate::gate::path_of(&goal);
    let spec = ChangeSpec {
        path,
        goal,
        selectors: parse_selectors(&args.selectors)?,
        with_group,
        force: args.force,
        dry_run: args.dry_run,
        timeout: Duration::from_secs(args.timeout),
        vms: libvirt.change_source(path),
    };
    let report = run::run_then(root, &spec, &SysfsKernel::new(root.clone()), after)?;
    if args.json {
        write_json(out, &report)?;
    } else {
        write!(out, "{}", render(&report))?;
    }
    match run::failure(&report) {
        Some(failed) => Err(failed.into()),
        None => Ok(crate::cli::exit::OK),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_driver_never_speaks_for_this_hosts_vms() {
        let options = |uri: &str, host: bool, no_libvirt: bool| LibvirtOptions {
            target: Target::Uri(uri.to_string()),
            timeout: Duration::from_secs(1),
            no_libvirt,
            host,
        };
        // On the real root a change asks no test driver: its facts are unknown.
        let unfit = options("test:///default", true, false).change_source(Path::Restore);
        assert!(
            matches!(&unfit, VmSource::Unfit(why) if why.contains("not this host's hypervisor")),
            "{unfit:?}"
        );
        let facts = crate::host::vms::start(&unfit).finish(&HostRoot::new("/"));
        assert!(matches!(facts, VmFacts::Failed(_)));
        // --no-libvirt is the way to skip; a fake root may use the test driver;
        // reading commands may too; the boot paths never ask.
        assert_eq!(
            options("test:///default", true, true).change_source(Path::Restore),
            VmSource::Skipped
        );
        assert!(matches!(
            options("test:///x.xml", false, false).change_source(Path::Restore),
            VmSource::Libvirt { .. }
        ));
        assert!(matches!(
            options("test:///default", true, false).vm_source(),
            VmSource::Libvirt { .. }
        ));
        assert_eq!(
            options("test:///default", true, false).change_source(Path::UdevHook),
            VmSource::AtBoot
        );
        assert!(matches!(
            options("qemu:///system", true, false).change_source(Path::Restore),
            VmSource::Libvirt { .. }
        ));
    }
}
