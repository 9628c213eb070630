//! Nova configuration for PCI passthrough: the `[pci]` aliases and device
//! specs, the scheduler settings, and the one flavor property, for one
//! OpenStack release. Pure: the command gathers the devices (with the
//! device_type Nova will see) and this module decides the text.
//!
//! What each release knows is data ([`Fact`], [`DEFAULT_FILTERS`]), each with
//! the place in Nova's source it was read from at the release tag; the Nova
//! oracle (tests/nova) holds the newest facts against Nova 34 itself.
//!
//! Rules Nova does not enforce but VFIO does:
//! - an IOMMU group opens in one VM only, so devices sharing a group are
//!   offered only whole, in one flavor request ([`NovaConfig::build`]);
//! - on HGX boards NVSwitches follow the fabric choice ([`crate::model::fabric`]).
//!
//! The files, each read on its own, lowest first: each imports only
//! `crate::model` and the files above it, and this one only re-exports.
//! - `error.rs`: why no configuration is made;
//! - `facts.rs`: what each release knows, as data with its provenance;
//! - `release.rs`: a release by name or series, and its scheduler filters;
//! - `request.rs`: what is asked for, and the checks against the release;
//! - `select.rs`: which devices are offered, and why others are left out;
//! - `aliases.rs`: alias names, aliases with their counts, device specs;
//! - `tenants.rs`: one-time-use devices' Placement resource providers, and
//!   the commands that return them to service between tenants;
//! - `config.rs`: the result, the steps that build it, and its notes;
//! - `render.rs`: the JSON values, nova.conf sections and commands.

mod aliases;
mod config;
mod error;
mod facts;
mod release;
mod render;
mod request;
mod select;
mod tenants;
#[cfg(test)]
mod tests;

pub use aliases::{derive_alias_name, derived_resource_class, Alias, DeviceSpec, PlacementTags};
pub use config::{NovaConfig, SYNC_AGGREGATES};
pub use error::NovaError;
pub use facts::{
    Fact, AZ_FILTER, AZ_PREFILTER_DEFAULT, AZ_PREFILTER_OPTION, DEFAULT_FILTERS,
    DEVICE_SPEC_OPTION, FACTS, LIVE_MIGRATABLE, MANAGED_TAG, ONE_TIME_USE, PCI_FILTER,
    PCI_IN_PLACEMENT, REPORT_IN_PLACEMENT, SOCKET_POLICY,
};
pub use release::{FactRecord, Release, SchedulerFilters};
pub use request::{
    check_alias_name, check_hypervisor_hostname, custom_name, Binding, HostnameSource, NovaDevice,
    NumaPolicy, OneTimeUseRequest, PlacementRequest, Request, TypeSource, HOSTNAME_FILE,
    MAX_HYPERVISOR_HOSTNAME,
};
pub use select::{decide_fabric, FabricDecision, FabricSource, LeftOut};
pub use tenants::{
    inventory_command, list_command, resource_provider_name, usage_command, OneTimeUse, Provider,
    ONE_TIME_USE_TRAIT, RP_UUID,
};
