//! Host facts for the boot-time files (`host-config`, and `check` comparing
//! them): declarations, which native modules would claim declared devices,
//! CPU vendor, kernel command line, distribution and initramfs system.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use crate::host::modules::vfio_variant_aliases;
use crate::host::HostRoot;
use crate::model::boot_facts::{CpuVendor, Distro, Facts, Initramfs};
use crate::model::declaration::{Declarations, DeclaredDriver, Fit};
use crate::model::fabric::{is_nvswitch, Fabric};
use crate::model::modalias::{best_match, glob_match, parse_aliases};
use crate::model::Inventory;
use crate::model::{DriverKind, ModuleName};

/// What `/proc/cpuinfo` says, read once per command.
#[derive(Debug, Clone)]
pub struct CpuInfo {
    pub vendor: CpuVendor,
    /// The first CPU's flags; `None` when cpuinfo is unreadable or has none.
    pub flags: Option<Vec<String>>,
}

/// systemd links that enable NVIDIA Fabric Manager at boot.
const FABRIC_MANAGER_UNITS: &[&str] = &[
    "/etc/systemd/system/multi-user.target.wants/nvidia-fabricmanager.service",
    "/etc/systemd/system/multi-user.target.wants/nvidia-fabricmanager-start.service",
];

/// The NVLink fabric mode this host runs: shared when NVIDIA Fabric Manager
/// is enabled at boot or running (`nv-fabricmanager`); `None` otherwise,
/// when nothing on the host claims the NVSwitches. Hosts without NVSwitches
/// (most, and the udev hook's usual case) are not looked at further.
pub fn fabric_mode(root: &HostRoot, inv: &Inventory) -> Option<Fabric> {
    if !inv
        .devices
        .iter()
        .any(|d| is_nvswitch(d.ids.vendor, d.ids.device))
    {
        return None;
    }
    let enabled = FABRIC_MANAGER_UNITS.iter().any(|u| root.path(u).exists());
    let running = || {
        fs::read_dir(root.path("/proc"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .any(|e| {
                fs::read_to_string(e.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "nv-fabricmanager")
            })
    };
    (enabled || running()).then_some(Fabric::Shared)
}

pub fn read_cpu(root: &HostRoot) -> CpuInfo {
    let text = fs::read_to_string(root.path("/proc/cpuinfo")).ok();
    CpuInfo {
        vendor: cpu_vendor(text.as_deref().unwrap_or_default()),
        flags: text.as_deref().and_then(cpu_flags),
    }
}

fn cpu_flags(text: &str) -> Option<Vec<String>> {
    let line = text.lines().find(|l| l.starts_with("flags"))?;
    Some(
        line.split(':')
            .nth(1)?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

fn cpu_vendor(text: &str) -> CpuVendor {
    let vendor = text
        .lines()
        .find_map(|l| l.strip_prefix("vendor_id"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_default();
    match vendor.as_str() {
        "GenuineIntel" => CpuVendor::Intel,
        "AuthenticAMD" | "HygonGenuine" => CpuVendor::Amd,
        _ => CpuVendor::Other,
    }
}

pub fn distro(root: &HostRoot) -> Distro {
    let text = fs::read_to_string(root.path("/etc/os-release")).unwrap_or_default();
    let ids: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("ID=").or_else(|| l.strip_prefix("ID_LIKE=")))
        .flat_map(|v| {
            v.trim_matches('"')
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let has = |names: &[&str]| ids.iter().any(|i| names.contains(&i.as_str()));
    if has(&["debian", "ubuntu"]) {
        Distro::Debian
    } else if has(&["rhel", "fedora", "centos", "rocky", "almalinux"]) {
        Distro::RedHat
    } else if has(&["suse", "opensuse", "sles"]) {
        Distro::Suse
    } else {
        Distro::Other
    }
}

/// Everything `host_config::generate` needs, read under the root.
pub fn read_facts(
    root: &HostRoot,
    inv: &Inventory,
    declarations: Declarations,
    blacklist: bool,
    ids_option: bool,
    cpu: CpuVendor,
) -> Facts {
    // VFs of a declared PF are left out: they do not exist until its hook
    // creates them with autoprobe off (no native driver to order against),
    // and boot files must not change with whether they exist now.
    let release = inv.kernel_release.as_deref();
    let alias_text = release
        .and_then(|r| fs::read_to_string(root.path(format!("/lib/modules/{r}/modules.alias"))).ok())
        .unwrap_or_default();
    let host_aliases = parse_aliases(&alias_text, "pci");
    let variants = vfio_variant_aliases(root, release);
    let mut softdeps: BTreeMap<ModuleName, BTreeSet<ModuleName>> = BTreeMap::new();
    let mut variant: BTreeSet<String> = BTreeSet::new();
    for dev in &inv.devices {
        let Some(governing) = declarations.governing(dev) else {
            continue;
        };
        debug_assert_eq!(governing.declaration.fit(dev), Fit::Applies);
        let pre = ModuleName::new(
            governing
                .declaration
                .driver
                .named()
                .map_or("vfio-pci".to_string(), ToString::to_string),
        );
        let modalias = format!("pci:{}", dev.modalias_body());
        let mut natives: Vec<String> = host_aliases
            .iter()
            .filter(|a| glob_match(&a.pattern, &modalias))
            .map(|a| a.module.as_str().to_string())
            .collect();
        if let (Some(driver), Some(module)) = (&dev.driver, &dev.driver_module) {
            if driver.kind() == DriverKind::Host {
                natives.push(module.as_str().to_string());
            }
        }
        for native in natives {
            let native = ModuleName::new(native.replace('-', "_"));
            if crate::model::DriverName::new(native.as_str()).kind() == DriverKind::Host
                && native != pre
            {
                softdeps.entry(native).or_default().insert(pre.clone());
            }
        }
        if governing.declaration.driver == DeclaredDriver::Auto {
            if let Some(choice) = best_match(&variants, "vfio_pci", dev) {
                variant.insert(choice.module.as_str().to_string());
            }
        }
    }
    let mut initramfs = Vec::new();
    if root.path("/etc/initramfs-tools").is_dir() {
        initramfs.push(Initramfs::InitramfsTools);
    }
    if root.path("/etc/dracut.conf.d").is_dir() || root.path("/usr/bin/dracut").exists() {
        initramfs.push(Initramfs::Dracut);
    }
    Facts {
        declarations,
        softdeps,
        variant_modules: variant.into_iter().map(ModuleName::new).collect(),
        cpu,
        cmdline: fs::read_to_string(root.path("/proc/cmdline"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        distro: distro(root),
        initramfs,
        blacklist,
        ids_option,
    }
}
