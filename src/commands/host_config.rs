//! `vfioctl host-config`: preview, write or remove the boot-time files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use serde::Serialize;

use crate::change::{privileged, NotPrivileged};
use crate::cli::HostConfigArgs;
use crate::config::{self, ConfigError};
use crate::host::modules::vfio_variant_aliases;
use crate::host::sysfs::{read_inventory, Names};
use crate::host::HostRoot;
use crate::host_config::{generate, CpuVendor, Distro, Facts, HostConfig, Initramfs, OWNED_HEADER};
use crate::model::declaration::Fit;
use crate::model::modalias::{best_match, glob_match, parse_aliases};
use crate::model::{DriverKind, ModuleName};
use crate::output::write_json;

/// A file in the way that vfioctl did not write.
#[derive(Debug, thiserror::Error)]
#[error("{0} exists and was not written by vfioctl; move it aside or merge it by hand")]
pub struct NotOwned(pub String);

fn cpu_vendor(root: &HostRoot) -> CpuVendor {
    let text = fs::read_to_string(root.path("/proc/cpuinfo")).unwrap_or_default();
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

fn distro(root: &HostRoot) -> Distro {
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

fn read_facts(root: &HostRoot, args: &HostConfigArgs) -> anyhow::Result<Facts> {
    let declarations = config::load(root)?;
    let inv = read_inventory(root, Names::Skip)?;
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
                .as_ref()
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
        if governing.declaration.driver.is_none() {
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
    Ok(Facts {
        declarations,
        softdeps,
        variant_modules: variant.into_iter().map(ModuleName::new).collect(),
        cpu: cpu_vendor(root),
        cmdline: fs::read_to_string(root.path("/proc/cmdline"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        distro: distro(root),
        initramfs,
        blacklist: args.blacklist,
        ids_option: args.ids,
    })
}

/// What happened (or would happen) to one file.
#[derive(Debug, Serialize)]
struct FileStatus {
    path: &'static str,
    /// new, changed, unchanged, removed, absent
    status: &'static str,
    mode: String,
    content: String,
}

fn owned(text: &str) -> bool {
    text.lines().take(2).any(|l| l == OWNED_HEADER)
}

pub fn run(root: &HostRoot, args: &HostConfigArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    if (args.write || args.remove) && !privileged() {
        return Err(NotPrivileged {
            command: "host-config",
        }
        .into());
    }
    let facts = read_facts(root, args)?;
    let plan: HostConfig = generate(&facts);
    let mut statuses = Vec::new();
    for file in &plan.files {
        let path = root.path(file.path);
        let existing = fs::read_to_string(&path).ok();
        if let Some(text) = &existing {
            if !owned(text) && (args.write || args.remove) {
                return Err(NotOwned(file.path.to_string()).into());
            }
        }
        let status = if args.remove {
            match existing {
                Some(_) => {
                    fs::remove_file(&path).map_err(|source| ConfigError::Io {
                        action: "cannot remove",
                        path: file.path.to_string(),
                        source,
                    })?;
                    "removed"
                }
                None => "absent",
            }
        } else {
            let status = match &existing {
                None => "new",
                Some(text) if *text == file.content => "unchanged",
                Some(_) => "changed",
            };
            let mode_differs =
                fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o777 != file.mode);
            if args.write && (status != "unchanged" || mode_differs) {
                config::write_atomic(root, &path, &file.content, file.mode)?;
            }
            status
        };
        statuses.push(FileStatus {
            path: file.path,
            status,
            mode: format!("{:o}", file.mode),
            content: file.content.clone(),
        });
    }

    if args.json {
        #[derive(Serialize)]
        struct Record<'a> {
            written: bool,
            removed: bool,
            files: &'a [FileStatus],
            kernel_cmdline: &'a crate::host_config::CmdlineAdvice,
            initramfs_command: &'a Option<String>,
            notes: &'a [String],
        }
        write_json(
            out,
            &Record {
                written: args.write,
                removed: args.remove,
                files: &statuses,
                kernel_cmdline: &plan.cmdline,
                initramfs_command: &plan.initramfs_command,
                notes: &plan.notes,
            },
        )?;
        return Ok(crate::cli::exit::OK);
    }

    for file in &statuses {
        if args.remove {
            writeln!(out, "{}: {}", file.path, file.status)?;
            continue;
        }
        let verb = if args.write && file.status != "unchanged" {
            "written"
        } else {
            file.status
        };
        writeln!(out, "== {} ({verb}, mode {}) ==", file.path, file.mode)?;
        write!(out, "{}", file.content)?;
    }
    if !args.remove {
        writeln!(out, "== kernel command line ==")?;
        if !plan.cmdline.conflicting.is_empty() {
            writeln!(out, "conflicting: {}", plan.cmdline.conflicting.join(" "))?;
        }
        if !plan.cmdline.missing.is_empty() {
            writeln!(out, "missing: {}", plan.cmdline.missing.join(" "))?;
        }
        writeln!(out, "{}", plan.cmdline.how)?;
    }
    let changed = statuses
        .iter()
        .any(|s| matches!(s.status, "new" | "changed" | "removed"));
    if let (Some(command), true) = (&plan.initramfs_command, changed) {
        let when = if args.write || args.remove {
            "now"
        } else {
            "after --write"
        };
        writeln!(out, "rebuild the initramfs {when}: {command}")?;
    }
    for note in &plan.notes {
        writeln!(out, "note: {note}")?;
    }
    if !args.write && !args.remove {
        writeln!(out, "preview only: run with --write to write these files")?;
    }
    Ok(crate::cli::exit::OK)
}
