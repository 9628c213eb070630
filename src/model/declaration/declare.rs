//! The declarations `persist add` makes from selectors ([`declare`]): an
//! address selector declares that function with its IDs, an ID selector
//! the IDs with the functions they cover now, any other selector each
//! function it matches by address; display adapters bring their companions.
//!
//! Takes [`Declaration`] from `mod.rs`.

use super::Declaration;
use crate::model::device::PciDevice;
use crate::model::driver::DriverName;
use crate::model::inventory::{Inventory, NoMatch};
use crate::model::selector::{Matcher, Selector};

/// Why declarations could not be made from selectors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeclareError {
    /// A selector matches a bridge or port: refused (exit 4), as `bind` refuses one.
    #[error("selector '{selector}' matches {bridge}, a bridge or port; bridges are never bound")]
    Bridge {
        selector: String,
        bridge: crate::model::PciAddress,
    },
    /// A selector other than full IDs matches nothing (exit 3, as for every
    /// command's selectors).
    #[error(transparent)]
    NoMatch(#[from] NoMatch),
}

/// The declaration of one matched function: by address with every ID (an
/// address declaration records everything needed to notice a swap), or
/// by its vendor and device IDs.
fn from_device(dev: &PciDevice, by_address: bool, driver: Option<&DriverName>) -> Declaration {
    Declaration {
        subsystem: by_address.then_some((dev.ids.subsystem_vendor, dev.ids.subsystem_device)),
        address: by_address.then_some(dev.address),
        driver: driver.cloned().into(),
        ..Declaration::of_ids(dev.ids.vendor, dev.ids.device, "", 0)
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
            return Err(DeclareError::Bridge {
                selector: selector.to_string(),
                bridge: bridge.address,
            });
        }
        let by_address = match &selector.matcher {
            Matcher::Ids {
                vendor,
                device: Some(device),
                subsystem,
            } => {
                // The count covered now, so that fewer later is noticed.
                push(Declaration {
                    subsystem: *subsystem,
                    driver: driver.cloned().into(),
                    expect: (!matched.is_empty()).then_some(matched.len()),
                    seen: matched.iter().map(|d| d.address).collect(),
                    ..Declaration::of_ids(*vendor, *device, "", 0)
                });
                false
            }
            matcher => {
                // A vendor alone declares the IDs of each function it
                // matches; any other selector, each function by address.
                let by_address = !matches!(matcher, Matcher::Ids { .. });
                if matched.is_empty() {
                    return Err(NoMatch(selector.to_string()).into());
                }
                for dev in &matched {
                    push(from_device(dev, by_address, driver));
                }
                by_address
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
