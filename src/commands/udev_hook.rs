//! `vfioctl udev-hook`: run by udev (70-vfioctl.rules) when a declared device
//! is added. The kernel has usually bound the native driver already, so this
//! is a full bind: override, unbind, reprobe, verify. Output goes to syslog or
//! the kernel log: udev discards it.

use std::io::Write;
use std::time::Duration;

use crate::cli::UdevHookArgs;
use crate::engine::plan::Goal;
use crate::error::MissingAddress;
use crate::host::config;
use crate::host::kernel::SysfsKernel;
use crate::host::sysfs::read_one;
use crate::host::udev::log;
use crate::host::HostRoot;
use crate::model::declaration::Fit;
use crate::model::{PciAddress, SriovRole};

use crate::engine::enforce::{apply_sriov, enforce, SriovOutcome};

pub fn run(root: &HostRoot, args: &UdevHookArgs, _out: &mut dyn Write) -> anyhow::Result<i32> {
    // Only "add", and "bind" for a declared SR-IOV PF (its VFs need its
    // driver): the hook's own bind/unbind events, and "change", must not loop.
    let event = match std::env::var_os("ACTION") {
        None => Event::Add,
        Some(action) if action == "add" => Event::Add,
        Some(action) if action == "bind" => Event::Bind,
        Some(_) => return Ok(crate::cli::exit::OK),
    };
    let text = match &args.device {
        Some(d) => d.clone(),
        None => std::env::var("PCI_SLOT_NAME").map_err(|_| MissingAddress)?,
    };
    let address: PciAddress = text.parse()?;
    let result = enforce_one(root, address, event, Duration::from_secs(args.timeout));
    match &result {
        Ok(Some(message)) => log(root, false, message),
        Ok(None) => {}
        Err(e) => log(root, true, &format!("{address}: {e:#}")),
    }
    result.map(|_| crate::cli::exit::OK)
}

/// The uevent the hook runs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Add,
    /// A driver bound: only a declared SR-IOV PF acts on it (the hook never
    /// binds a PF, so this is never its own event).
    Bind,
}

fn enforce_one(
    root: &HostRoot,
    address: PciAddress,
    event: Event,
    timeout: Duration,
) -> anyhow::Result<Option<String>> {
    let decls = config::load(root)?;
    // Only a declared PF acts on the bind of its driver; other binds (the
    // hook's own among them) stay silent.
    if event == Event::Bind && !decls.sriov.iter().any(|s| s.address == address) {
        return Ok(None);
    }
    // One device is enough to find its declaration; the change re-reads the
    // whole inventory under the lock.
    let Some(dev) = read_one(root, address) else {
        return Ok(Some(format!("{address} is gone; nothing to do")));
    };
    // A VF's binding may come from its PF's [[sriov]]: read the PF too.
    let mut read = vec![dev.clone()];
    if let SriovRole::Vf { physfn } = dev.sriov {
        read.extend(read_one(root, physfn));
    }
    let decls = decls.with_vfs(&read);
    let dev = &dev;
    // A declared PF: its VF count and their driver, once it has its own
    // driver (the add event of a PF whose module udev loads comes first).
    if let Some(pf) = decls.sriov.iter().find(|s| s.address == address) {
        let message = match apply_sriov(root, &SysfsKernel::new(root.clone()), pf, false, timeout)?
        {
            SriovOutcome::Skipped(why) => why,
            SriovOutcome::Changed(report) => {
                if let Some(failed) = crate::engine::sriov::failure(&report) {
                    return Err(failed.into());
                }
                format!(
                    "{address}: declared by {}; {} VF(s) on {}",
                    pf.origin, pf.numvfs, pf.vf_driver
                )
            }
        };
        if event == Event::Bind || decls.governing(dev).is_none() {
            return Ok(Some(message));
        }
        log(root, false, &message);
    }
    if let Some((decl, found)) = decls
        .mismatches(std::slice::from_ref(dev))
        .into_iter()
        .next()
    {
        return Ok(Some(format!(
            "{address}: {} declares {} but the device is {found}; not applied (slot moved or card replaced?)",
            decl.origin,
            decl.ids_text()
        )));
    }
    let Some(governing) = decls.governing(dev) else {
        return Ok(Some(format!(
            "{address}: no declaration covers it (stale udev rules?); nothing to do"
        )));
    };
    debug_assert_eq!(governing.declaration.fit(dev), Fit::Applies);
    let goal = Goal::bind_to(&governing.declaration.driver);
    let report = enforce(
        root,
        &SysfsKernel::new(root.clone()),
        goal,
        &[address],
        false,
        timeout,
    )?;
    if let Some(failed) = crate::engine::run::failure(&report) {
        return Err(failed.into());
    }
    let now = report
        .result
        .as_ref()
        .and_then(|r| r.devices.iter().find(|d| d.address == address))
        .and_then(|d| d.driver.clone())
        .or(dev.driver.clone());
    let changed = report.result.as_ref().map_or(0, |r| {
        r.devices
            .iter()
            .filter(|d| d.status == crate::engine::apply::Status::Done)
            .count()
    });
    Ok(Some(format!(
        "{address}: declared by {}; {} ({changed} device(s) changed)",
        governing.declaration.origin,
        match now {
            Some(d) => format!("on {d}"),
            None => "no driver".to_string(),
        }
    )))
}
