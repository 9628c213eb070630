//! Device checks: changes the kernel has not finished.

use super::*;

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
