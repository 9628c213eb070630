//! The text made from a [`NovaConfig`]: each alias and device spec as the
//! JSON value of its nova.conf line, the nova.conf sections for controllers
//! and compute nodes, the flavor property, and the commands (Placement's
//! aggregates, flavor and image properties).
//!
//! Takes [`NovaConfig`] and the aggregates command from `config.rs`, the
//! entries from `aliases.rs`, and the zone filter's name from `facts.rs`.

use super::aliases::{Alias, DeviceSpec, PlacementTags};
use super::config::{NovaConfig, SYNC_AGGREGATES};
use super::facts::AZ_FILTER_NAME;

/// A JSON object with string values, keys in the given order, on one line.
fn json_object(pairs: &[(&str, String)]) -> String {
    let fields: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}: {}",
                serde_json::Value::from(*k),
                serde_json::Value::from(v.as_str())
            )
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// The keys shared by aliases and device specs, after the matching ones.
fn push_tags(
    pairs: &mut Vec<(&'static str, String)>,
    placement: &Option<PlacementTags>,
    live_migratable: bool,
) {
    if let Some(tags) = placement {
        pairs.push(("resource_class", tags.resource_class.clone()));
        if let Some(traits) = &tags.traits {
            pairs.push(("traits", traits.clone()));
        }
    }
    if live_migratable {
        pairs.push(("live_migratable", "yes".to_string()));
    }
}

impl Alias {
    /// The value of one `alias =` line.
    pub fn json(&self) -> String {
        let mut pairs = vec![
            ("name", self.name.clone()),
            ("vendor_id", self.vendor_id.to_string()),
            ("product_id", self.product_id.to_string()),
            ("device_type", self.device_type.to_string()),
        ];
        if let Some(policy) = self.numa_policy {
            pairs.push(("numa_policy", policy.as_str().to_string()));
        }
        push_tags(&mut pairs, &self.placement, self.live_migratable);
        json_object(&pairs)
    }
}

impl DeviceSpec {
    /// The value of one `device_spec =` (or `passthrough_whitelist =`) line.
    pub fn json(&self) -> String {
        let mut pairs = vec![
            ("vendor_id", self.vendor_id.to_string()),
            ("product_id", self.product_id.to_string()),
        ];
        if let Some(addr) = self.address {
            pairs.push(("address", addr.to_string()));
        }
        if let Some(managed) = self.managed {
            pairs.push(("managed", managed.to_string()));
        }
        push_tags(&mut pairs, &self.placement, self.live_migratable);
        if self.one_time_use {
            pairs.push(("one_time_use", "true".to_string()));
        }
        json_object(&pairs)
    }
}

impl NovaConfig {
    /// nova.conf for nodes running nova-api, nova-scheduler and nova-conductor.
    pub fn controller_ini(&self) -> String {
        let mut out = String::from("[pci]\n");
        for alias in &self.aliases {
            out.push_str(&format!("alias = {}\n", alias.json()));
        }
        out.push_str("\n[filter_scheduler]\n");
        let without = if self.filters.dropped.is_empty() {
            String::new()
        } else {
            format!(" without {}", self.filters.dropped.join(","))
        };
        out.push_str(&format!(
            "# Nova {}'s default filters{without} plus {}; if you changed the list, add {} to yours\n",
            self.release.short(),
            self.filters.added.join(","),
            self.filters.added.join(",")
        ));
        if self.filters.names_az_filter() {
            out.push_str(&format!("# Before upgrading to 2023.2, which removed {AZ_FILTER_NAME}, drop it from this list: from Xena on Placement filters hosts by availability zone ({SYNC_AGGREGATES} first)\n"));
        }
        out.push_str(&format!(
            "enabled_filters = {}\n",
            self.filters.enabled.join(",")
        ));
        if self.placement {
            out.push_str("pci_in_placement = True\n");
        }
        if self.filters.az_prefilter {
            out.push_str("\n[scheduler]\n");
            out.push_str(&format!("# Placement filters hosts by availability zone, in place of {AZ_FILTER_NAME}; run {SYNC_AGGREGATES} first\n"));
            out.push_str("query_placement_for_availability_zone = True\n");
        }
        out
    }

    /// nova.conf for nodes running nova-compute (the alias is there too, for
    /// resize and migration).
    pub fn compute_ini(&self) -> String {
        let mut out = String::from("[pci]\n");
        if self.placement {
            out.push_str("# Cannot be switched off again once on\n");
            out.push_str("report_in_placement = True\n");
        }
        for spec in &self.specs {
            out.push_str(&format!(
                "{} = {}\n",
                self.release.spec_option(),
                spec.json()
            ));
        }
        for alias in &self.aliases {
            out.push_str(&format!("alias = {}\n", alias.json()));
        }
        out
    }

    /// The flavor property requesting every alias: `pci_passthrough:alias=a:1,b:2`.
    pub fn flavor_property(&self) -> String {
        let requests: Vec<String> = self
            .aliases
            .iter()
            .map(|a| format!("{}:{}", a.name, a.count))
            .collect();
        format!("pci_passthrough:alias={}", requests.join(","))
    }

    /// The commands: with `--az-prefilter` first the aggregates mirrored into
    /// Placement (nova-manage, on a controller); then the openstack ones: one
    /// flavor property listing every alias (a second `pci_passthrough:alias`
    /// would replace the first), and hiding the hypervisor from guest drivers
    /// (NVIDIA's refuse to run in a VM otherwise).
    pub fn commands(&self) -> Vec<String> {
        let sync = self
            .filters
            .az_prefilter
            .then(|| SYNC_AGGREGATES.to_string());
        sync.into_iter()
            .chain([
                format!(
                    "openstack flavor set FLAVOR --property {}",
                    self.flavor_property()
                ),
                "openstack image set IMAGE --property img_hide_hypervisor_id=true".to_string(),
            ])
            .collect()
    }

    /// The commands part: [`NovaConfig::commands`], then for one-time-use
    /// devices the lines that find and un-reserve them between tenants.
    pub fn commands_part(&self) -> Vec<String> {
        let between = self.one_time_use.iter().flat_map(|otu| otu.lines());
        self.commands().into_iter().chain(between).collect()
    }
}
