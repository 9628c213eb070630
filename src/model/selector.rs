//! The selector grammar operators use to name devices, and matching.
//!
//! ```text
//! 0000:25:00.0 | 25:00.0          one function by address
//! 10de:20b0                       vendor:device
//! 10de:20b0:10de:134f             vendor:device:subsystem-vendor:subsystem-device
//! 10de:                           every function of a vendor
//! class=gpu|net|nvme|storage|usb|audio|bridge|accel|HEX   class, or a 2/4/6-digit class prefix
//! driver=NAME | driver=none       bound driver (none: unbound)
//! group=N                         IOMMU group
//! ```

use std::fmt;
use std::str::FromStr;

use super::address::PciAddress;
use super::device::PciDevice;
use super::driver::DriverName;
use super::ids::{ClassCode, DeviceId, VendorId};

/// A class code prefix: `digits` significant hex digits (2, 4 or 6) of `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassPrefix {
    value: u32,
    digits: u8,
}

impl ClassPrefix {
    pub fn matches(self, class: u32) -> bool {
        (class & 0xff_ffff) >> (4 * u32::from(6 - self.digits)) == self.value
    }
}

/// Named classes an operator can use instead of hex.
const CLASS_NAMES: &[(&str, u32, u8)] = &[
    ("gpu", 0x03, 2),
    ("display", 0x03, 2),
    ("net", 0x02, 2),
    ("storage", 0x01, 2),
    ("nvme", 0x0108, 4),
    ("usb", 0x0c03, 4),
    ("audio", 0x0403, 4),
    ("bridge", 0x06, 2),
    ("accel", 0x12, 2),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    Address(PciAddress),
    Ids {
        vendor: VendorId,
        device: Option<DeviceId>,
        subsystem: Option<(VendorId, DeviceId)>,
    },
    Class(ClassPrefix),
    /// `None` selects unbound functions.
    Driver(Option<DriverName>),
    Group(u32),
}

/// A parsed selector; keeps the operator's text for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub text: String,
    pub matcher: Matcher,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed selector '{text}': {reason} (try 0000:25:00.0, 25:00.0, 10de:20b0, 10de:, class=gpu, driver=vfio-pci or group=12)")]
pub struct SelectorError {
    pub text: String,
    pub reason: String,
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| SelectorError {
            text: text.to_string(),
            reason,
        };
        let matcher = if let Some(value) = text.strip_prefix("class=") {
            Matcher::Class(parse_class(value).ok_or_else(|| {
                let names: Vec<&str> = CLASS_NAMES.iter().map(|c| c.0).collect();
                fail(format!(
                    "class must be one of {} or 2, 4 or 6 hex digits",
                    names.join(", ")
                ))
            })?)
        } else if let Some(value) = text.strip_prefix("driver=") {
            if value.is_empty() || value.contains(['/', ' ']) {
                return Err(fail("driver name is empty or has '/' or spaces".into()));
            }
            Matcher::Driver((value != "none").then(|| DriverName::new(value)))
        } else if let Some(value) = text.strip_prefix("group=") {
            Matcher::Group(
                value
                    .parse()
                    .map_err(|_| fail("group must be a decimal number".into()))?,
            )
        } else if text.contains('.') {
            Matcher::Address(
                text.parse::<PciAddress>()
                    .map_err(|e| fail(e.reason.to_string()))?,
            )
        } else if text.contains(':') {
            parse_ids(text).ok_or_else(|| {
                fail("IDs are 4 hex digits each: VENDOR:, VENDOR:DEVICE or VENDOR:DEVICE:SUBVENDOR:SUBDEVICE".into())
            })?
        } else {
            return Err(fail(
                "not an address, ID pair, class=, driver= or group=".into(),
            ));
        };
        Ok(Selector {
            text: text.to_string(),
            matcher,
        })
    }
}

fn parse_class(value: &str) -> Option<ClassPrefix> {
    if let Some(&(_, class, digits)) = CLASS_NAMES.iter().find(|c| c.0 == value) {
        return Some(ClassPrefix {
            value: class,
            digits,
        });
    }
    let hex = value.strip_prefix("0x").unwrap_or(value);
    if !matches!(hex.len(), 2 | 4 | 6) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(ClassPrefix {
        value: u32::from_str_radix(hex, 16).ok()?,
        digits: hex.len() as u8,
    })
}

fn parse_ids(text: &str) -> Option<Matcher> {
    let parts: Vec<&str> = text.split(':').collect();
    let vendor = VendorId::parse_hex4(parts[0])?;
    match parts.as_slice() {
        [_, ""] => Some(Matcher::Ids {
            vendor,
            device: None,
            subsystem: None,
        }),
        [_, device] => Some(Matcher::Ids {
            vendor,
            device: Some(DeviceId::parse_hex4(device)?),
            subsystem: None,
        }),
        [_, device, sv, sd] => Some(Matcher::Ids {
            vendor,
            device: Some(DeviceId::parse_hex4(device)?),
            subsystem: Some((VendorId::parse_hex4(sv)?, DeviceId::parse_hex4(sd)?)),
        }),
        _ => None,
    }
}

/// What a matcher looks at, from sysfs or from libvirt's XML (which has no
/// subsystem IDs, and may lack a class).
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub address: PciAddress,
    pub vendor: VendorId,
    pub device: DeviceId,
    pub subsystem: Option<(VendorId, DeviceId)>,
    pub class: Option<ClassCode>,
    pub driver: Option<&'a DriverName>,
    pub iommu_group: Option<u32>,
}

impl<'a> From<&'a PciDevice> for Candidate<'a> {
    fn from(dev: &'a PciDevice) -> Self {
        Candidate {
            address: dev.address,
            vendor: dev.ids.vendor,
            device: dev.ids.device,
            subsystem: Some((dev.ids.subsystem_vendor, dev.ids.subsystem_device)),
            class: Some(dev.class),
            driver: dev.driver.as_ref(),
            iommu_group: dev.iommu_group,
        }
    }
}

impl Matcher {
    /// The one ID/selector matching rule: selectors, declarations and
    /// libvirt's node devices all ask it. Subsystem IDs must match when asked
    /// for; a candidate without them (libvirt) then does not match.
    pub fn matches(&self, c: &Candidate) -> bool {
        match self {
            Matcher::Address(addr) => c.address == *addr,
            Matcher::Ids {
                vendor,
                device,
                subsystem,
            } => {
                c.vendor == *vendor
                    && device.is_none_or(|d| c.device == d)
                    && subsystem.is_none_or(|want| c.subsystem == Some(want))
            }
            Matcher::Class(prefix) => c.class.is_some_and(|cl| prefix.matches(cl.0)),
            Matcher::Driver(want) => c.driver == want.as_ref(),
            Matcher::Group(n) => c.iommu_group == Some(*n),
        }
    }
}

impl Selector {
    pub fn matches(&self, dev: &PciDevice) -> bool {
        self.matcher.matches(&dev.into())
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::device::tests::endpoint;
    use crate::model::ids::ClassCode;

    fn sel(text: &str) -> Selector {
        text.parse().unwrap()
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(
            sel("25:00.0").matcher,
            Matcher::Address(PciAddress::new(0, 0x25, 0, 0))
        );
        assert_eq!(
            sel("10de:").matcher,
            Matcher::Ids {
                vendor: VendorId(0x10de),
                device: None,
                subsystem: None
            }
        );
        assert_eq!(
            sel("10de:20b0:10de:134f").matcher,
            Matcher::Ids {
                vendor: VendorId(0x10de),
                device: Some(DeviceId(0x20b0)),
                subsystem: Some((VendorId(0x10de), DeviceId(0x134f)))
            }
        );
        assert_eq!(sel("driver=none").matcher, Matcher::Driver(None));
        assert_eq!(sel("group=47").matcher, Matcher::Group(47));
    }

    #[test]
    fn malformed_selectors_say_why() {
        for (text, reason) in [
            ("25:00", "IDs are 4 hex digits"),
            ("10de:20b", "IDs are 4 hex digits"),
            ("10de:20b0:10de", "IDs are 4 hex digits"),
            ("25:00.9", "function must be 0..7"),
            ("class=gpus", "class must be one of"),
            ("class=030", "class must be one of"),
            ("group=x", "group must be a decimal"),
            ("driver=", "driver name is empty"),
            ("nvidia", "not an address"),
        ] {
            let err = text.parse::<Selector>().unwrap_err();
            assert!(err.reason.contains(reason), "{text}: {}", err.reason);
            assert!(err
                .to_string()
                .starts_with(&format!("malformed selector '{text}'")));
        }
    }

    #[test]
    fn matches_devices() {
        let mut gpu = endpoint("25:00.0", 0x030200);
        gpu.driver = Some(DriverName::new("vfio-pci"));
        gpu.iommu_group = Some(47);
        let mut nvme = endpoint("26:00.0", 0x010802);
        nvme.ids.vendor = VendorId(0x144d);

        assert!(sel("0000:25:00.0").matches(&gpu));
        assert!(!sel("25:00.1").matches(&gpu));
        assert!(sel("10de:20b0").matches(&gpu));
        assert!(sel("10de:").matches(&gpu));
        assert!(sel("10de:20b0:10de:134f").matches(&gpu));
        assert!(!sel("10de:20b0:10de:1111").matches(&gpu));
        assert!(sel("class=gpu").matches(&gpu));
        assert!(sel("class=0302").matches(&gpu));
        assert!(sel("class=030200").matches(&gpu));
        assert!(!sel("class=0300").matches(&gpu));
        assert!(sel("class=nvme").matches(&nvme));
        assert!(sel("class=storage").matches(&nvme));
        assert!(!sel("class=nvme").matches(&gpu));
        assert!(sel("driver=vfio_pci").matches(&gpu));
        assert!(sel("driver=none").matches(&nvme));
        assert!(!sel("driver=none").matches(&gpu));
        assert!(sel("group=47").matches(&gpu));
        assert!(!sel("group=47").matches(&nvme));
        assert_eq!(nvme.class, ClassCode(0x010802));
    }
}
