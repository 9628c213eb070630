//! Driver and module names.
//!
//! The kernel spells a driver `vfio-pci` and its module `vfio_pci`;
//! modprobe treats `-` and `_` alike. Both types keep the spelling they were
//! read with (what gets written to sysfs) and compare by the normalised form.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize, Serializer};

fn normalised(name: &str) -> impl Iterator<Item = u8> + '_ {
    name.bytes().map(|b| if b == b'-' { b'_' } else { b })
}

macro_rules! kernel_name {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Eq)]
        pub struct $name(String);

        impl $name {
            pub fn new(name: impl Into<String>) -> Self {
                $name(name.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                normalised(&self.0).eq(normalised(&other.0))
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                normalised(&self.0).cmp(normalised(&other.0))
            }
        }

        impl Hash for $name {
            fn hash<H: Hasher>(&self, state: &mut H) {
                for b in normalised(&self.0) {
                    state.write_u8(b);
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

/// A name that is not a kernel driver or module name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{shown}' is not a {what} name: use 1 to {MAX_NAME} letters, digits, '-' and '_', not starting with '-' (e.g. vfio-pci)", shown = .name.escape_debug())]
pub struct BadName {
    pub what: &'static str,
    pub name: String,
}

/// The longest driver or module name accepted (the kernel's MODULE_NAME_LEN is 64 with its NUL).
pub const MAX_NAME: usize = 63;

/// The one grammar for driver and module names that reach generated files
/// (TOML, udev rules, modprobe.d, initramfs scripts): `[A-Za-z0-9_-]{1,63}`,
/// not starting with `-`. Nothing else can break out of any of those
/// syntaxes, and no name reads as an option to a command it reaches
/// (`echo -n`, `modprobe -r`).
pub fn valid_name(text: &str) -> bool {
    (1..=MAX_NAME).contains(&text.len())
        && !text.starts_with('-')
        && text
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

impl DriverName {
    /// A driver name from outside (the command line, a declaration, udev's
    /// environment), checked against `valid_name`.
    pub fn parse(text: &str) -> Result<DriverName, BadName> {
        if valid_name(text) {
            Ok(DriverName::new(text))
        } else {
            Err(BadName {
                what: "driver",
                name: text.to_string(),
            })
        }
    }
}

impl std::str::FromStr for DriverName {
    type Err = BadName;
    fn from_str(text: &str) -> Result<DriverName, BadName> {
        DriverName::parse(text)
    }
}

kernel_name!(
    DriverName,
    "A PCI driver's name as registered under /sys/bus/pci/drivers (e.g. `vfio-pci`)."
);

/// Read back (the change record): checked against `valid_name` like any
/// name from outside.
impl<'de> Deserialize<'de> for DriverName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        DriverName::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A device's driver and its `driver_override` (`None`: no driver, no override).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub driver: Option<DriverName>,
    pub driver_override: Option<DriverName>,
}

/// `vfio-pci, override vfio-pci`, `no driver`, ...
impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.driver {
            Some(d) => write!(f, "{d}")?,
            None => f.write_str("no driver")?,
        }
        match &self.driver_override {
            Some(o) => write!(f, ", override {o}"),
            None => Ok(()),
        }
    }
}
kernel_name!(
    ModuleName,
    "A kernel module's name (e.g. `vfio_pci`), as under /sys/module."
);

/// How a bound driver affects VFIO's use of the device's IOMMU group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// vfio-pci itself or a vendor variant (mlx5_vfio_pci, nvgrace_gpu_vfio_pci, ...).
    Vfio,
    /// pci-stub: claims the device and does nothing with it.
    Stub,
    /// Any other driver: the host uses the device.
    Host,
}

impl DriverName {
    pub fn vfio_pci() -> DriverName {
        DriverName::new("vfio-pci")
    }

    pub fn kind(&self) -> DriverKind {
        let n: Vec<u8> = normalised(&self.0).collect();
        if n == b"pci_stub" {
            DriverKind::Stub
        } else if n == b"vfio_pci" || n.ends_with(b"_vfio_pci") {
            // Variant drivers are named <vendor>_vfio_pci by kernel convention.
            DriverKind::Vfio
        } else {
            DriverKind::Host
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn dash_and_underscore_are_the_same_name() {
        assert_eq!(DriverName::new("vfio-pci"), DriverName::new("vfio_pci"));
        assert_ne!(DriverName::new("vfio-pci"), DriverName::new("vfio-pci2"));
        let set: HashSet<DriverName> = [DriverName::new("snd-hda-intel")].into();
        assert!(set.contains(&DriverName::new("snd_hda_intel")));
        // The spelling read from sysfs is kept for writing back.
        assert_eq!(DriverName::new("vfio-pci").to_string(), "vfio-pci");
    }

    /// #24 class 7: `-n` as a declared driver became `echo -n >
    /// driver_override` in the boot script (an empty claim).
    #[test]
    fn names_that_read_as_options_are_refused() {
        for bad in ["-n", "-e", "--", "-", "-vfio-pci"] {
            let err = DriverName::parse(bad).unwrap_err();
            assert!(err.to_string().contains("not starting with '-'"), "{err}");
        }
        for good in ["vfio-pci", "_x", "pci-stub", "a-"] {
            assert!(DriverName::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn classifies_drivers_for_group_viability() {
        assert_eq!(DriverName::new("vfio-pci").kind(), DriverKind::Vfio);
        assert_eq!(DriverName::new("mlx5_vfio_pci").kind(), DriverKind::Vfio);
        assert_eq!(
            DriverName::new("nvgrace-gpu-vfio-pci").kind(),
            DriverKind::Vfio
        );
        assert_eq!(DriverName::new("pci-stub").kind(), DriverKind::Stub);
        assert_eq!(DriverName::new("nvidia").kind(), DriverKind::Host);
        assert_eq!(DriverName::new("vfio_pci_core").kind(), DriverKind::Host);
    }
}
