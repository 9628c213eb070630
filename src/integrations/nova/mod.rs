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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::model::address::PciAddress;
use crate::model::device::{NovaDeviceType, SriovRole};
use crate::model::driver::DriverName;
use crate::model::fabric::{is_nvswitch, may_leave_host, Fabric, FabricReading};
use crate::model::ids::{ClassCode, DeviceId, VendorId};
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

/// Something Nova knows from release `since` (a Nova major version) until
/// before `until`, and where in Nova's source at the tag it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fact {
    pub since: u16,
    pub until: Option<u16>,
    pub source: &'static str,
}

/// `[pci] device_spec`; before it, `passthrough_whitelist`, which Zed kept as
/// the option's deprecated name.
pub const DEVICE_SPEC_OPTION: Fact = Fact {
    since: 26,
    until: None,
    source: "nova/conf/pci.py at 26.0.0: MultiStrOpt('device_spec', deprecated_opts passthrough_whitelist)",
};
/// `numa_policy: socket` in aliases.
pub const SOCKET_POLICY: Fact = Fact {
    since: 23,
    until: None,
    source: "nova/objects/fields.py at 23.0.0: PCINUMAAffinityPolicy.SOCKET",
};
/// `resource_class` and `traits` in device specs, `[pci] report_in_placement`.
pub const REPORT_IN_PLACEMENT: Fact = Fact {
    since: 26,
    until: None,
    source: "nova/conf/pci.py at 26.0.0: BoolOpt('report_in_placement'); nova/compute/pci_placement_translator.py",
};
/// `resource_class` and `traits` in aliases, `[filter_scheduler] pci_in_placement`.
pub const PCI_IN_PLACEMENT: Fact = Fact {
    since: 27,
    until: None,
    source: "nova/conf/scheduler.py at 27.0.0: BoolOpt('pci_in_placement'); nova/pci/request.py _ALIAS_SCHEMA resource_class, traits",
};
/// The `managed` device spec tag.
pub const MANAGED_TAG: Fact = Fact {
    since: 31,
    until: None,
    source: "nova/pci/devspec.py at 31.0.0: _normalize_device_spec_tag('managed')",
};
/// The `live_migratable` device spec tag and alias key.
pub const LIVE_MIGRATABLE: Fact = Fact {
    since: 31,
    until: None,
    source: "nova/pci/devspec.py at 31.0.0: _normalize_device_spec_tag('live_migratable'); nova/pci/request.py _ALIAS_SCHEMA live_migratable",
};
/// AvailabilityZoneFilter exists (deprecated from Xena on, logging a warning).
pub const AZ_FILTER: Fact = Fact {
    since: 0,
    until: Some(28),
    source: "nova/scheduler/filters/availability_zone_filter.py: present at 20.0.0 to 27.0.0 (since 0: it predates Train), deprecation warning at 24.0.0, absent at 28.0.0",
};
/// `[scheduler] query_placement_for_availability_zone`: Placement filters
/// hosts by availability zone (off by default before Xena); 2023.2 removed
/// the option with AvailabilityZoneFilter and always does this.
pub const AZ_PREFILTER_OPTION: Fact = Fact {
    since: 18,
    until: Some(28),
    source: "nova/conf/scheduler.py at 18.0.0: BoolOpt('query_placement_for_availability_zone'), default False to 23.0.0; absent at 28.0.0",
};
/// Placement filters hosts by availability zone without being asked
/// (`query_placement_for_availability_zone` defaults to True, then is the
/// only way).
pub const AZ_PREFILTER_DEFAULT: Fact = Fact {
    since: 24,
    until: None,
    source: "nova/conf/scheduler.py at 24.0.0: query_placement_for_availability_zone default=True, deprecated_for_removal; nova/scheduler/request_filter.py at 28.0.0: map_az_to_placement_aggregate without the option",
};

/// Every fact by name, for the JSON record.
pub const FACTS: &[(&str, Fact)] = &[
    ("device_spec_option", DEVICE_SPEC_OPTION),
    ("socket_numa_policy", SOCKET_POLICY),
    ("report_in_placement", REPORT_IN_PLACEMENT),
    ("pci_in_placement", PCI_IN_PLACEMENT),
    ("managed_tag", MANAGED_TAG),
    ("live_migratable", LIVE_MIGRATABLE),
    ("availability_zone_filter", AZ_FILTER),
    ("availability_zone_prefilter_option", AZ_PREFILTER_OPTION),
    ("availability_zone_prefilter_default", AZ_PREFILTER_DEFAULT),
];

/// A fact as it stands for one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FactRecord {
    pub name: &'static str,
    /// Whether the release knows it.
    pub known: bool,
    /// First Nova major version with it.
    pub since: u16,
    /// First Nova major version without it again.
    pub until: Option<u16>,
    pub source: &'static str,
}

/// The filter Nova's PCI passthrough needs in `[filter_scheduler] enabled_filters`.
pub const PCI_FILTER: &str = "PciPassthroughFilter";
const AZ_FILTER_NAME: &str = "AvailabilityZoneFilter";

/// Nova's default `[filter_scheduler] enabled_filters` from a release on:
/// (since, filters, source). Read at every tag from Train (20.0.0) to
/// 33.0.0 from the tag's release on PyPI (the Nova oracle reads them again
/// on every run), and from Nova 34 itself.
pub const DEFAULT_FILTERS: &[(u16, &[&str], &str)] = &[
    (
        20,
        &[
            "AvailabilityZoneFilter",
            "ComputeFilter",
            "ComputeCapabilitiesFilter",
            "ImagePropertiesFilter",
            "ServerGroupAntiAffinityFilter",
            "ServerGroupAffinityFilter",
        ],
        "nova/conf/scheduler.py enabled_filters default at 20.0.0, 21.0.0, 22.0.0 and 23.0.0 (RetryFilter left it in Train)",
    ),
    (
        24,
        &[
            "ComputeFilter",
            "ComputeCapabilitiesFilter",
            "ImagePropertiesFilter",
            "ServerGroupAntiAffinityFilter",
            "ServerGroupAffinityFilter",
        ],
        "nova/conf/scheduler.py enabled_filters default at 24.0.0 to 34.0.0: AvailabilityZoneFilter left it in Xena",
    ),
];

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
    #[error("{address} is {} and {}: choose how the NVLink fabric runs: --fabric shared (NVSwitches stay on the host for Fabric Manager, only GPUs are offered) or --fabric full (every GPU and NVSwitch to one VM); or set the host up so that it says: Fabric Manager enabled for shared, every NVSwitch declared for VFIO (vfioctl persist add) for full", if *.switch { "an NVSwitch" } else { "a GPU of an HGX board" }, .host.as_deref().map_or_else(|| "no fabric mode is given".to_string(), |why| format!("the host does not say how its NVLink fabric runs ({why})")))]
    FabricNeeded {
        address: PciAddress,
        /// The device is an NVSwitch (else a GPU of the board).
        switch: bool,
        /// Why the host's own state does not say, when it was read.
        host: Option<String>,
    },
}

impl Release {
    /// The newest release vfioctl knows by name; the default.
    pub const LATEST: Release = Release { nova: 34 };
    pub const TRAIN: Release = Release { nova: 20 };
    pub const ZED: Release = Release { nova: 26 };
    pub const ANTELOPE: Release = Release { nova: 27 };
    pub const BOBCAT: Release = Release { nova: 28 };
    pub const EPOXY: Release = Release { nova: 31 };

    /// Every release vfioctl knows by name, oldest first.
    pub fn all() -> impl Iterator<Item = Release> {
        RELEASES.iter().map(|&(nova, _)| Release { nova })
    }

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

    /// `2023.1` from Antelope on, the name before.
    pub fn short(self) -> String {
        self.series()
            .unwrap_or_else(|| self.name().unwrap_or_default().to_string())
    }

    /// Whether this release knows `fact`.
    pub fn knows(self, fact: Fact) -> bool {
        self.nova >= fact.since && fact.until.is_none_or(|until| self.nova < until)
    }

    /// The compute node's option naming passthrough devices.
    pub fn spec_option(self) -> &'static str {
        if self.knows(DEVICE_SPEC_OPTION) {
            "device_spec"
        } else {
            "passthrough_whitelist"
        }
    }

    /// Nova's default `[filter_scheduler] enabled_filters` in this release.
    pub fn default_filters(self) -> &'static [&'static str] {
        self.default_filters_entry().1
    }

    fn default_filters_entry(self) -> &'static (u16, &'static [&'static str], &'static str) {
        DEFAULT_FILTERS
            .iter()
            .rev()
            .find(|(since, _, _)| self.nova >= *since)
            .unwrap_or(&DEFAULT_FILTERS[0])
    }

    /// Every fact as it stands for this release, with where it was read.
    pub fn facts(self) -> Vec<FactRecord> {
        FACTS
            .iter()
            .map(|(name, fact)| FactRecord {
                name,
                known: self.knows(*fact),
                since: fact.since,
                until: fact.until,
                source: fact.source,
            })
            .collect()
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

/// `[filter_scheduler] enabled_filters` and what goes with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchedulerFilters {
    /// The list to configure (shown as `enabled_filters` next to this record).
    #[serde(skip)]
    pub enabled: Vec<&'static str>,
    /// The release's default list.
    pub default: &'static [&'static str],
    /// Where in Nova's source the default list was read.
    pub default_source: &'static str,
    /// Named here but not in the default.
    pub added: Vec<&'static str>,
    /// In the default but not named here.
    pub dropped: Vec<&'static str>,
    /// `[scheduler] query_placement_for_availability_zone = True` is written
    /// (`--az-prefilter` before Xena), taking over from a dropped
    /// AvailabilityZoneFilter.
    pub az_prefilter: bool,
}

impl SchedulerFilters {
    /// The release's default filters plus PciPassthroughFilter. Up to
    /// Wallaby the default holds AvailabilityZoneFilter, which is kept: it is
    /// what keeps requests for an availability zone on that zone's hosts
    /// there. With `az_prefilter` those releases have Placement filter zones
    /// instead, as Xena does by default, and the filter is left out. From
    /// Xena on the default has no AvailabilityZoneFilter, and Placement's
    /// filtering is Nova's own.
    pub fn for_release(release: Release, az_prefilter: bool) -> SchedulerFilters {
        let (_, default, default_source) = *release.default_filters_entry();
        let prefilter =
            az_prefilter && default.contains(&AZ_FILTER_NAME) && release.knows(AZ_PREFILTER_OPTION);
        let dropped: Vec<&'static str> = if prefilter {
            vec![AZ_FILTER_NAME]
        } else {
            Vec::new()
        };
        let enabled = default
            .iter()
            .copied()
            .filter(|f| !dropped.contains(f))
            .chain([PCI_FILTER])
            .collect();
        SchedulerFilters {
            enabled,
            default,
            default_source,
            added: vec![PCI_FILTER],
            dropped,
            az_prefilter: prefilter,
        }
    }

    /// Whether the list names AvailabilityZoneFilter, which 2023.2 removed.
    pub fn names_az_filter(&self) -> bool {
        self.enabled.contains(&AZ_FILTER_NAME)
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
    pub class: ClassCode,
    pub device_type: NovaDeviceType,
    pub type_source: TypeSource,
    pub binding: Binding,
    pub iommu_group: Option<u32>,
    /// The alias name used when the operator gives none (see [`derive_alias_name`]).
    pub derived_name: String,
}

impl NovaDevice {
    /// GPUs (display class) and NVSwitches carry state no live migration moves.
    fn is_gpu_like(&self) -> bool {
        self.class.base() == 0x03 || is_nvswitch(self.vendor, self.product)
    }
}

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

/// `--placement`: devices reported to Placement and scheduled there.
#[derive(Debug, Clone, Default)]
pub struct PlacementRequest {
    /// `--resource-class`, as typed; default: Nova's derived one.
    pub resource_class: Option<String>,
    /// `--trait`, as typed.
    pub traits: Vec<String>,
}

/// A custom Placement name as Nova writes it: upper case with the `CUSTOM_`
/// prefix. Refuses what Nova would have to rewrite (anything but letters,
/// digits and '_'), so the name in nova.conf is the name in Placement.
pub fn custom_name(what: &'static str, name: &str) -> Result<String, NovaError> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CUSTOM_") {
        upper
    } else {
        format!("CUSTOM_{upper}")
    };
    let ok = full.len() > "CUSTOM_".len()
        && full.len() <= 255
        && full.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(full)
    } else {
        Err(NovaError::BadPlacementName {
            what,
            name: name.to_string(),
        })
    }
}

/// The resource class Nova gives devices whose spec names none.
pub fn derived_resource_class(vendor: VendorId, product: DeviceId) -> String {
    format!("CUSTOM_PCI_{vendor}_{product}").to_ascii_uppercase()
}

/// What the generator was asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub release: Release,
    /// `--alias`: one name for the single alias the devices need.
    pub alias: Option<String>,
    pub numa_policy: Option<NumaPolicy>,
    pub fabric: Option<Fabric>,
    pub placement: Option<PlacementRequest>,
    pub live_migratable: bool,
    /// `--vf-parent`: a device spec names a PF's address for its VFs when
    /// every VF of that PF with the IDs is offered (Nova matches a VF by its
    /// parent's address).
    pub vf_parent: bool,
    /// `--az-prefilter`: Placement filters availability zones in place of
    /// AvailabilityZoneFilter, on releases whose default still has it.
    pub az_prefilter: bool,
    pub devices: Vec<NovaDevice>,
}

/// A selected device that is not offered to Nova, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    pub address: PciAddress,
    pub reason: String,
}

/// Everything to print: configuration, commands and the notes explaining them.
#[derive(Debug, Clone)]
pub struct NovaConfig {
    pub release: Release,
    pub aliases: Vec<Alias>,
    pub specs: Vec<DeviceSpec>,
    pub filters: SchedulerFilters,
    pub placement: bool,
    /// The devices offered.
    pub devices: Vec<NovaDevice>,
    pub left_out: Vec<LeftOut>,
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

/// Placement names checked and normalized: `Some` with `--placement`.
struct PlacementNames {
    resource_class: Option<String>,
    traits: Option<String>,
}

/// Refuses what the release cannot express; normalizes placement names.
fn check_request(request: &Request) -> Result<Option<PlacementNames>, NovaError> {
    let release = request.release;
    if let Some(name) = &request.alias {
        check_alias_name(name)?;
    }
    if request.numa_policy == Some(NumaPolicy::Socket) && !release.knows(SOCKET_POLICY) {
        return Err(NovaError::SocketPolicyTooOld(release.to_string()));
    }
    if request.live_migratable && !release.knows(LIVE_MIGRATABLE) {
        return Err(NovaError::LiveMigratableTooOld(release.to_string()));
    }
    let Some(placement) = &request.placement else {
        return Ok(None);
    };
    if !release.knows(PCI_IN_PLACEMENT) {
        return Err(NovaError::PlacementTooOld {
            release: release.to_string(),
            why: if release.knows(REPORT_IN_PLACEMENT) {
                "reports PCI devices to Placement but cannot schedule them there ([filter_scheduler] pci_in_placement and resource_class in aliases came with 2023.1)"
            } else {
                "has neither [pci] report_in_placement nor [filter_scheduler] pci_in_placement"
            },
        });
    }
    let resource_class = placement
        .resource_class
        .as_deref()
        .map(|rc| custom_name("resource class", rc))
        .transpose()?;
    let traits: Vec<String> = placement
        .traits
        .iter()
        .map(|t| custom_name("trait", t))
        .collect::<Result<_, _>>()?;
    Ok(Some(PlacementNames {
        resource_class,
        traits: (!traits.is_empty()).then(|| traits.join(",")),
    }))
}

/// Leaves out devices in PCI domains Nova cannot address.
fn keep_nova_domains(devices: Vec<NovaDevice>, left_out: &mut Vec<LeftOut>) -> Vec<NovaDevice> {
    let (keep, wide): (Vec<NovaDevice>, Vec<NovaDevice>) = devices
        .into_iter()
        .partition(|d| d.address.domain <= MAX_NOVA_DOMAIN);
    left_out.extend(wide.into_iter().map(|d| LeftOut {
        address: d.address,
        reason: "Nova only handles PCI domains up to ffff (devices behind Intel VMD have wider ones)"
            .to_string(),
    }));
    keep
}

/// Where the fabric mode the output follows came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FabricSource {
    /// `--fabric`.
    Option,
    /// The host's own state ([`crate::model::fabric::read_fabric`]).
    Host,
}

/// The fabric mode the output follows, where it came from, and what to say
/// about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricDecision {
    pub mode: Option<Fabric>,
    pub source: Option<FabricSource>,
    /// For the operator, on stderr and among the notes.
    pub notes: Vec<String>,
}

/// The fabric mode of the output. `--fabric` wins, with a note when the host
/// says otherwise (nothing is written, and the output may be meant for the
/// host once it is changed). Without it the host's own reading decides,
/// once the selection holds a GPU or NVSwitch of the HGX board
/// (`board_device`: the first one, and whether it is an NVSwitch); when the
/// host does not say, `--fabric` is asked for.
pub fn decide_fabric(
    given: Option<Fabric>,
    host: Option<&FabricReading>,
    board_device: Option<(PciAddress, bool)>,
) -> Result<FabricDecision, NovaError> {
    let mut notes = Vec::new();
    if let Some(mode) = given {
        match host {
            None => notes.push(format!(
                "--fabric {}: this host has no NVSwitch, so there is nothing to decide",
                mode.as_str()
            )),
            Some(reading) => match reading.mode {
                Some(read) if read != mode => notes.push(format!(
                    "--fabric {} contradicts the host, which runs its NVLink fabric {} ({}): this output fits the host only after the change; first {}",
                    mode.as_str(),
                    read.as_str(),
                    reading.evidence,
                    match mode {
                        Fabric::Full => "stop Fabric Manager and give every NVSwitch to VFIO (systemctl disable --now nvidia-fabricmanager; vfioctl persist add 10de:1af1 or 10de:22a3)",
                        Fabric::Shared => "give the NVSwitches back to nvidia and start Fabric Manager (vfioctl persist remove and vfioctl restore them; systemctl enable --now nvidia-fabricmanager)",
                    }
                )),
                _ => {}
            },
        }
        return Ok(FabricDecision {
            mode: Some(mode),
            source: Some(FabricSource::Option),
            notes,
        });
    }
    let (Some(reading), Some((address, switch))) = (host, board_device) else {
        return Ok(FabricDecision {
            mode: None,
            source: None,
            notes,
        });
    };
    let Some(mode) = reading.mode else {
        return Err(NovaError::FabricNeeded {
            address,
            switch,
            host: Some(reading.evidence.clone()),
        });
    };
    notes.push(format!(
        "NVLink fabric {}, read from the host: {} (--fabric overrides)",
        mode.as_str(),
        reading.evidence
    ));
    Ok(FabricDecision {
        mode: Some(mode),
        source: Some(FabricSource::Host),
        notes,
    })
}

/// NVSwitches follow the fabric mode: refused without one, left out when
/// the fabric is shared.
fn apply_fabric(
    fabric: Option<Fabric>,
    devices: Vec<NovaDevice>,
    left_out: &mut Vec<LeftOut>,
) -> Result<Vec<NovaDevice>, NovaError> {
    let Some(fabric) = fabric else {
        if let Some(switch) = devices.iter().find(|d| is_nvswitch(d.vendor, d.product)) {
            return Err(NovaError::FabricNeeded {
                address: switch.address,
                switch: true,
                host: None,
            });
        }
        return Ok(devices);
    };
    let (keep, stay): (Vec<NovaDevice>, Vec<NovaDevice>) = devices
        .into_iter()
        .partition(|d| may_leave_host(fabric, d.address, d.vendor, d.product).is_ok());
    left_out.extend(stay.into_iter().map(|d| {
        LeftOut {
            address: d.address,
            reason:
                "NVSwitches stay on the host's nvidia driver for Fabric Manager (shared fabric)"
                    .to_string(),
        }
    }));
    Ok(keep)
}

/// A group opens in one VM only: devices whose IOMMU group holds endpoints
/// that are not offered are left out.
fn whole_groups(
    inv: &Inventory,
    devices: Vec<NovaDevice>,
    left_out: &mut Vec<LeftOut>,
) -> Vec<NovaDevice> {
    let offered: BTreeSet<PciAddress> = devices.iter().map(|d| d.address).collect();
    let missing_of = |group: u32| -> Vec<PciAddress> {
        inv.groups.get(&group).map_or_else(Vec::new, |g| {
            inv.members(g)
                .filter(|m| !m.is_bridge() && !offered.contains(&m.address))
                .map(|m| m.address)
                .collect()
        })
    };
    let (keep, split): (Vec<NovaDevice>, Vec<NovaDevice>) = devices
        .into_iter()
        .partition(|d| d.iommu_group.is_none_or(|g| missing_of(g).is_empty()));
    left_out.extend(split.into_iter().map(|d| {
        let group = d.iommu_group.unwrap_or_default();
        LeftOut {
            address: d.address,
            reason: format!(
                "IOMMU group {group} also holds {}, which is not offered: a group goes to one VM whole, so select all of it or none of it",
                list(&missing_of(group))
            ),
        }
    }));
    keep
}

/// One alias per (IDs, device_type), in address order of first appearance.
fn make_aliases(
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

fn placement_tags(names: &PlacementNames, vendor: VendorId, product: DeviceId) -> PlacementTags {
    PlacementTags {
        resource_class: names
            .resource_class
            .clone()
            .unwrap_or_else(|| derived_resource_class(vendor, product)),
        traits: names.traits.clone(),
    }
}

/// How many devices of each alias the flavor requests. Nova knows nothing of
/// IOMMU groups and picks any device of an alias, so aliases touching a group
/// of several offered devices (and, by the same devices, each other) are
/// requested whole: one VM gets every device they match. With the full
/// fabric every alias is requested whole.
fn set_counts(
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
fn make_specs(
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

/// The VFs among `members` (devices of one vendor:product) grouped by their
/// PF, for each PF whose every VF with those IDs on the host is among them.
fn whole_pfs<'a>(
    inv: &Inventory,
    members: &[&'a NovaDevice],
) -> BTreeMap<PciAddress, Vec<&'a NovaDevice>> {
    let physfn = |address: &PciAddress| match inv.device(address).map(|d| &d.sriov) {
        Some(SriovRole::Vf { physfn }) => Some(*physfn),
        _ => None,
    };
    let mut by_pf: BTreeMap<PciAddress, Vec<&NovaDevice>> = BTreeMap::new();
    for dev in members {
        if let Some(pf) = physfn(&dev.address) {
            by_pf.entry(pf).or_default().push(dev);
        }
    }
    by_pf.retain(|pf, vfs| {
        let on_host = inv
            .devices
            .iter()
            .filter(|d| (d.ids.vendor, d.ids.device) == (vfs[0].vendor, vfs[0].product))
            .filter(|d| physfn(&d.address) == Some(*pf))
            .count();
        vfs.len() >= on_host
    });
    by_pf
}

/// What libvirt will do with each device, by its binding.
fn binding_notes(
    release: Release,
    devices: &[NovaDevice],
    specs: &[DeviceSpec],
    notes: &mut Vec<String>,
) {
    let on_vfio_only: Vec<PciAddress> = devices
        .iter()
        .filter(|d| d.binding == Binding::VfioNow)
        .map(|d| d.address)
        .collect();
    if !on_vfio_only.is_empty() {
        let why = if release.knows(MANAGED_TAG) {
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
    if specs.iter().any(|s| s.managed.is_some()) {
        notes.push("\"managed\": \"no\" marks devices vfioctl keeps on vfio-pci: libvirt uses them as they are and never rebinds them".to_string());
    }
}

/// The step Placement's availability zone filtering needs first: host
/// aggregates mirrored into Placement.
pub const SYNC_AGGREGATES: &str = "nova-manage placement sync_aggregates";

/// Notes on the scheduler list and on Placement.
fn scheduler_notes(
    release: Release,
    filters: &SchedulerFilters,
    request: &Request,
    notes: &mut Vec<String>,
) {
    if filters.names_az_filter() {
        notes.push(format!(
            "{AZ_FILTER_NAME} stays, as in Nova {}'s default list: it keeps requests for an availability zone (a GPU zone) on that zone's hosts. Drop it before upgrading to 2023.2, which removed it (a scheduler naming it does not start); from Xena on Placement filters zones by default. --az-prefilter moves that work to Placement now",
            release.short()
        ));
    }
    if filters.az_prefilter {
        notes.push(format!(
            "--az-prefilter: {AZ_FILTER_NAME} is left out of Nova {}'s default list and [scheduler] query_placement_for_availability_zone = True has Placement filter hosts by availability zone, as Xena does by default, so the list survives the upgrade to 2023.2. Placement sees only host aggregates mirrored into it: run {SYNC_AGGREGATES} on a controller before restarting nova-scheduler, or requests for a zone find no host. A request for a zone no aggregate carries (the default zone) is then not kept off other zones' hosts",
            release.short()
        ));
    } else if request.az_prefilter {
        notes.push(format!(
            "--az-prefilter: Nova {} filters hosts by availability zone in Placement already (the default from Xena, the only way from 2023.2), so nothing is added",
            release.short()
        ));
    }
    if request.placement.is_some() {
        notes.push("Placement: set [pci] report_in_placement = True on every compute node first, then [filter_scheduler] pci_in_placement = True on nova-api, nova-scheduler and nova-conductor; report_in_placement cannot be switched off again once on (nova-compute refuses to start)".to_string());
    }
}

impl NovaConfig {
    /// Decides aliases, device specs, counts and notes. `inv` tells which
    /// other functions share a selected device's IDs (a spec by IDs would
    /// offer them too) and IOMMU group.
    pub fn build(inv: &Inventory, request: Request) -> Result<NovaConfig, NovaError> {
        let release = request.release;
        let placement = check_request(&request)?;
        let mut notes = Vec::new();
        let mut left_out = Vec::new();
        let devices = keep_nova_domains(request.devices.clone(), &mut left_out);
        let devices = apply_fabric(request.fabric, devices, &mut left_out)?;
        let devices = whole_groups(inv, devices, &mut left_out);
        if request.live_migratable {
            if let Some(gpu) = devices.iter().find(|d| d.is_gpu_like()) {
                return Err(NovaError::LiveMigratableGpu(gpu.address));
            }
        }
        let (mut aliases, alias_of) =
            make_aliases(&devices, &request, placement.as_ref(), &mut notes)?;
        set_counts(
            &mut aliases,
            &devices,
            &alias_of,
            request.fabric,
            &mut notes,
        );
        let specs = make_specs(inv, &devices, &request, placement.as_ref());
        binding_notes(release, &devices, &specs, &mut notes);
        let filters = SchedulerFilters::for_release(release, request.az_prefilter);
        scheduler_notes(release, &filters, &request, &mut notes);
        let mut by_reason: BTreeMap<&str, Vec<PciAddress>> = BTreeMap::new();
        for l in &left_out {
            by_reason.entry(&l.reason).or_default().push(l.address);
        }
        let mut left_notes: Vec<String> = by_reason
            .iter()
            .map(|(reason, addrs)| format!("left out {}: {reason}", list(addrs)))
            .collect();
        left_notes.append(&mut notes);
        Ok(NovaConfig {
            release,
            aliases,
            specs,
            filters,
            placement: placement.is_some(),
            devices,
            left_out,
            alias_of,
            notes: left_notes,
        })
    }

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
            class: ClassCode(if product == 0x1af1 {
                0x068000
            } else {
                0x030200
            }),
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
            fabric: None,
            placement: None,
            live_migratable: false,
            vf_parent: false,
            az_prefilter: false,
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
        assert!(!Release::parse("2024.2").unwrap().knows(MANAGED_TAG));
        assert!(Release::parse("2025.1").unwrap().knows(MANAGED_TAG));
        assert!(Release::EPOXY.knows(LIVE_MIGRATABLE));
        assert!(!Release::parse("zed").unwrap().knows(PCI_IN_PLACEMENT));
        assert!(Release::ANTELOPE.knows(PCI_IN_PLACEMENT));
        assert!(!Release::TRAIN.default_filters().contains(&"RetryFilter"));
    }

    #[test]
    fn every_fact_names_where_in_nova_it_was_read() {
        for (name, fact) in FACTS {
            let tag = format!("at {}.0.0", fact.since);
            assert!(fact.source.starts_with("nova/"), "{name}");
            assert!(
                fact.source.contains(&tag) || fact.since == 0,
                "{name}: {tag}"
            );
            if let Some(until) = fact.until {
                assert!(fact.source.contains(&format!("at {until}.0.0")), "{name}");
                assert!(until > fact.since);
            }
        }
        assert!(DEFAULT_FILTERS.windows(2).all(|w| w[0].0 < w[1].0));
        for (since, _, source) in DEFAULT_FILTERS {
            assert!(source.contains(&format!("at {since}.0.0")));
        }
        let epoxy = Release::EPOXY.facts();
        // 2023.2 removed the filter and the option switching Placement's
        // zone filtering on (always on since).
        assert!(epoxy.iter().all(|f| f.known
            != matches!(
                f.name,
                "availability_zone_filter" | "availability_zone_prefilter_option"
            )));
    }

    #[test]
    fn availability_zone_filter_follows_nova_history() {
        // The true defaults: with the filter through Wallaby, without it from Xena.
        let wallaby = Release::parse("wallaby").unwrap();
        let xena = Release::parse("xena").unwrap();
        assert!(wallaby
            .default_filters()
            .contains(&"AvailabilityZoneFilter"));
        assert!(!xena.default_filters().contains(&"AvailabilityZoneFilter"));
        assert!(xena.knows(AZ_FILTER) && !Release::BOBCAT.knows(AZ_FILTER));
        // The list is the release's own: the filter stays up to Wallaby (it
        // keeps zone requests on the zone's hosts) and is gone from Xena on;
        // --az-prefilter trades it for Placement's zone filtering up to
        // Wallaby and changes nothing later.
        for release in Release::all() {
            let f = SchedulerFilters::for_release(release, false);
            assert_eq!(f.names_az_filter(), release < xena, "{release}");
            assert_eq!(f.enabled.len(), release.default_filters().len() + 1);
            assert_eq!(f.enabled.last(), Some(&"PciPassthroughFilter"));
            assert_eq!(f.added, ["PciPassthroughFilter"]);
            assert!(!f.az_prefilter && f.dropped.is_empty(), "{release}");
            let pre = SchedulerFilters::for_release(release, true);
            assert!(!pre.names_az_filter(), "{release}");
            assert_eq!(pre.az_prefilter, release < xena, "{release}");
            assert_eq!(pre.dropped.is_empty(), release >= xena, "{release}");
        }
        assert!(
            Release::TRAIN.knows(AZ_PREFILTER_OPTION)
                && !Release::BOBCAT.knows(AZ_PREFILTER_OPTION)
        );
        assert!(!wallaby.knows(AZ_PREFILTER_DEFAULT) && xena.knows(AZ_PREFILTER_DEFAULT));
        let xena_list = SchedulerFilters::for_release(xena, false).enabled;
        assert_eq!(
            xena_list,
            [
                "ComputeFilter",
                "ComputeCapabilitiesFilter",
                "ImagePropertiesFilter",
                "ServerGroupAntiAffinityFilter",
                "ServerGroupAffinityFilter",
                "PciPassthroughFilter"
            ]
        );
        assert_eq!(
            SchedulerFilters::for_release(Release::TRAIN, true).enabled,
            xena_list
        );
        let train = SchedulerFilters::for_release(Release::TRAIN, false).enabled;
        assert_eq!(train[0], "AvailabilityZoneFilter");
        assert_eq!(train[1..], xena_list[..]);
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
             # Before upgrading to 2023.2, which removed AvailabilityZoneFilter, drop it from this list: from Xena on Placement filters hosts by availability zone (nova-manage placement sync_aggregates first)\n\
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
        let err = NovaConfig::build(&inv, request("zed", devices.clone())).unwrap_err();
        assert_eq!(
            err,
            NovaError::FabricNeeded {
                address: "b7:00.0".parse().unwrap(),
                switch: true,
                host: None
            }
        );
        let mut req = request("zed", devices.clone());
        req.fabric = Some(Fabric::Full);
        let cfg = NovaConfig::build(&inv, req).unwrap();
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
        // Full fabric: one flavor requests every device.
        assert_eq!(
            cfg.flavor_property(),
            "pci_passthrough:alias=nvidia-a100-sxm4-40gb-pf:2,nvidia-a100-sxm4-40gb-pci:1,nvidia-a100-nvswitch:1"
        );
        let mut req = request("zed", devices);
        req.alias = Some("gpu".into());
        req.fabric = Some(Fabric::Full);
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
        let cfg =
            NovaConfig::build(&inv, request("2025.1", vec![gpu.clone(), vmd.clone()])).unwrap();
        // The GPU's group holds its audio function, which is not offered: left out.
        assert!(cfg.devices.is_empty());
        let notes = cfg.notes.join("\n");
        assert!(notes.contains("left out 10000:01:00.0"), "{notes}");
        assert!(
            notes.contains("left out 0000:25:00.0: IOMMU group 5 also holds 0000:25:00.1"),
            "{notes}"
        );
        // The whole group offered: both, in one request.
        let mut audio = dev("25:00.1", 0x1aef, NovaDeviceType::Pci, Binding::Declared);
        audio.class = ClassCode(0x040300);
        audio.derived_name = "nvidia-audio".into();
        audio.iommu_group = Some(5);
        let cfg = NovaConfig::build(&inv, request("2025.1", vec![gpu, audio, vmd])).unwrap();
        assert_eq!(cfg.devices.len(), 2);
        assert_eq!(
            cfg.flavor_property(),
            "pci_passthrough:alias=nvidia-a100-sxm4-40gb:1,nvidia-audio:1"
        );
        let notes = cfg.notes.join("\n");
        assert!(
            notes.contains("0000:25:00.0 (nvidia) not on a VFIO driver"),
            "{notes}"
        );
        assert!(
            notes.contains("0000:25:00.0, 0000:25:00.1 share IOMMU group 5"),
            "{notes}"
        );
    }

    /// Six NVSwitches in pairs of IOMMU groups next to eight A100s, each alone.
    fn hgx_paired() -> (Inventory, Vec<NovaDevice>) {
        let mut inv = host(8);
        let mut devices: Vec<NovaDevice> = (0..8u8)
            .map(|i| {
                let mut d = dev(
                    &format!("{:02x}:00.0", 0x25 + i),
                    0x20b0,
                    NovaDeviceType::Pf,
                    Binding::Declared,
                );
                d.iommu_group = Some(u32::from(i));
                d
            })
            .collect();
        for i in 0..6u8 {
            let addr = format!("{:02x}:00.0", 0xb7 + i);
            let group = 20 + u32::from(i / 2);
            inv.devices.push(endpoint(&addr, 0x068000));
            let last = inv.devices.last_mut().unwrap();
            last.ids.device = DeviceId(0x1af1);
            inv.groups
                .entry(group)
                .or_insert_with(|| IommuGroup {
                    number: group,
                    domain_type: None,
                    pci_members: vec![],
                    other_members: vec![],
                })
                .pci_members
                .push(addr.parse().unwrap());
            let mut d = dev(&addr, 0x1af1, NovaDeviceType::Pci, Binding::Declared);
            d.iommu_group = Some(group);
            devices.push(d);
        }
        (inv, devices)
    }

    #[test]
    fn paired_nvswitch_groups_follow_the_fabric() {
        let (inv, devices) = hgx_paired();
        // No choice: selecting an NVSwitch is refused.
        assert!(matches!(
            NovaConfig::build(&inv, request("2025.1", devices.clone())),
            Err(NovaError::FabricNeeded { .. })
        ));
        // Shared: NVSwitches left out, GPUs one per request.
        let mut req = request("2025.1", devices.clone());
        req.fabric = Some(Fabric::Shared);
        let cfg = NovaConfig::build(&inv, req).unwrap();
        assert_eq!(cfg.devices.len(), 8);
        assert_eq!(
            cfg.flavor_property(),
            "pci_passthrough:alias=nvidia-a100-sxm4-40gb:1"
        );
        assert!(cfg.notes[0].starts_with("left out 0000:b7:00.0, 0000:b8:00.0, 0000:b9:00.0, 0000:ba:00.0, 0000:bb:00.0, 0000:bc:00.0: NVSwitches stay"), "{:?}", cfg.notes);
        assert!(!cfg.compute_ini().contains("1af1"));
        // Full: everything in one request.
        let mut req = request("2025.1", devices.clone());
        req.fabric = Some(Fabric::Full);
        let cfg = NovaConfig::build(&inv, req).unwrap();
        assert_eq!(
            cfg.flavor_property(),
            "pci_passthrough:alias=nvidia-a100-sxm4-40gb:8,nvidia-a100-nvswitch:6"
        );
        // Only one switch of a pair selected (shared groups without a fabric
        // rule would let two VMs split them): left out with the reason.
        let mut req = request("2025.1", vec![devices[0].clone(), devices[8].clone()]);
        req.fabric = Some(Fabric::Full);
        let cfg = NovaConfig::build(&inv, req).unwrap();
        assert_eq!(cfg.devices.len(), 1);
        assert!(
            cfg.notes.iter().any(
                |n| n.contains("left out 0000:b7:00.0: IOMMU group 20 also holds 0000:b8:00.0")
            ),
            "{:?}",
            cfg.notes
        );
    }

    #[test]
    fn shared_groups_are_requested_whole_through_linked_aliases() {
        // Switch pairs without the fabric rule in play (another vendor's
        // bridge-like endpoints): every alias touching a shared group is
        // requested whole.
        let (inv, mut devices) = hgx_paired();
        for d in devices.iter_mut().skip(8) {
            d.vendor = VendorId(0x1234);
            d.derived_name = "acme-switch".into();
        }
        let mut inv = inv;
        for d in inv
            .devices
            .iter_mut()
            .filter(|d| d.ids.device == DeviceId(0x1af1))
        {
            d.ids.vendor = VendorId(0x1234);
        }
        let cfg = NovaConfig::build(&inv, request("2025.1", devices)).unwrap();
        assert_eq!(
            cfg.flavor_property(),
            "pci_passthrough:alias=nvidia-a100-sxm4-40gb:1,acme-switch:6"
        );
        assert!(cfg
            .notes
            .iter()
            .any(|n| n.contains("share IOMMU group 20, which VFIO opens in one VM only")));
    }

    #[test]
    fn placement_tags_and_their_releases() {
        let devices = vec![dev(
            "25:00.0",
            0x20b0,
            NovaDeviceType::Pf,
            Binding::Declared,
        )];
        for (release, why) in [
            ("yoga", "has neither"),
            ("zed", "cannot schedule them there"),
        ] {
            let mut req = request(release, devices.clone());
            req.placement = Some(PlacementRequest::default());
            let err = NovaConfig::build(&host(1), req).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        let mut req = request("2023.1", devices.clone());
        req.placement = Some(PlacementRequest::default());
        let cfg = NovaConfig::build(&host(1), req).unwrap();
        assert!(cfg.compute_ini().contains("report_in_placement = True\n"));
        assert!(cfg.controller_ini().contains("pci_in_placement = True\n"));
        assert!(cfg.specs[0]
            .json()
            .contains("\"resource_class\": \"CUSTOM_PCI_10DE_20B0\""));
        assert!(cfg.aliases[0]
            .json()
            .contains("\"resource_class\": \"CUSTOM_PCI_10DE_20B0\""));
        assert!(cfg
            .notes
            .iter()
            .any(|n| n.contains("cannot be switched off")));
        let mut req = request("2024.1", devices.clone());
        req.placement = Some(PlacementRequest {
            resource_class: Some("a100_gpu".into()),
            traits: vec!["nvlink".into(), "CUSTOM_FAST".into()],
        });
        let cfg = NovaConfig::build(&host(1), req).unwrap();
        assert!(cfg.aliases[0].json().ends_with(
            "\"resource_class\": \"CUSTOM_A100_GPU\", \"traits\": \"CUSTOM_NVLINK,CUSTOM_FAST\"}"
        ));
        for bad in ["", "a-b", "CUSTOM_", &"x".repeat(250)] {
            assert!(custom_name("trait", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn live_migratable_is_never_for_gpus() {
        let gpu = dev("25:00.0", 0x20b0, NovaDeviceType::Pf, Binding::Declared);
        let mut nic = dev("3b:00.3", 0x1018, NovaDeviceType::Vf, Binding::Declared);
        nic.vendor = VendorId(0x15b3);
        nic.class = ClassCode(0x020000);
        let mut req = request("2024.2", vec![nic.clone()]);
        req.live_migratable = true;
        assert!(matches!(
            NovaConfig::build(&host(1), req),
            Err(NovaError::LiveMigratableTooOld(_))
        ));
        let mut req = request("2025.1", vec![gpu]);
        req.live_migratable = true;
        assert!(matches!(
            NovaConfig::build(&host(1), req),
            Err(NovaError::LiveMigratableGpu(_))
        ));
        let mut req = request("2025.1", vec![nic]);
        req.live_migratable = true;
        let cfg = NovaConfig::build(&host(1), req).unwrap();
        assert!(cfg.specs[0]
            .json()
            .ends_with("\"live_migratable\": \"yes\"}"));
        assert!(cfg.aliases[0]
            .json()
            .ends_with("\"live_migratable\": \"yes\"}"));
    }

    fn reading(mode: Option<Fabric>) -> FabricReading {
        FabricReading {
            mode,
            evidence: "NVSwitch 0000:b7:00.0 on nvidia-nvswitch; Fabric Manager neither enabled nor running".to_string(),
            fabric_manager: None,
        }
    }

    #[test]
    fn the_fabric_comes_from_the_option_or_the_host() {
        let switch: PciAddress = "b7:00.0".parse().unwrap();
        let gpu: PciAddress = "25:00.0".parse().unwrap();
        // Read from the host when the board is selected, said so.
        let full = reading(Some(Fabric::Full));
        let d = decide_fabric(None, Some(&full), Some((gpu, false))).unwrap();
        assert_eq!(
            (d.mode, d.source),
            (Some(Fabric::Full), Some(FabricSource::Host))
        );
        assert!(
            d.notes[0].starts_with("NVLink fabric full, read from the host: NVSwitch 0000:b7:00.0")
        );
        // Not needed when nothing of the board is selected, nor without NVSwitches.
        let silent = reading(None);
        assert_eq!(decide_fabric(None, Some(&silent), None).unwrap().mode, None);
        assert_eq!(
            decide_fabric(None, None, Some((gpu, false))).unwrap().mode,
            None
        );
        // Asked for, with the host's reason, when the host does not say.
        let err = decide_fabric(None, Some(&silent), Some((switch, true))).unwrap_err();
        assert!(err.to_string().starts_with(
            "0000:b7:00.0 is an NVSwitch and the host does not say how its NVLink fabric runs (NVSwitch 0000:b7:00.0 on nvidia-nvswitch; Fabric Manager neither enabled nor running): choose how the NVLink fabric runs: --fabric shared"
        ), "{err}");
        let err = decide_fabric(None, Some(&silent), Some((gpu, false))).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("0000:25:00.0 is a GPU of an HGX board"),
            "{err}"
        );
        // --fabric wins; a contradiction is said, agreement and silence are not.
        let d = decide_fabric(Some(Fabric::Shared), Some(&full), Some((gpu, false))).unwrap();
        assert_eq!(
            (d.mode, d.source),
            (Some(Fabric::Shared), Some(FabricSource::Option))
        );
        assert!(
            d.notes[0].starts_with(
                "--fabric shared contradicts the host, which runs its NVLink fabric full"
            ),
            "{:?}",
            d.notes
        );
        assert!(decide_fabric(Some(Fabric::Full), Some(&full), None)
            .unwrap()
            .notes
            .is_empty());
        assert!(decide_fabric(Some(Fabric::Full), Some(&silent), None)
            .unwrap()
            .notes
            .is_empty());
        assert!(
            decide_fabric(Some(Fabric::Full), None, None).unwrap().notes[0].contains("no NVSwitch")
        );
    }

    #[test]
    fn train_keeps_its_zone_filter_unless_placement_takes_over() {
        let gpus = || {
            vec![dev(
                "25:00.0",
                0x20b0,
                NovaDeviceType::Pf,
                Binding::Declared,
            )]
        };
        let cfg = NovaConfig::build(&host(1), request("train", gpus())).unwrap();
        let ini = cfg.controller_ini();
        assert!(ini.contains("\nenabled_filters = AvailabilityZoneFilter,ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter,ServerGroupAntiAffinityFilter,ServerGroupAffinityFilter,PciPassthroughFilter\n"), "{ini}");
        assert!(ini.contains("# Before upgrading to 2023.2, which removed AvailabilityZoneFilter, drop it from this list"), "{ini}");
        assert!(!ini.contains("[scheduler]"), "{ini}");
        assert!(!cfg.commands()[0].starts_with("nova-manage"));

        let mut req = request("train", gpus());
        req.az_prefilter = true;
        let cfg = NovaConfig::build(&host(1), req).unwrap();
        let ini = cfg.controller_ini();
        assert!(ini.contains("\nenabled_filters = ComputeFilter,"), "{ini}");
        assert!(ini.contains("[scheduler]\n# Placement filters hosts by availability zone, in place of AvailabilityZoneFilter; run nova-manage placement sync_aggregates first\nquery_placement_for_availability_zone = True\n"), "{ini}");
        assert_eq!(cfg.commands()[0], "nova-manage placement sync_aggregates");
        assert!(cfg
            .notes
            .iter()
            .any(|n| n.starts_with("--az-prefilter: AvailabilityZoneFilter is left out")));

        // Xena on: as before, and --az-prefilter adds nothing but a note.
        let mut req = request("xena", gpus());
        req.az_prefilter = true;
        let cfg = NovaConfig::build(&host(1), req).unwrap();
        assert!(!cfg.controller_ini().contains("AvailabilityZoneFilter"));
        assert!(!cfg.controller_ini().contains("[scheduler]"));
        assert_eq!(cfg.commands().len(), 2);
        assert!(cfg
            .notes
            .iter()
            .any(|n| n.contains("filters hosts by availability zone in Placement already")));
    }
}
