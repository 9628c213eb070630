//! The boot-time host files that make declared bindings win the race against
//! native drivers, and the kernel command line the IOMMU needs. Pure: facts
//! in, file contents and advice out; `commands::host_config` reads and writes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::declaration::Declarations;
use crate::model::ModuleName;

/// First line of every file host-config writes; only such files are rewritten or removed.
pub const OWNED_HEADER: &str = "# Written by vfioctl host-config: vfioctl owns this file (it rewrites it; --remove deletes it).";

pub const MODPROBE_CONF: &str = "/etc/modprobe.d/vfioctl.conf";
pub const MODULES_LOAD_CONF: &str = "/etc/modules-load.d/vfioctl.conf";
pub const INITRAMFS_TOOLS_HOOK: &str = "/etc/initramfs-tools/hooks/vfioctl";
pub const INITRAMFS_TOOLS_SCRIPT: &str = "/etc/initramfs-tools/scripts/init-top/vfioctl";
pub const DRACUT_CONF: &str = "/etc/dracut.conf.d/vfioctl.conf";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuVendor {
    Intel,
    Amd,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Initramfs {
    InitramfsTools,
    Dracut,
}

/// Distribution families, for the command that updates the boot loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distro {
    Debian,
    RedHat,
    Suse,
    Other,
}

/// What host-config needs to know about the host.
#[derive(Debug, Clone)]
pub struct Facts {
    pub declarations: Declarations,
    /// Native module that would claim declared devices at boot (from
    /// modules.alias) -> the modules that must load before it (vfio-pci, or
    /// the declared driver's).
    pub softdeps: BTreeMap<ModuleName, BTreeSet<ModuleName>>,
    /// VFIO variant modules declared devices use, sorted.
    pub variant_modules: Vec<ModuleName>,
    pub cpu: CpuVendor,
    pub cmdline: Vec<String>,
    pub distro: Distro,
    pub initramfs: Vec<Initramfs>,
    /// Also blacklist the native modules (affects every device they drive).
    pub blacklist: bool,
    /// Also claim declared IDs ID-wide with `options vfio-pci ids=`.
    pub ids_option: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFile {
    pub path: &'static str,
    pub mode: u32,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CmdlineAdvice {
    /// Arguments to add.
    pub missing: Vec<String>,
    /// Arguments present that defeat VFIO.
    pub conflicting: Vec<String>,
    /// How to make the change on this distribution (vfioctl never edits the boot loader).
    pub how: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostConfig {
    pub files: Vec<HostFile>,
    pub cmdline: CmdlineAdvice,
    /// Command that rebuilds the initramfs after the files change.
    pub initramfs_command: Option<String>,
    pub notes: Vec<String>,
}

fn modprobe_conf(f: &Facts) -> String {
    let mut text = format!(
        "{OWNED_HEADER}\n# Load vfio-pci before the drivers that would claim the devices declared in\n# /etc/vfioctl/bindings.d, so the overrides win at boot.\n"
    );
    for (module, pre) in &f.softdeps {
        let pre: Vec<&str> = pre.iter().map(ModuleName::as_str).collect();
        text.push_str(&format!("softdep {module} pre: {}\n", pre.join(" ")));
    }
    if f.blacklist {
        text.push_str("# --blacklist: these modules no longer load by alias for ANY device.\n");
        for module in f.softdeps.keys() {
            text.push_str(&format!("blacklist {module}\n"));
        }
    }
    if f.ids_option {
        let ids: Vec<String> = f
            .declarations
            .list
            .iter()
            .map(|d| format!("{}:{}", d.vendor, d.device))
            .fold(Vec::new(), |mut acc, id| {
                if !acc.contains(&id) {
                    acc.push(id);
                }
                acc
            });
        text.push_str("# --ids: vfio-pci claims EVERY device with these IDs, declared or not.\n");
        text.push_str(&format!("options vfio-pci ids={}\n", ids.join(",")));
    }
    text
}

fn modules_load_conf(f: &Facts) -> String {
    let mut text = format!("{OWNED_HEADER}\nvfio-pci\n");
    for module in &f.variant_modules {
        text.push_str(&format!("{module}\n"));
    }
    text
}

fn initramfs_tools_hook() -> String {
    format!(
        "#!/bin/sh\n{OWNED_HEADER}\n# Puts the vfio modules and vfioctl's modprobe settings into the initramfs.\n\
PREREQ=\"\"\nprereqs() {{ echo \"$PREREQ\"; }}\ncase \"$1\" in\nprereqs) prereqs; exit 0 ;;\nesac\n\
. /usr/share/initramfs-tools/hook-functions\n\
manual_add_modules vfio vfio_iommu_type1 vfio_pci\n\
copy_file config {MODPROBE_CONF}\n"
    )
}

/// A shell `case` pattern matching a declaration against the script's
/// "ADDRESS 0xVENDOR:0xDEVICE 0xSUBVENDOR:0xSUBDEVICE" key: literal runs are
/// quoted, wildcards stay outside the quotes.
fn case_pattern(d: &crate::model::declaration::Declaration) -> String {
    let parts = [
        d.address.map(|a| a.to_string()),
        Some(format!(" 0x{}:0x{} ", d.vendor, d.device)),
        d.subsystem.map(|(sv, sd)| format!("0x{sv}:0x{sd}")),
    ];
    let mut pattern = String::new();
    let mut literal = String::new();
    for part in parts {
        match part {
            Some(text) => literal.push_str(&text),
            None => {
                if !literal.is_empty() {
                    pattern.push_str(&format!("\"{literal}\""));
                    literal.clear();
                }
                pattern.push('*');
            }
        }
    }
    if !literal.is_empty() {
        pattern.push_str(&format!("\"{literal}\""));
    }
    pattern
}

fn initramfs_tools_script(f: &Facts) -> String {
    let mut text = format!(
        "#!/bin/sh\n{OWNED_HEADER}\n# Runs before udev in the initramfs: sets driver_override on declared devices so\n# no native driver binds them, then loads vfio-pci.\n\
PREREQ=\"\"\nprereqs() {{ echo \"$PREREQ\"; }}\ncase \"$1\" in\nprereqs) prereqs; exit 0 ;;\nesac\n\
for dev in /sys/bus/pci/devices/*; do\n\
\tkey=\"${{dev##*/}} $(cat \"$dev/vendor\"):$(cat \"$dev/device\") $(cat \"$dev/subsystem_vendor\"):$(cat \"$dev/subsystem_device\")\"\n\
\tcase \"$key\" in\n"
    );
    for decl in &f.declarations.list {
        // Variant drivers are rarely in an initramfs: claim with vfio-pci, and
        // the udev hook moves the device to its variant once the root is up.
        let driver = decl
            .driver
            .named()
            .map_or("vfio-pci".to_string(), ToString::to_string);
        text.push_str(&format!(
            "\t{}) echo {driver} > \"$dev/driver_override\" ;; # {}\n",
            case_pattern(decl),
            decl.origin
        ));
    }
    text.push_str("\tesac\ndone\n");
    let mut load: BTreeSet<String> = f
        .softdeps
        .values()
        .flatten()
        .map(|m| m.as_str().replace('_', "-"))
        .collect();
    load.insert("vfio-pci".to_string());
    for module in load {
        text.push_str(&format!("modprobe -q {module} || true\n"));
    }
    text
}

fn dracut_conf(f: &Facts) -> String {
    let mut text = format!(
        "{OWNED_HEADER}\n# vfio modules and vfioctl's modprobe settings in the initramfs.\nforce_drivers+=\" vfio vfio_iommu_type1 vfio_pci \"\ninstall_items+=\" {MODPROBE_CONF} \"\n"
    );
    if !f.ids_option {
        text.push_str(
            "# dracut sets no per-device override: a native driver in the initramfs may bind a\n# declared device first; the udev hook moves it at coldplug (or use --ids).\n",
        );
    }
    text
}

fn cmdline_advice(f: &Facts) -> CmdlineAdvice {
    let wanted: &[&str] = match f.cpu {
        CpuVendor::Intel => &["intel_iommu=on", "iommu=pt"],
        CpuVendor::Amd => &["iommu=pt"],
        CpuVendor::Other => &["iommu=pt"],
    };
    let has = |arg: &str| f.cmdline.iter().any(|a| a == arg);
    let missing: Vec<String> = wanted
        .iter()
        .filter(|a| !has(a))
        .map(|a| a.to_string())
        .collect();
    let conflicting: Vec<String> = f
        .cmdline
        .iter()
        .filter(|a| {
            matches!(
                a.as_str(),
                "iommu=off" | "intel_iommu=off" | "amd_iommu=off"
            ) || (a.starts_with("vfio-pci.ids=") || a.starts_with("vfio_pci.ids="))
        })
        .cloned()
        .collect();
    let args = missing.join(" ");
    let how = if missing.is_empty() && conflicting.is_empty() {
        "nothing to change".to_string()
    } else {
        let remove = if conflicting.is_empty() {
            String::new()
        } else {
            format!(
                "remove \"{}\"{}",
                conflicting.join(" "),
                if args.is_empty() { "" } else { " and " }
            )
        };
        let add = if args.is_empty() {
            String::new()
        } else {
            format!("add \"{args}\"")
        };
        match f.distro {
            Distro::Debian => format!(
                "{remove}{add} in GRUB_CMDLINE_LINUX_DEFAULT of /etc/default/grub, then run update-grub and reboot"
            ),
            Distro::RedHat => format!(
                "grubby --update-kernel=ALL{}{}, then reboot",
                if args.is_empty() { String::new() } else { format!(" --args=\"{args}\"") },
                if conflicting.is_empty() { String::new() } else { format!(" --remove-args=\"{}\"", conflicting.join(" ")) }
            ),
            Distro::Suse => format!(
                "{remove}{add} in GRUB_CMDLINE_LINUX_DEFAULT of /etc/default/grub, then run grub2-mkconfig -o /boot/grub2/grub.cfg and reboot"
            ),
            Distro::Other => format!("{remove}{add} on the kernel command line in your boot loader, then reboot"),
        }
    };
    CmdlineAdvice {
        missing,
        conflicting,
        how,
    }
}

/// Everything host-config would write, and the advice that goes with it.
pub fn generate(f: &Facts) -> HostConfig {
    let mut files = vec![
        HostFile {
            path: MODPROBE_CONF,
            mode: 0o644,
            content: modprobe_conf(f),
        },
        HostFile {
            path: MODULES_LOAD_CONF,
            mode: 0o644,
            content: modules_load_conf(f),
        },
    ];
    let mut notes = Vec::new();
    let mut commands = Vec::new();
    for kind in &f.initramfs {
        match kind {
            Initramfs::InitramfsTools => {
                files.push(HostFile {
                    path: INITRAMFS_TOOLS_HOOK,
                    mode: 0o755,
                    content: initramfs_tools_hook(),
                });
                files.push(HostFile {
                    path: INITRAMFS_TOOLS_SCRIPT,
                    mode: 0o755,
                    content: initramfs_tools_script(f),
                });
                commands.push("update-initramfs -u -k all");
            }
            Initramfs::Dracut => {
                files.push(HostFile {
                    path: DRACUT_CONF,
                    mode: 0o644,
                    content: dracut_conf(f),
                });
                commands.push("dracut -f --regenerate-all");
            }
        }
    }
    if f.initramfs.is_empty() {
        notes.push(
            "no initramfs-tools or dracut found: only modprobe.d and modules-load.d files apply"
                .to_string(),
        );
    }
    if f.declarations.list.is_empty() {
        notes.push(
            "no declarations in /etc/vfioctl/bindings.d: the files only load vfio-pci".to_string(),
        );
    }
    HostConfig {
        files,
        cmdline: cmdline_advice(f),
        initramfs_command: (!commands.is_empty()).then(|| commands.join(" && ")),
        notes,
    }
}
