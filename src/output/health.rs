//! The health facts for monitoring (Prometheus text format) and for people
//! (`show`'s health section): the raw values beside the verdicts.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::integrations::check::HealthInput;
use crate::model::health::{gts_text, FunctionHealth, HealthFacts, ResetMethods};
use crate::model::{PciAddress, SriovRole};

/// The width and speed a path allows (`HealthFacts::expected`).
type Expected = (Option<u32>, Option<f64>);

/// A label value escaped for the text format (backslash, quote, newline).
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: HELP and TYPE, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// The series of the judged devices and of every port above them:
/// link width and speed (current, maximum, and what the path allows), AER
/// counters, reset methods and power state.
pub fn prometheus(h: &HealthInput) -> String {
    let facts = &h.facts;
    let mut out = String::new();
    let addr = |a: &PciAddress| format!("address=\"{a}\"");
    let functions: Vec<&FunctionHealth> = facts.functions.values().collect();
    let links = |value: &dyn Fn(&FunctionHealth) -> Option<String>| -> Vec<(String, String)> {
        functions
            .iter()
            .filter_map(|f| Some((addr(&f.address), value(f)?)))
            .collect()
    };
    let link = |f: &FunctionHealth| f.link.clone().filter(|l| l.has_link());
    family(
        &mut out,
        "vfioctl_pcie_link_width",
        "gauge",
        "Current PCIe link width (lanes) of a judged device or a port above one; 63 is a dead link.",
        &links(&|f| Some(link(f)?.current_width?.to_string())),
    );
    family(
        &mut out,
        "vfioctl_pcie_link_width_max",
        "gauge",
        "Maximum PCIe link width (lanes) the function supports.",
        &links(&|f| Some(link(f)?.max_width?.to_string())),
    );
    family(
        &mut out,
        "vfioctl_pcie_link_speed_gts",
        "gauge",
        "Current PCIe link speed in GT/s.",
        &links(&|f| Some(gts_text(link(f)?.current_gts()?))),
    );
    family(
        &mut out,
        "vfioctl_pcie_link_speed_max_gts",
        "gauge",
        "Maximum PCIe link speed in GT/s the function supports.",
        &links(&|f| Some(gts_text(link(f)?.max_gts()?))),
    );
    // What each judged device's path allows (a VF's is its PF's).
    let subjects: BTreeSet<PciAddress> = h
        .judged
        .iter()
        .map(|d| match d.sriov {
            SriovRole::Vf { physfn } => physfn,
            _ => d.address,
        })
        .collect();
    let expected: Vec<(PciAddress, Expected)> = subjects
        .iter()
        .filter(|a| facts.functions.get(a).and_then(link).is_some())
        .map(|a| (*a, facts.expected(*a)))
        .collect();
    let samples = |pick: &dyn Fn(&Expected) -> Option<String>| {
        expected
            .iter()
            .filter_map(|(a, e)| Some((addr(a), pick(e)?)))
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        "vfioctl_pcie_link_width_expected",
        "gauge",
        "The width a judged device's path allows: the narrowest maximum from it to its root port.",
        &samples(&|e| Some(e.0?.to_string())),
    );
    family(
        &mut out,
        "vfioctl_pcie_link_speed_expected_gts",
        "gauge",
        "The speed in GT/s a judged device's path allows: the slowest maximum from it to its root port.",
        &samples(&|e| Some(gts_text(e.1?))),
    );
    let mut aer = Vec::new();
    let mut rootport = Vec::new();
    for f in &functions {
        for (totals, into) in [
            (f.aer.as_ref().map(|a| a.totals), &mut aer),
            (f.rootport_aer, &mut rootport),
        ] {
            let Some(t) = totals else { continue };
            for (severity, count) in [
                ("correctable", t.correctable),
                ("nonfatal", t.nonfatal),
                ("fatal", t.fatal),
            ] {
                into.push((
                    format!("{},severity=\"{severity}\"", addr(&f.address)),
                    count.to_string(),
                ));
            }
        }
    }
    family(
        &mut out,
        "vfioctl_pcie_aer_errors_total",
        "counter",
        "AER errors the function reported since it was enumerated (aer_dev_*), by severity.",
        &aer,
    );
    family(
        &mut out,
        "vfioctl_pcie_aer_rootport_errors_total",
        "counter",
        "AER errors reported to a root port from below it since enumeration (aer_rootport_total_err_*), by severity.",
        &rootport,
    );
    family(
        &mut out,
        "vfioctl_device_reset_methods_info",
        "gauge",
        "The reset methods of a judged device in the kernel's order (reset_method); methods=\"\" when it has none.",
        &functions
            .iter()
            .filter_map(|f| {
                let methods = match f.reset.as_ref()? {
                    ResetMethods::Listed(m) => m.join(" "),
                    ResetMethods::None => String::new(),
                    ResetMethods::Unlisted | ResetMethods::Unreadable => return None,
                };
                Some((
                    format!("{},methods=\"{}\"", addr(&f.address), label(&methods)),
                    "1".to_string(),
                ))
            })
            .collect::<Vec<_>>(),
    );
    family(
        &mut out,
        "vfioctl_device_power_state_info",
        "gauge",
        "The power state of a judged device or a port above one (power_state: D0, D3hot, D3cold, error, unknown...).",
        &functions
            .iter()
            .filter_map(|f| {
                Some((
                    format!("{},state=\"{}\"", addr(&f.address), label(f.power_state.as_deref()?)),
                    "1".to_string(),
                ))
            })
            .collect::<Vec<_>>(),
    );
    out
}

/// The rows of `show`'s health section: (name, raw value) for the device
/// at `at` (a VF's PF: `device` is the VF) and each port above it.
pub fn facts_rows(
    facts: &HealthFacts,
    device: PciAddress,
    at: PciAddress,
) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for f in facts.path(at) {
        let who = if f.address == device {
            "device".to_string()
        } else if f.address == at {
            format!("PF {}", f.address)
        } else {
            format!("port {}", f.address)
        };
        let link = match f.link.as_ref().filter(|l| l.has_link()) {
            Some(l) if l.unreadable => "unreadable".to_string(),
            Some(l) => format!(
                "x{} of x{}, {} of {}",
                l.current_width.map_or("?".into(), |w| w.to_string()),
                l.max_width.map_or("?".into(), |w| w.to_string()),
                l.current_speed.as_deref().unwrap_or("?"),
                l.max_speed.as_deref().unwrap_or("?")
            ),
            None => "no PCIe link".to_string(),
        };
        let aer = match &f.aer {
            Some(a) => {
                let mut text = format!(
                    "{} fatal, {} nonfatal, {} correctable",
                    a.totals.fatal, a.totals.nonfatal, a.totals.correctable
                );
                if !a.nonzero.is_empty() {
                    text.push_str(&format!(" ({})", a.nonzero.join(", ")));
                }
                text
            }
            None => "no AER counters".to_string(),
        };
        rows.push((
            who,
            format!(
                "link {link}; AER {aer}; {}",
                f.power_state.as_deref().unwrap_or("power state ?")
            ),
        ));
    }
    rows
}
