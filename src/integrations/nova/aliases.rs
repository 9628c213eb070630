//! The entries of the configuration: alias names (derived from pci.ids
//! names, or given), one [`Alias`] per IDs and device_type with the count
//! one flavor requests, and the [`DeviceSpec`]s naming the devices on the
//! compute node (by IDs where the selection holds every such function, by
//! address otherwise, by PF address for `--vf-parent`).
//!
//! Takes the request types from `request.rs`, [`whole_pfs`] and the
//! address list from `select.rs`, the `managed` fact from `facts.rs`, and
//! [`NovaError`] from `error.rs`. How the entries are written out is
//! `render.rs`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::error::NovaError;
use super::facts::MANAGED_TAG;
use super::request::{Binding, NovaDevice, NumaPolicy, PlacementNames, Request};
use super::select::{list, whole_pfs};
use crate::model::address::PciAddress;
use crate::model::device::NovaDeviceType;
use crate::model::fabric::Fabric;
use crate::model::ids::{DeviceId, VendorId};
use crate::model::inventory::Inventory;

/// Placement settings of an alias or device spec (`--placement`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlacementTags {
    /// Given, or `CUSTOM_PCI_<VENDOR>_<PRODUCT>` as Nova derives it.
    pub resource_class: String,
    /// Comma-separated custom traits, when asked for.
    pub traits: Option<String>,
}

/// One `[pci] alias` entry and how many of its devices the flavor requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alias {
    pub name: String,
    pub vendor_id: VendorId,
    pub product_id: DeviceId,
    pub device_type: NovaDeviceType,
    pub numa_policy: Option<NumaPolicy>,
    pub placement: Option<PlacementTags>,
    pub live_migratable: bool,
    pub devices: Vec<PciAddress>,
    /// Devices of this alias one flavor requests.
    pub count: usize,
}

/// One device spec (`device_spec` or `passthrough_whitelist` value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceSpec {
    pub vendor_id: VendorId,
    pub product_id: DeviceId,
    /// Set when the spec names one function rather than every function with
    /// the IDs; with `--vf-parent`, a PF's address naming its VFs.
    pub address: Option<PciAddress>,
    /// `Some("no")` when vfioctl keeps the devices on vfio-pci (2025.1 on).
    pub managed: Option<&'static str>,
    pub placement: Option<PlacementTags>,
    pub live_migratable: bool,
    /// `"one_time_use": "true"` (`--one-time-use`, 2025.2 on).
    pub one_time_use: bool,
    pub devices: Vec<PciAddress>,
}

/// Lowercase words of `text` joined with '-'.
fn slug(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}

/// The part in square brackets, which pci.ids uses for the marketing name
/// (`GA100 [A100 SXM4 40GB]`), else the whole name.
fn marketing(name: &str) -> &str {
    match (name.find('['), name.rfind(']')) {
        (Some(open), Some(close)) if open < close => &name[open + 1..close],
        _ => name,
    }
}

/// A stable default alias name for an ID from its pci.ids names: vendor's
/// first word, then the device's marketing name, at most 40 characters cut
/// at a word (`nvidia-a100-sxm4-40gb`, `mellanox-connectx-5`); `pci-VVVV-DDDD`
/// without names. It depends on the ID alone, so flavors keep working when
/// the selection changes.
pub fn derive_alias_name(
    vendor: VendorId,
    product: DeviceId,
    vendor_name: Option<&str>,
    device_name: Option<&str>,
) -> String {
    let (Some(vendor_name), Some(device_name)) = (vendor_name, device_name) else {
        return format!("pci-{vendor}-{product}");
    };
    let vendor_word = slug(marketing(vendor_name))
        .split('-')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut name = if vendor_word.is_empty() {
        vendor.to_string()
    } else {
        vendor_word
    };
    for word in slug(marketing(device_name))
        .split('-')
        .filter(|w| !w.is_empty())
    {
        if name.len() + 1 + word.len() > 40 {
            break;
        }
        name.push('-');
        name.push_str(word);
    }
    if !name.contains('-') {
        name = format!("{name}-{product}");
    }
    name
}

/// One alias per (IDs, device_type), in address order of first appearance.
pub(super) fn make_aliases(
    devices: &[NovaDevice],
    request: &Request,
    placement: Option<&PlacementNames>,
    notes: &mut Vec<String>,
) -> Result<(Vec<Alias>, BTreeMap<PciAddress, String>), NovaError> {
    let mut groups: BTreeMap<(VendorId, DeviceId, NovaDeviceType), Vec<&NovaDevice>> =
        BTreeMap::new();
    for dev in devices {
        groups
            .entry((dev.vendor, dev.product, dev.device_type))
            .or_default()
            .push(dev);
    }
    if let Some(name) = &request.alias {
        if groups.len() > 1 {
            let needed: Vec<String> = groups
                .keys()
                .map(|(v, p, t)| format!("{v}:{p} {t}"))
                .collect();
            return Err(NovaError::AliasAmbiguous {
                name: name.clone(),
                count: groups.len(),
                needed: needed.join(", "),
            });
        }
    }
    if let Some(rc) = placement.and_then(|p| p.resource_class.as_ref()) {
        if groups.len() > 1 {
            return Err(NovaError::ResourceClassAmbiguous {
                name: rc.clone(),
                count: groups.len(),
            });
        }
    }
    let types_per_id: BTreeMap<(VendorId, DeviceId), BTreeSet<NovaDeviceType>> =
        groups.keys().fold(BTreeMap::new(), |mut acc, (v, p, t)| {
            acc.entry((*v, *p)).or_default().insert(*t);
            acc
        });
    // Derived names shared by different IDs get the product ID appended.
    let mut ids_per_name: BTreeMap<&str, BTreeSet<(VendorId, DeviceId)>> = BTreeMap::new();
    for dev in devices {
        ids_per_name
            .entry(dev.derived_name.as_str())
            .or_default()
            .insert((dev.vendor, dev.product));
    }
    let mut aliases = Vec::new();
    let mut alias_of = BTreeMap::new();
    for ((vendor, product, device_type), members) in &groups {
        let name = match &request.alias {
            Some(name) => name.clone(),
            None => {
                let base = members[0].derived_name.as_str();
                let mut name = base.to_string();
                if ids_per_name[base].len() > 1 {
                    name = format!("{name}-{product}");
                }
                if types_per_id[&(*vendor, *product)].len() > 1 {
                    name = format!("{name}-{}", type_suffix(*device_type));
                }
                name
            }
        };
        let addrs: Vec<PciAddress> = members.iter().map(|d| d.address).collect();
        for addr in &addrs {
            alias_of.insert(*addr, name.clone());
        }
        aliases.push(Alias {
            name,
            vendor_id: *vendor,
            product_id: *product,
            device_type: *device_type,
            numa_policy: request.numa_policy,
            placement: placement.map(|p| placement_tags(p, *vendor, *product)),
            live_migratable: request.live_migratable,
            devices: addrs,
            count: 1,
        });
    }
    aliases.sort_by_key(|a| a.devices[0]);
    for ((vendor, product), types) in &types_per_id {
        if types.len() > 1 {
            let parts: Vec<String> = aliases
                .iter()
                .filter(|a| (a.vendor_id, a.product_id) == (*vendor, *product))
                .map(|a| format!("{} {} ({})", a.name, a.device_type, list(&a.devices)))
                .collect();
            notes.push(format!(
                "{vendor}:{product} comes as more than one device_type: an alias matches one device_type, and aliases sharing a name must agree, so each type has its own alias: {}; ask for the one you mean in the flavor",
                parts.join("; ")
            ));
        }
    }
    Ok((aliases, alias_of))
}

fn type_suffix(t: NovaDeviceType) -> &'static str {
    match t {
        NovaDeviceType::Pf => "pf",
        NovaDeviceType::Vf => "vf",
        NovaDeviceType::Pci => "pci",
    }
}

fn placement_tags(names: &PlacementNames, vendor: VendorId, product: DeviceId) -> PlacementTags {
    PlacementTags {
        resource_class: names
            .resource_class
            .clone()
            .unwrap_or_else(|| derived_resource_class(vendor, product)),
        traits: names.traits.clone(),
    }
}

/// The resource class Nova gives devices whose spec names none.
pub fn derived_resource_class(vendor: VendorId, product: DeviceId) -> String {
    format!("CUSTOM_PCI_{vendor}_{product}").to_ascii_uppercase()
}

/// How many devices of each alias the flavor requests. Nova knows nothing of
/// IOMMU groups and picks any device of an alias, so aliases touching a group
/// of several offered devices (and, by the same devices, each other) are
/// requested whole: one VM gets every device they match. With the full
/// fabric every alias is requested whole.
pub(super) fn set_counts(
    aliases: &mut [Alias],
    devices: &[NovaDevice],
    alias_of: &BTreeMap<PciAddress, String>,
    fabric: Option<Fabric>,
    notes: &mut Vec<String>,
) {
    let index: BTreeMap<&str, usize> = aliases
        .iter()
        .enumerate()
        .map(|(i, a)| (a.name.as_str(), i))
        .collect();
    let mut by_group: BTreeMap<u32, Vec<PciAddress>> = BTreeMap::new();
    for dev in devices {
        if let Some(group) = dev.iommu_group {
            by_group.entry(group).or_default().push(dev.address);
        }
    }
    // Components of aliases joined by shared groups (a small union-find).
    let mut parent: Vec<usize> = (0..aliases.len()).collect();
    fn root(parent: &[usize], mut i: usize) -> usize {
        while parent[i] != i {
            i = parent[i];
        }
        i
    }
    let mut whole = vec![fabric == Some(Fabric::Full); aliases.len()];
    let shared: Vec<(u32, &Vec<PciAddress>)> = by_group
        .iter()
        .filter(|(_, addrs)| addrs.len() > 1)
        .map(|(g, a)| (*g, a))
        .collect();
    for (_, addrs) in &shared {
        let first = root(&parent, index[alias_of[&addrs[0]].as_str()]);
        whole[first] = true;
        for addr in addrs.iter().skip(1) {
            let other = root(&parent, index[alias_of[addr].as_str()]);
            if other != first {
                parent[other] = first;
                whole[first] |= whole[other];
            }
        }
    }
    for i in 0..aliases.len() {
        if whole[root(&parent, i)] || whole[i] {
            aliases[i].count = aliases[i].devices.len();
        }
    }
    for (group, addrs) in shared {
        let names: BTreeSet<&str> = addrs.iter().map(|a| alias_of[a].as_str()).collect();
        let requested: Vec<String> = aliases
            .iter()
            .filter(|a| names.contains(a.name.as_str()))
            .map(|a| format!("{}:{}", a.name, a.count))
            .collect();
        notes.push(format!(
            "{} share IOMMU group {group}, which VFIO opens in one VM only; Nova does not know IOMMU groups, so the flavor requests every device of the aliases in it ({}) and one VM gets them all",
            list(addrs),
            requested.join(",")
        ));
    }
    if fabric == Some(Fabric::Full) && !aliases.is_empty() {
        notes.push("full fabric: the flavor requests every GPU and NVSwitch, so one VM gets the whole NVLink fabric and runs Fabric Manager itself".to_string());
    }
}

/// Device specs: by IDs when the selection holds every function with those
/// IDs and all of them agree on `managed`; otherwise per address.
pub(super) fn make_specs(
    inv: &Inventory,
    devices: &[NovaDevice],
    request: &Request,
    placement: Option<&PlacementNames>,
) -> Vec<DeviceSpec> {
    let managed_no =
        |d: &NovaDevice| request.release.knows(MANAGED_TAG) && d.binding == Binding::Declared;
    let mut by_ids: BTreeMap<(VendorId, DeviceId), Vec<&NovaDevice>> = BTreeMap::new();
    for dev in devices {
        by_ids
            .entry((dev.vendor, dev.product))
            .or_default()
            .push(dev);
    }
    let mut specs = Vec::new();
    for ((vendor, product), members) in &by_ids {
        let on_host = inv
            .devices
            .iter()
            .filter(|d| (d.ids.vendor, d.ids.device) == (*vendor, *product))
            .count();
        let uniform = members
            .iter()
            .all(|d| managed_no(d) == managed_no(members[0]));
        let spec =
            |address: Option<PciAddress>, managed: bool, devices: Vec<PciAddress>| DeviceSpec {
                vendor_id: *vendor,
                product_id: *product,
                address,
                managed: managed.then_some("no"),
                placement: placement.map(|p| placement_tags(p, *vendor, *product)),
                live_migratable: request.live_migratable,
                one_time_use: request.one_time_use.is_some(),
                devices,
            };
        if members.len() >= on_host && uniform {
            specs.push(spec(
                None,
                managed_no(members[0]),
                members.iter().map(|d| d.address).collect(),
            ));
        } else {
            let mut by_address: Vec<&NovaDevice> = members.clone();
            if request.vf_parent {
                for (pf, vfs) in whole_pfs(inv, members) {
                    if vfs.iter().all(|d| managed_no(d) == managed_no(vfs[0])) {
                        by_address.retain(|d| !vfs.iter().any(|v| v.address == d.address));
                        specs.push(spec(
                            Some(pf),
                            managed_no(vfs[0]),
                            vfs.iter().map(|d| d.address).collect(),
                        ));
                    }
                }
            }
            for dev in by_address {
                specs.push(spec(Some(dev.address), managed_no(dev), vec![dev.address]));
            }
        }
    }
    specs.sort_by_key(|s| s.devices[0]);
    specs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::nova::check_alias_name;

    #[test]
    fn derived_names_are_stable_per_id() {
        let a100 = derive_alias_name(
            VendorId(0x10de),
            DeviceId(0x20b0),
            Some("NVIDIA Corporation"),
            Some("GA100 [A100 SXM4 40GB]"),
        );
        assert_eq!(a100, "nvidia-a100-sxm4-40gb");
        assert_eq!(
            derive_alias_name(
                VendorId(0x15b3),
                DeviceId(0x1018),
                Some("Mellanox Technologies"),
                Some("MT27800 Family [ConnectX-5 Virtual Function]")
            ),
            "mellanox-connectx-5-virtual-function"
        );
        assert_eq!(
            derive_alias_name(
                VendorId(0x1002),
                DeviceId(0x740f),
                Some("Advanced Micro Devices, Inc. [AMD/ATI]"),
                Some("Aldebaran/MI200 [Instinct MI210]")
            ),
            "amd-instinct-mi210"
        );
        let long = derive_alias_name(
            VendorId(0x144d),
            DeviceId(0xa80a),
            Some("Samsung Electronics Co Ltd"),
            Some("NVMe SSD Controller PM9A1/PM9A3/980PRO"),
        );
        assert_eq!(long, "samsung-nvme-ssd-controller-pm9a1-pm9a3");
        assert!(long.len() <= 40);
        assert_eq!(
            derive_alias_name(VendorId(0x1234), DeviceId(0x0001), None, None),
            "pci-1234-0001"
        );
        for name in [a100, long] {
            check_alias_name(&name).unwrap();
        }
    }
}
