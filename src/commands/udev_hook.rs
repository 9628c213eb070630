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
use crate::host::state;
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
    let started = state::since_boot();
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
    if let Some(path) = std::env::var_os(TRACE_VAR) {
        trace(
            root,
            std::path::Path::new(&path),
            &trace_line(address, started, &state::lock_history(), result.is_ok()),
        );
    }
    result.map(|_| crate::cli::exit::OK)
}

/// `VFIOCTL_TRACE=FILE` (set by a udev rule, `ENV{VFIOCTL_TRACE}="..."`):
/// the hook appends one line of timings to FILE (docs/benchmarks.md, boot
/// storm). Only a FILE under `/run/vfioctl-trace/` (of the host root) is
/// written: what the environment names is never a file elsewhere that root
/// would append to.
const TRACE_VAR: &str = "VFIOCTL_TRACE";

/// Where trace files may be (see `TRACE_VAR`).
const TRACE_DIR: &str = "/run/vfioctl-trace";

/// `udev-hook ADDRESS pid=N start=S lock_asked=S lock_got=S lock_released=S
/// end=S status=ok|error`: seconds since boot (the clock of /proc/uptime);
/// `-` for a lock step that never happened.
fn trace_line(address: PciAddress, started: f64, locks: &[state::LockSpan], ok: bool) -> String {
    let at = |t: Option<f64>| t.map_or("-".to_string(), |t| format!("{t:.6}"));
    let span = locks.first();
    format!(
        "udev-hook {address} pid={} start={started:.6} lock_asked={} lock_got={} lock_released={} end={:.6} status={}\n",
        std::process::id(),
        at(span.map(|s| s.asked)),
        at(span.and_then(|s| s.got)),
        at(span.and_then(|s| s.released)),
        state::since_boot(),
        if ok { "ok" } else { "error" }
    )
}

/// Appends `line` to the trace file in one write (O_APPEND: lines of
/// concurrent hooks do not interleave); never follows a symlink. A trace
/// that cannot be written is skipped: it must not change the hook's outcome.
fn trace(root: &HostRoot, path: &std::path::Path, line: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = root.path(TRACE_DIR);
    let inside = path.parent() == Some(dir.as_path())
        && path
            .file_name()
            .is_some_and(|n| !n.is_empty() && n != "." && n != "..");
    if !inside {
        return;
    }
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        let _ = file.write_all(line.as_bytes());
    }
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
    // Declared twice in ways that disagree: nothing is applied for it.
    if let Some(conflict) = decls.conflict_for(dev) {
        return Err(conflict.into());
    }
    // A declared PF: its VF count and their driver, once it has its own
    // driver (the add event of a PF whose module udev loads comes first).
    if let Some(pf) = decls.sriov.iter().find(|s| s.address == address) {
        let message = match apply_sriov(
            root,
            &SysfsKernel::new(root.clone()),
            crate::gate::Path::UdevHook,
            &decls,
            pf,
            false,
            timeout,
        )? {
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
        crate::gate::Path::UdevHook,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_line_names_each_step() {
        let span = state::LockSpan {
            asked: 1.5,
            got: Some(2.25),
            released: Some(3.0),
        };
        let addr: PciAddress = "0000:01:00.1".parse().unwrap();
        let line = trace_line(addr, 1.0, &[span], true);
        assert!(line.starts_with("udev-hook 0000:01:00.1 pid="), "{line}");
        assert!(
            line.contains(
                " start=1.000000 lock_asked=1.500000 lock_got=2.250000 lock_released=3.000000 end="
            ),
            "{line}"
        );
        assert!(line.ends_with(" status=ok\n"), "{line}");
        let none = trace_line(addr, 1.0, &[], false);
        assert!(
            none.contains(" lock_asked=- lock_got=- lock_released=- "),
            "{none}"
        );
        assert!(none.ends_with(" status=error\n"), "{none}");
    }
}
