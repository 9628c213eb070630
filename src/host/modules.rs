//! Kernel modules: variant-driver aliases, whether a module is installed,
//! loaded or blocked, and loading one.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::modalias::{variant_aliases, Alias};
use crate::model::ModuleName;

use super::root::HostRoot;

/// Directories modprobe reads configuration from, in its order.
const MODPROBE_DIRS: &[&str] = &[
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/usr/lib/modprobe.d",
    "/lib/modprobe.d",
];

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("module {module} is not installed for kernel {release} (no entry in {dir}/modules.dep); install the package that ships it (for vfio-pci: the distribution kernel)")]
    NotInstalled {
        module: ModuleName,
        release: String,
        dir: String,
    },
    #[error("module {module} is blocked by {source_line}; remove that line (and rebuild the initramfs) to allow loading it")]
    Blocked {
        module: ModuleName,
        source_line: String,
    },
    #[error("cannot tell whether module {module} is installed: the kernel release is unknown (no /proc/sys/kernel/osrelease under the root)")]
    UnknownRelease { module: ModuleName },
    #[error("loading module {module} failed: {detail}")]
    LoadFailed { module: ModuleName, detail: String },
}

fn modules_dir(root: &HostRoot, release: &str) -> PathBuf {
    let lib = root.path(format!("/lib/modules/{release}"));
    if lib.exists() {
        lib
    } else {
        root.path(format!("/usr/lib/modules/{release}"))
    }
}

/// `vfio_pci:` aliases of installed variant drivers (empty when unknown).
pub fn vfio_variant_aliases(root: &HostRoot, release: Option<&str>) -> Vec<Alias> {
    release
        .and_then(|r| fs::read_to_string(modules_dir(root, r).join("modules.alias")).ok())
        .map(|text| variant_aliases(&text))
        .unwrap_or_default()
}

/// Whether the running kernel's modules.dep can be read under the root.
pub fn have_modules_dep(root: &HostRoot, release: Option<&str>) -> bool {
    release.is_some_and(|r| modules_dir(root, r).join("modules.dep").exists())
}

/// Whether a module is loaded (or built in): /sys/module/NAME exists.
pub fn is_loaded(root: &HostRoot, module: &ModuleName) -> bool {
    root.path("/sys/module")
        .join(module.as_str().replace('-', "_"))
        .exists()
}

/// The module name a modules.dep or modules.builtin path ends in.
fn module_of_path(path: &str) -> Option<ModuleName> {
    let file = path.rsplit('/').next()?;
    let stem = file.split(".ko").next()?;
    Some(ModuleName::new(stem))
}

fn listed_in(root: &HostRoot, release: &str, file: &str, module: &ModuleName) -> bool {
    let Ok(text) = fs::read_to_string(modules_dir(root, release).join(file)) else {
        return false;
    };
    text.lines()
        .filter_map(|l| l.split(':').next())
        .filter_map(module_of_path)
        .any(|m| &m == module)
}

/// A modprobe.d `install MODULE /bin/false` line, or `module_blacklist=` on
/// the kernel command line: loading is impossible. (`blacklist MODULE` only
/// stops automatic loading by alias, so an explicit load still works.)
pub fn hard_block(root: &HostRoot, module: &ModuleName) -> Option<String> {
    if let Ok(cmdline) = fs::read_to_string(root.path("/proc/cmdline")) {
        for word in cmdline.split_whitespace() {
            if let Some(list) = word.strip_prefix("module_blacklist=") {
                if list.split(',').any(|m| &ModuleName::new(m) == module) {
                    return Some(format!(
                        "module_blacklist= on the kernel command line ({word})"
                    ));
                }
            }
        }
    }
    for dir in MODPROBE_DIRS {
        let Ok(entries) = fs::read_dir(root.path(dir)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        files.sort();
        for file in files {
            let Ok(text) = fs::read_to_string(&file) else {
                continue;
            };
            for (n, line) in text.lines().enumerate() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let ["install", name, command, ..] = words.as_slice() {
                    let refuses = command.ends_with("/false") || command.ends_with("/true");
                    if refuses && &ModuleName::new(*name) == module {
                        let shown = file.strip_prefix(root.base()).unwrap_or(&file);
                        return Some(format!("/{}:{} ({})", shown.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    None
}

/// Checks, before anything is written, that `module` can be loaded.
pub fn preflight(
    root: &HostRoot,
    release: Option<&str>,
    module: &ModuleName,
) -> Result<(), ModuleError> {
    if is_loaded(root, module) {
        return Ok(());
    }
    let release = release.ok_or_else(|| ModuleError::UnknownRelease {
        module: module.clone(),
    })?;
    if !listed_in(root, release, "modules.dep", module)
        && !listed_in(root, release, "modules.builtin", module)
    {
        return Err(ModuleError::NotInstalled {
            module: module.clone(),
            release: release.to_string(),
            dir: format!("/lib/modules/{release}"),
        });
    }
    if let Some(source_line) = hard_block(root, module) {
        return Err(ModuleError::Blocked {
            module: module.clone(),
            source_line,
        });
    }
    Ok(())
}

/// Loads a module with modprobe, found at its fixed path
/// (`programs::MODPROBE`), within `deadline`. Only into the running kernel:
/// under a `--root` that is not this machine's own, nothing is run.
pub fn load(root: &HostRoot, module: &ModuleName, deadline: Duration) -> Result<(), ModuleError> {
    let fail = |detail: String| ModuleError::LoadFailed {
        module: module.clone(),
        detail,
    };
    if !root.is_host() {
        return Err(fail(format!(
            "the host root is {} and modprobe loads into the running kernel: load {module} on the host whose tree that is",
            root.base().display()
        )));
    }
    let program = super::programs::find(super::programs::MODPROBE)
        .map_err(|e| fail(format!("modprobe {e}")))?;
    let ran =
        super::programs::run_within(program, &["--", module.as_str()], deadline).map_err(fail)?;
    if !ran.status.success() {
        let detail = ran.stderr.lines().next().unwrap_or("").trim().to_string();
        return Err(fail(if detail.is_empty() {
            format!("modprobe exited with {}", ran.status)
        } else {
            detail
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_from_paths() {
        assert_eq!(
            module_of_path("kernel/drivers/vfio/pci/vfio-pci.ko.xz"),
            Some(ModuleName::new("vfio_pci"))
        );
        assert_eq!(
            module_of_path("kernel/drivers/net/e1000e/e1000e.ko"),
            Some(ModuleName::new("e1000e"))
        );
    }
}
