//! The node_exporter textfile-collector format `check --prometheus` writes.
//! Every series about a function carries `address` and the four labels
//! node_exporter's `pcidevice` collector puts on its `node_pcidevice_*`
//! series, spelled as it spells them (procfs's `PciDeviceLocation.Strings`:
//! `segment` `%04x`, `bus` `%02x`, `device` `%02x`, `function` `%x`), so
//! that `on(instance, segment, bus, device, function)` joins the two. Every
//! name starts with `vfioctl_`: none is node_exporter's.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::integrations::check::{CheckResult, HealthInput, Verdict};
use crate::model::domain::VmFacts;
use crate::model::health::{gts_text, FunctionHealth, ResetMethods};
use crate::model::{PciAddress, SriovRole};

/// A label value escaped for the text format (backslash, quote, newline).
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A function's labels: `address="0000:25:00.0",segment="0000",bus="25",device="00",function="0"`.
pub fn location(a: &PciAddress) -> String {
    format!(
        "address=\"{a}\",segment=\"{:04x}\",bus=\"{:02x}\",device=\"{:02x}\",function=\"{:x}\"",
        a.domain, a.bus, a.device, a.function
    )
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

/// Everything `check --prometheus` writes: the verdicts (of the node, of
/// each check, of each device's), the health series, which device families
/// are not judged and why, and the libvirt domains naming each function.
pub fn render(results: &[CheckResult], status: Verdict, h: &HealthInput, vms: &VmFacts) -> String {
    let mut out = String::new();
    let verdicts = "0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN";
    let host: Vec<(String, String)> = results
        .iter()
        .filter(|r| r.device.is_none())
        .map(|r| {
            (
                format!("check=\"{}\"", label(&r.id)),
                r.status.exit_code().to_string(),
            )
        })
        .collect();
    // Written even when empty: the family is always there to alert on.
    let _ = writeln!(
        out,
        "# HELP vfioctl_check_status Verdict of one vfioctl check: {verdicts}.\n# TYPE vfioctl_check_status gauge"
    );
    for (labels, value) in &host {
        let _ = writeln!(out, "vfioctl_check_status{{{labels}}} {value}");
    }
    family(
        &mut out,
        "vfioctl_device_status",
        "gauge",
        &format!("Verdict of one check of one device: {verdicts}."),
        &results
            .iter()
            .filter_map(|r| {
                Some((
                    format!("check=\"{}\",{}", label(&r.id), location(&r.device?)),
                    r.status.exit_code().to_string(),
                ))
            })
            .collect::<Vec<_>>(),
    );
    let _ = writeln!(
        out,
        "# HELP vfioctl_node_status Overall verdict of vfioctl check.\n# TYPE vfioctl_node_status gauge\nvfioctl_node_status {}",
        status.exit_code()
    );
    family(
        &mut out,
        "vfioctl_device_not_judged_info",
        "gauge",
        "A health family of a device the host cannot report by design (reason: firmware_first_aer, no_pcie_link, no_root_port, no_aer_capability); its verdict is check.toml's [not_judged].",
        &results
            .iter()
            .filter_map(|r| {
                Some((
                    format!(
                        "check=\"{}\",{},reason=\"{}\"",
                        label(&r.id),
                        location(&r.device?),
                        r.not_judged?.key()
                    ),
                    "1".to_string(),
                ))
            })
            .collect::<Vec<_>>(),
    );
    out.push_str(&health_series(h));
    out.push_str(&vm_info(vms));
    out
}

/// `vfioctl_device_vm_info{address,...,domain,instance_uuid,state} 1`: one
/// series per function and domain whose XML names it.
fn vm_info(vms: &VmFacts) -> String {
    let mut lines = Vec::new();
    for d in vms.domains() {
        for u in d.all_devices() {
            let Some(addr) = u.device.address else {
                continue;
            };
            lines.push((
                format!(
                    "{},domain=\"{}\",instance_uuid=\"{}\",state=\"{}\"",
                    location(&addr),
                    label(&d.name),
                    label(&d.uuid),
                    label(d.state_label())
                ),
                "1".to_string(),
            ));
        }
    }
    lines.sort();
    lines.dedup();
    let mut out = String::new();
    family(
        &mut out,
        "vfioctl_device_vm_info",
        "gauge",
        "A libvirt domain names this PCI function (instance_uuid: the domain uuid, Nova's instance uuid).",
        &lines,
    );
    out
}

/// The width and speed a path allows (`HealthFacts::expected`).
type Expected = (Option<u32>, Option<f64>);

/// The series of the judged devices and of every port above them:
/// link width and speed (current, maximum, and what the path allows), AER
/// counters, reset methods and power state.
fn health_series(h: &HealthInput) -> String {
    let facts = &h.facts;
    let mut out = String::new();
    let addr = location;
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
