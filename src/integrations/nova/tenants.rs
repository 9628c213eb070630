//! Between tenants: one-time-use devices (`--one-time-use`, 2025.2 on) in
//! Placement. After a VM used such a device, Nova keeps its resource
//! provider's inventory reserved (`reserved = total`, trait
//! [`ONE_TIME_USE_TRAIT`]) and never un-reserves it; the operator resets
//! and verifies the device (`vfioctl reset ADDRESS`) and then un-reserves
//! it, and Nova schedules it again. This file names each device's resource
//! provider as Nova does ([`resource_provider_name`]) and writes the
//! openstack (osc-placement) commands that find the waiting devices and
//! return one to service.
//!
//! Takes [`DeviceSpec`] from `aliases.rs` and the checked hypervisor
//! hostname from `request.rs`.

use serde::Serialize;

use super::aliases::DeviceSpec;
use super::request::{HostnameSource, Hypervisor};
use crate::model::address::PciAddress;

/// The trait Nova gives the resource provider of a one-time-use device.
pub const ONE_TIME_USE_TRAIT: &str = "HW_PCI_ONE_TIME_USE";

/// The Placement microversion that filters resource providers by a
/// required trait (osc-placement refuses `--required` below it).
const REQUIRED_TRAIT_MICROVERSION: &str = "1.18";

/// The placeholder for a resource provider's UUID in the printed commands
/// (osc-placement takes providers by UUID only).
pub const RP_UUID: &str = "RP_UUID";

/// The name Nova's Placement translator gives a PCI device's resource
/// provider: the hypervisor hostname, '_', and the PCI address upper-cased;
/// a VF's is its parent PF's (its VFs share one provider), a type-PCI or
/// type-PF device's its own (`PlacementView._get_rp_name_for_address` in
/// nova/compute/pci_placement_translator.py).
pub fn resource_provider_name(
    hypervisor_hostname: &str,
    address: PciAddress,
    parent: Option<PciAddress>,
) -> String {
    let named = parent.unwrap_or(address);
    format!(
        "{hypervisor_hostname}_{}",
        named.to_string().to_ascii_uppercase()
    )
}

/// One one-time-use device's resource provider, and the commands for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provider {
    pub address: PciAddress,
    /// The provider's name in Placement.
    pub name: String,
    /// The resource class of its inventory.
    pub resource_class: String,
}

impl Provider {
    /// Finds the provider (its UUID) by its name.
    pub fn find_command(&self) -> String {
        format!("openstack resource provider list --name {}", self.name)
    }

    /// Returns the device to service: its inventory's `reserved` back to 0,
    /// the rest of it as Nova wrote it (`--amend`).
    pub fn unreserve_command(&self) -> String {
        format!(
            "openstack resource provider inventory set --amend --resource {}:reserved=0 {RP_UUID}",
            self.resource_class
        )
    }
}

/// Every one-time-use provider of the cloud (the trait is Nova's).
pub fn list_command() -> String {
    format!("openstack --os-placement-api-version {REQUIRED_TRAIT_MICROVERSION} resource provider list --required {ONE_TIME_USE_TRAIT}")
}

/// One provider's inventory (`reserved` equal to `total`: held).
pub fn inventory_command() -> String {
    format!("openstack resource provider inventory list {RP_UUID}")
}

/// One provider's usage (0: no VM has the device now).
pub fn usage_command() -> String {
    format!("openstack resource provider usage show {RP_UUID}")
}

/// The one-time-use devices offered, and how they come back between tenants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeUse {
    pub hypervisor_hostname: String,
    pub hostname_source: HostnameSource,
    /// In address order.
    pub providers: Vec<Provider>,
}

impl OneTimeUse {
    /// One provider per offered device, with the resource class of the spec
    /// that names it. Every device here is type-PCI or type-PF (VFs are
    /// refused before), so each has a provider of its own.
    pub(super) fn build(hypervisor: Hypervisor, specs: &[DeviceSpec]) -> OneTimeUse {
        let mut providers: Vec<Provider> = specs
            .iter()
            .flat_map(|spec| {
                let class = spec
                    .placement
                    .as_ref()
                    .map(|p| p.resource_class.clone())
                    .unwrap_or_default();
                spec.devices
                    .iter()
                    .map(move |address| (*address, class.clone()))
            })
            .map(|(address, resource_class)| Provider {
                address,
                name: resource_provider_name(&hypervisor.hostname, address, None),
                resource_class,
            })
            .collect();
        providers.sort_by_key(|p| p.address);
        OneTimeUse {
            hypervisor_hostname: hypervisor.hostname,
            hostname_source: hypervisor.source,
            providers,
        }
    }

    /// What the output says about the cycle and the hostname.
    pub(super) fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!(
            "one-time-use: after a VM used one of these devices, Nova keeps it reserved in Placement ({ONE_TIME_USE_TRAIT}, reserved = total) and schedules it no more until it is un-reserved: reset and verify it with vfioctl reset ADDRESS, then run its un-reserve command"
        )];
        let host = &self.hypervisor_hostname;
        if self.hostname_source == HostnameSource::Host {
            let canonical = if host.contains('.') || host.starts_with("localhost") {
                "libvirt reports it as it is"
            } else {
                "libvirt reports a name without a dot as the resolver's canonical name for it (often the FQDN)"
            };
            notes.push(format!(
                "the resource provider names use {host}, this host's name: Nova names them after the hypervisor hostname libvirt reports, and {canonical}; compare with virsh hostname on the compute node (or openstack hypervisor list) and pass --hypervisor-hostname if they differ, or when this is not the compute node"
            ));
        }
        notes
    }

    /// The commands part for one-time-use devices: comments, then the
    /// commands listing the waiting devices, then per device its provider
    /// and its return to service.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!("# Between tenants: after a VM used a one-time-use device, Nova keeps it reserved in Placement ({ONE_TIME_USE_TRAIT}, reserved = total) until it is un-reserved; {RP_UUID} is a provider's uuid, as the list commands print it"),
            "# The one-time-use providers; one waits for a reset while its inventory shows reserved = total and its usage 0:".to_string(),
            list_command(),
            inventory_command(),
            usage_command(),
        ];
        for p in &self.providers {
            lines.push(format!(
                "# {}: provider {} ({}); after vfioctl reset {} verified the device:",
                p.address, p.name, p.resource_class, p.address
            ));
            lines.push(p.find_command());
            lines.push(p.unreserve_command());
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_follow_nova() {
        let gpu: PciAddress = "0000:8c:00.0".parse().unwrap();
        let vf: PciAddress = "0000:3b:00.3".parse().unwrap();
        let pf: PciAddress = "0000:3b:00.0".parse().unwrap();
        assert_eq!(
            resource_provider_name("compute-7", gpu, None),
            "compute-7_0000:8C:00.0"
        );
        // A VF's provider is its parent PF's.
        assert_eq!(
            resource_provider_name("compute-7", vf, Some(pf)),
            "compute-7_0000:3B:00.0"
        );
        // The hostname is kept as it is (Nova does not change its case).
        assert_eq!(
            resource_provider_name("GPU-01.example.org", gpu, None),
            "GPU-01.example.org_0000:8C:00.0"
        );
    }

    #[test]
    fn commands_name_the_provider_and_its_class() {
        let p = Provider {
            address: "0000:25:00.0".parse().unwrap(),
            name: "compute-7_0000:25:00.0".to_string(),
            resource_class: "CUSTOM_PCI_10DE_20B0".to_string(),
        };
        assert_eq!(
            p.find_command(),
            "openstack resource provider list --name compute-7_0000:25:00.0"
        );
        assert_eq!(
            p.unreserve_command(),
            "openstack resource provider inventory set --amend --resource CUSTOM_PCI_10DE_20B0:reserved=0 RP_UUID"
        );
        assert_eq!(
            list_command(),
            "openstack --os-placement-api-version 1.18 resource provider list --required HW_PCI_ONE_TIME_USE"
        );
    }
}
