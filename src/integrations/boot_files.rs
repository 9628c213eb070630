//! The boot-time host files that make declared bindings win the race against
//! native drivers, and the kernel command line the IOMMU needs. Pure: facts
//! in, file contents and advice out; `commands::host_config` reads and writes.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::model::ModuleName;

/// First line of every file host-config writes; only such files are rewritten or removed.
pub const OWNED_HEADER: &str = "# Written by vfioctl host-config: vfioctl owns this file (it rewrites it; --remove deletes it).";

pub const MODPROBE_CONF: &str = "/etc/modprobe.d/vfioctl.conf";
pub const MODULES_LOAD_CONF: &str = "/etc/modules-load.d/vfioctl.conf";
pub const INITRAMFS_TOOLS_HOOK: &str = "/etc/initramfs-tools/hooks/vfioctl";
/// initramfs-tools runs init-top scripts without prerequisites in name order:
/// this one must sort before `udev`, which coldplugs every device (found by
/// scenario 90-initramfs-tools-boot: named `vfioctl`, it ran after udev had
/// bound e1000e and nvme).
pub const INITRAMFS_TOOLS_SCRIPT: &str = "/etc/initramfs-tools/scripts/init-top/00-vfioctl";
pub const DRACUT_CONF: &str = "/etc/dracut.conf.d/vfioctl.conf";
/// dracut reads modules only from its own directory; this one installs the
/// same claim as a pre-udev hook (found by scenario 91-dracut-boot: with only
/// a configuration file, e1000e and nvme bound declared devices in the initramfs).
pub const DRACUT_MODULE_SETUP: &str = "/usr/lib/dracut/modules.d/90vfioctl/module-setup.sh";
pub const DRACUT_HOOK: &str = "/usr/lib/dracut/modules.d/90vfioctl/vfioctl-claim.sh";

// The facts are plain data read by `host::hostfacts`; they live in the model
// so that the host layer does not import this integration.
pub use crate::model::boot_facts::{CpuVendor, Distro, Facts, Initramfs};

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
            .bindings_in_force()
            .into_iter()
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

/// mkinitramfs itself copies every /etc/modprobe.d/*.conf before it runs the
/// hooks; a `copy_file` of vfioctl.conf here returned 1 (already there), and
/// mkinitramfs aborts on a hook's non-zero status (found by scenario
/// 90-initramfs-tools-boot: "E: /etc/initramfs-tools/hooks/vfioctl failed with return 1").
fn initramfs_tools_hook() -> String {
    format!(
        "#!/bin/sh\n{OWNED_HEADER}\n# Puts the vfio modules into the initramfs (mkinitramfs copies {MODPROBE_CONF}\n# with the rest of /etc/modprobe.d).\n\
PREREQ=\"\"\nprereqs() {{ echo \"$PREREQ\"; }}\ncase \"$1\" in\nprereqs) prereqs; exit 0 ;;\nesac\n\
. /usr/share/initramfs-tools/hook-functions\n\
manual_add_modules vfio vfio_iommu_type1 vfio_pci\n"
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

/// The shell that claims declared devices before udev, for both initramfs
/// flavours: driver_override on each device a declaration matches, a kernel
/// log line for a declared address that holds other IDs, then vfio-pci.
fn claim_script(f: &Facts) -> String {
    let mut text = String::from(
        "claimed=\"\"\nfor dev in /sys/bus/pci/devices/*; do\n\
\tkey=\"${dev##*/} $(cat \"$dev/vendor\"):$(cat \"$dev/device\") $(cat \"$dev/subsystem_vendor\"):$(cat \"$dev/subsystem_device\")\"\n\
\tcase \"$key\" in\n",
    );
    for decl in f.declarations.bindings_in_force() {
        // Variant drivers are rarely in an initramfs: claim with vfio-pci, and
        // the udev hook moves the device to its variant once the root is up.
        let driver = decl
            .driver
            .named()
            .map_or("vfio-pci".to_string(), ToString::to_string);
        text.push_str(&format!(
            "\t{}) printf '%s\\n' {driver} > \"$dev/driver_override\"; claimed=\"$claimed ${{dev##*/}}\" ;; # {}\n",
            case_pattern(decl),
            decl.origin
        ));
    }
    // Reached only when no declaration above matched: a declared slot that
    // now holds other IDs is left alone and said so.
    for decl in f.declarations.bindings_in_force() {
        if let Some(address) = decl.address {
            text.push_str(&format!(
                "\t\"{address} \"*) printf '%s\\n' \"vfioctl: {address} is declared as {} but holds ${{key#* }}: not claimed\" > /dev/kmsg ;;\n",
                decl.ids_text()
            ));
        }
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
    // An override only counts at the next probe: when the driver was already
    // loaded (dracut loads force_drivers first), nothing would bind the device
    // until the root's udev hook (found by scenario 91-dracut-boot).
    text.push_str(
        "for addr in $claimed; do\n\tprintf '%s\\n' \"$addr\" > /sys/bus/pci/drivers_probe 2>/dev/null || true\ndone\n",
    );
    text
}

fn initramfs_tools_script(f: &Facts) -> String {
    format!(
        "#!/bin/sh\n{OWNED_HEADER}\n# Runs before udev in the initramfs: sets driver_override on declared devices so\n# no native driver binds them, then loads vfio-pci.\n\
PREREQ=\"\"\nprereqs() {{ echo \"$PREREQ\"; }}\ncase \"$1\" in\nprereqs) prereqs; exit 0 ;;\nesac\n{}",
        claim_script(f)
    )
}

fn dracut_module_setup() -> String {
    format!(
        "#!/bin/bash\n{OWNED_HEADER}\n# dracut module vfioctl (added by {DRACUT_CONF}): the vfio modules, and the claim\n# of declared devices as a pre-udev hook.\n\
check() {{ return 0; }}\ndepends() {{ return 0; }}\n\
installkernel() {{ hostonly='' instmods vfio vfio_iommu_type1 vfio_pci; }}\n\
install() {{\n\tinst_multiple cat\n\tinst_hook pre-udev 00 \"$moddir/vfioctl-claim.sh\"\n}}\n"
    )
}

fn dracut_hook(f: &Facts) -> String {
    format!(
        "#!/bin/sh\n{OWNED_HEADER}\n# dracut pre-udev hook (sourced): sets driver_override on declared devices so no\n# native driver binds them, then loads vfio-pci.\n{}",
        claim_script(f)
    )
}

fn dracut_conf() -> String {
    format!(
        "{OWNED_HEADER}\n# vfio modules, vfioctl's modprobe settings and its pre-udev claim of declared\n# devices (module vfioctl, {DRACUT_MODULE_SETUP}) in the initramfs.\nadd_dracutmodules+=\" vfioctl \"\nforce_drivers+=\" vfio vfio_iommu_type1 vfio_pci \"\ninstall_items+=\" {MODPROBE_CONF} \"\n"
    )
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
/// Module names read from the host (modules.alias) that fail the name
/// grammar (`model::driver::valid_name`): they are left out of every
/// generated file (modprobe.d, modules-load.d, initramfs scripts) and named
/// in a note, escaped, so no host file can inject a line or a command.
fn drop_bad_module_names(f: &Facts) -> (Facts, Vec<String>) {
    use crate::model::driver::valid_name;
    let mut f = f.clone();
    let mut bad = BTreeSet::new();
    let mut keep = |m: &ModuleName| {
        let ok = valid_name(m.as_str());
        if !ok {
            bad.insert(m.as_str().escape_debug().to_string());
        }
        ok
    };
    f.softdeps.retain(|module, pre| {
        pre.retain(&mut keep);
        keep(module)
    });
    f.variant_modules.retain(keep);
    let notes = bad
        .into_iter()
        .map(|m| format!("module name '{m}' from modules.alias is not a module name: left out of the boot files"))
        .collect();
    (f, notes)
}

pub fn generate(f: &Facts) -> HostConfig {
    let (f, mut notes) = drop_bad_module_names(f);
    let f = &f;
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
                    content: dracut_conf(),
                });
                files.push(HostFile {
                    path: DRACUT_MODULE_SETUP,
                    mode: 0o755,
                    content: dracut_module_setup(),
                });
                files.push(HostFile {
                    path: DRACUT_HOOK,
                    mode: 0o755,
                    content: dracut_hook(f),
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
    if f.declarations.is_empty() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::declaration::Declarations;
    use std::collections::BTreeMap;

    #[test]
    fn module_names_that_could_inject_are_left_out() {
        let evil = ModuleName::new("nouveau\ninstall vfio-pci /bin/sh -c reboot");
        let facts = Facts {
            declarations: Declarations::default(),
            softdeps: BTreeMap::from([
                (
                    ModuleName::new("nvidia"),
                    BTreeSet::from([ModuleName::new("vfio_pci"), evil.clone()]),
                ),
                (evil.clone(), BTreeSet::from([ModuleName::new("vfio_pci")])),
            ]),
            variant_modules: vec![ModuleName::new("x;reboot")],
            cpu: CpuVendor::Intel,
            cmdline: Vec::new(),
            distro: Distro::Debian,
            initramfs: vec![Initramfs::InitramfsTools, Initramfs::Dracut],
            blacklist: true,
            ids_option: false,
        };
        let config = generate(&facts);
        for file in &config.files {
            assert!(
                !file.content.contains("reboot"),
                "{}:\n{}",
                file.path,
                file.content
            );
        }
        assert!(config.files[0]
            .content
            .contains("softdep nvidia pre: vfio_pci\n"));
        assert_eq!(
            config
                .notes
                .iter()
                .filter(|n| n.contains("not a module name"))
                .count(),
            2
        );
    }
}
