//! The one safety gate. Every path that can change a device's binding, now
//! or at a later boot, asks it: the planner (`bind`, `unbind`, `restore`,
//! `persist apply`, the udev hook at run time), `persist add` for every
//! device a declaration covers now, and `host-config --write` for every
//! device its boot files would claim or strip of a driver. Pure: it judges
//! facts gathered by `host::usage`.
//!
//! The rules, and whether `--force` overrides them, live in
//! `RefusalKind::force_overrides`; the man page's safety table is
//! `crate::cli::SAFETY`.

use std::collections::BTreeSet;

use crate::model::declaration::Declarations;
use crate::model::device::SriovRole;
use crate::model::usage::{DeviceUse, UsageFacts};
use crate::model::{DriverKind, Inventory, ModuleName, PciAddress};

use super::refusal::{Refusal, RefusalKind};

/// When the change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The devices are released from their drivers now.
    ReleaseNow,
    /// Boot files or declarations claim the devices at every boot (open
    /// handles do not survive a reboot; everything else does).
    ClaimAtBoot,
    /// An SR-IOV PF's VF count changes (`sriov`, `[[sriov]]`): the PF keeps
    /// its driver, but some drivers reset it. Every use of the PF counts
    /// except open handles (they survive a reset); each gives way to
    /// `--force` (`RefusalKind::InterruptsPf`).
    VfCount,
    /// Only the devices' `driver_override` is written (`recover` of a
    /// device already on its driver): an open handle alone counts, since a
    /// write to a device whose unbind is still pending blocks in the kernel.
    WriteOnly,
}

/// The gate's answer for a set of devices.
#[derive(Debug, Default)]
pub struct Verdict {
    /// What stops the change (never empty when the change must not happen).
    pub refusals: Vec<Refusal>,
    /// Refusals `--force` overrode, as notes for the operator.
    pub forced: Vec<String>,
    /// Devices found not in use.
    pub clear: Vec<PciAddress>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.refusals.is_empty()
    }
}

/// What the host uses `addr` for, including what sysfs says directly (the
/// boot display) and, for an SR-IOV PF, the holders of its VFs: releasing
/// the PF destroys every VF.
fn uses_of(
    inv: &Inventory,
    usage: &crate::model::usage::UsageMap,
    addr: &PciAddress,
) -> Vec<DeviceUse> {
    let mut uses = usage.get(addr).cloned().unwrap_or_default();
    let Some(dev) = inv.device(addr) else {
        return uses;
    };
    if dev.boot_vga && !uses.iter().any(|u| matches!(u, DeviceUse::Console { .. })) {
        uses.push(DeviceUse::Console {
            what: "boot display (boot_vga)".to_string(),
        });
    }
    if let SriovRole::Pf { vfs, .. } = &dev.sriov {
        for vf in vfs {
            for u in usage.get(vf).into_iter().flatten() {
                if let DeviceUse::Holder { pid, command, path } = u {
                    let held = DeviceUse::Holder {
                        pid: *pid,
                        command: command.clone(),
                        path: format!("{path} of its VF {vf}"),
                    };
                    if !uses.contains(&held) {
                        uses.push(held);
                    }
                }
            }
        }
    }
    uses
}

/// Judges releasing (or claiming at boot) `devices`.
pub fn judge(
    inv: &Inventory,
    usage: &dyn UsageFacts,
    devices: &BTreeSet<PciAddress>,
    change: Change,
    force: bool,
) -> Verdict {
    let mut verdict = Verdict::default();
    if devices.is_empty() {
        return verdict;
    }
    let map = usage.usage_of(devices);
    for addr in devices {
        let uses: Vec<DeviceUse> = uses_of(inv, &map, addr)
            .into_iter()
            .filter(|u| counts(change, u))
            .collect();
        weigh(&mut verdict, *addr, uses, change, force);
    }
    verdict
}

/// Whether a use counts for `change` (open handles: only for a release
/// now, and alone for a write of the override).
fn counts(change: Change, u: &DeviceUse) -> bool {
    let holder = matches!(u, DeviceUse::Holder { .. });
    match change {
        Change::ReleaseNow => true,
        Change::ClaimAtBoot | Change::VfCount => !holder,
        Change::WriteOnly => holder,
    }
}

/// Adds `addr`'s verdict for `uses` (those that count for `change`).
fn weigh(
    verdict: &mut Verdict,
    addr: PciAddress,
    uses: Vec<DeviceUse>,
    change: Change,
    force: bool,
) {
    if uses.is_empty() {
        verdict.clear.push(addr);
        return;
    }
    for u in uses {
        let kind = match change {
            Change::VfCount => RefusalKind::InterruptsPf(u),
            _ => RefusalKind::InUse(u),
        };
        let refusal = Refusal { device: addr, kind };
        if force && refusal.force_overrides() {
            match &refusal.kind {
                RefusalKind::InterruptsPf(u) => verdict.forced.push(format!(
                    "{addr} {u}; its VF count changes anyway (--force): its driver may reset it"
                )),
                RefusalKind::InUse(u) => verdict
                    .forced
                    .push(format!("{addr} {u}; released anyway (--force)")),
                _ => {}
            }
        } else {
            verdict.refusals.push(refusal);
        }
    }
}

/// Judges changing `pf`'s VF count (`Change::VfCount`); also returns the
/// uses that count, which the plan names (and its JSON) whatever the verdict.
pub fn judge_vf_count(
    inv: &Inventory,
    usage: &dyn UsageFacts,
    pf: &PciAddress,
    force: bool,
) -> (Vec<DeviceUse>, Verdict) {
    let map = usage.usage_of(&BTreeSet::from([*pf]));
    let uses: Vec<DeviceUse> = uses_of(inv, &map, pf)
        .into_iter()
        .filter(|u| counts(Change::VfCount, u))
        .collect();
    let mut verdict = Verdict::default();
    weigh(&mut verdict, *pf, uses.clone(), Change::VfCount, force);
    (uses, verdict)
}

/// An SR-IOV PF with VFs enabled never changes driver
/// (`RefusalKind::PfWithVfs`): asked for every device a plan would unbind
/// or probe.
pub fn sriov_pf_refusal(inv: &Inventory, addr: &PciAddress) -> Option<Refusal> {
    let (num_vfs, vfs) = inv.device(addr)?.sriov.enabled_vfs()?;
    Some(Refusal {
        device: *addr,
        kind: RefusalKind::PfWithVfs {
            num_vfs: num_vfs.max(u32::try_from(vfs.len()).unwrap_or(u32::MAX)),
            vfs: vfs.to_vec(),
        },
    })
}

/// Fail closed on a device's IOMMU group: refuse when the IOMMU is on and
/// the device has no group, or when a listed member could not be read.
pub fn group_refusal(inv: &Inventory, addr: &PciAddress) -> Option<Refusal> {
    let dev = inv.device(addr)?;
    let Some(number) = dev.iommu_group else {
        return inv.iommu.enabled().then_some(Refusal {
            device: *addr,
            kind: RefusalKind::NoGroup,
        });
    };
    let missing: Vec<String> = match inv.groups.get(&number) {
        None => vec![format!("/sys/kernel/iommu_groups/{number}")],
        Some(group) => group
            .pci_members
            .iter()
            .filter(|m| inv.device(m).is_none())
            .map(|m| format!("/sys/bus/pci/devices/{m}"))
            .collect(),
    };
    (!missing.is_empty()).then_some(Refusal {
        device: *addr,
        kind: RefusalKind::GroupUnreadable {
            group: number,
            missing,
        },
    })
}

/// The devices boot files would take from the driver they are on now, as
/// `persist apply` would release them: every device a declaration covers
/// now that is on another driver than the declared one; with `ids_option`,
/// every present device with the IDs of any declaration (present or not: `ids=`
/// names them all) that is not on a VFIO driver; with `blacklisted` modules,
/// every device those modules drive. A device already on its claiming
/// driver loses nothing at boot, so the gate has nothing to judge for it.
pub fn boot_affected(
    inv: &Inventory,
    decls: &Declarations,
    blacklisted: &BTreeSet<ModuleName>,
    ids_option: bool,
) -> BTreeSet<PciAddress> {
    let module_of = |d: &crate::model::PciDevice| {
        d.driver_module
            .as_ref()
            .map(|m| ModuleName::new(m.as_str()))
            .or_else(|| d.driver.as_ref().map(|n| ModuleName::new(n.as_str())))
    };
    inv.devices
        .iter()
        .filter(|d| {
            let Some(driver) = &d.driver else {
                return false; // nothing to release: no host use through a driver
            };
            let governed = decls
                .governing(d)
                .is_some_and(|g| match g.declaration.driver.named() {
                    Some(declared) => declared != driver,
                    None => driver.kind() != DriverKind::Vfio,
                });
            let blacklisted_driver = module_of(d).is_some_and(|m| blacklisted.contains(&m));
            let same_ids = ids_option
                && driver.kind() != DriverKind::Vfio
                && decls
                    .list
                    .iter()
                    .any(|o| o.vendor == d.ids.vendor && o.device == d.ids.device);
            governed || blacklisted_driver || same_ids
        })
        .map(|d| d.address)
        .collect()
}

/// A boot-time claim the gate refused, by the rules `persist apply` follows
/// (no `--force`: boot files claim at every boot, unattended).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} would claim devices the host uses: {}; nothing was written (a device the host uses in ways --force overrides can be bound first with vfioctl bind --force, then its boot files claim nothing it uses; else remove or narrow the declaration{hint})", boot_reasons(.refusals))]
pub struct BootRefused {
    pub what: &'static str,
    pub hint: &'static str,
    pub refusals: Vec<Refusal>,
}

/// The refusals of a boot-time claim, without the `--force` advice of a
/// change made now (boot files have no `--force`).
fn boot_reasons(refusals: &[Refusal]) -> String {
    refusals
        .iter()
        .map(|r| match &r.kind {
            RefusalKind::InUse(u) => format!("{} {u}", r.device),
            _ => r.to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The man page's SAFETY RULES table (cli::SAFETY) says for each use
    /// what the gate does: whether --force overrides it.
    #[test]
    fn the_man_page_table_matches_the_gate() {
        let s = String::new;
        let cases = [
            (
                DeviceUse::RootFilesystem { block: s() },
                "root filesystem (",
                false,
            ),
            (DeviceUse::Swap { block: s() }, "backs swap", false),
            (
                DeviceUse::NetworkRoot {
                    fstype: s(),
                    server: s(),
                    interface: s(),
                },
                "network root (",
                false,
            ),
            (
                DeviceUse::Holder {
                    pid: 1,
                    command: s(),
                    path: s(),
                },
                "process holds",
                false,
            ),
            (
                DeviceUse::Mount {
                    mountpoint: s(),
                    block: s(),
                },
                "another mounted",
                true,
            ),
            (
                DeviceUse::Addresses { interface: s() },
                "carries addresses",
                true,
            ),
            (
                DeviceUse::DefaultRoute { interface: s() },
                "default route",
                true,
            ),
            (
                DeviceUse::Enslaved {
                    interface: s(),
                    master: s(),
                },
                "enslaved",
                true,
            ),
            (
                DeviceUse::OtherNamespace { interface: s() },
                "namespace",
                true,
            ),
            (DeviceUse::Console { what: s() }, "boot display", true),
        ];
        for (used, words, force) in cases {
            let refusal = Refusal {
                device: "0000:01:00.0".parse().unwrap(),
                kind: RefusalKind::InUse(used.clone()),
            };
            assert_eq!(refusal.force_overrides(), force, "{used:?}");
            assert!(
                crate::cli::SAFETY
                    .iter()
                    .any(|(rule, f, _)| rule.contains(words) && *f == force),
                "no SAFETY row with '{words}' and force {force}"
            );
        }
        // The SR-IOV refusals: a PF with VFs never changes driver; a VF
        // count change on a PF the host uses gives way to --force.
        let device: PciAddress = "0000:25:00.0".parse().unwrap();
        for (kind, words) in [
            (
                RefusalKind::PfWithVfs {
                    num_vfs: 1,
                    vfs: vec![],
                },
                "SR-IOV PF with VFs enabled",
            ),
            (
                RefusalKind::InterruptsPf(DeviceUse::RootFilesystem { block: s() }),
                "changes the VF count of a PF the host uses",
            ),
        ] {
            let force = Refusal { device, kind }.force_overrides();
            assert!(
                crate::cli::SAFETY
                    .iter()
                    .any(|(rule, f, _)| rule.contains(words) && *f == force),
                "no SAFETY row with '{words}' and force {force}"
            );
        }
    }
}
