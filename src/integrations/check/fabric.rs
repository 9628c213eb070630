//! The NVLink fabric of an HGX host, as read from the host itself
//! ([`crate::model::fabric::read_fabric`], the reading `nova` uses).

use super::*;

/// `fabric`, on hosts with NVSwitches only: the mode read and what from; a
/// WARNING when the host does not say, since then nothing decides who runs
/// the NVLink fabric of GPUs passed through (and `vfioctl nova` asks for
/// `--fabric`).
pub(super) fn fabric(f: &Facts) -> Option<CheckResult> {
    let reading = f.fabric.as_ref()?;
    Some(match reading.mode {
        Some(mode) => result(
            "fabric",
            Verdict::Ok,
            format!("NVLink fabric {}: {}", mode.as_str(), reading.evidence),
            vec![reading.evidence.clone()],
            None,
        ),
        None => result(
            "fabric",
            Verdict::Warning,
            format!(
                "the host does not say how its NVLink fabric runs: {}",
                reading.evidence
            ),
            vec![reading.evidence.clone()],
            Some("shared: NVSwitches on nvidia with Fabric Manager enabled (systemctl enable --now nvidia-fabricmanager); full: every NVSwitch declared for VFIO (vfioctl persist add 10de:1af1, or 10de:22a3 on H100/H200 boards) with Fabric Manager disabled"),
        ),
    })
}
