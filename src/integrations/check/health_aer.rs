//! `health.aer.ADDRESS`: errors counted since the baseline, on the device
//! (its PF for a VF) and on every port above it, since errors are often
//! counted at the link partner. A rise in fatal errors is CRITICAL, in
//! nonfatal errors WARNING, and correctable errors above a rate WARNING.
//! Where the host cannot count by design the family is not judged
//! (`health_input::not_judged`, OK unless check.toml says otherwise): the
//! firmware owns AER below the root port (no `pcie002` service: the
//! counters stay 0), a device on a root bus (no root port), no AER
//! capability on the path.
//!
//! The baseline (per function: counts, when, boot id, identity) is taken
//! silently when a function is first seen and on `check --new-aer-baseline`.
//! After a reboot, a re-enumeration (a counter went down) or with another
//! card in the slot (IDs, revision or serial differ) the counters restarted
//! at 0, so everything they count happened after the last baseline: the
//! counts are judged as new, and the baseline moves to the restart (all 0),
//! so a rise stays reported until `--new-aer-baseline`. The correctable rate
//! is measured from a reference renewed every `correctable_window_hours`,
//! over at least one hour.

use super::health_input::{device_result, not_judged, subject, HealthInput};
use super::*;
use crate::model::health::{AerTotals, BaselineEntry, FunctionHealth, NotJudged};

/// What was decided for one function with AER counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The counts since the baseline (all zero for a new one).
    pub rise: AerTotals,
    /// Correctable errors per hour since the rate's reference.
    pub per_hour: f64,
    /// The hours that rate is over (at least 1).
    pub hours: f64,
    /// Why a new baseline was taken without judging, if one was.
    pub new: Option<&'static str>,
    /// Why the counters restarted since the baseline, and what the baseline
    /// held: the counts now are judged as new.
    pub restarted: Option<(&'static str, AerTotals)>,
    /// The entry to save: a new baseline, the restart, or a renewed rate
    /// reference.
    pub update: Option<BaselineEntry>,
}

/// Why a function's counters restarted since `e` was taken, if they did.
fn restart(
    h: &HealthInput,
    e: &BaselineEntry,
    f: &FunctionHealth,
    now: &AerTotals,
) -> Option<&'static str> {
    let differ =
        |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(a), Some(b)) if a != b);
    if differ(&e.boot_id, &h.facts.boot_id) {
        Some("after a reboot")
    } else if differ(&e.identity, &f.identity) {
        Some("another card: IDs changed")
    } else if differ(&e.serial, &f.serial) {
        Some("another card: serial number changed")
    } else if now.went_down_from(&e.totals) {
        Some("enumerated again")
    } else {
        None
    }
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
            // An entry for this function as it is now, counting from `totals`.
            let entry = |totals: AerTotals, since: u64, base: u64| BaselineEntry {
                boot_id: h.facts.boot_id.clone(),
                identity: f.identity.clone(),
                serial: f.serial.clone(),
                taken_at: h.now,
                totals,
                correctable_since: since,
                correctable_base: base,
            };
            let fresh = |reason| Decision {
                rise: AerTotals::default(),
                per_hour: 0.0,
                hours: 1.0,
                new: Some(reason),
                restarted: None,
                update: Some(entry(now, h.now, now.correctable)),
            };
            let decision = match baseline.functions.get(&f.address) {
                _ if h.new_baseline => fresh("asked for"),
                None => fresh("first seen"),
                Some(e) => {
                    let restarted = restart(h, e, f, &now).map(|why| (why, e.totals));
                    // After a restart the baseline is the counters' zero; the
                    // correctable rate keeps its reference time.
                    let base = match restarted {
                        Some(_) => entry(AerTotals::default(), e.correctable_since, 0),
                        None => e.clone(),
                    };
                    let hours = h.now.saturating_sub(base.correctable_since) as f64 / 3600.0;
                    let rising = now.correctable.saturating_sub(base.correctable_base) as f64;
                    let update = if hours >= window {
                        Some(BaselineEntry {
                            correctable_since: h.now,
                            correctable_base: now.correctable,
                            ..base.clone()
                        })
                    } else {
                        restarted.is_some().then(|| base.clone())
                    };
                    Decision {
                        rise: AerTotals {
                            correctable: now.correctable.saturating_sub(base.totals.correctable),
                            nonfatal: now.nonfatal.saturating_sub(base.totals.nonfatal),
                            fatal: now.fatal.saturating_sub(base.totals.fatal),
                        },
                        per_hour: rising / hours.max(1.0),
                        hours: hours.max(1.0),
                        new: None,
                        restarted,
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

/// "3 fatal, 0 nonfatal, 12 correctable".
fn counts(t: &AerTotals) -> String {
    format!(
        "{} fatal, {} nonfatal, {} correctable",
        t.fatal, t.nonfatal, t.correctable
    )
}

/// The remedy of a `firmware_first_aer` verdict an operator raised above OK.
const FIRMWARE_FIRST_REMEDY: &str = "read the firmware's (BMC's) error log (ipmitool sel elist, or the BMC's event log); Linux owns AER when the firmware grants it through ACPI _OSC (pcie_ports=native forces it, at the risk of both handling errors); [not_judged] firmware_first_aer in /etc/vfioctl/check.toml sets this verdict";
const NO_CAPABILITY_REMEDY: &str = "nothing on the path can count errors: watch dmesg for the device's errors; [not_judged] no_aer_capability in /etc/vfioctl/check.toml sets this verdict";

pub(super) fn verdict(
    h: &HealthInput,
    plan: &BTreeMap<PciAddress, Decision>,
    dev: &PciDevice,
) -> CheckResult {
    let id = format!("health.aer.{}", dev.address);
    let (at, prefix) = subject(dev);
    let Some(root_port) = h.facts.root_port(at) else {
        return not_judged(
            h,
            id,
            dev.address,
            NotJudged::NoRootPort,
            format!("{prefix}on a root bus (an integrated endpoint, or a device a hypervisor put on the root complex): no root port whose AER service would count its errors"),
            "watch dmesg for the device's errors; [not_judged] no_root_port in /etc/vfioctl/check.toml sets this verdict",
        );
    };
    let counted: Vec<(PciAddress, &Decision, AerTotals)> = h
        .facts
        .path(at)
        .into_iter()
        .filter_map(|f| Some((f.address, plan.get(&f.address)?, f.aer.as_ref()?.totals)))
        .collect();
    if counted.is_empty() {
        return not_judged(
            h,
            id,
            dev.address,
            NotJudged::NoAerCapability,
            format!("{prefix}no AER counters on it or the ports above it up to root port {root_port} (no AER capability, or a kernel without CONFIG_PCIEAER)"),
            NO_CAPABILITY_REMEDY,
        );
    }
    if !h
        .facts
        .aer_service
        .get(&root_port)
        .copied()
        .unwrap_or(false)
    {
        return not_judged(
            h,
            id,
            dev.address,
            NotJudged::FirmwareFirstAer,
            format!("{prefix}the OS does not own AER below root port {root_port} (no /sys/bus/pci_express/devices/{root_port}:pcie002: firmware-first, or pcie_ports=compat): the counters stay 0 (firmware-first: the firmware's, BMC's, log has its errors)"),
            FIRMWARE_FIRST_REMEDY,
        );
    }
    let t = &h.thresholds.aer;
    let mut problems = Vec::new();
    let look = "read the AER lines in dmesg for the error and the device reporting it; once dealt with, vfioctl check --new-aer-baseline";
    for (address, d, _) in &counted {
        // Said once per function, with its first problem.
        let mut since = d.restarted.map(|(why, held)| {
            format!(
                " since its counters restarted ({why}; the baseline held {})",
                counts(&held)
            )
        });
        let mut said = |text: String| format!("{text}{}", since.take().unwrap_or_default());
        if d.rise.fatal >= t.fatal_rise {
            problems.push((
                Verdict::Critical,
                said(format!(
                    "{prefix}{} new fatal error(s) at {address}",
                    d.rise.fatal
                )),
                look,
            ));
        }
        if d.rise.nonfatal >= t.nonfatal_rise {
            problems.push((
                Verdict::Warning,
                said(format!(
                    "{prefix}{} new nonfatal error(s) at {address}",
                    d.rise.nonfatal
                )),
                look,
            ));
        }
        if d.per_hour > t.correctable_per_hour {
            problems.push((
                Verdict::Warning,
                said(format!(
                    "{prefix}{:.1} correctable error(s) per hour at {address} over {:.1} h (above {})",
                    d.per_hour, d.hours, t.correctable_per_hour
                )),
                "a marginal link: reseat the card, check its riser and cooling; dmesg names the error type",
            ));
        }
    }
    let mut reasons: Vec<&str> = counted.iter().filter_map(|(_, d, _)| d.new).collect();
    reasons.dedup();
    let mut restarts: Vec<&str> = counted
        .iter()
        .filter_map(|(_, d, _)| Some(d.restarted?.0))
        .collect();
    restarts.dedup();
    let sum = |totals: &mut dyn Iterator<Item = AerTotals>| {
        totals.fold(AerTotals::default(), |s, c| AerTotals {
            correctable: s.correctable + c.correctable,
            nonfatal: s.nonfatal + c.nonfatal,
            fatal: s.fatal + c.fatal,
        })
    };
    let path = format!("{} function(s) up to root port {root_port}", counted.len());
    let ok =
        if !reasons.is_empty() {
            format!(
                "{prefix}{} ({}{}) on {path}: {} since enumeration",
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
                counts(&sum(&mut counted.iter().map(|(_, _, c)| *c)))
            )
        } else if !restarts.is_empty() {
            format!(
            "{prefix}counters restarted ({}): no new errors since on {path}; the baseline held {}",
            restarts.join(", "),
            counts(&sum(&mut counted.iter().filter_map(|(_, d, _)| Some(d.restarted?.1))))
        )
        } else {
            format!("{prefix}no new errors on {path}")
        };
    let evidence = counted
        .iter()
        .map(|(a, d, c)| {
            let mut line = format!(
                "{a}: {}; since the baseline +{}, +{}, +{}",
                counts(c),
                d.rise.fatal,
                d.rise.nonfatal,
                d.rise.correctable
            );
            if let Some((why, held)) = d.restarted {
                line.push_str(&format!(
                    "; counters restarted ({why}), the baseline held {}",
                    counts(&held)
                ));
            }
            line
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
