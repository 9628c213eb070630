//! IOMMU groups and whether VFIO can use them.

use serde::Serialize;

use super::address::PciAddress;
use super::device::PciDevice;
use super::driver::{DriverKind, DriverName};

/// A member of an IOMMU group that is not a PCI function (rare: platform devices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OtherMember {
    pub name: String,
    pub driver: Option<DriverName>,
}

/// One IOMMU group as listed under /sys/kernel/iommu_groups/N.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuGroup {
    pub number: u32,
    /// The default domain type (`DMA`, `DMA-FQ`, `identity`), when exposed.
    pub domain_type: Option<String>,
    /// PCI members, sorted.
    pub pci_members: Vec<PciAddress>,
    pub other_members: Vec<OtherMember>,
}

/// How one member affects the group's viability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Bridges and ports never block VFIO.
    Bridge,
    Unbound,
    Vfio,
    Stub,
    /// Bound to a host driver: the group cannot be handed to a VM.
    HostDriver,
}

impl MemberState {
    pub fn of(is_bridge: bool, driver: Option<&DriverName>) -> MemberState {
        if is_bridge {
            return MemberState::Bridge;
        }
        match driver.map(DriverName::kind) {
            None => MemberState::Unbound,
            Some(DriverKind::Vfio) => MemberState::Vfio,
            Some(DriverKind::Stub) => MemberState::Stub,
            Some(DriverKind::Host) => MemberState::HostDriver,
        }
    }

    pub fn blocks_vfio(self) -> bool {
        self == MemberState::HostDriver
    }
}

/// A member of an IOMMU group: a PCI function, or a non-PCI device by its sysfs name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum GroupMember {
    Pci(PciAddress),
    Other(String),
}

impl std::fmt::Display for GroupMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupMember::Pci(a) => a.fmt(f),
            GroupMember::Other(name) => f.write_str(name),
        }
    }
}

/// A member that keeps the group from being usable, and its driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    pub device: GroupMember,
    pub driver: DriverName,
}

/// The group's verdict: usable by VFIO when no endpoint member is on a host driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Viability {
    pub viable: bool,
    pub blockers: Vec<Blocker>,
}

impl Viability {
    /// Judges a group from each member's bridge flag and (possibly hypothetical) driver.
    /// Non-PCI members count as endpoints.
    pub fn judge<'a>(
        pci_members: impl IntoIterator<Item = (&'a PciDevice, Option<&'a DriverName>)>,
        other_members: &'a [OtherMember],
    ) -> Viability {
        let mut blockers = Vec::new();
        for (dev, driver) in pci_members {
            if MemberState::of(dev.is_bridge(), driver).blocks_vfio() {
                blockers.push(Blocker {
                    device: GroupMember::Pci(dev.address),
                    driver: driver.cloned().expect("a host driver is a driver"),
                });
            }
        }
        for other in other_members {
            if let Some(driver) = &other.driver {
                if MemberState::of(false, Some(driver)).blocks_vfio() {
                    blockers.push(Blocker {
                        device: GroupMember::Other(other.name.clone()),
                        driver: driver.clone(),
                    });
                }
            }
        }
        Viability {
            viable: blockers.is_empty(),
            blockers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::device::tests::endpoint;
    use crate::model::device::HeaderType;

    #[test]
    fn group_is_viable_only_without_host_drivers_on_endpoints() {
        let gpu = endpoint("01:00.0", 0x030000);
        let audio = endpoint("01:00.1", 0x040300);
        let mut port = endpoint("00:01.0", 0x060400);
        port.header_type = Some(HeaderType::PciBridge);
        let vfio = DriverName::vfio_pci();
        let hda = DriverName::new("snd_hda_intel");
        let pcieport = DriverName::new("pcieport");

        let ok = Viability::judge(
            [
                (&gpu, Some(&vfio)),
                (&audio, None),
                (&port, Some(&pcieport)),
            ],
            &[],
        );
        assert!(ok.viable);
        assert!(ok.blockers.is_empty());

        let blocked = Viability::judge([(&gpu, Some(&vfio)), (&audio, Some(&hda))], &[]);
        assert!(!blocked.viable);
        assert_eq!(
            blocked.blockers,
            vec![Blocker {
                device: GroupMember::Pci("0000:01:00.1".parse().unwrap()),
                driver: hda.clone()
            }]
        );

        let platform = [OtherMember {
            name: "idma64.0".into(),
            driver: Some(DriverName::new("idma64")),
        }];
        assert!(!Viability::judge([(&gpu, Some(&vfio))], &platform).viable);
    }

    #[test]
    fn stub_and_unbound_members_do_not_block() {
        assert!(!MemberState::of(false, Some(&DriverName::new("pci-stub"))).blocks_vfio());
        assert!(!MemberState::of(false, None).blocks_vfio());
        assert!(MemberState::of(false, Some(&DriverName::new("nvidia"))).blocks_vfio());
        assert!(!MemberState::of(true, Some(&DriverName::new("nvidia"))).blocks_vfio());
    }
}
