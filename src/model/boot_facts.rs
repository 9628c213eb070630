//! What the boot-time files are generated from: plain facts about the host
//! (CPU vendor, distribution, initramfs generators, declarations and module
//! dependencies). `host::hostfacts` reads them; `integrations::boot_files`
//! renders from them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::declaration::Declarations;
use super::ModuleName;

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
