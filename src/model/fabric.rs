//! HGX NVLink fabric modes: who may take an NVSwitch off the host.
//!
//! On HGX boards the GPUs talk over NVSwitches. Two ways to pass them through:
//! - **shared**: NVIDIA Fabric Manager on the host partitions NVLink; the
//!   NVSwitches stay on the host's nvidia driver and only GPUs go to VMs.
//! - **full**: GPUs and NVSwitches go to one VM together, which runs Fabric
//!   Manager itself.
//!
//! [`read_fabric`] reads the mode from what the host shows (where its
//! NVSwitches are, whether Fabric Manager is enabled or running): the one
//! inference `nova`, `bind`, `persist add` and `check` share, fed by
//! `host::hostfacts::fabric`. [`may_leave_host`] is the one rule every
//! command asks before an NVSwitch leaves the host.

use std::collections::BTreeMap;

use serde::Serialize;

use super::address::PciAddress;
use super::device::PciDevice;
use super::driver::{DriverKind, DriverName};
use super::ids::{DeviceId, VendorId};

/// NVSwitch IDs: A100 boards (10de:1af1), H100/H200 boards (10de:22a3).
const NVSWITCHES: &[(u16, u16)] = &[(0x10de, 0x1af1), (0x10de, 0x22a3)];

pub fn is_nvswitch(vendor: VendorId, device: DeviceId) -> bool {
    NVSWITCHES.contains(&(vendor.0, device.0))
}

/// What full passthrough hands to the VM: every NVSwitch and every NVIDIA
/// GPU (display class) of an HGX board; nothing on a host without NVSwitches.
pub fn full_fabric(devices: &[PciDevice]) -> Vec<&PciDevice> {
    if !devices
        .iter()
        .any(|d| is_nvswitch(d.ids.vendor, d.ids.device))
    {
        return Vec::new();
    }
    devices
        .iter()
        .filter(|d| {
            is_nvswitch(d.ids.vendor, d.ids.device)
                || (d.ids.vendor.0 == 0x10de && d.class.base() == 0x03)
        })
        .collect()
}

/// How the NVLink fabric of an HGX host is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fabric {
    /// Fabric Manager on the host; NVSwitches stay on the host driver.
    Shared,
    /// GPUs and NVSwitches all go to one VM.
    Full,
}

impl Fabric {
    pub fn as_str(self) -> &'static str {
        match self {
            Fabric::Shared => "shared",
            Fabric::Full => "full",
        }
    }
}

/// One NVSwitch as the host shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchState {
    pub address: PciAddress,
    /// The driver bound now.
    pub driver: Option<DriverName>,
    /// Declared in /etc/vfioctl for a VFIO driver (vfioctl binds it at boot).
    pub declared_vfio: bool,
}

/// NVIDIA Fabric Manager as the host root shows it, without asking systemd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagerState {
    /// The systemd link enabling it at boot (a `*.wants/` link under
    /// /etc/systemd/system), when there is one and the unit is not masked.
    pub enabled_by: Option<String>,
    /// A running `nv-fabricmanager` process.
    pub running_pid: Option<u32>,
}

/// What the host shows about its NVLink fabric (`host::hostfacts::fabric`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FabricFacts {
    /// Every NVSwitch, in address order.
    pub switches: Vec<SwitchState>,
    pub manager: ManagerState,
}

/// The fabric mode the host shows, and what it was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FabricReading {
    /// `None` when the host does not say (the NVSwitches disagree, or
    /// nothing claims them, or Fabric Manager contradicts them).
    pub mode: Option<Fabric>,
    /// Where each NVSwitch is and what Fabric Manager does: what the mode
    /// was read from, or why the host does not say.
    pub evidence: String,
    /// `enabled (LINK)`, `running (pid N)` or both, when Fabric Manager is
    /// enabled or running; `None` otherwise.
    pub fabric_manager: Option<String>,
}

impl FabricReading {
    /// The mode changes to bindings must respect: shared whenever Fabric
    /// Manager is enabled or running, since it holds the NVSwitches (or will
    /// at boot) whatever else the host says; otherwise the mode read.
    pub fn for_changes(&self) -> Option<Fabric> {
        if self.fabric_manager.is_some() {
            Some(Fabric::Shared)
        } else {
            self.mode
        }
    }
}

/// Where one NVSwitch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// On a VFIO driver, or declared for one.
    Vfio,
    /// On a host driver (nvidia's nvidia-nvswitch), not declared for VFIO.
    Host,
    /// On no driver or pci-stub: nothing decides.
    Neither,
}

fn side(s: &SwitchState) -> Side {
    if s.declared_vfio {
        return Side::Vfio;
    }
    match s.driver.as_ref().map(DriverName::kind) {
        Some(DriverKind::Vfio) => Side::Vfio,
        Some(DriverKind::Host) => Side::Host,
        Some(DriverKind::Stub) | None => Side::Neither,
    }
}

fn switch_label(s: &SwitchState) -> String {
    let on = s
        .driver
        .as_ref()
        .map_or_else(|| "on no driver".to_string(), |d| format!("on {d}"));
    if s.declared_vfio && s.driver.as_ref().map(DriverName::kind) != Some(DriverKind::Vfio) {
        format!("{on}, declared for VFIO")
    } else {
        on
    }
}

/// Reads the NVLink fabric mode from the host's own state; `None` on a host
/// without NVSwitches. Full: every NVSwitch is on a VFIO driver or declared
/// for one, and Fabric Manager is neither enabled nor running. Shared: every
/// NVSwitch is on the host's driver and Fabric Manager is enabled or
/// running. Anything else does not say (`mode: None`): the NVSwitches
/// disagree, none is claimed by anything, or Fabric Manager contradicts them.
pub fn read_fabric(facts: &FabricFacts) -> Option<FabricReading> {
    if facts.switches.is_empty() {
        return None;
    }
    let mut by_label: BTreeMap<String, Vec<PciAddress>> = BTreeMap::new();
    for s in &facts.switches {
        by_label.entry(switch_label(s)).or_default().push(s.address);
    }
    let mut groups: Vec<(String, Vec<PciAddress>)> = by_label.into_iter().collect();
    groups.sort_by_key(|(_, addrs)| addrs[0]);
    let switches: Vec<String> = groups
        .iter()
        .map(|(label, addrs)| {
            let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            format!("NVSwitch {} {label}", addrs.join(", "))
        })
        .collect();
    let m = &facts.manager;
    let fabric_manager = match (&m.enabled_by, m.running_pid) {
        (Some(link), Some(pid)) => Some(format!("enabled ({link}) and running (pid {pid})")),
        (Some(link), None) => Some(format!("enabled ({link})")),
        (None, Some(pid)) => Some(format!("running (pid {pid})")),
        (None, None) => None,
    };
    let manager_text = fabric_manager.as_ref().map_or_else(
        || "Fabric Manager neither enabled nor running".to_string(),
        |state| format!("Fabric Manager {state}"),
    );
    let sides: Vec<Side> = facts.switches.iter().map(side).collect();
    let all = |want: Side| sides.iter().all(|s| *s == want);
    let mode = match (fabric_manager.is_some(), all(Side::Vfio), all(Side::Host)) {
        (false, true, _) => Some(Fabric::Full),
        (true, _, true) => Some(Fabric::Shared),
        _ => None,
    };
    Some(FabricReading {
        mode,
        evidence: format!("{}; {manager_text}", switches.join("; ")),
        fabric_manager,
    })
}

/// Why a device must stay on the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{address} is an NVSwitch ({vendor}:{device}) and this host runs its NVLink fabric shared{}: it stays on the host's nvidia driver for Fabric Manager; to give every GPU and NVSwitch to one VM instead, disable Fabric Manager first (systemctl disable --now nvidia-fabricmanager)", read_from(.fabric_manager.as_deref()))]
pub struct StaysOnHost {
    pub address: PciAddress,
    pub vendor: VendorId,
    pub device: DeviceId,
    /// What Fabric Manager does on this host (`enabled (LINK)`, `running
    /// (pid N)`), when the mode was read from the host.
    pub fabric_manager: Option<String>,
}

fn read_from(fabric_manager: Option<&str>) -> String {
    fabric_manager.map_or_else(String::new, |state| format!(" (Fabric Manager {state})"))
}

/// Whether a device may be taken from the host's drivers under `fabric`:
/// everything may, except NVSwitches of a shared fabric. The one rule
/// `nova`, `bind`, `persist` and `check` ask.
pub fn may_leave_host(
    fabric: Fabric,
    address: PciAddress,
    vendor: VendorId,
    device: DeviceId,
) -> Result<(), StaysOnHost> {
    if fabric == Fabric::Shared && is_nvswitch(vendor, device) {
        Err(StaysOnHost {
            address,
            vendor,
            device,
            fabric_manager: None,
        })
    } else {
        Ok(())
    }
}

/// [`may_leave_host`] for a device of the inventory under the host's own
/// reading (`None`: no NVSwitch on the host): NVSwitches stay while Fabric
/// Manager is enabled or running ([`FabricReading::for_changes`]).
pub fn device_may_leave_host(
    fabric: Option<&FabricReading>,
    dev: &PciDevice,
) -> Result<(), StaysOnHost> {
    let Some(mode) = fabric.and_then(FabricReading::for_changes) else {
        return Ok(());
    };
    may_leave_host(mode, dev.address, dev.ids.vendor, dev.ids.device).map_err(|stays| StaysOnHost {
        fabric_manager: fabric.and_then(|r| r.fabric_manager.clone()),
        ..stays
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_fabric_keeps_nvswitches_on_the_host() {
        let a100 = (VendorId(0x10de), DeviceId(0x20b0));
        let at: PciAddress = "b7:00.0".parse().unwrap();
        for switch in [0x1af1, 0x22a3] {
            let err =
                may_leave_host(Fabric::Shared, at, VendorId(0x10de), DeviceId(switch)).unwrap_err();
            assert!(err.to_string().starts_with("0000:b7:00.0 is an NVSwitch"));
            assert!(err.to_string().contains("Fabric Manager"));
            may_leave_host(Fabric::Full, at, VendorId(0x10de), DeviceId(switch)).unwrap();
        }
        may_leave_host(Fabric::Shared, at, a100.0, a100.1).unwrap();
        assert!(!is_nvswitch(a100.0, a100.1));
    }

    fn switches(states: &[(&str, Option<&str>, bool)]) -> Vec<SwitchState> {
        states
            .iter()
            .map(|(addr, driver, declared)| SwitchState {
                address: addr.parse().unwrap(),
                driver: driver.map(DriverName::new),
                declared_vfio: *declared,
            })
            .collect()
    }

    fn read(states: &[(&str, Option<&str>, bool)], manager: ManagerState) -> FabricReading {
        read_fabric(&FabricFacts {
            switches: switches(states),
            manager,
        })
        .unwrap()
    }

    const ENABLED: &str =
        "/etc/systemd/system/multi-user.target.wants/nvidia-fabricmanager.service";

    fn enabled() -> ManagerState {
        ManagerState {
            enabled_by: Some(ENABLED.to_string()),
            running_pid: None,
        }
    }

    #[test]
    fn the_host_says_full_or_shared_or_nothing() {
        assert_eq!(read_fabric(&FabricFacts::default()), None, "no NVSwitch");
        let none = ManagerState::default();
        // Full: on vfio-pci, or declared for VFIO and not yet bound.
        let full = read(
            &[
                ("b7:00.0", Some("vfio-pci"), false),
                ("b8:00.0", Some("nvidia-nvswitch"), true),
            ],
            none.clone(),
        );
        assert_eq!(full.mode, Some(Fabric::Full));
        assert_eq!(
            full.evidence,
            "NVSwitch 0000:b7:00.0 on vfio-pci; NVSwitch 0000:b8:00.0 on nvidia-nvswitch, declared for VFIO; Fabric Manager neither enabled nor running"
        );
        assert_eq!(full.for_changes(), Some(Fabric::Full));
        // Shared: on nvidia with Fabric Manager enabled or running.
        let on_host = [
            ("b7:00.0", Some("nvidia-nvswitch"), false),
            ("b8:00.0", Some("nvidia-nvswitch"), false),
        ];
        let shared = read(&on_host, enabled());
        assert_eq!(shared.mode, Some(Fabric::Shared));
        assert_eq!(
            shared.evidence,
            format!("NVSwitch 0000:b7:00.0, 0000:b8:00.0 on nvidia-nvswitch; Fabric Manager enabled ({ENABLED})")
        );
        let running = read(
            &on_host,
            ManagerState {
                enabled_by: None,
                running_pid: Some(4242),
            },
        );
        assert_eq!(running.mode, Some(Fabric::Shared));
        assert_eq!(
            running.fabric_manager.as_deref(),
            Some("running (pid 4242)")
        );
        // Nothing said: on nvidia without Fabric Manager, a mix, on no
        // driver, or VFIO under an enabled Fabric Manager.
        for (states, manager) in [
            (&on_host[..], none.clone()),
            (
                &[
                    ("b7:00.0", Some("vfio-pci"), false),
                    ("b8:00.0", Some("nvidia-nvswitch"), false),
                ][..],
                none.clone(),
            ),
            (&[("b7:00.0", None, false)][..], none.clone()),
            (&[("b7:00.0", Some("pci-stub"), false)][..], enabled()),
            (&[("b7:00.0", Some("vfio-pci"), false)][..], enabled()),
        ] {
            let r = read(states, manager.clone());
            assert_eq!(r.mode, None, "{r:?}");
            // Changes still leave NVSwitches to an enabled Fabric Manager.
            assert_eq!(
                r.for_changes(),
                manager.enabled_by.is_some().then_some(Fabric::Shared)
            );
        }
    }

    #[test]
    fn a_refusal_names_what_fabric_manager_does() {
        let mut dev = crate::model::device::tests::endpoint("b7:00.0", 0x068000);
        dev.ids.device = DeviceId(0x1af1);
        let shared = read(&[("b7:00.0", Some("nvidia-nvswitch"), false)], enabled());
        let err = device_may_leave_host(Some(&shared), &dev).unwrap_err();
        assert!(err.to_string().starts_with(&format!(
            "0000:b7:00.0 is an NVSwitch (10de:1af1) and this host runs its NVLink fabric shared (Fabric Manager enabled ({ENABLED})): it stays"
        )));
        let full = read(
            &[("b7:00.0", Some("vfio-pci"), false)],
            ManagerState::default(),
        );
        device_may_leave_host(Some(&full), &dev).unwrap();
        device_may_leave_host(None, &dev).unwrap();
    }
}
