//! What the generator is asked for ([`Request`]): the devices, each with
//! the device_type Nova will see and how it is bound, and the options; and
//! the checks that refuse, before anything is built, what the release
//! cannot express or Nova would read otherwise (alias and Placement names).
//!
//! Takes the facts from `facts.rs`, [`Release`] from `release.rs` and
//! [`NovaError`] from `error.rs`.

use serde::Serialize;

use super::error::NovaError;
use super::facts::{
    LIVE_MIGRATABLE, ONE_TIME_USE, PCI_IN_PLACEMENT, REPORT_IN_PLACEMENT, SOCKET_POLICY,
};
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
    /// `--one-time-use`: the device specs carry `"one_time_use": "true"`.
    pub one_time_use: Option<OneTimeUseRequest>,
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

/// `--one-time-use`, and the hypervisor hostname Nova names the devices'
/// Placement resource providers after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeUseRequest {
    /// As given or read, unchecked; `None` when this host's name cannot be read.
    pub hostname: Option<String>,
    pub source: HostnameSource,
}

/// Where the hypervisor hostname came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostnameSource {
    /// `--hypervisor-hostname`.
    Option,
    /// This host's name, [`HOSTNAME_FILE`] under the root.
    Host,
}

/// Where this host's name is read (under `--root`).
pub const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// The longest usable hypervisor hostname: Placement holds a resource
/// provider's name to 200 characters, and Nova names a PCI device's
/// provider HOSTNAME, '_' and the 12 characters of its PCI address.
pub const MAX_HYPERVISOR_HOSTNAME: usize = 200 - 1 - 12;

/// A hypervisor hostname that can go into a resource provider's name and,
/// unquoted, into a printed shell command: letters, digits, '.', '-' and
/// '_', beginning with a letter or digit (never an option of the command),
/// at most [`MAX_HYPERVISOR_HOSTNAME`] characters.
pub fn check_hypervisor_hostname(name: &str, source: HostnameSource) -> Result<String, NovaError> {
    let ok = (1..=MAX_HYPERVISOR_HOSTNAME).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(name.to_string())
    } else {
        Err(NovaError::BadHypervisorHostname {
            from: match source {
                HostnameSource::Option => "--hypervisor-hostname",
                HostnameSource::Host => "this host's name (/proc/sys/kernel/hostname)",
            },
            name: name.to_string(),
            max: MAX_HYPERVISOR_HOSTNAME,
        })
    }
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

/// The hypervisor hostname of `--one-time-use`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hypervisor {
    pub(super) hostname: String,
    pub(super) source: HostnameSource,
}

/// The request checked: Placement names normalized (`Some` with
/// `--placement`), the hypervisor hostname checked (`Some` with
/// `--one-time-use`).
pub(super) struct Checked {
    pub(super) placement: Option<PlacementNames>,
    pub(super) hypervisor: Option<Hypervisor>,
}

/// Refuses what the release cannot express; normalizes placement names.
pub(super) fn check_request(request: &Request) -> Result<Checked, NovaError> {
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
    let hypervisor = match &request.one_time_use {
        None => None,
        Some(_) if !release.knows(ONE_TIME_USE) => {
            return Err(NovaError::OneTimeUseTooOld(release.to_string()))
        }
        Some(_) if request.placement.is_none() => return Err(NovaError::OneTimeUseNeedsPlacement),
        Some(OneTimeUseRequest { hostname, source }) => {
            let name = hostname
                .as_deref()
                .ok_or(NovaError::HostnameUnknown(HOSTNAME_FILE))?;
            Some(Hypervisor {
                hostname: check_hypervisor_hostname(name, *source)?,
                source: *source,
            })
        }
    };
    let placement = check_placement(request)?;
    Ok(Checked {
        placement,
        hypervisor,
    })
}

fn check_placement(request: &Request) -> Result<Option<PlacementNames>, NovaError> {
    let release = request.release;
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
    fn hypervisor_hostnames_are_checked() {
        for good in [
            "compute-7",
            "gpu01.dc1.example.org",
            "Node_3",
            "7",
            &"a".repeat(187),
        ] {
            assert_eq!(
                check_hypervisor_hostname(good, HostnameSource::Option).unwrap(),
                good
            );
        }
        for bad in [
            "",
            "-rf",
            ".hidden",
            "_x",
            "a b",
            "a;b",
            "$(reboot)",
            "a'b",
            "host\n",
            "h\u{1b}[2J",
            "hôte",
            &"a".repeat(188),
        ] {
            let err = check_hypervisor_hostname(bad, HostnameSource::Host).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("this host's name (/proc/sys/kernel/hostname) '"),
                "{bad}: {err}"
            );
        }
        let err = check_hypervisor_hostname("a b", HostnameSource::Option).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--hypervisor-hostname 'a b' is not usable"),
            "{err}"
        );
        assert!(err.to_string().contains("use 1 to 187 letters"), "{err}");
    }

    #[test]
    fn alias_names_are_checked() {
        check_alias_name("nvidia-a100").unwrap();
        for bad in ["", "a:b", "a,b", "a b", &"x".repeat(257)] {
            assert!(check_alias_name(bad).is_err(), "{bad}");
        }
    }
}
