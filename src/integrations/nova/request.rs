//! What the generator is asked for ([`Request`]): the devices, each with
//! the device_type Nova will see and how it is bound, and the options; and
//! the checks that refuse, before anything is built, what the release
//! cannot express or Nova would read otherwise (alias and Placement names).
//!
//! Takes the facts from `facts.rs`, [`Release`] from `release.rs` and
//! [`NovaError`] from `error.rs`.

use serde::Serialize;

use super::error::NovaError;
use super::facts::{LIVE_MIGRATABLE, PCI_IN_PLACEMENT, REPORT_IN_PLACEMENT, SOCKET_POLICY};
use super::release::Release;
use crate::model::address::PciAddress;
use crate::model::device::NovaDeviceType;
use crate::model::driver::DriverName;
use crate::model::fabric::{is_nvswitch, Fabric};
use crate::model::ids::{ClassCode, DeviceId, VendorId};

/// What the generator was asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub release: Release,
    /// `--alias`: one name for the single alias the devices need.
    pub alias: Option<String>,
    pub numa_policy: Option<NumaPolicy>,
    pub fabric: Option<Fabric>,
    pub placement: Option<PlacementRequest>,
    pub live_migratable: bool,
    /// `--vf-parent`: a device spec names a PF's address for its VFs when
    /// every VF of that PF with the IDs is offered (Nova matches a VF by its
    /// parent's address).
    pub vf_parent: bool,
    /// `--az-prefilter`: Placement filters availability zones in place of
    /// AvailabilityZoneFilter, on releases whose default still has it.
    pub az_prefilter: bool,
    pub devices: Vec<NovaDevice>,
}

/// One device to offer to Nova.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NovaDevice {
    pub address: PciAddress,
    pub vendor: VendorId,
    pub product: DeviceId,
    pub class: ClassCode,
    pub device_type: NovaDeviceType,
    pub type_source: TypeSource,
    pub binding: Binding,
    pub iommu_group: Option<u32>,
    /// The alias name used when the operator gives none (see [`super::derive_alias_name`]).
    pub derived_name: String,
}

impl NovaDevice {
    /// GPUs (display class) and NVSwitches carry state no live migration moves.
    pub(super) fn is_gpu_like(&self) -> bool {
        self.class.base() == 0x03 || is_nvswitch(self.vendor, self.product)
    }
}

/// Where a device's device_type came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TypeSource {
    /// libvirt's node device XML, which is what Nova reads.
    Libvirt,
    /// Derived from sysfs by libvirt's rules (libvirt not reachable or not asked).
    Sysfs,
}

/// How a device comes to be on a VFIO driver when Nova hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "driver", rename_all = "snake_case")]
pub enum Binding {
    /// Declared in /etc/vfioctl with a VFIO driver: vfioctl keeps it bound.
    Declared,
    /// On a VFIO driver now, but nothing keeps it there across reboots.
    VfioNow,
    /// On a host driver, or none: libvirt would have to detach it.
    Host(Option<DriverName>),
}

/// `numa_policy` of an alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NumaPolicy {
    Legacy,
    Preferred,
    Required,
    Socket,
}

impl NumaPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            NumaPolicy::Legacy => "legacy",
            NumaPolicy::Preferred => "preferred",
            NumaPolicy::Required => "required",
            NumaPolicy::Socket => "socket",
        }
    }
}

/// `--placement`: devices reported to Placement and scheduled there.
#[derive(Debug, Clone, Default)]
pub struct PlacementRequest {
    /// `--resource-class`, as typed; default: Nova's derived one.
    pub resource_class: Option<String>,
    /// `--trait`, as typed.
    pub traits: Vec<String>,
}

/// A usable alias name: Nova splits `pci_passthrough:alias` at ':' and ','.
pub fn check_alias_name(name: &str) -> Result<(), NovaError> {
    let ok = (1..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NovaError::BadAlias(name.to_string()))
    }
}

/// A custom Placement name as Nova writes it: upper case with the `CUSTOM_`
/// prefix. Refuses what Nova would have to rewrite (anything but letters,
/// digits and '_'), so the name in nova.conf is the name in Placement.
pub fn custom_name(what: &'static str, name: &str) -> Result<String, NovaError> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CUSTOM_") {
        upper
    } else {
        format!("CUSTOM_{upper}")
    };
    let ok = full.len() > "CUSTOM_".len()
        && full.len() <= 255
        && full.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(full)
    } else {
        Err(NovaError::BadPlacementName {
            what,
            name: name.to_string(),
        })
    }
}

/// Placement names checked and normalized: `Some` with `--placement`.
pub(super) struct PlacementNames {
    pub(super) resource_class: Option<String>,
    pub(super) traits: Option<String>,
}

/// Refuses what the release cannot express; normalizes placement names.
pub(super) fn check_request(request: &Request) -> Result<Option<PlacementNames>, NovaError> {
    let release = request.release;
    if let Some(name) = &request.alias {
        check_alias_name(name)?;
    }
    if request.numa_policy == Some(NumaPolicy::Socket) && !release.knows(SOCKET_POLICY) {
        return Err(NovaError::SocketPolicyTooOld(release.to_string()));
    }
    if request.live_migratable && !release.knows(LIVE_MIGRATABLE) {
        return Err(NovaError::LiveMigratableTooOld(release.to_string()));
    }
    let Some(placement) = &request.placement else {
        return Ok(None);
    };
    if !release.knows(PCI_IN_PLACEMENT) {
        return Err(NovaError::PlacementTooOld {
            release: release.to_string(),
            why: if release.knows(REPORT_IN_PLACEMENT) {
                "reports PCI devices to Placement but cannot schedule them there ([filter_scheduler] pci_in_placement and resource_class in aliases came with 2023.1)"
            } else {
                "has neither [pci] report_in_placement nor [filter_scheduler] pci_in_placement"
            },
        });
    }
    let resource_class = placement
        .resource_class
        .as_deref()
        .map(|rc| custom_name("resource class", rc))
        .transpose()?;
    let traits: Vec<String> = placement
        .traits
        .iter()
        .map(|t| custom_name("trait", t))
        .collect::<Result<_, _>>()?;
    Ok(Some(PlacementNames {
        resource_class,
        traits: (!traits.is_empty()).then(|| traits.join(",")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names_are_checked() {
        check_alias_name("nvidia-a100").unwrap();
        for bad in ["", "a:b", "a,b", "a b", &"x".repeat(257)] {
            assert!(check_alias_name(bad).is_err(), "{bad}");
        }
    }
}
