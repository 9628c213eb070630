//! An OpenStack release: parsed from a name (`zed`) or a series number
//! (`2023.1`), shown with both, and what it makes of the facts: which it
//! knows, the option naming device specs, and the scheduler filters to
//! configure ([`SchedulerFilters`]).
//!
//! Takes the release table, the facts and the default filters from
//! `facts.rs`, and [`NovaError`] from `error.rs`.

use std::fmt;

use serde::Serialize;

use super::error::NovaError;
use super::facts::{
    Fact, AZ_FILTER_NAME, AZ_PREFILTER_OPTION, DEFAULT_FILTERS, DEVICE_SPEC_OPTION, FACTS,
    FIRST_SERIES, PCI_FILTER, RELEASES, TOO_OLD,
};

/// An OpenStack release, by the major version of Nova it ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Release {
    nova: u16,
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::nova::{
        AZ_FILTER, AZ_PREFILTER_DEFAULT, LIVE_MIGRATABLE, MANAGED_TAG, PCI_IN_PLACEMENT,
    };

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
}
