//! `health.aer.ADDRESS`: errors counted since the baseline, on the device
//! (its PF for a VF) and on every port above it, since errors are often
//! counted at the link partner. A rise in fatal errors is CRITICAL, in
//! nonfatal errors WARNING, and correctable errors above a rate WARNING.
//! Without the OS's AER service at the root port the counters mean nothing:
//! UNKNOWN, never OK.
//!
//! The baseline (per function: counts, when, boot id, identity) is taken
//! when a function is first seen, after a reboot, after re-enumeration (a
//! counter went down), for another card (IDs, revision or serial differ),
//! and on `check --new-aer-baseline`; a new baseline raises nothing. The
//! correctable rate is measured from a reference renewed every
//! `correctable_window_hours`, over at least one hour.

use super::health::{device_result, subject, HealthInput};
use super::*;
use crate::model::health::{AerTotals, BaselineEntry};

/// What was decided for one function with AER counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The counts since the baseline (all zero for a new one).
    pub rise: AerTotals,
    /// Correctable errors per hour since the rate's reference.
    pub per_hour: f64,
    /// The hours that rate is over (at least 1).
    pub hours: f64,
    /// Why a new baseline was taken, if one was.
    pub new: Option<&'static str>,
    /// The entry to save: a new baseline, or a renewed rate reference.
    pub update: Option<BaselineEntry>,
}

/// A decision for every function whose counters the judged devices are
/// judged by (devices, their PFs, the ports above them).
pub fn plan(h: &HealthInput) -> BTreeMap<PciAddress, Decision> {
    let empty = Default::default();
    let baseline = h.baseline.as_ref().unwrap_or(&empty);
    let window = h.thresholds.aer.correctable_window_hours;
    let mut out = BTreeMap::new();
    for dev in &h.judged {
        let (at, _) = subject(dev);
        for f in h.facts.path(at) {
            let Some(aer) = &f.aer else { continue };
            if out.contains_key(&f.address) {
                continue;
            }
            let now = aer.totals;
            let fresh = |reason| Decision {
                rise: AerTotals::default(),
                per_hour: 0.0,
                hours: 1.0,
                new: Some(reason),
                update: Some(BaselineEntry {
                    boot_id: h.facts.boot_id.clone(),
                    identity: f.identity.clone(),
                    serial: f.serial.clone(),
                    taken_at: h.now,
                    totals: now,
                    correctable_since: h.now,
                    correctable_base: now.correctable,
                }),
            };
            let differ = |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(a), Some(b)) if a != b);
            let decision = match baseline.functions.get(&f.address) {
                _ if h.new_baseline => fresh("asked for"),
                None => fresh("first seen"),
                Some(e) if differ(&e.boot_id, &h.facts.boot_id) => fresh("after a reboot"),
                Some(e) if differ(&e.identity, &f.identity) => fresh("another card: IDs changed"),
                Some(e) if differ(&e.serial, &f.serial) => {
                    fresh("another card: serial number changed")
                }
                Some(e) if now.went_down_from(&e.totals) => {
                    fresh("counters restarted: enumerated again")
                }
                Some(e) => {
                    let hours = h.now.saturating_sub(e.correctable_since) as f64 / 3600.0;
                    let rising = now.correctable.saturating_sub(e.correctable_base) as f64;
                    let update = (hours >= window).then(|| BaselineEntry {
                        correctable_since: h.now,
                        correctable_base: now.correctable,
                        ..e.clone()
                    });
                    Decision {
                        rise: AerTotals {
                            correctable: now.correctable - e.totals.correctable,
                            nonfatal: now.nonfatal - e.totals.nonfatal,
                            fatal: now.fatal - e.totals.fatal,
                        },
                        per_hour: rising / hours.max(1.0),
                        hours: hours.max(1.0),
                        new: None,
                        update,
                    }
                }
            };
            out.insert(f.address, decision);
        }
    }
    out
}

/// The baseline entries a plan takes or renews, to save.
pub fn updates(plan: &BTreeMap<PciAddress, Decision>) -> BTreeMap<PciAddress, BaselineEntry> {
    plan.iter()
        .filter_map(|(a, d)| Some((*a, d.update.clone()?)))
        .collect()
}

pub(super) fn verdict(
    h: &HealthInput,
    plan: &BTreeMap<PciAddress, Decision>,
    dev: &PciDevice,
) -> CheckResult {
    let id = format!("health.aer.{}", dev.address);
    let (at, prefix) = subject(dev);
    let unknown = |message: String, remedy: &'static str| {
        device_result(
            id.clone(),
            dev.address,
            vec![(Verdict::Unknown, format!("{prefix}{message}"), remedy)],
            String::new(),
            vec![],
        )
    };
    let Some(root_port) = h.facts.root_port(at) else {
        return unknown(
            "on a root bus: no root port whose AER service would count its errors".into(),
            "",
        );
    };
    if !h
        .facts
        .aer_service
        .get(&root_port)
        .copied()
        .unwrap_or(false)
    {
        return unknown(
            format!("the OS does not own AER below root port {root_port} (no /sys/bus/pci_express/devices/{root_port}:pcie002): firmware handles the errors, and the counters stay 0"),
            "read the firmware's (BMC's) error log; Linux owns AER when the firmware grants it (ACPI _OSC) or with pcie_ports=native",
        );
    }
    let counted: Vec<(PciAddress, &Decision, AerTotals)> = h
        .facts
        .path(at)
        .into_iter()
        .filter_map(|f| Some((f.address, plan.get(&f.address)?, f.aer.as_ref()?.totals)))
        .collect();
    if counted.is_empty() {
        return unknown(
            "no AER counters on it or the ports above it (no AER capability, or a kernel without CONFIG_PCIEAER)".into(),
            "",
        );
    }
    let t = &h.thresholds.aer;
    let mut problems = Vec::new();
    let look = "read the AER lines in dmesg for the error and the device reporting it; once dealt with, vfioctl check --new-aer-baseline";
    for (address, d, _) in &counted {
        if d.rise.fatal >= t.fatal_rise {
            problems.push((
                Verdict::Critical,
                format!("{prefix}{} new fatal error(s) at {address}", d.rise.fatal),
                look,
            ));
        }
        if d.rise.nonfatal >= t.nonfatal_rise {
            problems.push((
                Verdict::Warning,
                format!(
                    "{prefix}{} new nonfatal error(s) at {address}",
                    d.rise.nonfatal
                ),
                look,
            ));
        }
        if d.per_hour > t.correctable_per_hour {
            problems.push((
                Verdict::Warning,
                format!(
                    "{prefix}{:.1} correctable error(s) per hour at {address} over {:.1} h (above {})",
                    d.per_hour, d.hours, t.correctable_per_hour
                ),
                "a marginal link: reseat the card, check its riser and cooling; dmesg names the error type",
            ));
        }
    }
    let mut reasons: Vec<&str> = counted.iter().filter_map(|(_, d, _)| d.new).collect();
    reasons.dedup();
    let sum = counted
        .iter()
        .fold(AerTotals::default(), |s, (_, _, c)| AerTotals {
            correctable: s.correctable + c.correctable,
            nonfatal: s.nonfatal + c.nonfatal,
            fatal: s.fatal + c.fatal,
        });
    let ok = if reasons.is_empty() {
        format!(
            "{prefix}no new errors on {} function(s) up to root port {root_port}",
            counted.len()
        )
    } else {
        format!(
            "{prefix}{} ({}{}) on {} function(s) up to root port {root_port}: {} fatal, {} nonfatal, {} correctable since enumeration",
            if h.keeps_baseline {
                "baseline taken"
            } else {
                "no baseline to judge against"
            },
            reasons.join(", "),
            if h.keeps_baseline {
                ""
            } else {
                "; vfioctl check takes one"
            },
            counted.len(),
            sum.fatal,
            sum.nonfatal,
            sum.correctable
        )
    };
    let evidence = counted
        .iter()
        .map(|(a, d, c)| {
            format!(
                "{a}: {} fatal, {} nonfatal, {} correctable; since the baseline +{}, +{}, +{}",
                c.fatal,
                c.nonfatal,
                c.correctable,
                d.rise.fatal,
                d.rise.nonfatal,
                d.rise.correctable
            )
        })
        .collect();
    device_result(id, dev.address, problems, ok, evidence)
}

/// `health.aer_baseline`: UNKNOWN when the baseline cannot be read or the
/// entries taken this run cannot be saved (rises cannot be told then).
pub(super) fn baseline_results(h: &HealthInput) -> Vec<CheckResult> {
    let mut out = Vec::new();
    if let Err(e) = &h.baseline {
        out.push(result(
            "health.aer_baseline",
            Verdict::Unknown,
            format!("{e}: judged as if there were none"),
            vec![],
            Some("move the file aside; vfioctl check (as root) takes a new baseline"),
        ));
    }
    if let Some(Err(e)) = &h.saved {
        out.push(result(
            "health.aer_baseline",
            Verdict::Unknown,
            format!("the AER baseline taken now cannot be saved ({e}): a rise is told only against a saved one"),
            vec![],
            Some("run vfioctl check as root (monitoring does): it keeps the baseline in /var/lib/vfioctl"),
        ));
    }
    out
}
