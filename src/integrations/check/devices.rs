//! Device checks: changes the kernel, or vfioctl, has not finished.

use super::*;

/// A claiming driver_override on a device the host uses, which is not on
/// that driver: its next probe (a rebind, a hot-plug, `drivers_probe`)
/// hands the device to it. CRITICAL, whoever wrote it (the gate's rule,
/// `gate::override_threats`).
pub(super) fn override_threats(f: &Facts) -> Vec<CheckResult> {
    f.override_threats
        .iter()
        .filter_map(|r| {
            let crate::gate::RefusalKind::NextProbe { driver, used } = &r.kind else {
                return None;
            };
            let address = r.device;
            let mut out = result(
                &format!("binding.{address}.override"),
                Verdict::Critical,
                format!(
                    "{address} {used}, and its driver_override {driver} would hand it to {driver} at its next probe (a rebind, a hot-plug, drivers_probe)"
                ),
                vec![format!(
                    "/sys/bus/pci/devices/{address}/driver_override = {driver}"
                )],
                None,
            );
            out.remedy = Some(format!(
                "clear it: vfioctl restore {address} (it clears a stale override and changes nothing else)"
            ));
            out.device = Some(address);
            Some(out)
        })
        .collect()
}

/// Every unbind still pending (or completed since, leaving no driver).
pub(super) fn pending_unbinds(f: &Facts) -> Vec<CheckResult> {
    f.pending
        .iter()
        .map(|(address, what)| {
            let now = f
                .inv
                .device(address)
                .and_then(|d| d.driver.as_ref())
                .map_or_else(|| "no driver".to_string(), |d| format!("driver {d}"));
            let mut r = result(
                "device.pending_unbind",
                Verdict::Critical,
                format!("{address}: {what}; now on {now}"),
                vec![format!("{address} in /run/vfioctl/changes.json")],
                Some("once the holder has let go, run vfioctl restore (or bind) on the device"),
            );
            r.device = Some(*address);
            r
        })
        .collect()
}

/// "3 d 2 h", "2 h 5 min", "16 min": how long, for people.
fn duration(seconds: u64) -> String {
    let (days, hours, minutes) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
    );
    match (days, hours) {
        (0, 0) => format!("{minutes} min"),
        (0, _) => format!("{hours} h {minutes} min"),
        _ => format!("{days} d {hours} h"),
    }
}

/// `change_record`: whether /run/vfioctl/changes.json can be used. Every
/// change, the udev hook and `recover` refuse while it cannot: CRITICAL,
/// with the reader's own message (the file, why, and what to do).
pub(super) fn change_record(f: &Facts) -> CheckResult {
    match &f.record {
        Ok(0) => result(
            "change_record",
            Verdict::Ok,
            "/run/vfioctl/changes.json: no device changed by vfioctl this boot",
            vec![],
            None,
        ),
        Ok(n) => result(
            "change_record",
            Verdict::Ok,
            format!("/run/vfioctl/changes.json: {n} device(s) changed by vfioctl this boot (vfioctl show ADDRESS says how)"),
            vec![],
            None,
        ),
        Err(e) => result(
            "change_record",
            Verdict::Critical,
            format!("the change record cannot be used: {e}"),
            vec!["/run/vfioctl/changes.json".to_string()],
            Some("until it can, every change, the udev hook and vfioctl recover refuse: look at the file; once no vfioctl runs (pgrep -x vfioctl), move it aside as the message says (a reboot also clears /run)"),
        ),
    }
}

/// /var/lib/vfioctl, where the AER baseline and the reset outcomes live:
/// CRITICAL when it is not trusted as declarations are (another owner,
/// writable by others, a link), naming the path, why and the fix (the AER
/// baseline and the reset outcomes are not used meanwhile); nothing when
/// it is trusted or not there yet, as health.aer_baseline.
pub(super) fn state_dir(f: &Facts) -> Option<CheckResult> {
    let Err(e) = &f.state_dir else {
        return None;
    };
    Some(result(
        "state_dir",
        Verdict::Critical,
        format!("vfioctl's state directory cannot be trusted: {e}"),
        vec!["/var/lib/vfioctl".to_string()],
        Some("the AER baseline and the reset outcomes are not used while it is not trusted: fix what the message names (owner root, writable by no one else, no symlink); if someone else changed it, find out who"),
    ))
}

/// The remedy of an interrupted change.
const RECOVER: &str = "run vfioctl recover (vfioctl recover --dry-run shows its plan): it puts back every device the interrupted change touched, as its own rollback would have; then run the command again if the change is still wanted";

/// A change recorded as under way: CRITICAL for each device it touched when
/// its process is gone (killed mid-change, or its rollback failed), OK while
/// it runs; nothing for a record from an earlier boot.
pub(super) fn interrupted_change(f: &Facts) -> Vec<CheckResult> {
    use crate::host::state::IntentState;
    let Some(found) = &f.interrupted else {
        return Vec::new();
    };
    let intent = &found.intent;
    let evidence = vec![format!(
        "intent of PID {} in /run/vfioctl/changes.json",
        intent.pid
    )];
    match found.state {
        IntentState::OtherBoot => return Vec::new(),
        IntentState::InProgress => {
            let limit = f.health.thresholds.change.in_progress_minutes;
            let running = f.health.now.saturating_sub(intent.started_at);
            if running <= limit.saturating_mul(60) {
                return vec![result(
                    "change.in_progress",
                    Verdict::Ok,
                    format!("{} is in progress", intent.summary()),
                    evidence,
                    None,
                )];
            }
            return vec![result(
                "change.in_progress",
                Verdict::Warning,
                format!(
                    "{} has been in progress for {}, longer than {limit} min: PID {} ({}) may be blocked in the kernel or stuck",
                    intent.summary(),
                    duration(running),
                    intent.pid,
                    intent.command
                ),
                evidence,
                Some(&format!(
                    "see what PID {} waits for (ps -o pid,stat,wchan:32,args -p {0}; as root cat /proc/{0}/stack): an unbind waits for whoever holds the device (vfioctl show ADDRESS names them); if it must end, kill it, then run vfioctl recover; [change] in_progress_minutes in /etc/vfioctl/check.toml sets the limit",
                    intent.pid
                )),
            )];
        }
        IntentState::Interrupted => {}
    }
    if intent.reset.is_some() {
        return super::reset::interrupted(f, intent, evidence);
    }
    let now = |address: &crate::model::PciAddress| match f.inv.device(address) {
        Some(d) if d.device_locked => format!(
            "{}, its unbind still pending in the kernel (a process holds it)",
            d.driver
                .as_ref()
                .map_or("no driver".to_string(), |d| d.to_string())
        ),
        Some(d) => crate::model::driver::Binding {
            driver: d.driver.clone(),
            driver_override: d.driver_override.clone(),
        }
        .to_string(),
        None => "gone".to_string(),
    };
    let mut out = Vec::new();
    if let Some(s) = &intent.sriov {
        let count_now = match f.inv.device(&s.pf).map(|d| &d.sriov) {
            Some(SriovRole::Pf { vfs, .. }) => vfs.len().to_string(),
            _ => "gone".to_string(),
        };
        let autoprobe = |v: Option<bool>| v.map_or("-".to_string(), |v| u8::from(v).to_string());
        let mut r = result(
            "change.interrupted",
            Verdict::Critical,
            format!(
                "{}: {} did not finish: sriov_numvfs was {}, wanted {}, now {count_now}; sriov_drivers_autoprobe was {}, now {}",
                s.pf,
                intent.summary(),
                s.numvfs_before,
                s.numvfs,
                autoprobe(s.autoprobe_before),
                autoprobe(found.autoprobe_now)
            ),
            evidence.clone(),
            Some(RECOVER),
        );
        r.device = Some(s.pf);
        out.push(r);
    }
    for d in &intent.devices {
        let mut r = result(
            "change.interrupted",
            Verdict::Critical,
            format!(
                "{}: {} did not finish: it was on {}, wanted {}, now {}",
                d.address,
                intent.summary(),
                d.before,
                d.target,
                now(&d.address)
            ),
            evidence.clone(),
            Some(RECOVER),
        );
        r.device = Some(d.address);
        out.push(r);
    }
    out
}
