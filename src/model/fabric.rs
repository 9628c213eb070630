//! HGX NVLink fabric modes: who may take an NVSwitch off the host.
//!
//! On HGX boards the GPUs talk over NVSwitches. Two ways to pass them through:
//! - **shared**: NVIDIA Fabric Manager on the host partitions NVLink; the
//!   NVSwitches stay on the host's nvidia driver and only GPUs go to VMs.
//! - **full**: GPUs and NVSwitches go to one VM together, which runs Fabric
//!   Manager itself.
//!
//! [`may_leave_host`] is the one rule every command asks (nova, and bind,
//! persist and check where they learn the fabric mode).

use serde::Serialize;

use super::address::PciAddress;
use super::device::PciDevice;
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

/// Why a device must stay on the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{address} is an NVSwitch ({vendor}:{device}) and this host runs its NVLink fabric shared: it stays on the host's nvidia driver for Fabric Manager; to give every GPU and NVSwitch to one VM instead, disable Fabric Manager first (systemctl disable --now nvidia-fabricmanager)")]
pub struct StaysOnHost {
    pub address: PciAddress,
    pub vendor: VendorId,
    pub device: DeviceId,
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
        })
    } else {
        Ok(())
    }
}

/// [`may_leave_host`] for a device of the inventory, when the host's fabric
/// mode is known (`None`: no Fabric Manager, nothing to keep).
pub fn device_may_leave_host(fabric: Option<Fabric>, dev: &PciDevice) -> Result<(), StaysOnHost> {
    match fabric {
        Some(fabric) => may_leave_host(fabric, dev.address, dev.ids.vendor, dev.ids.device),
        None => Ok(()),
    }
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
}
