//! Fixtures for code that tests the pure core: the unit tests (`cfg(test)`)
//! and the fuzz crate, which turns on the `test-support` feature. Neither
//! the default build nor the released binary contains this module.

use super::device::{HeaderType, PciDevice, SriovRole};
use super::domain::{Domain, DomainDefinition, DomainState};
use super::ids::{ClassCode, DeviceId, DeviceIds, VendorId};

/// A minimal endpoint at `addr` (any form `PciAddress` parses) of `class`:
/// an A100's IDs (10de:20b0, subsystem 10de:134f), a type-0 header, and no
/// driver, IOMMU group, SR-IOV role or links.
pub fn endpoint(addr: &str, class: u32) -> PciDevice {
    PciDevice {
        address: addr.parse().unwrap(),
        ids: DeviceIds {
            vendor: VendorId(0x10de),
            device: DeviceId(0x20b0),
            subsystem_vendor: VendorId(0x10de),
            subsystem_device: DeviceId(0x134f),
        },
        class: ClassCode(class),
        revision: 0xa1,
        header_type: Some(HeaderType::Endpoint),
        config_dead: false,
        driver: None,
        driver_module: None,
        driver_override: None,
        iommu_group: None,
        sriov: SriovRole::None,
        numa_node: None,
        boot_vga: false,
        parent: None,
        consumers: vec![],
        suppliers: vec![],
        power_state: None,
        device_locked: false,
    }
}

/// A libvirt domain `name` for the VM rules' tests: running (id 1) or shut
/// off, with its live and inactive definitions as given.
pub fn domain(
    name: &str,
    active: bool,
    persistent: bool,
    autostart: bool,
    live: Option<DomainDefinition>,
    config: Option<DomainDefinition>,
) -> Domain {
    Domain {
        name: name.into(),
        uuid: "u".into(),
        id: active.then_some(1),
        active,
        state: if active {
            DomainState::Running
        } else {
            DomainState::ShutOff
        },
        persistent,
        autostart,
        live,
        config,
        qemu_pid: None,
    }
}
