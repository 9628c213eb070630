//! Health checks: is each device fit to hand to the next VM? One result per
//! device and family (`health.FAMILY.ADDRESS`): link, aer (health_aer.rs),
//! reset, power, bars, and sriov for physical functions. Devices judged:
//! every declared device present, every device on a VFIO driver and, with
//! `check --all`, every GPU and NVSwitch. A VF's link and AER counters are
//! its PF's.

use super::health_aer;
use super::health_input::{device_result, not_judged, subject, verdict_of, HealthInput};
use super::*;
use crate::model::fabric::is_nvswitch;
use crate::model::health::{gts_text, Level, NotJudged, SpeedPolicy, DEAD_WIDTH};

/// The devices `check` judges, and which of them pass through. `decls` is
/// `None` when the declarations cannot be read.
pub fn judged<'a>(
    inv: &'a Inventory,
    decls: Option<&Declarations>,
    all: bool,
) -> (Vec<&'a PciDevice>, BTreeSet<PciAddress>) {
    let mut passthrough = BTreeSet::new();
    let judged = inv
        .devices
        .iter()
        .filter(|d| {
            let declared = decls.is_some_and(|decls| decls.governing(d).is_some());
            match judged_as(d.driver.as_ref(), d.class, d.ids, declared, all) {
                Some(true) => {
                    passthrough.insert(d.address);
                    true
                }
                Some(false) => true,
                None => false,
            }
        })
        .collect();
    (judged, passthrough)
}

/// The one rule for which functions are judged: `Some(true)` for one that
/// passes through (declared, or on a VFIO driver), `Some(false)` for a GPU
/// or NVSwitch judged only with `--all`, `None` for the rest.
pub(super) fn judged_as(
    driver: Option<&DriverName>,
    class: crate::model::ClassCode,
    ids: crate::model::DeviceIds,
    declared: bool,
    all: bool,
) -> Option<bool> {
    let on_vfio = driver.is_some_and(|d| d.kind() == DriverKind::Vfio);
    if on_vfio || declared {
        Some(true)
    } else {
        (all && (class.is_display() || is_nvswitch(ids.vendor, ids.device))).then_some(false)
    }
}

pub(super) fn health(f: &Facts) -> Vec<CheckResult> {
    judge(f.inv, &f.health)
}

/// Every health result: the thresholds' source, then each judged device's
/// families (`inv` supplies the PFs of judged VFs), then the baseline's.
pub fn judge(inv: &Inventory, h: &HealthInput) -> Vec<CheckResult> {
    let mut out = Vec::new();
    match &h.thresholds_from {
        Ok(None) => {}
        Ok(Some(path)) => out.push(result(
            "config.thresholds",
            Verdict::Ok,
            format!("health thresholds from {path}"),
            vec![],
            None,
        )),
        Err(e) => out.push(result(
            "config.thresholds",
            Verdict::Unknown,
            format!("{e}; the health checks use the default thresholds"),
            vec![],
            Some("fix the file named above (vfioctl(8), CHECK THRESHOLDS)"),
        )),
    }
    let aer = health_aer::plan(h);
    let mut pfs = BTreeSet::new();
    for dev in &h.judged {
        out.push(link(h, dev));
        out.push(health_aer::verdict(h, &aer, dev));
        out.push(reset(h, dev));
        out.push(power(h, dev));
        out.push(bars(h, dev));
        out.extend(sriov(dev));
        if let SriovRole::Vf { physfn } = dev.sriov {
            pfs.insert(physfn);
        }
    }
    // The PFs judged VFs depend on get their SR-IOV check too.
    for pf in pfs {
        if h.judged.iter().any(|d| d.address == pf) {
            continue;
        }
        if let Some(dev) = inv.device(&pf) {
            out.extend(sriov(dev));
        }
    }
    out.extend(health_aer::baseline_results(h));
    out
}

/// "x16 at 0000:25:00.0, 0000:24:00.0": the hops that read the same.
fn hops(readings: &[(String, PciAddress)]) -> Vec<String> {
    let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
    for (reading, at) in readings {
        match grouped.iter_mut().find(|(r, _)| r == reading) {
            Some((_, ats)) => ats.push(at.to_string()),
            None => grouped.push((reading.clone(), vec![at.to_string()])),
        }
    }
    grouped
        .into_iter()
        .map(|(r, ats)| format!("{r} at {}", ats.join(", ")))
        .collect()
}

/// The remedy of a `no_pcie_link` verdict an operator raised above OK.
const NO_LINK_REMEDY: &str = "a function without a PCIe link has none to judge: its health is its bars, reset and power checks; [not_judged] no_pcie_link in /etc/vfioctl/check.toml sets this verdict";

/// `health.link.ADDRESS`: every hop from the device up to its root port
/// runs at the width (and, while idle, the speed) the narrowest and slowest
/// end of the path allows.
fn link(h: &HealthInput, dev: &PciDevice) -> CheckResult {
    let id = format!("health.link.{}", dev.address);
    let (at, prefix) = subject(dev);
    let none = |verdict, message: String| {
        let mut r = result(
            &id,
            verdict,
            format!("{}: {prefix}{message}", dev.address),
            vec![],
            None,
        );
        r.device = Some(dev.address);
        r
    };
    let Some(own) = h.facts.functions.get(&at) else {
        return none(Verdict::Unknown, format!("{at} could not be read"));
    };
    if own.power_state.as_deref() == Some("D3cold") {
        return none(
            Verdict::Ok,
            "in D3cold, its link is down by design; judged once it is powered".into(),
        );
    }
    // Below a port every PCIe function has a link capability; one reading
    // 0 there cannot be judged (seen on a root port after a failed error
    // recovery). On a root bus it is an integrated endpoint: no link.
    let below_a_port = h.facts.root_port(at).is_some();
    let capless: Vec<(String, PciAddress)> = h
        .facts
        .path(at)
        .into_iter()
        .filter(|f| f.power_state.as_deref() != Some("D3cold"))
        .filter(|f| {
            f.link
                .as_ref()
                .is_some_and(|l| !l.unreadable && l.max_width == Some(0))
        })
        .filter(|_| below_a_port)
        .map(|f| ("max_link_width reads 0".to_string(), f.address))
        .collect();
    if !own.link.as_ref().is_some_and(|l| l.has_link()) && capless.is_empty() {
        return not_judged(
            h,
            id,
            dev.address,
            NotJudged::NoPcieLink,
            format!("{prefix}no PCIe link to judge (a conventional PCI function or an integrated endpoint)"),
            NO_LINK_REMEDY,
        );
    }
    let path = h.facts.linked_path(at);
    let links = || {
        path.iter()
            .map(|f| (f.address, f.link.as_ref().expect("linked")))
    };
    let (width, speed) = h.facts.expected(at);
    let t = &h.thresholds.link;
    let judge_speed = match t.speed {
        SpeedPolicy::Always => true,
        SpeedPolicy::Never => false,
        SpeedPolicy::Idle => own.enable == Some(0),
    };
    let (mut dead, mut narrow, mut slow, mut unread) = (vec![], vec![], vec![], vec![]);
    for (address, l) in links() {
        if l.unreadable {
            dead.push((
                "link status unreadable (the kernel cannot reach its config space: disconnected, or given up after a failed error recovery)".to_string(),
                address,
            ));
            continue;
        }
        match l.current_width {
            Some(DEAD_WIDTH) => {
                dead.push(("width 63 (status reads all ones)".to_string(), address))
            }
            Some(0) => dead.push(("width 0 (no link trained)".to_string(), address)),
            Some(w) if width.is_some_and(|e| w < e) => narrow.push((format!("x{w}"), address)),
            Some(_) => {}
            None => unread.push(("current_link_width unreadable".to_string(), address)),
        }
        if l.max_width == Some(DEAD_WIDTH) {
            dead.push(("link capabilities read all ones".to_string(), address));
        }
        if let (Some(now), Some(e)) = (l.current_gts(), speed) {
            if now < e {
                slow.push((format!("{} GT/s", gts_text(now)), address));
            }
        }
    }
    // A slower hop while the device is in use is its driver's power saving.
    let in_use = !slow.is_empty() && !judge_speed;
    if in_use {
        slow.clear();
    }
    let mut problems = Vec::new();
    if !dead.is_empty() {
        problems.push((
            Verdict::Critical,
            format!("{prefix}link down: {}", hops(&dead).join("; ")),
            "the device or a port above it fell off the bus: check dmesg (AER, pciehp), then reseat it or power-cycle the host",
        ));
    }
    let expected_width = width.map_or("?".to_string(), |w| format!("x{w}"));
    let expected_speed = speed.map_or("?".to_string(), |s| format!("{} GT/s", gts_text(s)));
    if !narrow.is_empty() && t.width_below_expected != Level::Ok {
        problems.push((
            verdict_of(t.width_below_expected),
            format!(
                "{prefix}link degraded: {} ({expected_width} expected)",
                hops(&narrow).join("; ")
            ),
            "a degraded link: reseat the card or its riser, check the slot's lanes in the firmware setup; the hop named is where it trains narrower",
        ));
    }
    if !slow.is_empty() && t.speed_below_expected != Level::Ok {
        problems.push((
            verdict_of(t.speed_below_expected),
            format!(
                "{prefix}link slow while idle: {} ({expected_speed} expected)",
                hops(&slow).join("; ")
            ),
            "a link trained below its speed: reseat, check the slot's speed setting in the firmware setup",
        ));
    }
    if !unread.is_empty() {
        problems.push((
            Verdict::Unknown,
            format!("{prefix}{}", hops(&unread).join("; ")),
            "",
        ));
    }
    if !capless.is_empty() {
        problems.push((
            Verdict::Unknown,
            format!(
                "{prefix}link capability unreadable: {}",
                hops(&capless).join("; ")
            ),
            "check dmesg for a failed AER recovery on that port; the path cannot be judged until it reads again",
        ));
    }
    let Some(own_link) = own.link.as_ref().filter(|l| l.has_link()) else {
        return device_result(id, dev.address, problems, String::new(), vec![]);
    };
    let evidence = links()
        .map(|(a, l)| {
            format!(
                "{a}: x{} of x{}, {} of {}",
                l.current_width.map_or("?".into(), |w| w.to_string()),
                l.max_width.map_or("?".into(), |w| w.to_string()),
                l.current_speed.as_deref().unwrap_or("?"),
                l.max_speed.as_deref().unwrap_or("?")
            )
        })
        .collect();
    device_result(
        id,
        dev.address,
        problems,
        format!(
            "{prefix}x{} at {} {} ({expected_width}, {expected_speed} expected{})",
            own_link
                .current_width
                .map_or("?".to_string(), |w| w.to_string()),
            own_link.current_speed.as_deref().unwrap_or("?"),
            match h.facts.root_port(at) {
                Some(rp) => format!("on {} function(s) up to root port {rp}", path.len()),
                None => "on a root bus".to_string(),
            },
            if in_use {
                "; slower while in use, judged when idle"
            } else {
                ""
            }
        ),
        evidence,
    )
}

/// `health.reset.ADDRESS`: a passthrough device can be reset between tenants.
fn reset(h: &HealthInput, dev: &PciDevice) -> CheckResult {
    use crate::model::health::ResetMethods;
    let id = format!("health.reset.{}", dev.address);
    let passthrough = h.passthrough.contains(&dev.address);
    let own = h.facts.functions.get(&dev.address);
    let path = format!("/sys/bus/pci/devices/{}/reset_method", dev.address);
    let mut problems = Vec::new();
    let level = if passthrough {
        Verdict::Critical
    } else {
        Verdict::Ok
    };
    let not_passed = if passthrough {
        ""
    } else {
        " (it is not passed through)"
    };
    let ok = match own.and_then(|f| f.reset.as_ref()) {
        None | Some(ResetMethods::Unreadable) => {
            problems.push((Verdict::Unknown, format!("cannot read {path}"), ""));
            String::new()
        }
        Some(ResetMethods::None) => {
            let message = format!("the kernel found no way to reset it (no reset_method): it cannot be safely handed from one tenant to the next{not_passed}");
            if level == Verdict::Ok {
                message
            } else {
                problems.push((level, message, "keep it out of passthrough, or look for a firmware update or a kernel with a reset quirk for it"));
                String::new()
            }
        }
        Some(ResetMethods::Unlisted) => {
            "resettable (this kernel does not list methods: reset_method needs 5.15)".to_string()
        }
        Some(ResetMethods::Listed(methods)) if methods.is_empty() => {
            let message =
                format!("reset_method is empty: every reset method was disabled{not_passed}");
            if level == Verdict::Ok {
                message
            } else {
                problems.push((level, message, "echo default > /sys/bus/pci/devices/ADDRESS/reset_method restores the kernel's methods"));
                String::new()
            }
        }
        Some(ResetMethods::Listed(methods)) => {
            let siblings = &own.expect("read").bus_siblings;
            if methods == &["bus"] && !siblings.is_empty() {
                let names: Vec<String> = siblings.iter().map(ToString::to_string).collect();
                problems.push((
                    Verdict::Warning,
                    format!(
                        "its only reset is a bus reset, which also resets {} on its bus (the kernel refuses it while they are there)",
                        names.join(", ")
                    ),
                    "pass every function on the bus through together, or move the card to a slot of its own",
                ));
            }
            format!("reset by {}", methods.join(", else "))
        }
    };
    device_result(id, dev.address, problems, ok, vec![])
}

/// `health.power.ADDRESS`: the kernel knows its power state, and an idle
/// passthrough GPU is not left in D3cold.
fn power(h: &HealthInput, dev: &PciDevice) -> CheckResult {
    let id = format!("health.power.{}", dev.address);
    let own = h.facts.functions.get(&dev.address);
    let state = own.and_then(|f| f.power_state.as_deref());
    let mut problems = Vec::new();
    let ok = match state {
        None => {
            problems.push((
                Verdict::Unknown,
                "power_state is not exposed (kernel 5.11 and later)".to_string(),
                "",
            ));
            String::new()
        }
        Some(s @ ("error" | "unknown")) => {
            problems.push((
                Verdict::Critical,
                format!("power state {s}: the kernel lost track of it"),
                "check dmesg; reset or reseat the device",
            ));
            String::new()
        }
        Some("D3cold") => {
            let idle = own.and_then(|f| f.enable) == Some(0);
            let level = h.thresholds.power.d3cold_idle_gpu;
            if h.passthrough.contains(&dev.address)
                && dev.class.is_display()
                && idle
                && level != Level::Ok
            {
                problems.push((
                    verdict_of(level),
                    "idle in D3cold: GPUs have failed to come back from it after VM cycles (\"Unable to change power state from D3cold to D0\")".to_string(),
                    "normal on some hosts; if a VM fails to start, echo 0 > /sys/bus/pci/devices/ADDRESS/d3cold_allowed (D3hot only), or set power.d3cold_idle_gpu = \"ok\" in /etc/vfioctl/check.toml",
                ));
                String::new()
            } else {
                "in D3cold".to_string()
            }
        }
        Some(s) => s.to_string(),
    };
    device_result(id, dev.address, problems, ok, vec![])
}

/// `health.bars.ADDRESS`: config space answers (ID registers not all ones:
/// the inventory's dead-config rule) and BAR0 holds the address the kernel
/// gave it (neither 0 nor all ones): a device that fell off the bus or lost
/// its configuration in a reset fails here.
fn bars(h: &HealthInput, dev: &PciDevice) -> CheckResult {
    let id = format!("health.bars.{}", dev.address);
    let mut problems = Vec::new();
    let fell_off = "fell off the bus: check dmesg for AER and link errors, then reset or reseat it (a reboot may be needed)";
    let ok = if dev.config_dead {
        problems.push((
            Verdict::Critical,
            "config space reads all ones: fell off the bus, or stuck in reset or D3cold"
                .to_string(),
            fell_off,
        ));
        String::new()
    } else if dev.header_type.is_none() {
        problems.push((
            Verdict::Unknown,
            "config space cannot be read".to_string(),
            "",
        ));
        String::new()
    } else if matches!(dev.sriov, SriovRole::Vf { .. }) {
        "config space readable (a VF's BARs are set in its PF)".to_string()
    } else if dev.is_bridge() {
        "config space readable".to_string()
    } else {
        match h.facts.functions.get(&dev.address).and_then(|f| f.bar0) {
            None => {
                problems.push((Verdict::Unknown, "BAR0 could not be read".to_string(), ""));
                String::new()
            }
            Some(bar) if bar.all_ones() => {
                problems.push((
                    Verdict::Critical,
                    "BAR0 reads all ones".to_string(),
                    fell_off,
                ));
                String::new()
            }
            Some(bar) if bar.address() == 0 && bar.assigned == Some(true) => {
                problems.push((
                    Verdict::Critical,
                    "BAR0 reads 0 although the kernel assigned it an address: the device lost its configuration (a reset not restored) or fell off the bus".to_string(),
                    fell_off,
                ));
                String::new()
            }
            Some(bar) if bar.address() == 0 => "config space readable, BAR0 unused".to_string(),
            Some(bar) => format!("config space readable, BAR0 at {:#x}", bar.address()),
        }
    };
    device_result(id, dev.address, problems, ok, vec![])
}

/// `health.sriov.ADDRESS` for a physical function: VFs need their PF on its
/// own driver; a PF passed through (vfio-pci) or left without a driver while
/// VFs exist is CRITICAL.
fn sriov(dev: &PciDevice) -> Option<CheckResult> {
    let SriovRole::Pf {
        total_vfs, num_vfs, ..
    } = &dev.sriov
    else {
        return None;
    };
    if *total_vfs == 0 {
        return None;
    }
    let id = format!("health.sriov.{}", dev.address);
    let on = dev
        .driver
        .as_ref()
        .map_or("no driver".to_string(), ToString::to_string);
    let mut problems = Vec::new();
    let stray = dev
        .driver
        .as_ref()
        .is_none_or(|d| d.kind() == DriverKind::Vfio);
    if *num_vfs > 0 && stray {
        problems.push((
            Verdict::Critical,
            format!("{num_vfs} VF(s) enabled while the PF is on {on}: VFs need the PF's own driver, and a PF passed through with VFs alive hands their control to its user"),
            "remove the VFs first (vfioctl sriov ADDRESS --numvfs 0), or bind the PF to its own driver",
        ));
    }
    Some(device_result(
        id,
        dev.address,
        problems,
        format!("{num_vfs} of {total_vfs} VF(s) enabled, PF on {on}"),
        vec![],
    ))
}
