//! Declared (persistent) bindings: which devices should live on which driver,
//! as read from /etc/vfioctl/bindings.d, and how they match devices.
//!
//! The files, each read on its own:
//! - this one: one declaration (`[[binding]]` or `[[sriov]]`), the driver it
//!   asks for, and how it fits one device ([`Fit`]);
//! - `set.rs`: every declaration together ([`Declarations`]): which one
//!   governs a device, which disagree ([`Conflict`]), what each covers;
//! - `declare.rs`: the declarations `persist add` makes from selectors.
//!
//! The file grammar (TOML, file names, the digest header) is the host's:
//! `crate::host::config`.

mod declare;
mod set;

use std::fmt;

use serde::Serialize;

use super::address::PciAddress;
use super::device::PciDevice;
use super::driver::{DriverKind, DriverName};
use super::ids::{DeviceId, DeviceIds, VendorId};
use super::selector::Matcher;

pub use declare::{declare, DeclareError};
pub use set::{Conflict, Declarations, Governing};

/// Where a declaration was read from, for messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One declared binding. With an address it names one function, and its IDs
/// say what must be found there; without, it names every function with the IDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Declaration {
    pub vendor: VendorId,
    pub device: DeviceId,
    pub subsystem: Option<(VendorId, DeviceId)>,
    pub address: Option<PciAddress>,
    pub driver: DeclaredDriver,
    /// For a declaration by IDs: the functions it covered when declared (or
    /// `--expect N`). Fewer present later is CRITICAL (a GPU fell off the bus).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<usize>,
    /// The addresses it covered when declared, to name what went missing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<PciAddress>,
    pub origin: Origin,
}

/// The driver a declaration asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeclaredDriver {
    /// vfio-pci, or the device's best VFIO variant driver.
    Auto,
    Named(DriverName),
}

impl DeclaredDriver {
    /// `auto` (or nothing) means `Auto`; anything else names a driver.
    pub fn parse(text: Option<&str>) -> DeclaredDriver {
        match text {
            None | Some("auto") => DeclaredDriver::Auto,
            Some(name) => DeclaredDriver::Named(DriverName::new(name)),
        }
    }

    /// The named driver, if one was declared.
    pub fn named(&self) -> Option<&DriverName> {
        match self {
            DeclaredDriver::Auto => None,
            DeclaredDriver::Named(d) => Some(d),
        }
    }

    /// Whether a device on `driver` satisfies this declaration: the named
    /// driver, or (for `Auto`) vfio-pci or any VFIO variant.
    pub fn satisfied_by(&self, driver: Option<&DriverName>) -> bool {
        match (self, driver) {
            (DeclaredDriver::Named(want), Some(have)) => want == have,
            (DeclaredDriver::Auto, Some(have)) => have.kind() == DriverKind::Vfio,
            (_, None) => false,
        }
    }
}

impl From<Option<DriverName>> for DeclaredDriver {
    fn from(driver: Option<DriverName>) -> Self {
        driver.map_or(DeclaredDriver::Auto, DeclaredDriver::Named)
    }
}

/// `auto` or the driver's name: the udev mark and the `persist list` column.
impl std::fmt::Display for DeclaredDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeclaredDriver::Auto => f.write_str("auto"),
            DeclaredDriver::Named(d) => d.fmt(f),
        }
    }
}

/// JSON keeps its schema: `null` for `Auto`, the name otherwise.
impl Serialize for DeclaredDriver {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.named().serialize(s)
    }
}

/// How a declaration relates to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    Applies,
    NotThisDevice,
    /// The declared address now holds a different device: the slot moved or
    /// the card was replaced. Never applied; reported.
    Mismatch {
        found: DeviceIds,
    },
}

impl Declaration {
    /// A declaration of IDs on the default driver, read from `file:line`;
    /// the other fields are set with struct update syntax.
    pub fn of_ids(vendor: VendorId, device: DeviceId, file: &str, line: usize) -> Declaration {
        Declaration {
            vendor,
            device,
            subsystem: None,
            address: None,
            driver: DeclaredDriver::Auto,
            expect: None,
            seen: Vec::new(),
            origin: Origin {
                file: file.to_string(),
                line,
            },
        }
    }
    /// The short key: `0000:25:00.0`, `10de:20b0` or `10de:20b0:10de:134f`.
    pub fn key(&self) -> String {
        match self.address {
            Some(addr) => addr.to_string(),
            None => self.ids_text(),
        }
    }

    pub fn ids_text(&self) -> String {
        match self.subsystem {
            Some((sv, sd)) => format!("{}:{}:{sv}:{sd}", self.vendor, self.device),
            None => format!("{}:{}", self.vendor, self.device),
        }
    }

    fn ids_match(&self, dev: &PciDevice) -> bool {
        Matcher::Ids {
            vendor: self.vendor,
            device: Some(self.device),
            subsystem: self.subsystem,
        }
        .matches(&dev.into())
    }

    pub fn fit(&self, dev: &PciDevice) -> Fit {
        match self.address {
            Some(addr) if addr != dev.address => Fit::NotThisDevice,
            Some(_) if self.ids_match(dev) => Fit::Applies,
            Some(_) => Fit::Mismatch { found: dev.ids },
            None if self.ids_match(dev) => Fit::Applies,
            None => Fit::NotThisDevice,
        }
    }
}

/// One declared SR-IOV physical function (`[[sriov]]`): the number of VFs
/// it should carry and the driver its VFs go to. Its IDs say what must be
/// found at the address: a replaced card is reported, never configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SriovDeclaration {
    pub address: PciAddress,
    pub vendor: VendorId,
    pub device: DeviceId,
    pub numvfs: u16,
    /// The driver of its VFs (a `[[binding]]` naming a VF's address wins).
    pub vf_driver: DeclaredDriver,
    pub origin: Origin,
}

impl SriovDeclaration {
    /// The PF's address: what `persist remove` and messages name.
    pub fn key(&self) -> String {
        self.address.to_string()
    }

    pub fn ids_text(&self) -> String {
        format!("{}:{}", self.vendor, self.device)
    }

    /// Applies to the PF at its address with its IDs; a mismatch otherwise.
    pub fn fit(&self, dev: &PciDevice) -> Fit {
        if dev.address != self.address {
            Fit::NotThisDevice
        } else if dev.ids.vendor == self.vendor && dev.ids.device == self.device {
            Fit::Applies
        } else {
            Fit::Mismatch { found: dev.ids }
        }
    }

    /// The binding its `vf_driver` makes for one VF of its PF.
    fn vf_binding(&self, vf: &PciDevice) -> Declaration {
        Declaration {
            address: Some(vf.address),
            driver: self.vf_driver.clone(),
            ..Declaration::of_ids(
                vf.ids.vendor,
                vf.ids.device,
                &self.origin.file,
                self.origin.line,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::device::tests::endpoint;

    pub(super) fn decl(address: Option<&str>, subsystem: Option<(u16, u16)>) -> Declaration {
        Declaration {
            subsystem: subsystem.map(|(v, d)| (VendorId(v), DeviceId(d))),
            address: address.map(|a| a.parse().unwrap()),
            ..Declaration::of_ids(
                VendorId(0x10de),
                DeviceId(0x20b0),
                "/etc/vfioctl/bindings.d/a.toml",
                1,
            )
        }
    }

    #[test]
    fn ids_declarations_match_every_such_function() {
        let gpu = endpoint("25:00.0", 0x030200);
        assert_eq!(decl(None, None).fit(&gpu), Fit::Applies);
        assert_eq!(decl(None, Some((0x10de, 0x134f))).fit(&gpu), Fit::Applies);
        assert_eq!(
            decl(None, Some((0x10de, 0x1111))).fit(&gpu),
            Fit::NotThisDevice
        );
        assert_eq!(decl(None, None).key(), "10de:20b0");
    }

    #[test]
    fn an_address_holding_another_device_is_a_mismatch() {
        let gpu = endpoint("25:00.0", 0x030200);
        assert_eq!(decl(Some("25:00.0"), None).fit(&gpu), Fit::Applies);
        assert_eq!(decl(Some("26:00.0"), None).fit(&gpu), Fit::NotThisDevice);
        let mut other = endpoint("25:00.0", 0x020000);
        other.ids.vendor = VendorId(0x8086);
        assert_eq!(
            decl(Some("25:00.0"), None).fit(&other),
            Fit::Mismatch { found: other.ids }
        );
        let all = Declarations::new(vec![decl(Some("25:00.0"), None)]);
        assert_eq!(all.mismatches(std::slice::from_ref(&other)).len(), 1);
        assert_eq!(other.ids.to_string(), "8086:20b0:10de:134f");
    }
}
