//! Why `vfioctl nova` makes no configuration ([`NovaError`]), one variant
//! per refusal, each message naming the fix. Takes nothing from its
//! siblings.

use crate::model::address::PciAddress;

/// Why no configuration is made: what the release cannot express, what
/// Nova would read otherwise, or a choice only the operator can make.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NovaError {
    #[error("unknown OpenStack release '{0}' (use a name from train to hibiscus, or a series like 2023.1 or 2026.2)")]
    UnknownRelease(String),
    #[error("OpenStack {0} is older than Train: vfioctl writes Nova configuration for Train (2019) and later")]
    TooOld(String),
    #[error("alias name '{0}' is not usable: use 1 to 256 letters, digits, '.', '_' or '-' (Nova splits flavor properties at ':' and ',')")]
    BadAlias(String),
    #[error("--alias {name} names one alias, but the selected devices need {count}: {needed}; select devices of one ID and device_type, or leave out --alias to get derived names")]
    AliasAmbiguous {
        name: String,
        count: usize,
        needed: String,
    },
    #[error(
        "numa_policy 'socket' needs Wallaby or later; {0} knows legacy, preferred and required"
    )]
    SocketPolicyTooOld(String),
    #[error("--placement needs 2023.1 or later: {release} {why}; leave out --placement")]
    PlacementTooOld { release: String, why: &'static str },
    #[error("{what} '{name}' is not usable: use letters, digits and '_' (at most 255 with the CUSTOM_ prefix, which vfioctl adds)")]
    BadPlacementName { what: &'static str, name: String },
    #[error("--resource-class {name} names one resource class, but the selected devices need {count} aliases; select devices of one ID and device_type, or leave out --resource-class to get Nova's derived CUSTOM_PCI_<VENDOR>_<PRODUCT>")]
    ResourceClassAmbiguous { name: String, count: usize },
    #[error("--live-migratable needs 2025.1 or later: {0} has no live_migratable tag")]
    LiveMigratableTooOld(String),
    #[error("--live-migratable: {0} is a GPU or NVSwitch, whose state cannot move with a live migration; leave it out or leave out --live-migratable")]
    LiveMigratableGpu(PciAddress),
    #[error("--one-time-use needs 2025.2 or later: {0} has no one_time_use device spec tag (Nova 32 added it); leave out --one-time-use")]
    OneTimeUseTooOld(String),
    #[error("--one-time-use needs --placement: Nova refuses a one_time_use device spec unless [pci] report_in_placement = True, and it is Placement that holds a used device reserved; add --placement")]
    OneTimeUseNeedsPlacement,
    #[error("--one-time-use: {0} is a VF (type-VF), and Nova takes one_time_use only on type-PCI and type-PF devices (its Placement translator refuses a VF's spec that carries it); leave the VF out, or leave out --one-time-use")]
    OneTimeUseVf(PciAddress),
    #[error("--one-time-use names each device's Placement resource provider after the hypervisor hostname, but this host's name cannot be read from {0}; pass --hypervisor-hostname NAME (on the compute node: virsh hostname)")]
    HostnameUnknown(&'static str),
    #[error("{from} '{name}' is not usable as a hypervisor hostname: use 1 to {max} letters, digits, '.', '-' or '_', beginning with a letter or digit (Nova names each device's resource provider HOSTNAME_ADDRESS, which Placement holds to 200 characters); pass --hypervisor-hostname NAME (on the compute node: virsh hostname)")]
    BadHypervisorHostname {
        /// `--hypervisor-hostname`, or where this host's name was read.
        from: &'static str,
        name: String,
        max: usize,
    },
    #[error("{address} is {} and {}: choose how the NVLink fabric runs: --fabric shared (NVSwitches stay on the host for Fabric Manager, only GPUs are offered) or --fabric full (every GPU and NVSwitch to one VM); or set the host up so that it says: Fabric Manager enabled for shared, every NVSwitch declared for VFIO (vfioctl persist add) for full", if *.switch { "an NVSwitch" } else { "a GPU of an HGX board" }, .host.as_deref().map_or_else(|| "no fabric mode is given".to_string(), |why| format!("the host does not say how its NVLink fabric runs ({why})")))]
    FabricNeeded {
        address: PciAddress,
        /// The device is an NVSwitch (else a GPU of the board).
        switch: bool,
        /// Why the host's own state does not say, when it was read.
        host: Option<String>,
    },
}
