//! Node health checks: facts in, verdicts out. Pure; `commands::check`
//! gathers the facts and renders. Each check has a stable id, a verdict, the
//! evidence it saw and, when not OK, the remedy.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Serialize, Serializer};

use crate::integrations::boot_files::CpuVendor;
use crate::model::declaration::{Declaration, Declarations, DeclaredDriver, Fit, SriovDeclaration};
use crate::model::fabric::{device_may_leave_host, Fabric};
use crate::model::{
    DeviceId, DriverKind, DriverName, Inventory, IommuState, ModuleName, PciAddress, PciDevice,
    SriovRole, VendorId,
};

/// Verdicts in the monitoring-plugins convention. Ordered by severity for
/// the overall result: CRITICAL > WARNING > UNKNOWN > OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Unknown,
    Warning,
    Critical,
}

impl Verdict {
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Ok => 0,
            Verdict::Warning => 1,
            Verdict::Critical => 2,
            Verdict::Unknown => 3,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warning => "WARNING",
            Verdict::Critical => "CRITICAL",
            Verdict::Unknown => "UNKNOWN",
        }
    }
}

impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub id: String,
    pub status: Verdict,
    pub message: String,
    pub evidence: Vec<String>,
    pub remedy: Option<String>,
    /// The declared device this check is about, if any.
    pub device: Option<PciAddress>,
}

fn result(
    id: &str,
    status: Verdict,
    message: impl Into<String>,
    evidence: Vec<String>,
    remedy: Option<&str>,
) -> CheckResult {
    CheckResult {
        id: id.to_string(),
        status,
        message: message.into(),
        evidence,
        remedy: remedy.map(str::to_string),
        device: None,
    }
}

/// A module's availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleState {
    /// Loaded or built in (/sys/module/NAME).
    Loaded,
    /// Installed for the running kernel, not loaded.
    Installed,
    Missing,
    Unknown,
}

/// The state of a file vfioctl generates, against what it would generate now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    Current,
    Stale,
    Missing,
    NotOwned,
}

/// An operator's expectation: `count` functions with IDs on a driver.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub ids: String,
    /// Driver they must be on; "auto" (or absent) means any VFIO driver.
    pub driver: Option<String>,
    pub count: usize,
}

/// What libvirt reported for one declared device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtView {
    pub address: PciAddress,
    pub seen: bool,
    pub driver: Option<String>,
    pub device_type: Option<String>,
}

/// Everything the checks look at. `None` means "could not be read".
#[derive(Debug)]
pub struct Facts<'a> {
    pub inv: &'a Inventory,
    pub cpu: CpuVendor,
    pub cpu_flags: Option<Vec<String>>,
    pub cmdline: Option<Vec<String>>,
    /// (DMAR present, IVRS present) under /sys/firmware/acpi/tables.
    pub acpi_tables: Option<(bool, bool)>,
    /// Interrupt remapping in use (IR- interrupt chips in /proc/interrupts).
    pub irq_remapping: Option<bool>,
    /// vfio_iommu_type1's allow_unsafe_interrupts parameter.
    pub unsafe_interrupts: Option<bool>,
    pub modules: Vec<(ModuleName, ModuleState)>,
    pub declarations: Result<Declarations, String>,
    /// Groups with a /dev/vfio/N node.
    pub vfio_nodes: BTreeSet<u32>,
    pub boot_files: Vec<(String, FileState)>,
    pub udev_rules: Option<FileState>,
    pub udev_static_installed: bool,
    /// For each declared device present: whether udev's database carries the
    /// mark the generated rules set (`None`: udev cannot be asked).
    pub udev_marks: Vec<(PciAddress, Option<bool>)>,
    pub expectations: Option<Result<Vec<Expectation>, String>>,
    /// The driver vfioctl last left each device it changed on (the change record).
    pub last_drivers: BTreeMap<PciAddress, String>,
    /// `None`: libvirt not reachable (the message says why).
    pub libvirt: Result<Vec<LibvirtView>, String>,
    /// Unbinds the change record says vfioctl stopped waiting for.
    pub pending: Vec<(PciAddress, String)>,
    /// The host's NVLink fabric mode (shared: Fabric Manager keeps the NVSwitches).
    pub fabric: Option<Fabric>,
}

/// Every unbind still pending (or completed since, leaving no driver).
fn pending_unbinds(f: &Facts) -> Vec<CheckResult> {
    f.pending
        .iter()
        .map(|(address, what)| {
            let now = f
                .inv
                .device(address)
                .and_then(|d| d.driver.as_ref())
                .map_or_else(|| "no driver".to_string(), |d| format!("driver {d}"));
            let mut r = result(
                "device.pending_unbind",
                Verdict::Critical,
                format!("{address}: {what}; now on {now}"),
                vec![format!("{address} in /run/vfioctl/changes.json")],
                Some("once the holder has let go, run vfioctl restore (or bind) on the device"),
            );
            r.device = Some(*address);
            r
        })
        .collect()
}

fn cpu_virtualization(f: &Facts) -> CheckResult {
    let id = "cpu.virtualization";
    match &f.cpu_flags {
        None => result(
            id,
            Verdict::Unknown,
            "cannot read /proc/cpuinfo",
            vec![],
            None,
        ),
        Some(flags) => {
            let found: Vec<String> = flags
                .iter()
                .filter(|x| *x == "vmx" || *x == "svm")
                .cloned()
                .collect();
            if found.is_empty() {
                result(
                    id,
                    Verdict::Critical,
                    "the CPU shows no vmx or svm flag: hardware virtualization is off or absent",
                    vec!["/proc/cpuinfo flags lack vmx/svm".into()],
                    Some("enable VT-x (Intel) or AMD-V/SVM in the firmware setup"),
                )
            } else {
                result(
                    id,
                    Verdict::Ok,
                    format!("hardware virtualization available ({})", found[0]),
                    vec![],
                    None,
                )
            }
        }
    }
}

fn kernel_cmdline(f: &Facts) -> CheckResult {
    let id = "kernel.cmdline";
    let Some(cmdline) = &f.cmdline else {
        return result(
            id,
            Verdict::Unknown,
            "cannot read /proc/cmdline",
            vec![],
            None,
        );
    };
    let conflicting: Vec<String> = cmdline
        .iter()
        .filter(|a| {
            matches!(
                a.as_str(),
                "iommu=off" | "intel_iommu=off" | "amd_iommu=off"
            )
        })
        .cloned()
        .collect();
    if !conflicting.is_empty() {
        return result(
            id,
            Verdict::Critical,
            format!("the kernel command line turns the IOMMU off: {}", conflicting.join(" ")),
            conflicting,
            Some("remove those arguments (vfioctl host-config shows how on this distribution) and reboot"),
        );
    }
    // vfio-pci.ids= claims IDs for every device: flag IDs nobody declared.
    let declared: BTreeSet<String> = match &f.declarations {
        Ok(d) => d
            .list
            .iter()
            .map(|d| format!("{}:{}", d.vendor, d.device))
            .collect(),
        Err(_) => BTreeSet::new(),
    };
    let mut undeclared = Vec::new();
    for arg in cmdline {
        if let Some(ids) = arg
            .strip_prefix("vfio-pci.ids=")
            .or_else(|| arg.strip_prefix("vfio_pci.ids="))
        {
            for id_pair in ids.split(',') {
                let short: String = id_pair
                    .split(':')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(":")
                    .to_lowercase();
                if !declared.contains(&short) {
                    undeclared.push(id_pair.to_string());
                }
            }
        }
    }
    if !undeclared.is_empty() {
        return result(
            id,
            Verdict::Warning,
            format!(
                "vfio-pci.ids= on the kernel command line claims IDs no declaration covers: {}",
                undeclared.join(",")
            ),
            vec![format!("declared IDs: {}", declared.iter().cloned().collect::<Vec<_>>().join(","))],
            Some("declare them (vfioctl persist add VENDOR:DEVICE) or drop vfio-pci.ids= from the kernel command line"),
        );
    }
    let wants_intel = f.cpu == CpuVendor::Intel;
    let has = |a: &str| cmdline.iter().any(|x| x == a);
    if wants_intel && !has("intel_iommu=on") && !f.inv.iommu.enabled() {
        return result(
            id,
            Verdict::Critical,
            "intel_iommu=on is missing from the kernel command line",
            vec![cmdline.join(" ")],
            Some("add intel_iommu=on iommu=pt (vfioctl host-config prints the command) and reboot"),
        );
    }
    result(
        id,
        Verdict::Ok,
        "no argument disables the IOMMU",
        vec![],
        None,
    )
}

fn iommu_active(f: &Facts) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let firmware = match f.acpi_tables {
        None => result(
            "iommu.firmware",
            Verdict::Unknown,
            "cannot read /sys/firmware/acpi/tables",
            vec![],
            None,
        ),
        Some((dmar, ivrs)) if dmar || ivrs => result(
            "iommu.firmware",
            Verdict::Ok,
            format!(
                "firmware describes an IOMMU ({} table)",
                if dmar { "DMAR" } else { "IVRS" }
            ),
            vec![],
            None,
        ),
        Some(_) => result(
            "iommu.firmware",
            Verdict::Critical,
            "no ACPI DMAR or IVRS table: the firmware does not expose an IOMMU",
            vec![],
            Some("enable VT-d (Intel) or AMD-Vi/IOMMU in the firmware setup"),
        ),
    };
    out.push(firmware);
    let iommu = &f.inv.iommu;
    out.push(if iommu.units.is_empty() || iommu.groups == 0 {
        result(
            "iommu.active",
            Verdict::Critical,
            format!(
                "the IOMMU is off: {} hardware units, {} IOMMU groups",
                iommu.units.len(),
                iommu.groups
            ),
            vec!["/sys/class/iommu".into(), "/sys/kernel/iommu_groups".into()],
            Some(&format!("{}, then reboot", IommuState::REMEDY)),
        )
    } else {
        result(
            "iommu.active",
            Verdict::Ok,
            format!(
                "IOMMU active: {} units ({}), {} groups",
                iommu.units.len(),
                iommu.units.join(","),
                iommu.groups
            ),
            vec![],
            None,
        )
    });
    let id = "iommu.interrupt_remapping";
    out.push(match (f.irq_remapping, f.unsafe_interrupts) {
        (Some(true), _) => result(id, Verdict::Ok, "interrupt remapping is in use", vec![], None),
        (Some(false), Some(true)) => result(
            id,
            Verdict::Warning,
            "no interrupt remapping; vfio_iommu_type1 allow_unsafe_interrupts=Y lets devices be assigned anyway, so a guest can forge MSIs to the host",
            vec!["/proc/interrupts has no IR- chips".into()],
            Some("enable interrupt remapping (x2APIC/IR in firmware, no intremap=off) and drop allow_unsafe_interrupts"),
        ),
        (Some(false), _) => result(
            id,
            Verdict::Critical,
            "no interrupt remapping: VFIO will refuse to assign devices",
            vec!["/proc/interrupts has no IR- chips".into()],
            Some("enable interrupt remapping (x2APIC/IR in firmware, no intremap=off on the kernel command line)"),
        ),
        (None, _) => result(id, Verdict::Unknown, "cannot read /proc/interrupts", vec![], None),
    });
    out
}

fn vfio_modules(f: &Facts) -> CheckResult {
    let id = "vfio.modules";
    let with = |state: ModuleState| -> Vec<String> {
        f.modules
            .iter()
            .filter(|(_, s)| *s == state)
            .map(|(m, _)| m.to_string())
            .collect()
    };
    let (missing, installed, loaded) = (
        with(ModuleState::Missing),
        with(ModuleState::Installed),
        with(ModuleState::Loaded),
    );
    // vfio_pci holds the declared devices, so it must be loaded when there
    // are any; the IOMMU backend loads when a VM opens its container.
    let vfio_pci_idle = declares_anything(f) && installed.iter().any(|m| m == "vfio_pci");
    if !missing.is_empty() {
        result(
            id,
            Verdict::Critical,
            format!(
                "not installed for the running kernel: {}",
                missing.join(", ")
            ),
            vec![],
            Some("install the distribution kernel's modules (vfio, vfio_pci, vfio_iommu_type1)"),
        )
    } else if f.modules.iter().any(|(_, s)| *s == ModuleState::Unknown) {
        result(
            id,
            Verdict::Unknown,
            "cannot tell whether the vfio modules are installed (no modules.dep for the running kernel)",
            vec![],
            None,
        )
    } else if vfio_pci_idle {
        result(
            id,
            Verdict::Warning,
            "vfio_pci is not loaded although bindings are declared",
            vec![format!("loaded: {}", loaded.join(", "))],
            Some("vfioctl persist apply loads it and binds the declared devices; host-config --write loads it at boot"),
        )
    } else {
        let mut message = format!(
            "loaded: {}",
            if loaded.is_empty() {
                "none".to_string()
            } else {
                loaded.join(", ")
            }
        );
        if !installed.is_empty() {
            message.push_str(&format!(
                "; installed, loaded on demand: {}",
                installed.join(", ")
            ));
        }
        result(id, Verdict::Ok, message, vec![], None)
    }
}

fn bindings(f: &Facts) -> Vec<CheckResult> {
    let decls = match &f.declarations {
        Err(e) => {
            return vec![result(
                "config.declarations",
                Verdict::Critical,
                format!("the declared bindings cannot be read: {e}"),
                vec![],
                Some("fix the file named above; nothing declared is enforced until then"),
            )]
        }
        Ok(d) => d,
    };
    let mut out = vec![result(
        "config.declarations",
        Verdict::Ok,
        format!(
            "{} declaration(s) in /etc/vfioctl/bindings.d",
            decls.list.len() + decls.sriov.len()
        ),
        vec![],
        None,
    )];
    for (decl, found) in decls.mismatches(&f.inv.devices) {
        let mut r = result(
            &format!("binding.{}", decl.key()),
            Verdict::Critical,
            format!("{} declares {} at {}, but the slot holds {found}", decl.origin, decl.ids_text(), decl.key()),
            vec![],
            Some("the card moved or was replaced: update the declaration (vfioctl persist remove/add)"),
        );
        r.device = decl.address;
        out.push(r);
    }
    let coverage = decls.coverage(&f.inv.devices);
    let present: std::collections::HashSet<_> = f.inv.devices.iter().map(|d| d.address).collect();
    for (decl, covered) in decls.list.iter().zip(coverage) {
        let covered = covered.as_slice();
        if covered.is_empty() && decl.address.is_none() {
            out.push(result(
                &format!("binding.{}", decl.key()),
                Verdict::Warning,
                format!(
                    "{} declares {} but no such device is present",
                    decl.origin,
                    decl.key()
                ),
                vec![],
                Some("check the hardware, or remove the declaration"),
            ));
        }
        if covered.is_empty() && decl.address.is_some_and(|a| !present.contains(&a)) {
            let mut r = result(
                &format!("binding.{}", decl.key()),
                Verdict::Critical,
                format!("declared device {} is not present", decl.key()),
                vec![],
                Some("check the hardware (a failed card, or a slot that no longer enumerates)"),
            );
            r.device = decl.address;
            out.push(r);
        }
        out.extend(missing_count(f, decl, covered));
        for dev in covered {
            out.push(declared_device(f, decl, dev));
        }
    }
    out.extend(duplicates(decls));
    for decl in &decls.sriov {
        out.push(sriov_count(f, decl));
    }
    for (decl, vf) in decls.vf_coverage(&f.inv.devices) {
        out.push(declared_device(f, decl, vf));
    }
    out.extend(sriov_duplicates(decls));
    out
}

/// `sriov.<PF>.numvfs`: the declared PF is present, is the declared card,
/// and carries the declared number of VFs.
fn sriov_count(f: &Facts, decl: &SriovDeclaration) -> CheckResult {
    let id = format!("sriov.{}.numvfs", decl.key());
    let critical = |message: String, remedy: &str| {
        result(&id, Verdict::Critical, message, vec![], Some(remedy))
    };
    let mut r = match f.inv.device(&decl.address) {
        None => critical(
            format!("{}: declared SR-IOV PF {} is not present", decl.origin, decl.key()),
            "check the hardware (a failed card, or a slot that no longer enumerates)",
        ),
        Some(pf) => match (decl.fit(pf), &pf.sriov) {
            (Fit::Mismatch { found }, _) => critical(
                format!(
                    "{} declares {} VF(s) on {} at {}, but the slot holds {found}; not configured",
                    decl.origin,
                    decl.numvfs,
                    decl.ids_text(),
                    decl.key()
                ),
                "the card moved or was replaced: update the declaration (vfioctl persist remove, then sriov --persist)",
            ),
            (_, SriovRole::Pf { total_vfs, .. }) if u32::from(decl.numvfs) > *total_vfs => critical(
                format!(
                    "{} declares {} VF(s) on {}, but its sriov_totalvfs is {total_vfs}",
                    decl.origin,
                    decl.numvfs,
                    decl.key()
                ),
                "declare at most sriov_totalvfs VFs (vfioctl sriov --numvfs N --persist)",
            ),
            (_, SriovRole::Pf { num_vfs, .. }) if *num_vfs != u32::from(decl.numvfs) => critical(
                format!(
                    "{}: declared {} VF(s) on {}, {num_vfs} present",
                    decl.origin,
                    decl.numvfs,
                    decl.key()
                ),
                "vfioctl persist apply",
            ),
            (_, SriovRole::Pf { .. }) => result(
                &id,
                Verdict::Ok,
                format!("{} carries {} VF(s) as declared", decl.key(), decl.numvfs),
                vec![format!("declared by {}", decl.origin)],
                None,
            ),
            (_, _) => critical(
                format!(
                    "{} declares VFs on {}, which is not an SR-IOV physical function",
                    decl.origin,
                    decl.key()
                ),
                "remove the declaration (vfioctl persist remove)",
            ),
        },
    };
    r.device = Some(decl.address);
    r
}

/// The same PF declared twice: identical (WARNING) or different (CRITICAL).
fn sriov_duplicates(decls: &Declarations) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for (i, again) in decls.sriov.iter().enumerate() {
        let Some(first) = decls.sriov[..i].iter().find(|d| d.address == again.address) else {
            continue;
        };
        let conflicting = (first.vendor, first.device, first.numvfs, &first.vf_driver)
            != (again.vendor, again.device, again.numvfs, &again.vf_driver);
        out.push(result(
            &format!("sriov.{}.duplicate", again.key()),
            if conflicting {
                Verdict::Critical
            } else {
                Verdict::Warning
            },
            format!(
                "{} declares SR-IOV PF {} again ({} {})",
                again.origin,
                again.key(),
                if conflicting {
                    "conflicting with"
                } else {
                    "identical to"
                },
                first.origin
            ),
            vec![],
            Some("keep one [[sriov]] declaration per PF (vfioctl persist remove, or edit by hand)"),
        ));
    }
    out
}

/// One declared device present: on its driver, override set, /dev/vfio
/// node, group viable, alive.
fn declared_device(f: &Facts, decl: &Declaration, dev: &PciDevice) -> CheckResult {
    debug_assert_eq!(decl.fit(dev), Fit::Applies);
    let mut problems: Vec<(Verdict, String, &str)> = Vec::new();
    let wanted = decl
        .driver
        .named()
        .map_or("vfio-pci (or a variant)".to_string(), ToString::to_string);
    if !decl.driver.satisfied_by(dev.driver.as_ref()) {
        let msg = match &dev.driver {
            Some(d) if d.kind() == DriverKind::Host => {
                format!("{d} grabbed it (declared {wanted})")
            }
            Some(d) => format!("on {d}, declared {wanted}"),
            None => format!("no driver (declared {wanted})"),
        };
        problems.push((Verdict::Critical, msg, "vfioctl persist apply"));
    }
    let expected_override = decl
        .driver
        .named()
        .cloned()
        .or_else(|| dev.driver.clone().filter(|d| d.kind() == DriverKind::Vfio));
    if dev.driver_override.is_none()
        || (expected_override.is_some() && dev.driver_override != expected_override)
    {
        problems.push((
            Verdict::Warning,
            format!(
                "driver_override is {}: a reprobe would hand it to another driver",
                dev.driver_override
                    .as_ref()
                    .map_or("unset".to_string(), ToString::to_string)
            ),
            "vfioctl persist apply",
        ));
    }
    if dev
        .driver
        .as_ref()
        .is_some_and(|d| d.kind() == DriverKind::Vfio)
    {
        match dev.iommu_group {
            Some(g) if !f.vfio_nodes.contains(&g) => problems.push((
                Verdict::Critical,
                format!("/dev/vfio/{g} is missing"),
                "check that devtmpfs is mounted and vfio is loaded; vfioctl restore then bind",
            )),
            None => problems.push((
                Verdict::Critical,
                "no IOMMU group".to_string(),
                "enable the IOMMU",
            )),
            _ => {}
        }
    }
    if let Some(group) = f.inv.group_of(dev) {
        // The device's own driver is reported above; name the others.
        let own = crate::model::group::GroupMember::Pci(dev.address);
        let v = f.inv.viability(group);
        let names: Vec<String> = v
            .blockers
            .iter()
            .filter(|b| b.device != own)
            .map(|b| format!("{} on {}", b.device, b.driver))
            .collect();
        if !names.is_empty() {
            problems.push((
                Verdict::Critical,
                format!(
                    "IOMMU group {} is not viable: {}",
                    group.number,
                    names.join(", ")
                ),
                "declare the other endpoints of the group too (or bind with --with-group)",
            ));
        }
    }
    if let Err(stays) = device_may_leave_host(f.fabric, dev) {
        problems.push((
            Verdict::Critical,
            stays.to_string(),
            "remove the declaration (vfioctl persist remove), or disable Fabric Manager for full passthrough",
        ));
    }
    if dev.config_dead {
        problems.push((
            Verdict::Critical,
            "config space reads all ones: device gone or stuck".into(),
            "reset or reseat the device; check for hardware errors",
        ));
    }
    if dev.power_state.as_deref() == Some("D3cold") {
        problems.push((
            Verdict::Warning,
            "in D3cold".into(),
            "normal while idle on some hosts; if a VM fails to start, disable d3cold_allowed",
        ));
    }
    let id = format!("binding.{}", dev.address);
    let mut r = if problems.is_empty() {
        result(
            &id,
            Verdict::Ok,
            format!(
                "{} on {}{}",
                dev.address,
                dev.driver
                    .as_ref()
                    .map_or("-".to_string(), ToString::to_string),
                dev.iommu_group
                    .map(|g| format!(", group {g} viable, /dev/vfio/{g} present"))
                    .unwrap_or_default()
            ),
            vec![format!("declared by {}", decl.origin)],
            None,
        )
    } else {
        let worst = problems.iter().map(|p| p.0).max().expect("non-empty");
        let messages: Vec<String> = problems.iter().map(|p| p.1.clone()).collect();
        let remedy = problems.iter().find(|p| p.0 == worst).map(|p| p.2);
        result(
            &id,
            worst,
            format!("{}: {}", dev.address, messages.join("; ")),
            vec![format!("declared by {}", decl.origin)],
            remedy,
        )
    };
    r.device = Some(dev.address);
    r
}

/// A declaration by IDs covering fewer functions than it did when declared
/// (or than `expect`): CRITICAL, naming each missing address, its IDs and the
/// last driver the change record knows (a GPU fell off the bus).
fn missing_count(f: &Facts, decl: &Declaration, covered: &[&PciDevice]) -> Option<CheckResult> {
    let expect = decl.expect?;
    if covered.len() >= expect {
        return None;
    }
    let missing: Vec<String> = decl
        .seen
        .iter()
        .filter(|a| !covered.iter().any(|d| d.address == **a))
        .map(|a| {
            let last = f
                .last_drivers
                .get(a)
                .map_or("no driver known".to_string(), |d| format!("last on {d}"));
            format!("{a} ({}, {last})", decl.ids_text())
        })
        .collect();
    Some(result(
        &format!("binding.{}.count", decl.key()),
        Verdict::Critical,
        format!(
            "{} declares {} on {expect} function(s), {} present{}",
            decl.origin,
            decl.ids_text(),
            covered.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!("; missing: {}", missing.join(", "))
            }
        ),
        vec![],
        Some("a device fell off the bus or was removed: check dmesg and the hardware, then reseat or reset it"),
    ))
}

/// The same key declared twice: identical (WARNING) or with different
/// drivers (CRITICAL: which one udev applies depends on file order).
fn duplicates(decls: &Declarations) -> Vec<CheckResult> {
    decls
        .duplicates()
        .into_iter()
        .map(|(first, again)| {
            let conflicting = first.driver != again.driver;
            result(
                &format!("binding.{}.duplicate", again.key()),
                if conflicting {
                    Verdict::Critical
                } else {
                    Verdict::Warning
                },
                if conflicting {
                    format!(
                        "{} declares {} on {}, conflicting with {} ({})",
                        again.origin,
                        again.key(),
                        again.driver,
                        first.origin,
                        first.driver
                    )
                } else {
                    format!(
                        "{} declares {} again (identical to {})",
                        again.origin,
                        again.key(),
                        first.origin
                    )
                },
                vec![],
                Some("keep one declaration per device (vfioctl persist remove, or edit by hand)"),
            )
        })
        .collect()
}

/// Whether any binding is declared (boot files and rules only matter then).
fn declares_anything(f: &Facts) -> bool {
    f.declarations.as_ref().is_ok_and(|d| !d.is_empty())
}

fn boot_files(f: &Facts) -> CheckResult {
    let id = "boot.files";
    if !declares_anything(f) {
        return result(
            id,
            Verdict::Ok,
            "nothing declared: no boot files needed",
            vec![],
            None,
        );
    }
    let bad: Vec<String> = f
        .boot_files
        .iter()
        .filter(|(_, s)| *s != FileState::Current)
        .map(|(p, s)| {
            format!(
                "{p} {}",
                match s {
                    FileState::Missing => "missing",
                    FileState::Stale => "stale",
                    FileState::NotOwned => "not written by vfioctl",
                    FileState::Current => "current",
                }
            )
        })
        .collect();
    if bad.is_empty() {
        result(
            id,
            Verdict::Ok,
            format!("{} boot files current", f.boot_files.len()),
            vec![],
            None,
        )
    } else {
        result(
            id,
            Verdict::Warning,
            format!(
                "declared bindings may not survive a reboot: {}",
                bad.join(", ")
            ),
            bad,
            Some("vfioctl host-config --write, then rebuild the initramfs"),
        )
    }
}

fn udev_rules(f: &Facts) -> CheckResult {
    let id = "udev.rules";
    if !declares_anything(f) {
        return result(
            id,
            Verdict::Ok,
            "nothing declared: no udev rules needed",
            vec![],
            None,
        );
    }
    let mut problems = Vec::new();
    match f.udev_rules {
        Some(FileState::Current) => {}
        Some(FileState::Missing) | None => {
            problems.push("69-vfioctl-bindings.rules is missing".to_string())
        }
        Some(_) => {
            problems.push("69-vfioctl-bindings.rules does not match the declarations".to_string())
        }
    }
    if !f.udev_static_installed {
        problems.push("70-vfioctl.rules is not installed".to_string());
    }
    let unmarked: Vec<String> = f
        .udev_marks
        .iter()
        .filter(|(_, marked)| *marked == Some(false))
        .map(|(addr, _)| addr.to_string())
        .collect();
    if !unmarked.is_empty() {
        problems.push(format!(
            "udev's database does not mark {} (rules not applied since the last event; udevadm trigger --action=change applies them)",
            unmarked.join(", ")
        ));
    }
    if problems.is_empty() {
        let asked = f.udev_marks.iter().filter(|(_, m)| m.is_some()).count();
        result(
            id,
            Verdict::Ok,
            if asked > 0 {
                format!("udev rules enforce the declarations on device add; udev marks all {asked} declared device(s)")
            } else {
                "udev rules enforce the declarations on device add".to_string()
            },
            vec![],
            None,
        )
    } else {
        result(
            id,
            Verdict::Warning,
            format!("hot-added or re-enumerated devices will not be bound: {}", problems.join("; ")),
            vec![],
            Some("vfioctl persist add (or remove) rewrites the generated rules; the vfioctl package (or make install) installs 70-vfioctl.rules"),
        )
    }
}

fn expectations(f: &Facts) -> Vec<CheckResult> {
    let Some(expect) = &f.expectations else {
        return vec![];
    };
    let list = match expect {
        Err(e) => {
            return vec![result(
                "expect",
                Verdict::Unknown,
                format!("cannot read the expectations: {e}"),
                vec![],
                None,
            )]
        }
        Ok(list) => list,
    };
    list.iter()
        .map(|e| {
            let id = format!("expect.{}", e.ids);
            let mut parts = e.ids.split(':');
            let parsed = (
                parts.next().and_then(VendorId::parse_hex4),
                parts.next().and_then(DeviceId::parse_hex4),
            );
            let (Some(vendor), Some(device)) = parsed else {
                return result(
                    &id,
                    Verdict::Unknown,
                    format!("ids = \"{}\" is not VENDOR:DEVICE", e.ids),
                    vec![],
                    None,
                );
            };
            let want = DeclaredDriver::parse(e.driver.as_deref());
            let found: Vec<&crate::model::PciDevice> = f
                .inv
                .devices
                .iter()
                .filter(|d| d.ids.vendor == vendor && d.ids.device == device)
                .filter(|d| want.satisfied_by(d.driver.as_ref()))
                .collect();
            let on = e
                .driver
                .clone()
                .unwrap_or_else(|| "a VFIO driver".to_string());
            if found.len() == e.count {
                result(
                    &id,
                    Verdict::Ok,
                    format!("{} x {} on {on}, as expected", found.len(), e.ids),
                    vec![],
                    None,
                )
            } else {
                result(
                    &id,
                    Verdict::Critical,
                    format!(
                        "expected {} x {} on {on}, found {}",
                        e.count,
                        e.ids,
                        found.len()
                    ),
                    found.iter().map(|d| d.address.to_string()).collect(),
                    Some("vfioctl list shows where the others are (driver, presence)"),
                )
            }
        })
        .collect()
}

fn libvirt(f: &Facts) -> CheckResult {
    let id = "libvirt.devices";
    let views = match &f.libvirt {
        Err(why) => return result(id, Verdict::Ok, format!("skipped: {why}"), vec![], None),
        Ok(v) => v,
    };
    let mut problems = Vec::new();
    for view in views {
        let Some(dev) = f.inv.device(&view.address) else {
            continue;
        };
        if !view.seen {
            problems.push(format!("{} is not a libvirt node device", view.address));
            continue;
        }
        if let Some(driver) = &view.driver {
            if DriverName::new(driver.as_str()).kind() != DriverKind::Vfio {
                problems.push(format!("libvirt sees {} on {driver}", view.address));
            }
        }
        let expected = dev.nova_device_type().to_string();
        if let Some(t) = &view.device_type {
            if *t != expected {
                problems.push(format!(
                    "libvirt makes {} {t}, sysfs says {expected}",
                    view.address
                ));
            }
        }
    }
    if problems.is_empty() {
        result(
            id,
            Verdict::Ok,
            format!(
                "libvirt sees {} declared device(s) as expected",
                views.len()
            ),
            vec![],
            None,
        )
    } else {
        result(
            id,
            Verdict::Critical,
            problems.join("; "),
            vec![],
            Some("compare vfioctl nodedev with vfioctl list; restart libvirtd if it is stale"),
        )
    }
}

/// Runs every check, in a stable order.
pub fn run_checks(f: &Facts) -> Vec<CheckResult> {
    let mut out = vec![cpu_virtualization(f), kernel_cmdline(f)];
    out.extend(iommu_active(f));
    out.push(vfio_modules(f));
    out.extend(bindings(f));
    out.extend(pending_unbinds(f));
    out.push(boot_files(f));
    out.push(udev_rules(f));
    out.push(libvirt(f));
    out.extend(expectations(f));
    out
}

/// The overall verdict: the most severe one.
pub fn overall(results: &[CheckResult]) -> Verdict {
    results
        .iter()
        .map(|r| r.status)
        .max()
        .unwrap_or(Verdict::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::declaration::Declaration;

    fn facts(inv: &Inventory, marks: Vec<(PciAddress, Option<bool>)>) -> Facts<'_> {
        Facts {
            inv,
            cpu: CpuVendor::Intel,
            cpu_flags: None,
            cmdline: None,
            acpi_tables: None,
            irq_remapping: None,
            unsafe_interrupts: None,
            modules: vec![],
            declarations: Ok(Declarations::new(vec![Declaration::of_ids(
                VendorId(0x8086),
                DeviceId(0x10d3),
                "/etc/vfioctl/bindings.d/a.toml",
                1,
            )])),
            vfio_nodes: BTreeSet::new(),
            boot_files: vec![],
            udev_rules: Some(FileState::Current),
            udev_static_installed: true,
            udev_marks: marks,
            expectations: None,
            last_drivers: BTreeMap::new(),
            libvirt: Err("not asked".into()),
            pending: vec![],
            fabric: None,
        }
    }

    #[test]
    fn udev_database_marks_decide_the_rules_check() {
        let inv = Inventory::default();
        let addr: PciAddress = "01:00.0".parse().unwrap();
        let marked = udev_rules(&facts(&inv, vec![(addr, Some(true))]));
        assert_eq!(marked.status, Verdict::Ok);
        assert!(marked
            .message
            .contains("udev marks all 1 declared device(s)"));
        let unmarked = udev_rules(&facts(&inv, vec![(addr, Some(false))]));
        assert_eq!(unmarked.status, Verdict::Warning);
        assert!(unmarked.message.contains("does not mark 0000:01:00.0"));
        let unknown = udev_rules(&facts(&inv, vec![(addr, None)]));
        assert_eq!(unknown.status, Verdict::Ok, "a fake root cannot ask udev");
    }

    #[test]
    fn the_overall_verdict_is_the_most_severe() {
        let inv = Inventory::default();
        let f = facts(&inv, vec![]);
        let results = run_checks(&f);
        assert_eq!(
            overall(&results),
            Verdict::Critical,
            "no IOMMU in an empty inventory"
        );
        assert_eq!(Verdict::Unknown.exit_code(), 3);
        assert!(Verdict::Warning > Verdict::Unknown && Verdict::Critical > Verdict::Warning);
    }
}
