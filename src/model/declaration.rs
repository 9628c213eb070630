//! Declared (persistent) bindings: which devices should live on which driver,
//! as read from /etc/vfioctl/bindings.d, and how they match devices.

use std::fmt;

use serde::Serialize;

use super::address::PciAddress;
use super::device::PciDevice;
use super::driver::{DriverKind, DriverName};
use super::ids::{DeviceId, DeviceIds, VendorId};
use super::inventory::Inventory;
use super::selector::{Matcher, Selector};

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

    /// More specific declarations win: an address, then subsystem IDs.
    fn specificity(&self) -> u8 {
        u8::from(self.address.is_some()) * 2 + u8::from(self.subsystem.is_some())
    }
}

/// Every declaration, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Declarations {
    pub list: Vec<Declaration>,
}

/// The declaration that governs one device, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Governing<'a> {
    pub declaration: &'a Declaration,
    /// Less specific declarations that also matched and were overruled.
    pub overruled: Vec<&'a Declaration>,
}

impl Declarations {
    /// The most specific declaration that applies to `dev`.
    pub fn governing(&self, dev: &PciDevice) -> Option<Governing<'_>> {
        let mut fits: Vec<&Declaration> = self
            .list
            .iter()
            .filter(|d| d.fit(dev) == Fit::Applies)
            .collect();
        // Stable: among equally specific declarations the first in file order wins.
        fits.sort_by_key(|d| std::cmp::Reverse(d.specificity()));
        let mut fits = fits.into_iter();
        let declaration = fits.next()?;
        Some(Governing {
            declaration,
            overruled: fits.collect(),
        })
    }

    /// The devices some declaration governs.
    pub fn declared<'a>(
        &'a self,
        devices: &'a [PciDevice],
    ) -> impl Iterator<Item = &'a PciDevice> + 'a {
        devices.iter().filter(move |d| self.governing(d).is_some())
    }

    /// The devices `decl` governs (it is their most specific declaration).
    pub fn covered<'a>(
        &'a self,
        devices: &'a [PciDevice],
        decl: &'a Declaration,
    ) -> impl Iterator<Item = &'a PciDevice> + 'a {
        devices
            .iter()
            .filter(move |d| self.governing(d).is_some_and(|g| g.declaration == decl))
    }

    /// Declarations whose address holds a different device now.
    pub fn mismatches<'a>(&'a self, devices: &'a [PciDevice]) -> Vec<(&'a Declaration, DeviceIds)> {
        self.list
            .iter()
            .filter_map(|decl| {
                devices.iter().find_map(|dev| match decl.fit(dev) {
                    Fit::Mismatch { found } => Some((decl, found)),
                    _ => None,
                })
            })
            .collect()
    }
}

/// Why declarations could not be made from selectors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeclareError(pub String);

fn from_device(dev: &PciDevice, by_address: bool, driver: Option<&DriverName>) -> Declaration {
    Declaration {
        vendor: dev.ids.vendor,
        device: dev.ids.device,
        // An address declaration records everything needed to notice a swap.
        subsystem: by_address.then_some((dev.ids.subsystem_vendor, dev.ids.subsystem_device)),
        address: by_address.then_some(dev.address),
        driver: driver.cloned().into(),
        origin: Origin {
            file: String::new(),
            line: 0,
        },
    }
}

/// The declarations `persist add` makes for `selectors`: an address selector
/// declares that function (with its IDs); an ID selector declares the IDs
/// (present or not); any other selector declares each matched function by
/// address. Display adapters bring their companions, declared the same way.
pub fn declare(
    inv: &Inventory,
    selectors: &[Selector],
    driver: Option<&DriverName>,
) -> Result<Vec<Declaration>, DeclareError> {
    let mut out: Vec<Declaration> = Vec::new();
    let mut push = |decl: Declaration| {
        if !out.iter().any(|d| d.key() == decl.key()) {
            out.push(decl);
        }
    };
    for selector in selectors {
        let matched: Vec<&PciDevice> = inv.devices.iter().filter(|d| selector.matches(d)).collect();
        if let Some(bridge) = matched.iter().find(|d| d.is_bridge()) {
            return Err(DeclareError(format!(
                "selector '{selector}' matches {}, a bridge or port; bridges are never bound",
                bridge.address
            )));
        }
        let by_address = match &selector.matcher {
            Matcher::Ids {
                vendor,
                device: Some(device),
                subsystem,
            } => {
                push(Declaration {
                    vendor: *vendor,
                    device: *device,
                    subsystem: *subsystem,
                    address: None,
                    driver: driver.cloned().into(),
                    origin: Origin {
                        file: String::new(),
                        line: 0,
                    },
                });
                false
            }
            Matcher::Ids { device: None, .. } => {
                if matched.is_empty() {
                    return Err(DeclareError(format!(
                        "selector '{selector}' matched no PCI function"
                    )));
                }
                for dev in &matched {
                    push(from_device(dev, false, driver));
                }
                false
            }
            _ => {
                if matched.is_empty() {
                    return Err(DeclareError(format!(
                        "selector '{selector}' matched no PCI function"
                    )));
                }
                for dev in &matched {
                    push(from_device(dev, true, driver));
                }
                true
            }
        };
        for dev in &matched {
            for companion in inv.companions(dev) {
                if let Some(c) = inv.device(&companion.address) {
                    push(from_device(c, by_address, driver));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::device::tests::endpoint;

    fn decl(address: Option<&str>, subsystem: Option<(u16, u16)>) -> Declaration {
        Declaration {
            vendor: VendorId(0x10de),
            device: DeviceId(0x20b0),
            subsystem: subsystem.map(|(v, d)| (VendorId(v), DeviceId(d))),
            address: address.map(|a| a.parse().unwrap()),
            driver: DeclaredDriver::Auto,
            origin: Origin {
                file: "/etc/vfioctl/bindings.d/a.toml".into(),
                line: 1,
            },
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
        let all = Declarations {
            list: vec![decl(Some("25:00.0"), None)],
        };
        assert_eq!(all.mismatches(std::slice::from_ref(&other)).len(), 1);
        assert_eq!(other.ids.to_string(), "8086:20b0:10de:134f");
    }

    #[test]
    fn the_most_specific_declaration_governs() {
        let gpu = endpoint("25:00.0", 0x030200);
        let mut by_address = decl(Some("25:00.0"), None);
        by_address.driver = DeclaredDriver::Named(DriverName::new("pci-stub"));
        let all = Declarations {
            list: vec![
                decl(None, None),
                decl(None, Some((0x10de, 0x134f))),
                by_address.clone(),
            ],
        };
        let governing = all.governing(&gpu).unwrap();
        assert_eq!(governing.declaration, &by_address);
        assert_eq!(governing.overruled.len(), 2);
        assert!(governing.overruled[0].subsystem.is_some());
    }
}
