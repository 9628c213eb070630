//! VM checks: what libvirt's domains say about the host's PCI functions.
//!
//! - `vm.shared_device` CRITICAL: two domains that start together (running,
//!   or set to autostart) name one function; the second start fails, or a
//!   managed one takes it from the first.
//! - `vm.absent_device` CRITICAL: a domain names a function not on the bus
//!   (a GPU off the bus, a card moved to another slot).
//! - `vm.unmanaged_not_vfio` CRITICAL: a `managed='no'` function is not on a
//!   VFIO driver, so the domain's start fails (libvirt does not detach it).
//! - `vm.not_held` WARNING: a running domain's function is not held by that
//!   domain's QEMU (another process has it, or nothing does).
//! - `vm.split_group` WARNING: an IOMMU group split between a domain and
//!   the host (a member on a host driver) or between two domains: VFIO
//!   opens a group in one VM only.
//! - `vm.libvirt`: whether the domains could be read; UNKNOWN when libvirt
//!   is there but did not answer.

use super::*;
use crate::model::domain::{Domain, DomainUse, Named, VmFacts};
use crate::model::group::MemberState;

/// For a running domain and a function its live XML names: whether the
/// domain's QEMU holds one of the function's nodes (`/dev/vfio/N`, the
/// VFIO cdev). `held` is `None` when that cannot be told (the QEMU process
/// is not known, or its descriptors cannot be read without root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmHold {
    pub domain: String,
    pub address: PciAddress,
    pub pid: Option<u32>,
    pub held: Option<bool>,
}

fn on_device(mut r: CheckResult, addr: PciAddress) -> CheckResult {
    r.device = Some(addr);
    r
}

/// `NAME (state)`, with the Nova instance when there is one.
fn who(d: &Domain) -> String {
    format!("{} ({})", d.describe(), d.state_label())
}

/// Starts together with others: running now, or autostarting.
fn starts_together(u: &DomainUse) -> bool {
    (u.domain.active && u.named != Named::Config) || (u.domain.autostart && u.domain.persistent)
}

/// Every function any domain names, with the domains naming it.
fn named_functions(vms: &VmFacts) -> BTreeMap<PciAddress, Vec<DomainUse<'_>>> {
    let mut out: BTreeMap<PciAddress, Vec<DomainUse>> = BTreeMap::new();
    for d in vms.domains() {
        for u in d.all_devices() {
            if let Some(addr) = u.device.address {
                out.entry(addr).or_default().push(u);
            }
        }
    }
    out
}

pub(super) fn vm_checks(f: &Facts) -> Vec<CheckResult> {
    let domains = match &f.vms {
        VmFacts::Failed(error) => {
            return vec![result(
                "vm.libvirt",
                Verdict::Unknown,
                format!("the VM checks did not run: {error}"),
                vec![],
                Some("check that libvirtd or virtqemud answers (virsh -r list --all), or raise --connect-timeout"),
            )]
        }
        VmFacts::Absent(why) | VmFacts::NotAsked(why) => {
            return vec![result(
                "vm.libvirt",
                Verdict::Ok,
                format!("skipped: {why}"),
                vec![],
                None,
            )]
        }
        VmFacts::Known { domains, .. } => domains,
    };
    let named = named_functions(&f.vms);
    let mut out = Vec::new();

    for (addr, users) in &named {
        let together: Vec<&DomainUse> = users.iter().filter(|u| starts_together(u)).collect();
        if together.len() > 1 {
            let list: Vec<String> = together
                .iter()
                .map(|u| {
                    let how = if u.domain.active {
                        "running"
                    } else {
                        "autostarts"
                    };
                    format!("{} ({how})", u.domain.describe())
                })
                .collect();
            out.push(on_device(
                result(
                    "vm.shared_device",
                    Verdict::Critical,
                    format!(
                        "{addr} is named by {} domains that start together: {}; only one can have it (the next start fails, or takes it from the first when managed)",
                        together.len(),
                        list.join(", ")
                    ),
                    together
                        .iter()
                        .map(|u| format!("{} names {addr} in its {}", u.domain.name, u.named.label()))
                        .collect(),
                    Some("keep the device in one running or autostarting domain (virsh autostart --disable, or detach it from the others)"),
                ),
                *addr,
            ));
        }
        let Some(dev) = f.inv.device(addr) else {
            let list: Vec<String> = users.iter().map(|u| who(u.domain)).collect();
            out.push(on_device(
                result(
                    "vm.absent_device",
                    Verdict::Critical,
                    format!(
                        "{addr} is not on the PCI bus, but {} name(s) it: {}; a start fails (or, after a card moved, would take whatever sits there later)",
                        users.len(),
                        list.join(", ")
                    ),
                    vec![format!("no /sys/bus/pci/devices/{addr}")],
                    Some("reseat or replace the card, or edit the domain to the device's new address (virsh edit)"),
                ),
                *addr,
            ));
            continue;
        };
        let on_vfio = dev
            .driver
            .as_ref()
            .is_some_and(|d| d.kind() == DriverKind::Vfio);
        for u in users.iter().filter(|u| u.device.managed == Some(false)) {
            if on_vfio {
                continue;
            }
            let now = dev
                .driver
                .as_ref()
                .map_or_else(|| "no driver".to_string(), |d| format!("{d}"));
            out.push(on_device(
                result(
                    "vm.unmanaged_not_vfio",
                    Verdict::Critical,
                    format!(
                        "{} names {addr} with managed='no', but it is on {now}: libvirt does not detach it, so the domain's start fails{}",
                        who(u.domain),
                        if u.domain.active { " (and the running domain cannot be using it)" } else { "" }
                    ),
                    vec![format!("{} in its {}", u.device.kind.label(), u.named.label())],
                    Some("bind it to vfio-pci (vfioctl bind ADDRESS --persist), or set managed='yes'"),
                ),
                *addr,
            ));
        }
    }

    for hold in &f.vm_holds {
        let Some(false) = hold.held else {
            continue;
        };
        out.push(on_device(
            result(
                "vm.not_held",
                Verdict::Warning,
                format!(
                    "domain {} is running with {} but its QEMU (PID {}) holds none of the function's VFIO nodes",
                    hold.domain,
                    hold.address,
                    hold.pid.map_or_else(|| "?".to_string(), |p| p.to_string())
                ),
                vec![format!("/proc/{}/fd", hold.pid.unwrap_or(0))],
                Some("see vfioctl show ADDRESS: which process holds the device, and whether the domain's live XML is stale"),
            ),
            hold.address,
        ));
    }

    // Groups: who has each member.
    for group in f.inv.groups.values() {
        let mut vm_members: Vec<(PciAddress, String)> = Vec::new();
        let mut host_members: Vec<String> = Vec::new();
        for member in f.inv.members(group) {
            let state = MemberState::of(member.is_bridge(), member.driver.as_ref());
            match named.get(&member.address) {
                Some(users) => {
                    for u in users {
                        vm_members.push((member.address, u.domain.name.clone()));
                    }
                }
                None if state == MemberState::HostDriver => host_members.push(format!(
                    "{} on {}",
                    member.address,
                    member
                        .driver
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )),
                None => {}
            }
        }
        if vm_members.is_empty() {
            continue;
        }
        // Split between domains: no one domain names every member named.
        let named_members: BTreeSet<PciAddress> = vm_members.iter().map(|(a, _)| *a).collect();
        let one_owner = vm_members.iter().any(|(_, d)| {
            named_members
                .iter()
                .all(|m| vm_members.iter().any(|(a, o)| a == m && o == d))
        });
        let listed: Vec<String> = vm_members
            .iter()
            .map(|(a, d)| format!("{a} to {d}"))
            .collect();
        let message = if !host_members.is_empty() {
            Some(format!(
                "IOMMU group {} is split between VMs and the host: {} while {} stay(s) with the host; VFIO cannot hand the group over while a member is on a host driver",
                group.number,
                listed.join(", "),
                host_members.join(", ")
            ))
        } else if !one_owner {
            Some(format!(
                "IOMMU group {} is split between domains: {}; VFIO opens a group in one VM only",
                group.number,
                listed.join(", ")
            ))
        } else {
            None
        };
        if let Some(message) = message {
            out.push(on_device(
                result(
                    "vm.split_group",
                    Verdict::Warning,
                    message,
                    vec![format!("/sys/kernel/iommu_groups/{}", group.number)],
                    Some("give the whole group to one domain (its other endpoints on vfio-pci or unbound), or move the card to an isolated slot"),
                ),
                vm_members[0].0,
            ));
        }
    }

    let running = domains.iter().filter(|d| d.active).count();
    out.insert(
        0,
        result(
            "vm.libvirt",
            Verdict::Ok,
            format!(
                "{} libvirt domain(s), {running} active; {} host PCI function(s) named by them",
                domains.len(),
                named.len()
            ),
            vec![],
            None,
        ),
    );
    out
}
