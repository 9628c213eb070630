//! One PCI function, as read from sysfs.

use std::fmt;

use serde::Serialize;

use super::address::PciAddress;
use super::driver::{DriverName, ModuleName};
use super::ids::{ClassCode, DeviceIds};

/// Config-space header type (byte 0x0e, low 7 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderType {
    Endpoint,
    PciBridge,
    CardBusBridge,
    Other(u8),
}

impl HeaderType {
    pub fn from_config_byte(byte: u8) -> HeaderType {
        match byte & 0x7f {
            0 => HeaderType::Endpoint,
            1 => HeaderType::PciBridge,
            2 => HeaderType::CardBusBridge,
            other => HeaderType::Other(other),
        }
    }
}

/// The function's part in SR-IOV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum SriovRole {
    /// Not SR-IOV capable (or the capability is not exposed).
    None,
    /// Physical function: can create up to `total_vfs` virtual functions.
    Pf {
        total_vfs: u32,
        num_vfs: u32,
        /// Enabled VFs, by `virtfnN` index order.
        vfs: Vec<PciAddress>,
    },
    /// Virtual function of `physfn`.
    Vf { physfn: PciAddress },
}

impl SriovRole {
    /// A PF's enabled VFs (`sriov_numvfs` above 0): the VFs found, which
    /// may be fewer than the count while the kernel creates them. `None`
    /// for a PF with no VF enabled and for any other function.
    pub fn enabled_vfs(&self) -> Option<(u32, &[PciAddress])> {
        match self {
            SriovRole::Pf { num_vfs, vfs, .. } if *num_vfs > 0 || !vfs.is_empty() => {
                Some((*num_vfs, vfs))
            }
            _ => None,
        }
    }
}

/// The `device_type` Nova assigns to a PCI device, which a `[pci] alias` must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum NovaDeviceType {
    #[serde(rename = "type-PF")]
    Pf,
    #[serde(rename = "type-VF")]
    Vf,
    #[serde(rename = "type-PCI")]
    Pci,
}

impl NovaDeviceType {
    pub fn as_str(self) -> &'static str {
        match self {
            NovaDeviceType::Pf => "type-PF",
            NovaDeviceType::Vf => "type-VF",
            NovaDeviceType::Pci => "type-PCI",
        }
    }
}

impl fmt::Display for NovaDeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything vfioctl knows about one PCI function.
#[derive(Debug, Clone)]
pub struct PciDevice {
    pub address: PciAddress,
    pub ids: DeviceIds,
    pub class: ClassCode,
    pub revision: u8,
    /// `None` when config space could not be read.
    pub header_type: Option<HeaderType>,
    /// Config space reads all ones: the device is gone, or stuck in D3cold/reset.
    pub config_dead: bool,
    pub driver: Option<DriverName>,
    /// The module providing the bound driver; `None` when built in or unbound.
    pub driver_module: Option<ModuleName>,
    pub driver_override: Option<DriverName>,
    pub iommu_group: Option<u32>,
    pub sriov: SriovRole,
    pub numa_node: Option<u32>,
    pub boot_vga: bool,
    /// The bridge or port above this function; `None` on a root bus.
    pub parent: Option<PciAddress>,
    /// Functions the kernel linked to this one as consumers (`consumer:pci:*`),
    /// e.g. a GPU's HDA audio function.
    pub consumers: Vec<PciAddress>,
    /// Functions this one depends on (`supplier:pci:*`).
    pub suppliers: Vec<PciAddress>,
    /// `power_state` (D0, D3hot, D3cold...) where the kernel exposes it.
    pub power_state: Option<String>,
    /// Reading its `driver_override` blocked past a deadline: the kernel
    /// holds its device lock, so an unbind is still pending (one an
    /// interrupted change left). Its override is unknown then (`None`).
    pub device_locked: bool,
}

impl PciDevice {
    /// Bridge or port, decided by the header type. Class is only a fallback
    /// when config space is unreadable: NVSwitch (class 0x0680) is an endpoint.
    pub fn is_bridge(&self) -> bool {
        match self.header_type {
            Some(h) => matches!(h, HeaderType::PciBridge | HeaderType::CardBusBridge),
            None => {
                self.class.base() == 0x06 && matches!(self.class.subclass(), 0x04 | 0x07 | 0x09)
            }
        }
    }

    /// Nova's device_type as libvirt and Nova derive it from this function:
    /// a `physfn` link makes a VF; otherwise SR-IOV capability (total VFs > 0,
    /// even with none enabled) makes a PF; everything else is plain PCI.
    pub fn nova_device_type(&self) -> NovaDeviceType {
        match self.sriov {
            SriovRole::Vf { .. } => NovaDeviceType::Vf,
            SriovRole::Pf { total_vfs, .. } if total_vfs > 0 => NovaDeviceType::Pf,
            _ => NovaDeviceType::Pci,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal endpoint for pure tests (one definition, shared with the
    /// fuzz crate through the `test-support` feature).
    pub(crate) use crate::model::test_support::endpoint;

    #[test]
    fn bridge_is_decided_by_header_type_not_class() {
        // NVSwitch: class "Bridge: other" but a type-0 header.
        let nvswitch = endpoint("b7:00.0", 0x068000);
        assert!(!nvswitch.is_bridge());
        let mut port = endpoint("00:01.0", 0x060400);
        port.header_type = Some(HeaderType::PciBridge);
        assert!(port.is_bridge());
        port.header_type = None;
        assert!(port.is_bridge(), "class fallback when config is unreadable");
        assert_eq!(HeaderType::from_config_byte(0x81), HeaderType::PciBridge);
        assert_eq!(HeaderType::from_config_byte(0x80), HeaderType::Endpoint);
    }

    #[test]
    fn nova_device_type_follows_libvirt() {
        let mut dev = endpoint("25:00.0", 0x030200);
        assert_eq!(dev.nova_device_type(), NovaDeviceType::Pci);
        dev.sriov = SriovRole::Pf {
            total_vfs: 16,
            num_vfs: 0,
            vfs: vec![],
        };
        assert_eq!(
            dev.nova_device_type(),
            NovaDeviceType::Pf,
            "PF even with no VF enabled"
        );
        dev.sriov = SriovRole::Pf {
            total_vfs: 0,
            num_vfs: 0,
            vfs: vec![],
        };
        assert_eq!(dev.nova_device_type(), NovaDeviceType::Pci);
        dev.sriov = SriovRole::Vf {
            physfn: "25:00.0".parse().unwrap(),
        };
        assert_eq!(dev.nova_device_type(), NovaDeviceType::Vf);
        assert_eq!(
            serde_json::to_string(&NovaDeviceType::Pf).unwrap(),
            "\"type-PF\""
        );
    }
}
