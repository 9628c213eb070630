//! Linux's PCI function reset methods (`reset_method`, 5.15+): their names
//! as the kernel spells them, and what each resets besides the function.

use std::fmt;
use std::str::FromStr;

/// One reset method, as `/sys/bus/pci/devices/ADDR/reset_method` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetMethod {
    DeviceSpecific,
    Acpi,
    Flr,
    AfFlr,
    Pm,
    Bus,
    CxlBus,
}

impl ResetMethod {
    pub const ALL: [ResetMethod; 7] = [
        ResetMethod::DeviceSpecific,
        ResetMethod::Acpi,
        ResetMethod::Flr,
        ResetMethod::AfFlr,
        ResetMethod::Pm,
        ResetMethod::Bus,
        ResetMethod::CxlBus,
    ];

    /// The kernel's name (`pci_reset_fn_methods[]`).
    pub fn name(self) -> &'static str {
        match self {
            ResetMethod::DeviceSpecific => "device_specific",
            ResetMethod::Acpi => "acpi",
            ResetMethod::Flr => "flr",
            ResetMethod::AfFlr => "af_flr",
            ResetMethod::Pm => "pm",
            ResetMethod::Bus => "bus",
            ResetMethod::CxlBus => "cxl_bus",
        }
    }

    /// A secondary bus reset (`bus`, `cxl_bus`) resets every function below
    /// the bridge above the device, not the function alone.
    pub fn resets_the_bus(self) -> bool {
        matches!(self, ResetMethod::Bus | ResetMethod::CxlBus)
    }
}

impl fmt::Display for ResetMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the kernel's reset methods.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a reset method; the kernel's are device_specific, acpi, flr, af_flr, pm, bus and cxl_bus")]
pub struct UnknownResetMethod(pub String);

impl FromStr for ResetMethod {
    type Err = UnknownResetMethod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResetMethod::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownResetMethod(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_the_bus_methods_reach_beyond_the_function() {
        for m in ResetMethod::ALL {
            assert_eq!(m.name().parse::<ResetMethod>().unwrap(), m);
        }
        assert!("flr\nbus".parse::<ResetMethod>().is_err());
        assert!("".parse::<ResetMethod>().is_err());
        let bus: Vec<ResetMethod> = ResetMethod::ALL
            .into_iter()
            .filter(|m| m.resets_the_bus())
            .collect();
        assert_eq!(bus, [ResetMethod::Bus, ResetMethod::CxlBus]);
    }
}
