//! Host checks: CPU virtualization, kernel command line, IOMMU, VFIO modules,
//! boot files, udev rules and libvirt's view of the declared devices.

use super::*;

pub(super) fn cpu_virtualization(f: &Facts) -> CheckResult {
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

pub(super) fn kernel_cmdline(f: &Facts) -> CheckResult {
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

pub(super) fn iommu_active(f: &Facts) -> Vec<CheckResult> {
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

pub(super) fn vfio_modules(f: &Facts) -> CheckResult {
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

/// Whether any binding is declared (boot files and rules only matter then).
pub(super) fn declares_anything(f: &Facts) -> bool {
    f.declarations.as_ref().is_ok_and(|d| !d.is_empty())
}

pub(super) fn boot_files(f: &Facts) -> CheckResult {
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

pub(super) fn udev_rules(f: &Facts) -> CheckResult {
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

pub(super) fn libvirt(f: &Facts) -> CheckResult {
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
