//! Devices `vfioctl reset` reset: one whose last reset was not verified
//! (it failed verification, the reset failed, did not return by the
//! deadline or was interrupted) is CRITICAL until a later reset verifies
//! it; a verified one is OK. And an interrupted reset, as `check` reports
//! every interrupted change.

use super::*;
use crate::host::state::{format_utc, Intent};
use crate::model::reset::{ids_text, Outcome};

/// One result per device in /var/lib/vfioctl/reset.json that is present
/// with the IDs it had when reset (another card in the slot is not the
/// device that was reset).
pub(super) fn resets(f: &Facts) -> Vec<CheckResult> {
    let state = match &f.resets {
        Ok(state) => state,
        Err(e) => {
            return vec![result(
                "reset.state",
                Verdict::Unknown,
                format!("which devices a reset left unverified is unknown: {e}"),
                vec![],
                Some("move the file aside; the next vfioctl reset of each device writes it again"),
            )]
        }
    };
    let mut out = Vec::new();
    for (address, entry) in &state.devices {
        let Some(dev) = f.inv.device(address) else {
            continue;
        };
        if ids_text(dev.ids.vendor, dev.ids.device) != entry.ids {
            continue;
        }
        let at = format_utc(entry.at);
        let (status, message) = match entry.outcome {
            Outcome::Verified => (
                Verdict::Ok,
                format!("{address}: its last reset ({at}) was verified: fit for the next tenant"),
            ),
            Outcome::Unfit => (
                Verdict::Critical,
                format!("{address} failed verification after its last reset ({at}): not fit for the next tenant"),
            ),
            Outcome::Failed => (
                Verdict::Critical,
                format!("{address}: its last reset ({at}) failed: not fit for the next tenant"),
            ),
            Outcome::Pending => (
                Verdict::Critical,
                format!("{address}: its last reset ({at}) did not return by the deadline: not verified for the next tenant"),
            ),
            Outcome::Interrupted => (
                Verdict::Critical,
                format!("{address}: its last reset ({at}) was interrupted: not verified for the next tenant"),
            ),
        };
        let mut evidence = entry.findings.clone();
        evidence.push(format!("{address} in {}", crate::host::reset::state_path()));
        let mut r = result(&format!("reset.{address}"), status, message, evidence, None);
        if !entry.outcome.verified() {
            r.remedy = Some(format!(
                "look into the evidence, then run vfioctl reset {address}: a reset that verifies the device clears this"
            ));
        }
        r.device = Some(*address);
        out.push(r);
    }
    out
}

/// An interrupted reset: CRITICAL for each device it was resetting.
pub(super) fn interrupted(f: &Facts, intent: &Intent, evidence: Vec<String>) -> Vec<CheckResult> {
    let Some(reset) = &intent.reset else {
        return Vec::new();
    };
    reset
        .devices
        .iter()
        .map(|d| {
            let address = d.address;
            let now = if f.inv.device(&address).is_some_and(|dev| dev.device_locked) {
                "its reset is still in the kernel (the device's lock is held)"
            } else if d.pending {
                "vfioctl stopped waiting for its reset, which may still be in the kernel"
            } else {
                "whether it was reset, and how it came back, is unknown"
            };
            let method = match (&d.method, &d.methods_before) {
                (Some(m), before) => format!(
                    "; reset_method narrowed to {m} (before: {})",
                    before.as_deref().unwrap_or("default")
                ),
                (None, _) => String::new(),
            };
            let mut r = result(
                "change.interrupted",
                Verdict::Critical,
                format!("{address}: {} did not finish: {now}{method}", intent.summary()),
                evidence.clone(),
                None,
            );
            r.remedy = Some(format!(
                "run vfioctl recover (it makes no reset: it puts reset_method back where the reset narrowed it and records the device unverified), then vfioctl reset {address} to verify it"
            ));
            r.device = Some(address);
            r
        })
        .collect()
}
