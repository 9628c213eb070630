//! Which of the requested devices are offered to Nova, and why the others
//! are left out ([`LeftOut`]): PCI domains Nova cannot address, the NVLink
//! fabric mode ([`decide_fabric`]: NVSwitches follow it), IOMMU groups
//! (a group goes to one VM whole), and for `--vf-parent` the PFs whose
//! every VF is offered. Also how reasons and notes list addresses.
//!
//! Takes [`NovaDevice`] from `request.rs` and [`NovaError`] from
//! `error.rs`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::error::NovaError;
use super::request::NovaDevice;
use crate::model::address::PciAddress;
use crate::model::device::SriovRole;
use crate::model::fabric::{is_nvswitch, may_leave_host, Fabric, FabricReading};
use crate::model::inventory::Inventory;

/// A selected device that is not offered to Nova, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    pub address: PciAddress,
    pub reason: String,
}

/// Addresses as the notes list them: `0000:25:00.0, 0000:26:00.0`.
pub(super) fn list(addrs: &[PciAddress]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Nova ignores devices whose PCI domain does not fit 16 bits and refuses
/// such addresses in its configuration.
const MAX_NOVA_DOMAIN: u32 = 0xffff;

/// Leaves out devices in PCI domains Nova cannot address.
pub(super) fn keep_nova_domains(
    devices: Vec<NovaDevice>,
    left_out: &mut Vec<LeftOut>,
) -> Vec<NovaDevice> {
    let (keep, wide): (Vec<NovaDevice>, Vec<NovaDevice>) = devices
        .into_iter()
        .partition(|d| d.address.domain <= MAX_NOVA_DOMAIN);
    left_out.extend(wide.into_iter().map(|d| LeftOut {
        address: d.address,
        reason: "Nova only handles PCI domains up to ffff (devices behind Intel VMD have wider ones)"
            .to_string(),
    }));
    keep
}

/// Where the fabric mode the output follows came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FabricSource {
    /// `--fabric`.
    Option,
    /// The host's own state ([`crate::model::fabric::read_fabric`]).
    Host,
}

/// The fabric mode the output follows, where it came from, and what to say
/// about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricDecision {
    pub mode: Option<Fabric>,
    pub source: Option<FabricSource>,
    /// For the operator, on stderr and among the notes.
    pub notes: Vec<String>,
}

/// The fabric mode of the output. `--fabric` wins, with a note when the host
/// says otherwise (nothing is written, and the output may be meant for the
/// host once it is changed). Without it the host's own reading decides,
/// once the selection holds a GPU or NVSwitch of the HGX board
/// (`board_device`: the first one, and whether it is an NVSwitch); when the
/// host does not say, `--fabric` is asked for.
pub fn decide_fabric(
    given: Option<Fabric>,
    host: Option<&FabricReading>,
    board_device: Option<(PciAddress, bool)>,
) -> Result<FabricDecision, NovaError> {
    let mut notes = Vec::new();
    if let Some(mode) = given {
        match host {
            None => notes.push(format!(
                "--fabric {}: this host has no NVSwitch, so there is nothing to decide",
                mode.as_str()
            )),
            Some(reading) => match reading.mode {
                Some(read) if read != mode => notes.push(format!(
                    "--fabric {} contradicts the host, which runs its NVLink fabric {} ({}): this output fits the host only after the change; first {}",
                    mode.as_str(),
                    read.as_str(),
                    reading.evidence,
                    match mode {
                        Fabric::Full => "stop Fabric Manager and give every NVSwitch to VFIO (systemctl disable --now nvidia-fabricmanager; vfioctl persist add 10de:1af1 or 10de:22a3)",
                        Fabric::Shared => "give the NVSwitches back to nvidia and start Fabric Manager (vfioctl persist remove and vfioctl restore them; systemctl enable --now nvidia-fabricmanager)",
                    }
                )),
                _ => {}
            },
        }
        return Ok(FabricDecision {
            mode: Some(mode),
            source: Some(FabricSource::Option),
            notes,
        });
    }
    let (Some(reading), Some((address, switch))) = (host, board_device) else {
        return Ok(FabricDecision {
            mode: None,
            source: None,
            notes,
        });
    };
    let Some(mode) = reading.mode else {
        return Err(NovaError::FabricNeeded {
            address,
            switch,
            host: Some(reading.evidence.clone()),
        });
    };
    notes.push(format!(
        "NVLink fabric {}, read from the host: {} (--fabric overrides)",
        mode.as_str(),
        reading.evidence
    ));
    Ok(FabricDecision {
        mode: Some(mode),
        source: Some(FabricSource::Host),
        notes,
    })
}

/// NVSwitches follow the fabric mode: refused without one, left out when
/// the fabric is shared.
pub(super) fn apply_fabric(
    fabric: Option<Fabric>,
    devices: Vec<NovaDevice>,
    left_out: &mut Vec<LeftOut>,
) -> Result<Vec<NovaDevice>, NovaError> {
    let Some(fabric) = fabric else {
        if let Some(switch) = devices.iter().find(|d| is_nvswitch(d.vendor, d.product)) {
            return Err(NovaError::FabricNeeded {
                address: switch.address,
                switch: true,
                host: None,
            });
        }
        return Ok(devices);
    };
    let (keep, stay): (Vec<NovaDevice>, Vec<NovaDevice>) = devices
        .into_iter()
        .partition(|d| may_leave_host(fabric, d.address, d.vendor, d.product).is_ok());
    left_out.extend(stay.into_iter().map(|d| {
        LeftOut {
            address: d.address,
            reason:
                "NVSwitches stay on the host's nvidia driver for Fabric Manager (shared fabric)"
                    .to_string(),
        }
    }));
    Ok(keep)
}

/// A group opens in one VM only: devices whose IOMMU group holds endpoints
/// that are not offered are left out.
pub(super) fn whole_groups(
    inv: &Inventory,
    devices: Vec<NovaDevice>,
    left_out: &mut Vec<LeftOut>,
) -> Vec<NovaDevice> {
    let offered: BTreeSet<PciAddress> = devices.iter().map(|d| d.address).collect();
    let missing_of = |group: u32| -> Vec<PciAddress> {
        inv.groups.get(&group).map_or_else(Vec::new, |g| {
            inv.members(g)
                .filter(|m| !m.is_bridge() && !offered.contains(&m.address))
                .map(|m| m.address)
                .collect()
        })
    };
    let (keep, split): (Vec<NovaDevice>, Vec<NovaDevice>) = devices
        .into_iter()
        .partition(|d| d.iommu_group.is_none_or(|g| missing_of(g).is_empty()));
    left_out.extend(split.into_iter().map(|d| {
        let group = d.iommu_group.unwrap_or_default();
        LeftOut {
            address: d.address,
            reason: format!(
                "IOMMU group {group} also holds {}, which is not offered: a group goes to one VM whole, so select all of it or none of it",
                list(&missing_of(group))
            ),
        }
    }));
    keep
}

/// The VFs among `members` (devices of one vendor:product) grouped by their
/// PF, for each PF whose every VF with those IDs on the host is among them.
pub(super) fn whole_pfs<'a>(
    inv: &Inventory,
    members: &[&'a NovaDevice],
) -> BTreeMap<PciAddress, Vec<&'a NovaDevice>> {
    let physfn = |address: &PciAddress| match inv.device(address).map(|d| &d.sriov) {
        Some(SriovRole::Vf { physfn }) => Some(*physfn),
        _ => None,
    };
    let mut by_pf: BTreeMap<PciAddress, Vec<&NovaDevice>> = BTreeMap::new();
    for dev in members {
        if let Some(pf) = physfn(&dev.address) {
            by_pf.entry(pf).or_default().push(dev);
        }
    }
    by_pf.retain(|pf, vfs| {
        let on_host = inv
            .devices
            .iter()
            .filter(|d| (d.ids.vendor, d.ids.device) == (vfs[0].vendor, vfs[0].product))
            .filter(|d| physfn(&d.address) == Some(*pf))
            .count();
        vfs.len() >= on_host
    });
    by_pf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(mode: Option<Fabric>) -> FabricReading {
        FabricReading {
            mode,
            evidence: "NVSwitch 0000:b7:00.0 on nvidia-nvswitch; Fabric Manager neither enabled nor running".to_string(),
            fabric_manager: None,
        }
    }

    #[test]
    fn the_fabric_comes_from_the_option_or_the_host() {
        let switch: PciAddress = "b7:00.0".parse().unwrap();
        let gpu: PciAddress = "25:00.0".parse().unwrap();
        // Read from the host when the board is selected, said so.
        let full = reading(Some(Fabric::Full));
        let d = decide_fabric(None, Some(&full), Some((gpu, false))).unwrap();
        assert_eq!(
            (d.mode, d.source),
            (Some(Fabric::Full), Some(FabricSource::Host))
        );
        assert!(
            d.notes[0].starts_with("NVLink fabric full, read from the host: NVSwitch 0000:b7:00.0")
        );
        // Not needed when nothing of the board is selected, nor without NVSwitches.
        let silent = reading(None);
        assert_eq!(decide_fabric(None, Some(&silent), None).unwrap().mode, None);
        assert_eq!(
            decide_fabric(None, None, Some((gpu, false))).unwrap().mode,
            None
        );
        // Asked for, with the host's reason, when the host does not say.
        let err = decide_fabric(None, Some(&silent), Some((switch, true))).unwrap_err();
        assert!(err.to_string().starts_with(
            "0000:b7:00.0 is an NVSwitch and the host does not say how its NVLink fabric runs (NVSwitch 0000:b7:00.0 on nvidia-nvswitch; Fabric Manager neither enabled nor running): choose how the NVLink fabric runs: --fabric shared"
        ), "{err}");
        let err = decide_fabric(None, Some(&silent), Some((gpu, false))).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("0000:25:00.0 is a GPU of an HGX board"),
            "{err}"
        );
        // --fabric wins; a contradiction is said, agreement and silence are not.
        let d = decide_fabric(Some(Fabric::Shared), Some(&full), Some((gpu, false))).unwrap();
        assert_eq!(
            (d.mode, d.source),
            (Some(Fabric::Shared), Some(FabricSource::Option))
        );
        assert!(
            d.notes[0].starts_with(
                "--fabric shared contradicts the host, which runs its NVLink fabric full"
            ),
            "{:?}",
            d.notes
        );
        assert!(decide_fabric(Some(Fabric::Full), Some(&full), None)
            .unwrap()
            .notes
            .is_empty());
        assert!(decide_fabric(Some(Fabric::Full), Some(&silent), None)
            .unwrap()
            .notes
            .is_empty());
        assert!(
            decide_fabric(Some(Fabric::Full), None, None).unwrap().notes[0].contains("no NVSwitch")
        );
    }
}
