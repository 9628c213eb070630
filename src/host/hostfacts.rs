//! Host facts for the boot-time files (`host-config`, and `check` comparing
//! them): declarations, which native modules would claim declared devices,
//! CPU vendor, kernel command line, distribution and initramfs system.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use crate::host::modules::vfio_variant_aliases;
use crate::host::HostRoot;
use crate::model::boot_facts::{CpuVendor, Distro, Facts, Initramfs};
use crate::model::declaration::{Declarations, DeclaredDriver, Fit};
use crate::model::fabric::{
    is_nvswitch, read_fabric, FabricFacts, FabricReading, ManagerState, SwitchState,
};
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

/// NVIDIA Fabric Manager's systemd units: a link to one in a `*.wants/`
/// directory of /etc/systemd/system enables it at boot (`systemctl enable`).
const FABRIC_MANAGER_UNITS: &[&str] = &[
    "nvidia-fabricmanager.service",
    "nvidia-fabricmanager-start.service",
];

/// `/proc/PID/comm` of a running Fabric Manager: the kernel keeps 15 bytes
/// of the name (TASK_COMM_LEN), so `nv-fabricmanager` reads `nv-fabricmanage`.
const FABRIC_MANAGER_COMMS: &[&str] = &["nv-fabricmanage", "nv-fabricmanager"];

/// Whether Fabric Manager is enabled at boot or running, read under the root
/// without asking systemd (which sees only the running system, not a
/// `--root`): enabled is a link named after its unit in
/// /etc/systemd/system/*.wants/ while the unit is not masked (linked to
/// /dev/null in /etc/systemd/system); running is a process whose comm is
/// `nv-fabricmanager`.
pub fn fabric_manager(root: &HostRoot) -> ManagerState {
    let system = "/etc/systemd/system";
    let masked = |unit: &str| {
        fs::read_link(root.path(format!("{system}/{unit}")))
            .is_ok_and(|target| target == Path::new("/dev/null"))
    };
    let mut wants: Vec<String> = fs::read_dir(root.path(system))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".wants"))
        .collect();
    wants.sort();
    let enabled_by = wants.iter().find_map(|dir| {
        FABRIC_MANAGER_UNITS
            .iter()
            .filter(|unit| !masked(unit))
            .map(|unit| format!("{system}/{dir}/{unit}"))
            // The link itself: its target is a path on the host, not under the root.
            .find(|link| fs::symlink_metadata(root.path(link)).is_ok())
    });
    let mut pids: Vec<u32> = fs::read_dir(root.path("/proc"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    pids.sort_unstable();
    let running_pid = pids.into_iter().find(|pid| {
        fs::read_to_string(root.path(format!("/proc/{pid}/comm")))
            .is_ok_and(|c| FABRIC_MANAGER_COMMS.contains(&c.trim_end_matches('\n')))
    });
    ManagerState {
        enabled_by,
        running_pid,
    }
}

/// The NVLink fabric mode this host shows ([`read_fabric`]): where its
/// NVSwitches are (driver, and whether `decls` declares them for VFIO) and
/// what Fabric Manager does. `None` on a host without NVSwitches (most, and
/// the udev hook's usual case), which is not looked at further.
pub fn fabric(root: &HostRoot, inv: &Inventory, decls: &Declarations) -> Option<FabricReading> {
    let switches: Vec<SwitchState> = inv
        .devices
        .iter()
        .filter(|d| is_nvswitch(d.ids.vendor, d.ids.device))
        .map(|d| SwitchState {
            address: d.address,
            driver: d.driver.clone(),
            declared_vfio: decls.declares_vfio(d),
        })
        .collect();
    if switches.is_empty() {
        return None;
    }
    read_fabric(&FabricFacts {
        switches,
        manager: fabric_manager(root),
    })
}

/// [`fabric`] with the declarations read from the root; unreadable ones
/// count as none (the commands that need them report why).
pub fn fabric_of_host(root: &HostRoot, inv: &Inventory) -> Option<FabricReading> {
    if !inv
        .devices
        .iter()
        .any(|d| is_nvswitch(d.ids.vendor, d.ids.device))
    {
        return None;
    }
    let decls = crate::host::config::load(root).unwrap_or_default();
    fabric(root, inv, &decls)
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
