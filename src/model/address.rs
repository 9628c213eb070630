//! PCI function addresses: `domain:bus:device.function`.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// One PCI function's address. Ordered the way the kernel enumerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// Segment. Usually 0; VMD and some hosts use values above 0xffff.
    pub domain: u32,
    pub bus: u8,
    /// 0..=31
    pub device: u8,
    /// 0..=7
    pub function: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed PCI address '{text}': {reason} (expected DOMAIN:BUS:DEVICE.FUNCTION like 0000:25:00.0, or BUS:DEVICE.FUNCTION like 25:00.0)")]
pub struct AddressError {
    pub text: String,
    pub reason: &'static str,
}

impl PciAddress {
    pub const fn new(domain: u32, bus: u8, device: u8, function: u8) -> Self {
        PciAddress {
            domain,
            bus,
            device,
            function,
        }
    }

    /// True when both functions sit in the same physical slot (same device number).
    pub fn same_slot(&self, other: &PciAddress) -> bool {
        self.domain == other.domain && self.bus == other.bus && self.device == other.device
    }

    /// VF `index` of this PF, by the SR-IOV capability's First VF Offset
    /// and VF Stride (`sriov_offset`, `sriov_stride`): routing ID (bus,
    /// device, function as one 16-bit number) + offset + index * stride. VFs
    /// may spill into the next device numbers and buses (an A100's from
    /// function .4 on). `None` past the last bus.
    pub fn vf(&self, offset: u16, stride: u16, index: u16) -> Option<PciAddress> {
        let rid = u32::from(self.bus) << 8 | u32::from(self.device) << 3 | u32::from(self.function);
        let vf = rid + u32::from(offset) + u32::from(index) * u32::from(stride);
        (vf <= 0xffff).then_some(PciAddress {
            domain: self.domain,
            bus: (vf >> 8) as u8,
            device: ((vf >> 3) & 0x1f) as u8,
            function: (vf & 7) as u8,
        })
    }

    /// Parses a name that must be exactly a full address, as sysfs writes them
    /// (`0000:25:00.0`); anything else yields `None`. Used for directory entries.
    pub fn from_sysfs_name(name: &str) -> Option<PciAddress> {
        let addr: PciAddress = name.parse().ok()?;
        // Require the long form so that short names in a directory are not mistaken.
        (name.matches(':').count() == 2).then_some(addr)
    }
}

fn hex_field(text: &str, max_digits: usize, max_value: u32) -> Option<u32> {
    if text.is_empty() || text.len() > max_digits || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let value = u32::from_str_radix(text, 16).ok()?;
    (value <= max_value).then_some(value)
}

impl FromStr for PciAddress {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| AddressError {
            text: text.to_string(),
            reason,
        };
        let (head, function) = text
            .rsplit_once('.')
            .ok_or_else(|| fail("no '.FUNCTION'"))?;
        let mut parts: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match parts.len() {
            3 => (parts.remove(0), parts[0], parts[1]),
            2 => ("0", parts[0], parts[1]),
            _ => return Err(fail("wrong number of ':' separators")),
        };
        let domain = hex_field(domain, 8, u32::MAX).ok_or_else(|| fail("bad domain"))?;
        let bus = hex_field(bus, 2, 0xff).ok_or_else(|| fail("bad bus"))?;
        let device = hex_field(device, 2, 0x1f).ok_or_else(|| fail("device must be 00..1f"))?;
        let function = hex_field(function, 1, 7).ok_or_else(|| fail("function must be 0..7"))?;
        Ok(PciAddress::new(
            domain,
            bus as u8,
            device as u8,
            function as u8,
        ))
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl Serialize for PciAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Read back from the same text it serializes to (`0000:25:00.0`), so a map
/// keyed by addresses (the change record) is typed in memory and unchanged on disk.
impl<'de> serde::Deserialize<'de> for PciAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PciAddress, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_long_and_short_forms() {
        let long: PciAddress = "0000:25:00.0".parse().unwrap();
        let short: PciAddress = "25:00.0".parse().unwrap();
        assert_eq!(long, short);
        assert_eq!(long, PciAddress::new(0, 0x25, 0, 0));
        assert_eq!(
            "10000:e1:1f.7".parse::<PciAddress>().unwrap(),
            PciAddress::new(0x10000, 0xe1, 0x1f, 7)
        );
        assert_eq!("0000:B7:00.0".parse::<PciAddress>().unwrap().bus, 0xb7);
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(PciAddress::new(0, 0x25, 0, 1).to_string(), "0000:25:00.1");
        assert_eq!(
            PciAddress::new(0x10000, 1, 2, 3).to_string(),
            "10000:01:02.3"
        );
    }

    #[test]
    fn rejects_malformed_with_reason() {
        for (text, reason) in [
            ("25:00", "no '.FUNCTION'"),
            ("25.0", "wrong number of ':' separators"),
            ("0:0:0:0.0", "wrong number of ':' separators"),
            ("zz:00.0", "bad bus"),
            ("125:00.0", "bad bus"),
            ("25:20.0", "device must be 00..1f"),
            ("25:00.8", "function must be 0..7"),
            ("25:00.", "function must be 0..7"),
            ("x:25:00.0", "bad domain"),
            ("+1:00.0", "bad bus"),
        ] {
            let err = text.parse::<PciAddress>().unwrap_err();
            assert_eq!(err.reason, reason, "{text}");
            assert!(err.to_string().contains(text));
        }
    }

    #[test]
    fn orders_like_the_kernel() {
        let mut addrs: Vec<PciAddress> = [
            "0001:00:00.0",
            "0000:25:00.1",
            "0000:25:00.0",
            "0000:03:1f.0",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        addrs.sort();
        let text: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            text,
            [
                "0000:03:1f.0",
                "0000:25:00.0",
                "0000:25:00.1",
                "0001:00:00.0"
            ]
        );
    }

    #[test]
    fn sysfs_names_must_be_long_form() {
        assert!(PciAddress::from_sysfs_name("0000:00:01.0").is_some());
        assert!(PciAddress::from_sysfs_name("00:01.0").is_none());
        assert!(PciAddress::from_sysfs_name("module").is_none());
    }

    #[test]
    fn vf_addresses_follow_offset_and_stride() {
        // NVIDIA's vGPU guide: PF 41:00.0, virtfn0 -> 41:00.4, virtfn4 -> 41:01.0.
        let pf: PciAddress = "41:00.0".parse().unwrap();
        let at = |i| pf.vf(4, 1, i).unwrap().to_string();
        assert_eq!(at(0), "0000:41:00.4");
        assert_eq!(at(4), "0000:41:01.0");
        assert_eq!(at(31), "0000:41:04.3");
        // Into the next bus, and past the last one.
        let high: PciAddress = "ff:1f.0".parse().unwrap();
        assert_eq!(high.vf(8, 1, 0), None);
        let pf: PciAddress = "3a:1f.7".parse().unwrap();
        assert_eq!(pf.vf(1, 2, 0).unwrap().to_string(), "0000:3b:00.0");
    }

    #[test]
    fn same_slot_ignores_function() {
        let a: PciAddress = "25:00.0".parse().unwrap();
        let b: PciAddress = "25:00.1".parse().unwrap();
        let c: PciAddress = "25:01.0".parse().unwrap();
        assert!(a.same_slot(&b));
        assert!(!a.same_slot(&c));
    }
}
