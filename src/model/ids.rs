//! Numeric PCI identifiers (vendor, device, subsystem, class) and their
//! human names from the pci.ids database.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Serialize, Serializer};

macro_rules! hex16_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A 16-bit PCI ", $what, " ID, shown as four lowercase hex digits.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u16);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:04x}", self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl $name {
            /// Parses exactly four hex digits (case-insensitive), as typed by operators.
            pub fn parse_hex4(text: &str) -> Option<Self> {
                (text.len() == 4 && text.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| u16::from_str_radix(text, 16).ok().map($name))
                    .flatten()
            }
        }
    };
}

hex16_id!(VendorId, "vendor");
hex16_id!(DeviceId, "device");

/// The IDs that identify what a function is (as opposed to where it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceIds {
    pub vendor: VendorId,
    pub device: DeviceId,
    pub subsystem_vendor: VendorId,
    pub subsystem_device: DeviceId,
}

/// `vendor:device:subsystem_vendor:subsystem_device`, as declarations spell IDs.
impl fmt::Display for DeviceIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.vendor, self.device, self.subsystem_vendor, self.subsystem_device
        )
    }
}

/// The 24-bit class code: base class, subclass, programming interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassCode(pub u32);

impl ClassCode {
    pub fn base(self) -> u8 {
        (self.0 >> 16) as u8
    }
    pub fn subclass(self) -> u8 {
        (self.0 >> 8) as u8
    }
    pub fn prog_if(self) -> u8 {
        self.0 as u8
    }
    pub fn is_display(self) -> bool {
        self.base() == 0x03
    }
}

impl fmt::Display for ClassCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06x}", self.0 & 0xff_ffff)
    }
}

impl Serialize for ClassCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses a sysfs numeric attribute such as `0x10de\n` or `0x030200\n`.
pub fn parse_sysfs_hex(text: &str) -> Option<u32> {
    let text = text.trim();
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    u32::from_str_radix(digits, 16).ok()
}

/// Names looked up in pci.ids for the devices of one inventory. Only the
/// entries asked for are kept, so a single pass over the 1.3 MB database
/// allocates a handful of strings.
#[derive(Debug, Default, Clone)]
pub struct PciNames {
    vendors: HashMap<u16, String>,
    devices: HashMap<(u16, u16), String>,
    subsystems: HashMap<(u16, u16, u16, u16), String>,
    classes: HashMap<u8, String>,
    subclasses: HashMap<(u8, u8), String>,
}

/// What a name lookup should keep.
#[derive(Debug, Default)]
pub struct NamesWanted {
    pub ids: HashSet<DeviceIds>,
    pub classes: HashSet<ClassCode>,
}

impl NamesWanted {
    pub fn add(&mut self, ids: DeviceIds, class: ClassCode) {
        self.ids.insert(ids);
        self.classes.insert(class);
    }
}

/// Splits `"10de  NVIDIA Corporation"` into the hex id and the name.
fn split_entry(line: &str) -> Option<(&str, &str)> {
    let (id, name) = line.split_once(char::is_whitespace)?;
    Some((id, name.trim()))
}

impl PciNames {
    /// Parses pci.ids text, keeping only names for `wanted`.
    pub fn parse(text: &str, wanted: &NamesWanted) -> PciNames {
        let vendors: HashSet<u16> = wanted.ids.iter().map(|i| i.vendor.0).collect();
        let devices: HashSet<(u16, u16)> = wanted
            .ids
            .iter()
            .map(|i| (i.vendor.0, i.device.0))
            .collect();
        let bases: HashSet<u8> = wanted.classes.iter().map(|c| c.base()).collect();
        let subs: HashSet<(u8, u8)> = wanted
            .classes
            .iter()
            .map(|c| (c.base(), c.subclass()))
            .collect();

        let mut names = PciNames::default();
        // Section state: the vendor (or class) and device (or subclass) being read.
        let mut vendor: Option<u16> = None;
        let mut device: Option<u16> = None;
        let mut class: Option<u8> = None;
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let depth = line.bytes().take_while(|&b| b == b'\t').count();
            let body = &line[depth..];
            match depth {
                0 => {
                    device = None;
                    if let Some(rest) = body.strip_prefix("C ") {
                        vendor = None;
                        class = split_entry(rest.trim_start()).and_then(|(id, name)| {
                            let id = u8::from_str_radix(id, 16).ok()?;
                            if bases.contains(&id) {
                                names.classes.insert(id, name.to_string());
                            }
                            Some(id)
                        });
                    } else {
                        class = None;
                        vendor = split_entry(body).and_then(|(id, name)| {
                            let id = u16::from_str_radix(id, 16).ok()?;
                            if vendors.contains(&id) {
                                names.vendors.insert(id, name.to_string());
                                Some(id)
                            } else {
                                // Skip this vendor's devices without parsing them.
                                None
                            }
                        });
                    }
                }
                1 => {
                    let Some((id, name)) = split_entry(body) else {
                        continue;
                    };
                    if let Some(v) = vendor {
                        device = u16::from_str_radix(id, 16).ok();
                        if let Some(d) = device.filter(|d| devices.contains(&(v, *d))) {
                            names.devices.insert((v, d), name.to_string());
                        }
                    } else if let Some(c) = class {
                        if let Ok(s) = u8::from_str_radix(id, 16) {
                            if subs.contains(&(c, s)) {
                                names.subclasses.insert((c, s), name.to_string());
                            }
                        }
                    }
                }
                2 => {
                    let (Some(v), Some(d)) = (vendor, device) else {
                        continue;
                    };
                    // "\t\tsubvendor subdevice  name"
                    let mut parts = body.splitn(3, char::is_whitespace);
                    let (Some(sv), Some(sd), Some(name)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    if let (Ok(sv), Ok(sd)) =
                        (u16::from_str_radix(sv, 16), u16::from_str_radix(sd, 16))
                    {
                        let key = DeviceIds {
                            vendor: VendorId(v),
                            device: DeviceId(d),
                            subsystem_vendor: VendorId(sv),
                            subsystem_device: DeviceId(sd),
                        };
                        if wanted.ids.contains(&key) {
                            names
                                .subsystems
                                .insert((v, d, sv, sd), name.trim().to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        names
    }

    pub fn vendor(&self, vendor: VendorId) -> Option<&str> {
        self.vendors.get(&vendor.0).map(String::as_str)
    }

    pub fn device(&self, vendor: VendorId, device: DeviceId) -> Option<&str> {
        self.devices.get(&(vendor.0, device.0)).map(String::as_str)
    }

    pub fn subsystem(&self, ids: &DeviceIds) -> Option<&str> {
        self.subsystems
            .get(&(
                ids.vendor.0,
                ids.device.0,
                ids.subsystem_vendor.0,
                ids.subsystem_device.0,
            ))
            .map(String::as_str)
    }

    /// The most specific class name known: the subclass's, else the base class's.
    pub fn class(&self, class: ClassCode) -> Option<&str> {
        self.subclasses
            .get(&(class.base(), class.subclass()))
            .or_else(|| self.classes.get(&class.base()))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# comment
10de  NVIDIA Corporation
\t1af1  GA100 [A100 NVSwitch]
\t20b0  GA100 [A100 SXM4 40GB]
\t\t10de 134f  A100 SXM4 40GB
8086  Intel Corporation
\t10d3  82574L Gigabit Network Connection
C 02  Network controller
\t00  Ethernet controller
C 03  Display controller
\t02  3D controller
C 06  Bridge
";

    fn ids(v: u16, d: u16, sv: u16, sd: u16) -> DeviceIds {
        DeviceIds {
            vendor: VendorId(v),
            device: DeviceId(d),
            subsystem_vendor: VendorId(sv),
            subsystem_device: DeviceId(sd),
        }
    }

    #[test]
    fn keeps_only_wanted_names() {
        let mut wanted = NamesWanted::default();
        wanted.add(ids(0x10de, 0x20b0, 0x10de, 0x134f), ClassCode(0x030200));
        wanted.add(ids(0x10de, 0x1af1, 0x10de, 0x1af1), ClassCode(0x068000));
        let names = PciNames::parse(SAMPLE, &wanted);
        assert_eq!(names.vendor(VendorId(0x10de)), Some("NVIDIA Corporation"));
        assert_eq!(names.vendor(VendorId(0x8086)), None);
        assert_eq!(
            names.device(VendorId(0x10de), DeviceId(0x20b0)),
            Some("GA100 [A100 SXM4 40GB]")
        );
        assert_eq!(
            names.subsystem(&ids(0x10de, 0x20b0, 0x10de, 0x134f)),
            Some("A100 SXM4 40GB")
        );
        assert_eq!(names.class(ClassCode(0x030200)), Some("3D controller"));
        // Unknown subclass falls back to the base class name.
        assert_eq!(names.class(ClassCode(0x068000)), Some("Bridge"));
        assert_eq!(names.class(ClassCode(0x020000)), None);
    }

    #[test]
    fn parses_sysfs_hex_attributes() {
        assert_eq!(parse_sysfs_hex("0x10de\n"), Some(0x10de));
        assert_eq!(parse_sysfs_hex("0x030200\n"), Some(0x030200));
        assert_eq!(parse_sysfs_hex("garbage"), None);
    }

    #[test]
    fn ids_display_as_lowercase_hex() {
        assert_eq!(VendorId(0x10de).to_string(), "10de");
        assert_eq!(DeviceId(0x0b).to_string(), "000b");
        assert_eq!(ClassCode(0x030200).to_string(), "030200");
        assert_eq!(ClassCode(0x030200).subclass(), 0x02);
        assert_eq!(VendorId::parse_hex4("10DE"), Some(VendorId(0x10de)));
        assert_eq!(VendorId::parse_hex4("10de0"), None);
        assert_eq!(VendorId::parse_hex4("+0de"), None);
    }
}
