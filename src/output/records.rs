//! The JSON views of the model. Field names and meanings are a stable,
//! documented contract (man page, JSON OUTPUT): add fields, never rename.

use serde::Serialize;

use crate::model::domain::{DomainUse, HostDeviceKind, Named, NovaInstance, VmFacts};
use crate::model::group::{MemberState, OtherMember};
use crate::model::{
    ClassCode, Companion, DeviceId, DriverName, Inventory, IommuGroup, ModuleName, NovaDeviceType,
    PciAddress, PciDevice, SriovRole, VendorId, Viability,
};

/// One PCI function: an element of `list --json`, and `device` in `show --json`.
#[derive(Debug, Serialize)]
pub struct DeviceRecord<'a> {
    pub address: PciAddress,
    pub vendor_id: VendorId,
    pub device_id: DeviceId,
    pub subsystem_vendor_id: VendorId,
    pub subsystem_device_id: DeviceId,
    pub class: ClassCode,
    pub revision: String,
    pub vendor_name: Option<&'a str>,
    pub device_name: Option<&'a str>,
    pub subsystem_name: Option<&'a str>,
    pub class_name: Option<&'a str>,
    pub driver: Option<&'a DriverName>,
    pub driver_module: Option<&'a ModuleName>,
    pub driver_override: Option<&'a DriverName>,
    pub iommu_group: Option<u32>,
    pub is_bridge: bool,
    pub sriov: &'a SriovRole,
    pub nova_device_type: NovaDeviceType,
    pub numa_node: Option<u32>,
    pub boot_vga: bool,
    pub parent: Option<PciAddress>,
    pub companions: Vec<Companion>,
    pub power_state: Option<&'a str>,
    pub config_readable: bool,
}

impl<'a> DeviceRecord<'a> {
    pub fn new(inv: &'a Inventory, dev: &'a PciDevice) -> DeviceRecord<'a> {
        DeviceRecord {
            address: dev.address,
            vendor_id: dev.ids.vendor,
            device_id: dev.ids.device,
            subsystem_vendor_id: dev.ids.subsystem_vendor,
            subsystem_device_id: dev.ids.subsystem_device,
            class: dev.class,
            revision: format!("{:02x}", dev.revision),
            vendor_name: inv.names.vendor(dev.ids.vendor),
            device_name: inv.names.device(dev.ids.vendor, dev.ids.device),
            subsystem_name: inv.names.subsystem(&dev.ids),
            class_name: inv.names.class(dev.class),
            driver: dev.driver.as_ref(),
            driver_module: dev.driver_module.as_ref(),
            driver_override: dev.driver_override.as_ref(),
            iommu_group: dev.iommu_group,
            is_bridge: dev.is_bridge(),
            sriov: &dev.sriov,
            nova_device_type: dev.nova_device_type(),
            numa_node: dev.numa_node,
            boot_vga: dev.boot_vga,
            parent: dev.parent,
            companions: inv.companions(dev),
            power_state: dev.power_state.as_deref(),
            config_readable: dev.header_type.is_some() && !dev.config_dead,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct MemberRecord<'a> {
    pub address: PciAddress,
    pub vendor_id: VendorId,
    pub device_id: DeviceId,
    pub class: ClassCode,
    pub class_name: Option<&'a str>,
    pub driver: Option<&'a DriverName>,
    pub is_bridge: bool,
    pub state: MemberState,
}

/// An IOMMU group with its members and verdict (`iommu_group` in `show --json`).
#[derive(Debug, Serialize)]
pub struct GroupRecord<'a> {
    pub number: u32,
    pub domain_type: Option<&'a str>,
    pub members: Vec<MemberRecord<'a>>,
    pub other_members: &'a [OtherMember],
    #[serde(flatten)]
    pub viability: Viability,
}

impl<'a> GroupRecord<'a> {
    pub fn new(inv: &'a Inventory, group: &'a IommuGroup) -> GroupRecord<'a> {
        GroupRecord {
            number: group.number,
            domain_type: group.domain_type.as_deref(),
            members: inv
                .members(group)
                .map(|d| MemberRecord {
                    address: d.address,
                    vendor_id: d.ids.vendor,
                    device_id: d.ids.device,
                    class: d.class,
                    class_name: inv.names.class(d.class),
                    driver: d.driver.as_ref(),
                    is_bridge: d.is_bridge(),
                    state: MemberState::of(d.is_bridge(), d.driver.as_ref()),
                })
                .collect(),
            other_members: &group.other_members,
            viability: inv.viability(group),
        }
    }
}

/// `iommu` in `show --json`.
#[derive(Debug, Serialize)]
pub struct IommuRecord<'a> {
    pub enabled: bool,
    pub units: &'a [String],
    pub groups: usize,
}

impl<'a> IommuRecord<'a> {
    pub fn new(inv: &'a Inventory) -> IommuRecord<'a> {
        IommuRecord {
            enabled: inv.iommu.enabled(),
            units: &inv.iommu.units,
            groups: inv.iommu.groups,
        }
    }
}

/// One libvirt domain's use of a device: `vm` in `list --json`, and each of
/// `vms.domains` in `show --json`.
#[derive(Debug, Serialize)]
pub struct VmRecord<'a> {
    pub domain: &'a str,
    /// The domain uuid (Nova's instance uuid, for Nova's domains).
    pub uuid: &'a str,
    pub id: Option<u32>,
    /// `running`, `paused`, `shut off`...
    pub state: &'static str,
    pub active: bool,
    pub persistent: bool,
    pub autostart: bool,
    /// Which XML names the device: `live`, `config` or `both`.
    pub named_in: Named,
    pub kind: HostDeviceKind,
    pub managed: Option<bool>,
    /// The mdev's UUID, for an mdev on this function.
    pub mdev: Option<&'a str>,
    /// The domain's QEMU process (libvirt's pid file, checked against the
    /// process's command line).
    pub qemu_pid: Option<u32>,
    pub nova: Option<&'a NovaInstance>,
}

impl<'a> VmRecord<'a> {
    pub fn new(found: &DomainUse<'a>) -> VmRecord<'a> {
        let d = found.domain;
        VmRecord {
            domain: &d.name,
            uuid: &d.uuid,
            id: d.id,
            state: d.state_label(),
            active: d.active,
            persistent: d.persistent,
            autostart: d.autostart,
            named_in: found.named,
            kind: found.device.kind,
            managed: found.device.managed,
            mdev: found.device.mdev.as_deref(),
            qemu_pid: d.qemu_pid,
            nova: d.nova(),
        }
    }
}

/// The VM column: `NAME (state)`, `+N` more when several domains name the
/// device, `-` when none does, `?` when the VMs are unknown.
pub fn vm_cell(vms: &VmFacts, addr: &PciAddress) -> String {
    if vms.unknown().is_some() {
        return "?".to_string();
    }
    let users = vms.users_of(addr);
    match users.split_first() {
        None => "-".to_string(),
        Some((first, rest)) => {
            let mut cell = format!("{} ({})", first.domain.name, first.domain.state_label());
            if !rest.is_empty() {
                cell.push_str(&format!(" +{}", rest.len()));
            }
            cell
        }
    }
}
