//! The pure core: typed addresses and IDs, the inventory model, selection and
//! verdicts. Nothing here performs I/O; `host` fills these types in.

pub mod address;
pub mod boot_facts;
pub mod declaration;
pub mod device;
pub mod domain;
pub mod driver;
pub mod fabric;
pub mod group;
pub mod health;
pub mod ids;
pub mod inventory;
pub mod modalias;
pub mod plan;
pub mod reset;
pub mod selector;
pub mod survey;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod usage;
pub mod xml;

pub use address::PciAddress;
pub use device::{HeaderType, NovaDeviceType, PciDevice, SriovRole};
pub use driver::{DriverKind, DriverName, ModuleName};
pub use group::{IommuGroup, OtherMember, Viability};
pub use ids::{ClassCode, DeviceId, DeviceIds, PciNames, VendorId};
pub use inventory::{Companion, CompanionReason, Inventory, IommuState, NoMatch};
pub use selector::{Selector, SelectorError};
