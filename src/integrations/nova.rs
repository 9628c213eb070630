//! Nova configuration for PCI passthrough: the `[pci]` aliases and device
//! specs, the scheduler filter and the openstack commands, for one OpenStack
//! release. Pure: the command gathers the devices (with the device_type Nova
//! will see) and this module decides the text.
//!
//! Per release (facts from Nova's option definitions):
//! - Train..Yoga: `[pci] passthrough_whitelist`; Zed renamed it `device_spec`.
//! - 2025.1 (Epoxy) added the `managed` tag: `"managed": "no"` tells Nova that
//!   the operator keeps the device on vfio-pci, so libvirt must not detach it.
//! - `numa_policy` `socket` exists from Wallaby on.
//! - Aliases with the same name must agree on device_type and numa_policy,
//!   so devices of one ID but two types get two aliases.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::model::address::PciAddress;
use crate::model::device::NovaDeviceType;
use crate::model::driver::DriverName;
use crate::model::ids::{DeviceId, VendorId};
use crate::model::inventory::Inventory;

/// An OpenStack release, by the major version of Nova it ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Release {
    nova: u16,
}

/// (Nova major version, name) from Train on; series numbers start with Antelope.
const RELEASES: &[(u16, &str)] = &[
    (20, "Train"),
    (21, "Ussuri"),
    (22, "Victoria"),
    (23, "Wallaby"),
    (24, "Xena"),
    (25, "Yoga"),
    (26, "Zed"),
    (27, "Antelope"),
    (28, "Bobcat"),
    (29, "Caracal"),
    (30, "Dalmatian"),
    (31, "Epoxy"),
    (32, "Flamingo"),
    (33, "Gazpacho"),
    (34, "Hibiscus"),
];

/// Releases before Train, refused by name.
const TOO_OLD: &[&str] = &[
    "austin", "bexar", "cactus", "diablo", "essex", "folsom", "grizzly", "havana", "icehouse",
    "juno", "kilo", "liberty", "mitaka", "newton", "ocata", "pike", "queens", "rocky", "stein",
];

/// The first release with a `YEAR.N` series number (2023.1, Nova 27).
const FIRST_SERIES: u16 = 27;

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
}

impl Release {
    /// The newest release vfioctl knows by name; the default.
    pub const LATEST: Release = Release { nova: 34 };
    pub const TRAIN: Release = Release { nova: 20 };
    pub const WALLABY: Release = Release { nova: 23 };
    pub const ZED: Release = Release { nova: 26 };
    pub const ANTELOPE: Release = Release { nova: 27 };
    pub const BOBCAT: Release = Release { nova: 28 };
    pub const EPOXY: Release = Release { nova: 31 };

    /// Parses `train`, `Zed`, `2023.1`, `antelope`, `2025.2`... Series
    /// numbers after the newest known name are accepted as later releases.
    pub fn parse(text: &str) -> Result<Release, NovaError> {
        let lower = text.trim().to_ascii_lowercase();
        if let Some(&(nova, _)) = RELEASES
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(&lower))
        {
            return Ok(Release { nova });
        }
        if TOO_OLD.contains(&lower.as_str()) {
            return Err(NovaError::TooOld(text.trim().to_string()));
        }
        let unknown = || NovaError::UnknownRelease(text.trim().to_string());
        let (year, n) = lower.split_once('.').ok_or_else(unknown)?;
        let (year, n): (u16, u16) = (
            year.parse().map_err(|_| unknown())?,
            n.parse().map_err(|_| unknown())?,
        );
        if !(2023..=2099).contains(&year) || !(1..=2).contains(&n) {
            return Err(unknown());
        }
        Ok(Release {
            nova: FIRST_SERIES + (year - 2023) * 2 + (n - 1),
        })
    }

    pub fn nova_version(self) -> u16 {
        self.nova
    }

    /// `Train`, `Antelope`...; `None` for a release newer than vfioctl knows.
    pub fn name(self) -> Option<&'static str> {
        RELEASES
            .iter()
            .find(|(nova, _)| *nova == self.nova)
            .map(|(_, name)| *name)
    }

    /// `2023.1` and later; `None` before Antelope.
    pub fn series(self) -> Option<String> {
        let since = self.nova.checked_sub(FIRST_SERIES)?;
        Some(format!("{}.{}", 2023 + since / 2, since % 2 + 1))
    }

    /// The compute node's option naming passthrough devices.
    pub fn spec_option(self) -> &'static str {
        if self >= Release::ZED {
            "device_spec"
        } else {
            "passthrough_whitelist"
        }
    }

    /// Whether device specs take the `managed` tag (2025.1 on).
    pub fn has_managed_tag(self) -> bool {
        self >= Release::EPOXY
    }

    /// Nova's default `[filter_scheduler] enabled_filters` in this release.
    /// (RetryFilter left the defaults in Train; AvailabilityZoneFilter,
    /// replaced by placement's availability zone pre-filter, in Bobcat.)
    pub fn default_filters(self) -> &'static [&'static str] {
        const TRAIN: &[&str] = &[
            "AvailabilityZoneFilter",
            "ComputeFilter",
            "ComputeCapabilitiesFilter",
            "ImagePropertiesFilter",
            "ServerGroupAntiAffinityFilter",
            "ServerGroupAffinityFilter",
        ];
        if self >= Release::BOBCAT {
            &TRAIN[1..]
        } else {
            TRAIN
        }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.series(), self.name()) {
            (Some(series), Some(name)) => write!(f, "{series} {name}")?,
            (Some(series), None) => f.write_str(&series)?,
            (None, Some(name)) => f.write_str(name)?,
            (None, None) => {}
        }
        write!(f, " (Nova {})", self.nova)
    }
}

/// `numa_policy` of an alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NumaPolicy {
    Legacy,
    Preferred,
    Required,
    Socket,
}

impl NumaPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            NumaPolicy::Legacy => "legacy",
            NumaPolicy::Preferred => "preferred",
            NumaPolicy::Required => "required",
            NumaPolicy::Socket => "socket",
        }
    }
}

/// Where a device's device_type came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TypeSource {
    /// libvirt's node device XML, which is what Nova reads.
    Libvirt,
    /// Derived from sysfs by libvirt's rules (libvirt not reachable or not asked).
    Sysfs,
}

/// How a device comes to be on a VFIO driver when Nova hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "driver", rename_all = "snake_case")]
pub enum Binding {
    /// Declared in /etc/vfioctl with a VFIO driver: vfioctl keeps it bound.
    Declared,
    /// On a VFIO driver now, but nothing keeps it there across reboots.
    VfioNow,
    /// On a host driver, or none: libvirt would have to detach it.
    Host(Option<DriverName>),
}

/// One device to offer to Nova.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NovaDevice {
    pub address: PciAddress,
    pub vendor: VendorId,
    pub product: DeviceId,
    pub device_type: NovaDeviceType,
    pub type_source: TypeSource,
    pub binding: Binding,
    pub iommu_group: Option<u32>,
    /// The alias name used when the operator gives none (see [`derive_alias_name`]).
    pub derived_name: String,
}

/// One `[pci] alias` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alias {
    pub name: String,
    pub vendor_id: VendorId,
    pub product_id: DeviceId,
    pub device_type: NovaDeviceType,
    pub numa_policy: Option<NumaPolicy>,
    pub devices: Vec<PciAddress>,
}

/// One device spec (`device_spec` or `passthrough_whitelist` value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceSpec {
    pub vendor_id: VendorId,
    pub product_id: DeviceId,
    /// Set when the spec names one function rather than every function with the IDs.
    pub address: Option<PciAddress>,
    /// `Some("no")` when vfioctl keeps the devices on vfio-pci (2025.1 on).
    pub managed: Option<&'static str>,
    pub devices: Vec<PciAddress>,
}

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
        json_object(&pairs)
    }
}

/// A usable alias name: Nova splits `pci_passthrough:alias` at ':' and ','.
pub fn check_alias_name(name: &str) -> Result<(), NovaError> {
    let ok = (1..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NovaError::BadAlias(name.to_string()))
    }
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

/// What the generator was asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub release: Release,
    /// `--alias`: one name for the single alias the devices need.
    pub alias: Option<String>,
    pub numa_policy: Option<NumaPolicy>,
    pub devices: Vec<NovaDevice>,
}

/// Everything to print: configuration, commands and the notes explaining them.
#[derive(Debug, Clone)]
pub struct NovaConfig {
    pub release: Release,
    pub aliases: Vec<Alias>,
    pub specs: Vec<DeviceSpec>,
    pub filters: Vec<&'static str>,
    pub devices: Vec<NovaDevice>,
    /// Alias name of each device, by address.
    pub alias_of: BTreeMap<PciAddress, String>,
    pub notes: Vec<String>,
}

fn list(addrs: &[PciAddress]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn type_suffix(t: NovaDeviceType) -> &'static str {
    match t {
        NovaDeviceType::Pf => "pf",
        NovaDeviceType::Vf => "vf",
        NovaDeviceType::Pci => "pci",
    }
}

/// Nova ignores devices whose PCI domain does not fit 16 bits and refuses
/// such addresses in its configuration.
const MAX_NOVA_DOMAIN: u32 = 0xffff;

impl NovaConfig {
    /// Decides aliases, device specs and notes. `inv` tells which other
    /// functions share a selected device's IDs (a spec by IDs would offer them too).
    pub fn build(inv: &Inventory, request: Request) -> Result<NovaConfig, NovaError> {
        let release = request.release;
        if let Some(name) = &request.alias {
            check_alias_name(name)?;
        }
        if request.numa_policy == Some(NumaPolicy::Socket) && release < Release::WALLABY {
            return Err(NovaError::SocketPolicyTooOld(release.to_string()));
        }
        let mut notes = Vec::new();
        let (devices, too_wide): (Vec<NovaDevice>, Vec<NovaDevice>) = request
            .devices
            .into_iter()
            .partition(|d| d.address.domain <= MAX_NOVA_DOMAIN);
        if !too_wide.is_empty() {
            let addrs: Vec<PciAddress> = too_wide.iter().map(|d| d.address).collect();
            notes.push(format!(
                "left out {}: Nova only handles PCI domains up to ffff (devices behind Intel VMD have wider ones)",
                list(&addrs)
            ));
        }

        // Aliases: one per (IDs, device_type), in address order of first appearance.
        let mut groups: BTreeMap<(VendorId, DeviceId, NovaDeviceType), Vec<&NovaDevice>> =
            BTreeMap::new();
        for dev in &devices {
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
        let types_per_id: BTreeMap<(VendorId, DeviceId), BTreeSet<NovaDeviceType>> =
            groups.keys().fold(BTreeMap::new(), |mut acc, (v, p, t)| {
                acc.entry((*v, *p)).or_default().insert(*t);
                acc
            });
        // Derived names shared by different IDs get the product ID appended.
        let mut ids_per_name: BTreeMap<&str, BTreeSet<(VendorId, DeviceId)>> = BTreeMap::new();
        for dev in &devices {
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
                devices: addrs,
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

        // Device specs: by IDs when the selection holds every function with
        // those IDs and all of them agree on `managed`; otherwise per address.
        let managed_no =
            |d: &NovaDevice| release.has_managed_tag() && d.binding == Binding::Declared;
        let mut by_ids: BTreeMap<(VendorId, DeviceId), Vec<&NovaDevice>> = BTreeMap::new();
        for dev in &devices {
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
            if members.len() >= on_host && uniform {
                specs.push(DeviceSpec {
                    vendor_id: *vendor,
                    product_id: *product,
                    address: None,
                    managed: managed_no(members[0]).then_some("no"),
                    devices: members.iter().map(|d| d.address).collect(),
                });
            } else {
                for dev in members {
                    specs.push(DeviceSpec {
                        vendor_id: *vendor,
                        product_id: *product,
                        address: Some(dev.address),
                        managed: managed_no(dev).then_some("no"),
                        devices: vec![dev.address],
                    });
                }
            }
        }
        specs.sort_by_key(|s| s.devices[0]);

        // Bindings: what libvirt will do with each device.
        let on_vfio_only: Vec<PciAddress> = devices
            .iter()
            .filter(|d| d.binding == Binding::VfioNow)
            .map(|d| d.address)
            .collect();
        if !on_vfio_only.is_empty() {
            let why = if release.has_managed_tag() {
                "their specs leave \"managed\" at its default (yes), so libvirt may hand them back to the host driver when a VM stops"
            } else {
                "libvirt leaves them alone while they stay there, but nothing rebinds them after a reboot"
            };
            notes.push(format!(
                "{} on a VFIO driver but not declared: {why}; declare them: vfioctl persist add {}",
                list(&on_vfio_only),
                on_vfio_only
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        let on_host: Vec<(PciAddress, String)> = devices
            .iter()
            .filter_map(|d| match &d.binding {
                Binding::Host(driver) => Some((
                    d.address,
                    driver
                        .as_ref()
                        .map_or_else(|| "no driver".to_string(), ToString::to_string),
                )),
                _ => None,
            })
            .collect();
        if !on_host.is_empty() {
            let shown: Vec<String> = on_host.iter().map(|(a, d)| format!("{a} ({d})")).collect();
            let addrs: Vec<String> = on_host.iter().map(|(a, _)| a.to_string()).collect();
            notes.push(format!(
                "{} not on a VFIO driver: libvirt would have to detach them when a VM starts, which hangs while the host uses them (a GPU held by nvidia-persistenced); bind them first: vfioctl bind {} --persist",
                shown.join(", "),
                addrs.join(" ")
            ));
        }
        if release.has_managed_tag() && specs.iter().any(|s| s.managed.is_some()) {
            notes.push("\"managed\": \"no\" marks devices vfioctl keeps on vfio-pci: libvirt uses them as they are and never rebinds them".to_string());
        }

        // IOMMU groups: Nova does not know them.
        let mut by_group: BTreeMap<u32, Vec<PciAddress>> = BTreeMap::new();
        for dev in &devices {
            if let Some(group) = dev.iommu_group {
                by_group.entry(group).or_default().push(dev.address);
            }
        }
        for (group, addrs) in &by_group {
            if addrs.len() > 1 {
                let names: BTreeSet<&str> = addrs.iter().map(|a| alias_of[a].as_str()).collect();
                let request: Vec<String> = names.iter().map(|n| format!("{n}:1")).collect();
                notes.push(format!(
                    "{} share IOMMU group {group}: Nova does not know IOMMU groups and may give them to different VMs, which VFIO refuses; request them together (pci_passthrough:alias={})",
                    list(addrs),
                    request.join(",")
                ));
            }
        }
        for (group, addrs) in &by_group {
            let Some(members) = inv.groups.get(group) else {
                continue;
            };
            let left: Vec<PciAddress> = inv
                .members(members)
                .filter(|d| !d.is_bridge() && !addrs.contains(&d.address))
                .map(|d| d.address)
                .collect();
            if !left.is_empty() {
                notes.push(format!(
                    "IOMMU group {group} also holds {}, which is not offered to Nova: it must stay off host drivers while a VM uses {}",
                    list(&left),
                    list(addrs)
                ));
            }
        }

        Ok(NovaConfig {
            release,
            aliases,
            specs,
            filters: release
                .default_filters()
                .iter()
                .copied()
                .chain(["PciPassthroughFilter"])
                .collect(),
            devices,
            alias_of,
            notes,
        })
    }

    /// nova.conf for nodes running nova-api and nova-scheduler.
    pub fn controller_ini(&self) -> String {
        let mut out = String::from("[pci]\n");
        for alias in &self.aliases {
            out.push_str(&format!("alias = {}\n", alias.json()));
        }
        out.push_str("\n[filter_scheduler]\n");
        out.push_str(&format!(
            "# Nova {}'s default filters plus PciPassthroughFilter; if you changed the list, add PciPassthroughFilter to yours\n",
            self.release.series().unwrap_or_else(|| self.release.name().unwrap_or_default().to_string())
        ));
        out.push_str(&format!("enabled_filters = {}\n", self.filters.join(",")));
        out
    }

    /// nova.conf for nodes running nova-compute (the alias is there too, for
    /// resize and migration).
    pub fn compute_ini(&self) -> String {
        let mut out = String::from("[pci]\n");
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

    /// The openstack commands: one flavor property per alias, and hiding the
    /// hypervisor from guest drivers (NVIDIA's refuse to run in a VM otherwise).
    pub fn commands(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .aliases
            .iter()
            .map(|a| {
                format!(
                    "openstack flavor set FLAVOR --property pci_passthrough:alias={}:1",
                    a.name
                )
            })
            .collect();
        out.push("openstack image set IMAGE --property img_hide_hypervisor_id=true".to_string());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::device::tests::endpoint;
    use crate::model::IommuGroup;

    fn dev(addr: &str, product: u16, t: NovaDeviceType, binding: Binding) -> NovaDevice {
        NovaDevice {
            address: addr.parse().unwrap(),
            vendor: VendorId(0x10de),
            product: DeviceId(product),
            device_type: t,
            type_source: TypeSource::Libvirt,
            binding,
            iommu_group: None,
            derived_name: derive_alias_name(
                VendorId(0x10de),
                DeviceId(product),
                Some("NVIDIA Corporation"),
                Some(if product == 0x20b0 {
                    "GA100 [A100 SXM4 40GB]"
                } else {
                    "GA100 [A100 NVSwitch]"
                }),
            ),
        }
    }

    /// A host with `n` A100s at 25:00.0, 26:00.0...
    fn host(n: u8) -> Inventory {
        let devices = (0..n)
            .map(|i| endpoint(&format!("{:02x}:00.0", 0x25 + i), 0x030200))
            .collect();
        Inventory {
            devices,
            ..Default::default()
        }
    }

    fn request(release: &str, devices: Vec<NovaDevice>) -> Request {
        Request {
            release: Release::parse(release).unwrap(),
            alias: None,
            numa_policy: None,
            devices,
        }
    }

    #[test]
    fn release_names_and_series() {
        for (text, nova, shown) in [
            ("train", 20, "Train (Nova 20)"),
            ("Zed", 26, "Zed (Nova 26)"),
            ("antelope", 27, "2023.1 Antelope (Nova 27)"),
            ("2023.1", 27, "2023.1 Antelope (Nova 27)"),
            ("bobcat", 28, "2023.2 Bobcat (Nova 28)"),
            ("2024.1", 29, "2024.1 Caracal (Nova 29)"),
            ("dalmatian", 30, "2024.2 Dalmatian (Nova 30)"),
            ("2025.1", 31, "2025.1 Epoxy (Nova 31)"),
            ("flamingo", 32, "2025.2 Flamingo (Nova 32)"),
            ("2026.1", 33, "2026.1 Gazpacho (Nova 33)"),
            ("hibiscus", 34, "2026.2 Hibiscus (Nova 34)"),
            ("2027.1", 35, "2027.1 (Nova 35)"),
        ] {
            let r = Release::parse(text).unwrap();
            assert_eq!(r.nova_version(), nova, "{text}");
            assert_eq!(r.to_string(), shown);
        }
        assert_eq!(Release::LATEST.name(), Some("Hibiscus"));
        assert_eq!(
            Release::parse("rocky").unwrap_err(),
            NovaError::TooOld("rocky".into())
        );
        for bad in ["2022.2", "2023.3", "kestrel", "", "2023", "20x3.1"] {
            assert!(
                matches!(Release::parse(bad), Err(NovaError::UnknownRelease(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn release_switches_options() {
        let yoga = Release::parse("yoga").unwrap();
        let zed = Release::parse("zed").unwrap();
        assert_eq!(yoga.spec_option(), "passthrough_whitelist");
        assert_eq!(zed.spec_option(), "device_spec");
        assert!(!Release::parse("2024.2").unwrap().has_managed_tag());
        assert!(Release::parse("2025.1").unwrap().has_managed_tag());
        assert!(Release::TRAIN
            .default_filters()
            .contains(&"AvailabilityZoneFilter"));
        assert!(!Release::BOBCAT
            .default_filters()
            .contains(&"AvailabilityZoneFilter"));
        assert!(!Release::TRAIN.default_filters().contains(&"RetryFilter"));
    }

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

    #[test]
    fn alias_names_are_checked() {
        check_alias_name("nvidia-a100").unwrap();
        for bad in ["", "a:b", "a,b", "a b", &"x".repeat(257)] {
            assert!(check_alias_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_runbook_a100_on_train() {
        let devices = (0..8u8)
            .map(|i| {
                dev(
                    &format!("{:02x}:00.0", 0x25 + i),
                    0x20b0,
                    NovaDeviceType::Pf,
                    Binding::VfioNow,
                )
            })
            .collect();
        let mut req = request("train", devices);
        req.alias = Some("nvidia-a100".into());
        let cfg = NovaConfig::build(&host(8), req).unwrap();
        assert_eq!(
            cfg.controller_ini(),
            "[pci]\n\
             alias = {\"name\": \"nvidia-a100\", \"vendor_id\": \"10de\", \"product_id\": \"20b0\", \"device_type\": \"type-PF\"}\n\
             \n\
             [filter_scheduler]\n\
             # Nova Train's default filters plus PciPassthroughFilter; if you changed the list, add PciPassthroughFilter to yours\n\
             enabled_filters = AvailabilityZoneFilter,ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter,ServerGroupAntiAffinityFilter,ServerGroupAffinityFilter,PciPassthroughFilter\n"
        );
        assert_eq!(
            cfg.compute_ini().lines().nth(1).unwrap(),
            "passthrough_whitelist = {\"vendor_id\": \"10de\", \"product_id\": \"20b0\"}",
            "every A100 selected: one spec by IDs"
        );
        assert_eq!(
            cfg.commands()[0],
            "openstack flavor set FLAVOR --property pci_passthrough:alias=nvidia-a100:1"
        );
        assert!(cfg.notes[0].contains("not declared"), "{:?}", cfg.notes);
    }

    #[test]
    fn partial_selection_is_spelled_by_address_and_managed_follows_declarations() {
        let devices = vec![
            dev("25:00.0", 0x20b0, NovaDeviceType::Pf, Binding::Declared),
            dev("26:00.0", 0x20b0, NovaDeviceType::Pf, Binding::Declared),
        ];
        let cfg = NovaConfig::build(&host(3), request("2025.1", devices.clone())).unwrap();
        assert_eq!(
            cfg.compute_ini(),
            "[pci]\n\
             device_spec = {\"vendor_id\": \"10de\", \"product_id\": \"20b0\", \"address\": \"0000:25:00.0\", \"managed\": \"no\"}\n\
             device_spec = {\"vendor_id\": \"10de\", \"product_id\": \"20b0\", \"address\": \"0000:26:00.0\", \"managed\": \"no\"}\n\
             alias = {\"name\": \"nvidia-a100-sxm4-40gb\", \"vendor_id\": \"10de\", \"product_id\": \"20b0\", \"device_type\": \"type-PF\"}\n"
        );
        // Before 2025.1 there is no managed tag.
        let cfg = NovaConfig::build(&host(3), request("2024.2", devices.clone())).unwrap();
        assert!(!cfg.compute_ini().contains("managed"));
        // Every A100 selected, one declared and one only bound: per address, one managed.
        let mut mixed = devices;
        mixed[1].binding = Binding::VfioNow;
        let cfg = NovaConfig::build(&host(2), request("2025.2", mixed)).unwrap();
        assert_eq!(cfg.specs.len(), 2);
        assert_eq!(cfg.specs[0].managed, Some("no"));
        assert_eq!(cfg.specs[1].managed, None);
    }

    #[test]
    fn different_ids_and_mixed_types_get_their_own_aliases() {
        let mut inv = host(3);
        inv.devices.push(endpoint("b7:00.0", 0x068000));
        let devices = vec![
            dev("25:00.0", 0x20b0, NovaDeviceType::Pf, Binding::Declared),
            dev("26:00.0", 0x20b0, NovaDeviceType::Pci, Binding::Declared),
            dev("27:00.0", 0x20b0, NovaDeviceType::Pf, Binding::Declared),
            dev("b7:00.0", 0x1af1, NovaDeviceType::Pci, Binding::Declared),
        ];
        let cfg = NovaConfig::build(&inv, request("zed", devices.clone())).unwrap();
        let names: Vec<(&str, NovaDeviceType)> = cfg
            .aliases
            .iter()
            .map(|a| (a.name.as_str(), a.device_type))
            .collect();
        assert_eq!(
            names,
            [
                ("nvidia-a100-sxm4-40gb-pf", NovaDeviceType::Pf),
                ("nvidia-a100-sxm4-40gb-pci", NovaDeviceType::Pci),
                ("nvidia-a100-nvswitch", NovaDeviceType::Pci),
            ]
        );
        assert_eq!(cfg.aliases[0].devices.len(), 2);
        assert!(cfg
            .notes
            .iter()
            .any(|n| n.starts_with("10de:20b0 comes as more than one device_type")));
        let mut req = request("zed", devices);
        req.alias = Some("gpu".into());
        let err = NovaConfig::build(&inv, req).unwrap_err();
        assert!(
            err.to_string()
                .contains("need 3: 10de:1af1 type-PCI, 10de:20b0 type-PF, 10de:20b0 type-PCI"),
            "{err}"
        );
    }

    #[test]
    fn same_derived_name_for_two_ids_is_made_unique() {
        let mut a = dev("25:00.0", 0x20b0, NovaDeviceType::Pf, Binding::Declared);
        let mut b = dev("26:00.0", 0x20b2, NovaDeviceType::Pf, Binding::Declared);
        a.derived_name = "nvidia-a100".into();
        b.derived_name = "nvidia-a100".into();
        let cfg = NovaConfig::build(&host(2), request("zed", vec![a, b])).unwrap();
        let names: Vec<&str> = cfg.aliases.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["nvidia-a100-20b0", "nvidia-a100-20b2"]);
    }

    #[test]
    fn numa_policy_and_its_release() {
        let devices = vec![dev(
            "25:00.0",
            0x20b0,
            NovaDeviceType::Pf,
            Binding::Declared,
        )];
        let mut req = request("victoria", devices.clone());
        req.numa_policy = Some(NumaPolicy::Socket);
        assert!(matches!(
            NovaConfig::build(&host(1), req),
            Err(NovaError::SocketPolicyTooOld(_))
        ));
        let mut req = request("wallaby", devices);
        req.numa_policy = Some(NumaPolicy::Socket);
        let cfg = NovaConfig::build(&host(1), req).unwrap();
        assert!(cfg.aliases[0]
            .json()
            .ends_with("\"numa_policy\": \"socket\"}"));
    }

    #[test]
    fn notes_explain_groups_host_drivers_and_wide_domains() {
        let mut inv = host(1);
        inv.devices.push(endpoint("25:00.1", 0x040300));
        inv.groups.insert(
            5,
            IommuGroup {
                number: 5,
                domain_type: None,
                pci_members: vec!["25:00.0".parse().unwrap(), "25:00.1".parse().unwrap()],
                other_members: vec![],
            },
        );
        let mut gpu = dev(
            "25:00.0",
            0x20b0,
            NovaDeviceType::Pf,
            Binding::Host(Some(DriverName::new("nvidia"))),
        );
        gpu.iommu_group = Some(5);
        let vmd = dev(
            "10000:01:00.0",
            0x20b0,
            NovaDeviceType::Pf,
            Binding::Declared,
        );
        let cfg = NovaConfig::build(&inv, request("2025.1", vec![gpu, vmd])).unwrap();
        assert_eq!(cfg.devices.len(), 1);
        let notes = cfg.notes.join("\n");
        assert!(notes.contains("left out 10000:01:00.0"), "{notes}");
        assert!(
            notes.contains("0000:25:00.0 (nvidia) not on a VFIO driver"),
            "{notes}"
        );
        assert!(
            notes.contains("IOMMU group 5 also holds 0000:25:00.1"),
            "{notes}"
        );
    }
}
