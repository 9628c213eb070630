//! The gate's rules, one function each, pure: what the host uses a device
//! for (`judge`, by `Change`), a PF with VFs (`sriov_pf_refusal`), the VM
//! rules (`judge_vms`), an IOMMU group that cannot be read
//! (`group_refusal`), the devices boot files take (`boot_affected`). Only
//! the gate (`gate::clear` and its siblings) calls them; whether `--force`
//! overrides each refusal lives in `RefusalKind::force_overrides`; the man
//! page's safety table is `crate::cli::SAFETY`.

use std::collections::BTreeSet;

use crate::model::declaration::Declarations;
use crate::model::device::SriovRole;
use crate::model::domain::{Domain, DomainUse, HostDeviceKind, Named, VmFacts};
use crate::model::usage::{DeviceUse, UsageFacts};
use crate::model::{DriverKind, Inventory, ModuleName, PciAddress};

use super::refusal::{Refusal, RefusalKind, Via, VmUse};

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
                let through_vf = match u {
                    DeviceUse::Holder { pid, command, path } => DeviceUse::Holder {
                        pid: *pid,
                        command: command.clone(),
                        path: format!("{path} of its VF {vf}"),
                    },
                    DeviceUse::Mdev {
                        uuid, mdev_type, ..
                    } => DeviceUse::Mdev {
                        uuid: uuid.clone(),
                        mdev_type: mdev_type.clone(),
                        of: Some(vf.to_string()),
                    },
                    _ => continue,
                };
                if !uses.contains(&through_vf) {
                    uses.push(through_vf);
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
/// now, and alone for a write of the override; mediated devices, which no
/// boot has yet and an override alone does not touch: for a release now).
fn counts(change: Change, u: &DeviceUse) -> bool {
    let holder = matches!(u, DeviceUse::Holder { .. });
    let mdev = matches!(u, DeviceUse::Mdev { .. });
    match change {
        Change::ReleaseNow => true,
        Change::ClaimAtBoot | Change::VfCount => !holder && !mdev,
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

/// One domain's stand on `addr`, seen through `via` (another function).
fn vm_use(domain: &Domain, found: &DomainUse, via: Via) -> VmUse {
    VmUse {
        domain: domain.name.clone(),
        nova: domain.nova().cloned(),
        running: matches!(found.named, Named::Live | Named::Both),
        state: domain.state_label(),
        persistent: domain.persistent,
        autostart: domain.autostart,
        kind: found.device.kind,
        managed: found.device.managed,
        via,
    }
}

/// The VM rules for `devices`: which libvirt domains use them (or name them
/// in their config), from `vms`. `Failed` facts (libvirt there but silent)
/// refuse every device, never overridden by `--force`; facts not asked for
/// refuse nothing (the caller notes why).
pub fn judge_vms(
    inv: &Inventory,
    vms: &VmFacts,
    devices: &BTreeSet<PciAddress>,
    force: bool,
) -> Verdict {
    let mut verdict = Verdict::default();
    for addr in devices {
        let mut uses: Vec<VmUse> = Vec::new();
        if let VmFacts::Failed(error) = vms {
            verdict.refusals.push(Refusal {
                device: *addr,
                kind: RefusalKind::VmUnknown {
                    error: error.clone(),
                },
            });
            continue;
        }
        let dev = inv.device(addr);
        let group = dev
            .and_then(|d| inv.group_of(d))
            .map(|g| (g.number, g.pci_members.clone()));
        let vfs: Vec<PciAddress> = match dev.map(|d| &d.sriov) {
            Some(SriovRole::Pf { vfs, .. }) => vfs.clone(),
            _ => Vec::new(),
        };
        for domain in vms.domains() {
            if let Some(found) = domain.uses(addr) {
                let mdev = found.device.kind == HostDeviceKind::Mdev;
                let via = match &found.device.mdev {
                    Some(uuid) if mdev => Via::Mdev(uuid.clone()),
                    _ => Via::Itself,
                };
                uses.push(vm_use(domain, &found, via));
            }
            if let Some((number, members)) = &group {
                for member in members.iter().filter(|m| *m != addr) {
                    if let Some(found) = domain.uses(member).filter(|f| f.named != Named::Config) {
                        uses.push(vm_use(
                            domain,
                            &found,
                            Via::GroupMember {
                                member: *member,
                                group: *number,
                            },
                        ));
                    }
                }
            }
            for vf in &vfs {
                if let Some(found) = domain.uses(vf) {
                    uses.push(vm_use(domain, &found, Via::Vf(*vf)));
                }
            }
        }
        uses.dedup();
        for u in uses {
            let refusal = Refusal {
                device: *addr,
                kind: RefusalKind::Vm(Box::new(u)),
            };
            match &refusal.kind {
                RefusalKind::Vm(u) if force && refusal.force_overrides() => verdict
                    .forced
                    .push(format!("{addr} {u}; released anyway (--force)")),
                _ => verdict.refusals.push(refusal),
            }
        }
    }
    verdict
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

    /// The VM rules' rows in the SAFETY RULES table say what the gate does.
    #[test]
    fn the_man_page_table_matches_the_vm_rules() {
        let vm = |running: bool| {
            RefusalKind::Vm(Box::new(VmUse {
                domain: "d".into(),
                nova: None,
                running,
                state: "running",
                persistent: true,
                autostart: false,
                kind: HostDeviceKind::Hostdev,
                managed: Some(true),
                via: Via::Itself,
            }))
        };
        let cases = [
            (vm(true), "A running libvirt domain", false),
            (vm(false), "A defined libvirt domain", true),
            (
                RefusalKind::VmUnknown {
                    error: String::new(),
                },
                "does not answer",
                false,
            ),
        ];
        for (kind, words, force) in cases {
            assert_eq!(kind.force_overrides(), force, "{kind:?}");
            assert!(
                crate::cli::SAFETY
                    .iter()
                    .any(|(rule, f, _)| rule.contains(words) && *f == force),
                "no SAFETY row with '{words}' and force {force}"
            );
        }
    }

    use crate::model::device::tests::endpoint;
    use crate::model::domain::{Domain, DomainDefinition, HostDevice, HostDeviceKind, VmFacts};
    use crate::model::IommuGroup;

    /// A GPU PF (25:00.0) with a VF (25:00.4), and a GPU with its audio
    /// function in one group (41:00.0, 41:00.1).
    fn vm_inventory() -> Inventory {
        let mut pf = endpoint("25:00.0", 0x030200);
        pf.iommu_group = Some(1);
        pf.sriov = SriovRole::Pf {
            total_vfs: 4,
            num_vfs: 1,
            vfs: vec!["25:00.4".parse().unwrap()],
        };
        let mut vf = endpoint("25:00.4", 0x030200);
        vf.iommu_group = Some(2);
        let mut gpu = endpoint("41:00.0", 0x030200);
        gpu.iommu_group = Some(3);
        let mut audio = endpoint("41:00.1", 0x040300);
        audio.iommu_group = Some(3);
        let group = |n: u32, members: &[&str]| {
            (
                n,
                IommuGroup {
                    number: n,
                    domain_type: None,
                    pci_members: members.iter().map(|m| m.parse().unwrap()).collect(),
                    other_members: vec![],
                },
            )
        };
        Inventory {
            devices: vec![pf, vf, gpu, audio],
            groups: [
                group(1, &["25:00.0"]),
                group(2, &["25:00.4"]),
                group(3, &["41:00.0", "41:00.1"]),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        }
    }

    fn domain(name: &str, active: bool, autostart: bool, devices: Vec<HostDevice>) -> Domain {
        let def = DomainDefinition {
            name: name.into(),
            uuid: None,
            devices,
            nova: None,
        };
        crate::model::test_support::domain(
            name,
            active,
            true,
            autostart,
            active.then(|| def.clone()),
            Some(def),
        )
    }

    fn pci(addr: &str, managed: bool) -> HostDevice {
        HostDevice {
            kind: HostDeviceKind::Hostdev,
            address: Some(addr.parse().unwrap()),
            mdev: None,
            managed: Some(managed),
        }
    }

    fn known(domains: Vec<Domain>) -> VmFacts {
        VmFacts::Known {
            uri: "test:///x".into(),
            domains,
        }
    }

    fn judged(vms: &VmFacts, addr: &str, force: bool) -> Verdict {
        judge_vms(
            &vm_inventory(),
            vms,
            &BTreeSet::from([addr.parse().unwrap()]),
            force,
        )
    }

    #[test]
    fn a_defined_domain_refuses_unless_forced_and_says_what_its_start_does() {
        let vms = known(vec![domain("d", false, true, vec![pci("41:00.0", false)])]);
        let v = judged(&vms, "41:00.0", false);
        assert_eq!(v.refusals.len(), 1);
        let text = v.refusals[0].to_string();
        assert!(text.contains("its next start fails"), "{text}");
        assert!(
            text.contains("it autostarts with libvirt (at boot)"),
            "{text}"
        );
        assert!(text.contains("use --force"), "{text}");
        let v = judged(&vms, "41:00.0", true);
        assert!(v.allowed());
        assert!(v.forced[0].contains("released anyway (--force)"));
        // Another member of its group is not the domain's concern while it is stopped.
        assert!(judged(&vms, "41:00.1", false).allowed());
    }

    #[test]
    fn a_running_domain_refuses_through_the_group_and_the_vfs_never_forced() {
        let vms = known(vec![domain(
            "r",
            true,
            false,
            vec![pci("41:00.0", true), pci("25:00.4", true)],
        )]);
        for (addr, words) in [
            ("41:00.0", "is used by domain r (running) (hostdev"),
            (
                "41:00.1",
                "through 0000:41:00.0, a member of its IOMMU group 3",
            ),
            ("25:00.0", "through its VF 0000:25:00.4"),
            ("25:00.4", "is used by domain r"),
        ] {
            let v = judged(&vms, addr, true);
            assert_eq!(v.refusals.len(), 1, "{addr}");
            let text = v.refusals[0].to_string();
            assert!(text.contains(words), "{addr}: {text}");
            assert!(text.contains("refused even with --force"), "{text}");
        }
    }

    #[test]
    fn an_mdev_parent_given_away_is_refused() {
        let mdev = HostDevice {
            kind: HostDeviceKind::Mdev,
            address: Some("41:00.0".parse().unwrap()),
            mdev: Some("c2177883-f1bb-47f0-914d-32a22e3a8804".into()),
            managed: None,
        };
        let vms = known(vec![domain("vgpu", false, false, vec![mdev])]);
        let v = judged(&vms, "41:00.0", false);
        let text = v.refusals[0].to_string();
        assert!(
            text.contains("through mdev c2177883-f1bb-47f0-914d-32a22e3a8804"),
            "{text}"
        );
        assert!(text.contains("the mdev is destroyed"), "{text}");
    }

    #[test]
    fn silent_libvirt_refuses_and_not_asked_refuses_nothing() {
        let v = judged(&VmFacts::Failed("timeout".into()), "41:00.0", true);
        assert!(matches!(v.refusals[0].kind, RefusalKind::VmUnknown { .. }));
        assert!(v.refusals[0].to_string().contains("--no-libvirt"));
        for facts in [VmFacts::NotAsked("x".into()), VmFacts::Absent("y".into())] {
            assert!(judged(&facts, "41:00.0", false).allowed());
        }
    }

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
            (
                DeviceUse::Mdev {
                    uuid: s(),
                    mdev_type: s(),
                    of: None,
                },
                "mediated device",
                false,
            ),
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
