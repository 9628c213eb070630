//! One cheap pass over every PCI function: its IDs, class and driver, from
//! one attribute (`modalias`) and one link (`driver`) each. `check` reads
//! the whole host this way and only the functions some check looks at in
//! depth (`integrations::check::wanted`), so a host of thousands of
//! functions with a few passed through costs a few syscalls per function.

use super::{ClassCode, DeviceId, DeviceIds, DriverName, PciAddress, VendorId};

/// What the survey read of one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Surveyed {
    pub address: PciAddress,
    pub ids: DeviceIds,
    pub class: ClassCode,
    pub driver: Option<DriverName>,
}

/// Parses a PCI function's `modalias` attribute,
/// `pci:v000010DEd000020B0sv000010DEsd0000134Fbc03sc02i00` (the kernel's
/// `modalias_show`: the IDs and class it caches, as the `vendor`, `device`,
/// `subsystem_*` and `class` attributes show them). `None` for anything else.
pub fn parse_pci_modalias(text: &str) -> Option<(DeviceIds, ClassCode)> {
    let mut rest = text.trim_end_matches('\n').strip_prefix("pci:")?;
    let mut field = |tag: &str, digits: usize| -> Option<u32> {
        let after = rest.strip_prefix(tag)?;
        let (hex, tail) = after.split_at_checked(digits)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        rest = tail;
        u32::from_str_radix(hex, 16).ok()
    };
    let id16 = |v: u32| u16::try_from(v).ok();
    let vendor = id16(field("v", 8)?)?;
    let device = id16(field("d", 8)?)?;
    let subsystem_vendor = id16(field("sv", 8)?)?;
    let subsystem_device = id16(field("sd", 8)?)?;
    let base = field("bc", 2)?;
    let sub = field("sc", 2)?;
    let prog_if = field("i", 2)?;
    if !rest.is_empty() {
        return None;
    }
    Some((
        DeviceIds {
            vendor: VendorId(vendor),
            device: DeviceId(device),
            subsystem_vendor: VendorId(subsystem_vendor),
            subsystem_device: DeviceId(subsystem_device),
        },
        ClassCode(base << 16 | sub << 8 | prog_if),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modalias_round_trips_what_the_inventory_writes() {
        let (ids, class) =
            parse_pci_modalias("pci:v000010DEd000020B0sv000010DEsd0000134Fbc03sc02i00\n").unwrap();
        assert_eq!(ids.vendor, VendorId(0x10de));
        assert_eq!(ids.device, DeviceId(0x20b0));
        assert_eq!(ids.subsystem_vendor, VendorId(0x10de));
        assert_eq!(ids.subsystem_device, DeviceId(0x134f));
        assert_eq!(class, ClassCode(0x030200));
        for bad in [
            "",
            "pci:",
            "usb:v1D6Bp0002d0606",
            "pci:v000010DEd000020B0sv000010DEsd0000134Fbc03sc02",
            "pci:v000010DEd000020B0sv000010DEsd0000134Fbc03sc02i00x",
            "pci:v0001_0DEd000020B0sv000010DEsd0000134Fbc03sc02i00",
            "pci:v000110DEd000020B0sv000010DEsd0000134Fbc03sc02i00",
            "pci:v000010DEd000020B0sv000010DEsd0000134Fbc03sc02iéé",
        ] {
            assert_eq!(parse_pci_modalias(bad), None, "{bad:?}");
        }
    }
}
