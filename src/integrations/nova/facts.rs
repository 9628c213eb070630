//! What each OpenStack release's Nova knows, as data: the releases by
//! name, the facts (an option, a tag, a filter) with the first and last
//! Nova major version that has each, and the default scheduler filters.
//! Every entry names the place in Nova's source at the release tag it was
//! read from; the Nova oracle (tests/nova) reads the newest facts and every
//! release's default filters again from Nova itself.
//!
//! Data only: how a release is parsed and what it makes of these facts is
//! `release.rs`.

/// (Nova major version, name) from Train on; series numbers start with Antelope.
pub(super) const RELEASES: &[(u16, &str)] = &[
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
pub(super) const TOO_OLD: &[&str] = &[
    "austin", "bexar", "cactus", "diablo", "essex", "folsom", "grizzly", "havana", "icehouse",
    "juno", "kilo", "liberty", "mitaka", "newton", "ocata", "pike", "queens", "rocky", "stein",
];

/// The first release with a `YEAR.N` series number (2023.1, Nova 27).
pub(super) const FIRST_SERIES: u16 = 27;

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
/// The `one_time_use` device spec tag: after a VM used a type-PCI or
/// type-PF device whose spec carries it, Nova keeps its Placement inventory
/// reserved (`reserved = total`, trait `HW_PCI_ONE_TIME_USE`) until someone
/// else un-reserves it. Refused without `[pci] report_in_placement`, and on
/// a VF's spec by the Placement translator.
pub const ONE_TIME_USE: Fact = Fact {
    since: 32,
    until: None,
    source: "nova/pci/devspec.py at 32.0.0: _normalize_device_spec_tag('one_time_use'), PciConfigInvalidSpec without pci.report_in_placement; nova/compute/pci_placement_translator.py: HW_PCI_ONE_TIME_USE, reserved = total once allocated, refused on a VF (add_child)",
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
    ("one_time_use", ONE_TIME_USE),
    ("availability_zone_filter", AZ_FILTER),
    ("availability_zone_prefilter_option", AZ_PREFILTER_OPTION),
    ("availability_zone_prefilter_default", AZ_PREFILTER_DEFAULT),
];

/// The filter Nova's PCI passthrough needs in `[filter_scheduler] enabled_filters`.
pub const PCI_FILTER: &str = "PciPassthroughFilter";
pub(super) const AZ_FILTER_NAME: &str = "AvailabilityZoneFilter";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::nova::Release;

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
        // zone filtering on (always on since); one_time_use came with 2025.2.
        assert!(epoxy.iter().all(|f| f.known
            != matches!(
                f.name,
                "availability_zone_filter" | "availability_zone_prefilter_option" | "one_time_use"
            )));
        let flamingo = Release::parse("2025.2").unwrap();
        assert!(flamingo.knows(ONE_TIME_USE) && !Release::EPOXY.knows(ONE_TIME_USE));
    }
}
