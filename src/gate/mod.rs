//! The one safety gate, by construction. Every kernel write vfioctl makes
//! (driver_override, unbind, drivers_probe, sriov_numvfs,
//! sriov_drivers_autoprobe, reset, a module load) takes a permit that only
//! this module can make, and every file that claims devices at a later boot
//! (a declaration, the boot files) takes a permit too: a write without the
//! gate's verdict does not compile. The permits come from judging a plan
//! against complete facts:
//!
//! - [`clear`]`(plan, facts, path, force) -> Result<Cleared, Vec<Refusal>>`:
//!   a driver change (bind, restore, unbind, recover, the VFs of sriov,
//!   persist apply, the udev hook). Each action is judged by what it does,
//!   whatever command made it: a device that ends on a claiming driver by
//!   the IOMMU group and fabric rules, a device released by the host-use
//!   and open-handle rules, a device given away from VFIO by the VM rules,
//!   a claiming override left on a device the host uses by the next-probe
//!   rule. So `recover` of a bind is judged as `restore`, of a restore as
//!   `bind`. [`Cleared`] hands out a [`DeviceWrite`] per device.
//! - [`clear_vf_count`]: an SR-IOV PF's VF count (its host uses, every VF
//!   destroyed as released, given away); hands out a [`PfWrite`].
//! - [`clear_claims`]: declarations and boot files, claimed at every boot;
//!   [`ClearedClaims`] is what `host::config` and the boot files need to
//!   write. [`clear_release_at_boot`]: declarations removed (devices given
//!   back at the next boot); [`ClearedRelease`].
//! - [`override_threats`]: overrides already written that the next probe
//!   would turn against the host (`check`).
//!
//! Where a path deliberately differs, `policy` says so, once, with its
//! reason (the man page's table of paths is rendered from it). A rollback
//! reuses the permit of the change it undoes: a device goes back to the
//! binding it had, under the same lock, without a new verdict
//! (`policy::ROLLBACK`). Pure: the facts come from `host`.

pub mod permit;
pub mod policy;
pub mod refusal;
mod rules;

use std::collections::{BTreeMap, BTreeSet};

use crate::model::domain::VmFacts;
use crate::model::fabric::{device_may_leave_host, FabricReading};
use crate::model::group::{GroupMember, Viability};
use crate::model::plan::{Action, Plan};
use crate::model::usage::{DeviceUse, UsageFacts, UsageMap};
use crate::model::{DriverKind, DriverName, Inventory, PciAddress};

pub use permit::{
    ClaimKey, Cleared, ClearedClaims, ClearedRelease, ClearedReset, ClearedVfCount, DeviceWrite,
    ModuleLoad, NotCleared, NotClearedKey, PfWrite, ResetRequest, ResetWrite, VfCount,
};
pub use policy::Path;
pub use refusal::{joined, Refusal, RefusalKind, Via, VmUse};
pub use rules::{boot_affected, BootRefused};

/// What the host is doing besides its sysfs tree, as the gate needs it:
/// every use of a device (mounts, swap, routes, the console, open handles;
/// `UsageFacts`), and the libvirt domains. Both are asked for only when a
/// rule needs them (the open-handle walk and libvirt are costly).
pub trait HostFacts: UsageFacts {
    /// The domains, read the first time a rule asks. A path that does not
    /// ask libvirt (`Path::asks_libvirt`) answers `NotAsked`.
    fn vms(&self) -> &VmFacts;
}

/// Everything the gate judges a change from. Every field is required: no
/// rule is off because a caller left a fact out.
pub struct Facts<'a> {
    /// The devices, their IOMMU groups, the IOMMU's state, the boot display.
    pub inventory: &'a Inventory,
    /// Host uses, open handles and VMs.
    pub host: &'a dyn HostFacts,
    /// The host's NVLink fabric as read from it (`None`: no NVSwitch).
    pub fabric: Option<FabricReading>,
}

/// The path an operator's driver change takes (`bind`, `restore`, `unbind`;
/// `recover` for its own goal).
pub fn path_of(goal: &crate::model::plan::Goal) -> Path {
    use crate::model::plan::Goal;
    match goal {
        Goal::BindVfio | Goal::Bind(_) => Path::Bind,
        Goal::Restore => Path::Restore,
        Goal::Unbind => Path::Unbind,
        Goal::Recover => Path::Recover,
    }
}

/// The action ends with the device on a claiming driver (VFIO, pci-stub).
fn claims(action: &Action) -> bool {
    action
        .after
        .driver
        .as_ref()
        .is_some_and(|d| d.kind() != DriverKind::Host)
}

/// The action moves the device off VFIO (or off any driver) to a host
/// driver or to none: a VM may be giving it up.
fn gives_away(action: &Action) -> bool {
    action.changes_driver()
        && action
            .after
            .driver
            .as_ref()
            .is_none_or(|d| d.kind() != DriverKind::Vfio)
}

/// The claiming driver an action leaves in the device's driver_override
/// while the device is not on it: the next probe (a rebind, a hot-plug,
/// `drivers_probe`) hands the device to it.
fn armed_override(action: &Action) -> Option<&DriverName> {
    let wanted = action.after.driver_override.as_ref()?;
    (wanted.kind() != DriverKind::Host && action.after.driver.as_ref() != Some(wanted))
        .then_some(wanted)
}

/// Judges `plan` (see the module docs); on success the plan carries the
/// gate's checks and notes and hands out its permits.
pub fn clear(
    mut plan: Plan,
    facts: &Facts,
    path: Path,
    force: bool,
) -> Result<Cleared, Vec<Refusal>> {
    let force = force && path.has_force();
    let inv = facts.inventory;
    let mut refusals: Vec<Refusal> = Vec::new();
    let mut checks: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    // Bridges and ports are never rebound.
    for action in &plan.actions {
        if inv.device(&action.address).is_some_and(|d| d.is_bridge()) {
            refusals.push(Refusal {
                device: action.address,
                kind: RefusalKind::Bridge,
            });
        }
    }
    // Devices that end on a claiming driver: their IOMMU groups, the fabric.
    let claiming: Vec<&Action> = plan.actions.iter().filter(|a| claims(a)).collect();
    judge_groups(inv, &plan, &claiming, &mut refusals, &mut checks);
    for action in &claiming {
        if let Some(dev) = inv.device(&action.address) {
            if let Err(stays) = device_may_leave_host(facts.fabric.as_ref(), dev) {
                refusals.push(Refusal {
                    device: action.address,
                    kind: RefusalKind::Fabric(stays),
                });
            }
        }
    }
    // A PF with VFs enabled never changes driver.
    for action in plan.actions.iter().filter(|a| a.changes_driver()) {
        refusals.extend(rules::sriov_pf_refusal(inv, &action.address));
    }
    // Writes that do not release the device, on a path that judges them.
    if path.judges_writes_to_held() {
        let writing: BTreeSet<PciAddress> = plan
            .actions
            .iter()
            .filter(|a| a.changes() && !a.releases())
            .map(|a| a.address)
            .collect();
        let verdict = rules::judge(inv, facts.host, &writing, rules::Change::WriteOnly, false);
        refusals.extend(verdict.refusals);
    }
    // Devices released from their driver: host uses and open handles.
    let releasing: BTreeSet<PciAddress> = plan
        .actions
        .iter()
        .filter(|a| a.releases())
        .map(|a| a.address)
        .collect();
    if !releasing.is_empty() {
        let verdict = rules::judge(
            inv,
            facts.host,
            &releasing,
            rules::Change::ReleaseNow,
            force,
        );
        refusals.extend(verdict.refusals);
        notes.extend(verdict.forced);
        if !verdict.clear.is_empty() {
            checks.push(format!(
                "not in use by the host (mounts, swap, addresses, routes, console, open handles): {}",
                listed(&verdict.clear)
            ));
        }
    }
    // Devices given away from VFIO: the VM rules.
    let giving: BTreeSet<PciAddress> = plan
        .actions
        .iter()
        .filter(|a| gives_away(a))
        .map(|a| a.address)
        .collect();
    judge_given_away(
        facts,
        path,
        &giving,
        force,
        &mut refusals,
        &mut checks,
        &mut notes,
    );
    // A claiming override left on a device the host uses.
    let arming: BTreeMap<PciAddress, &DriverName> = plan
        .actions
        .iter()
        .filter(|a| a.changes())
        .filter_map(|a| Some((a.address, armed_override(a)?)))
        .collect();
    refusals.extend(next_probe_refusals(facts, &arming));

    if !refusals.is_empty() {
        return Err(refusals);
    }
    plan.checks.extend(checks);
    plan.notes.extend(notes);
    Ok(Cleared::new(plan, path))
}

/// Every IOMMU group a claiming action touches must be known in full and
/// viable once the plan is done.
fn judge_groups(
    inv: &Inventory,
    plan: &Plan,
    claiming: &[&Action],
    refusals: &mut Vec<Refusal>,
    checks: &mut Vec<String>,
) {
    let unknown: Vec<Refusal> = claiming
        .iter()
        .filter_map(|a| rules::group_refusal(inv, &a.address))
        .collect();
    if !unknown.is_empty() {
        refusals.extend(unknown);
        return;
    }
    let groups: BTreeSet<u32> = claiming
        .iter()
        .filter_map(|a| inv.device(&a.address)?.iommu_group)
        .collect();
    for number in groups {
        let Some(group) = inv.groups.get(&number) else {
            continue;
        };
        let after: Vec<(&crate::model::PciDevice, Option<&DriverName>)> = inv
            .members(group)
            .map(|d| {
                let driver = match plan.actions.iter().find(|a| a.address == d.address) {
                    Some(action) => action.after.driver.as_ref(),
                    None => d.driver.as_ref(),
                };
                (d, driver)
            })
            .collect();
        let viability = Viability::judge(after, &group.other_members);
        if viability.viable {
            checks.push(format!("IOMMU group {number} will be viable"));
            continue;
        }
        let device = claiming
            .iter()
            .find(|a| inv.device(&a.address).and_then(|d| d.iommu_group) == Some(number))
            .map(|a| a.address)
            .expect("the group came from a claiming action");
        let with_group_helps = !plan.with_group
            && viability.blockers.iter().all(|b| match b.device {
                GroupMember::Pci(a) => inv
                    .device(&a)
                    .is_none_or(|d| d.sriov.enabled_vfs().is_none()),
                _ => false,
            });
        refusals.push(Refusal {
            device,
            kind: RefusalKind::GroupNotViable {
                group: number,
                blockers: viability.blockers,
                with_group_helps,
            },
        });
    }
}

/// The VM rules for `giving` (devices given away from VFIO), from the
/// domains the host facts read. A path that asks libvirt and was answered
/// that it was not asked refuses: the facts are incomplete (fail closed).
fn judge_given_away(
    facts: &Facts,
    path: Path,
    giving: &BTreeSet<PciAddress>,
    force: bool,
    refusals: &mut Vec<Refusal>,
    checks: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    if giving.is_empty() {
        return;
    }
    let vms = facts.host.vms();
    let verdict = rules::judge_vms(facts.inventory, vms, giving, force);
    let refused = !verdict.refusals.is_empty() || !verdict.forced.is_empty();
    refusals.extend(verdict.refusals);
    notes.extend(verdict.forced);
    match vms {
        VmFacts::Known { uri, domains } if !refused => checks.push(format!(
            "no running libvirt domain uses, and no domain config names, {} ({} domains at {uri})",
            listed(giving),
            domains.len()
        )),
        VmFacts::NotAsked(why) | VmFacts::Absent(why) => {
            if path.asks_libvirt() && why == crate::gate::NOT_ASKED_AT_BOOT {
                // Never meant for this path: judge nothing without the facts.
                refusals.extend(giving.iter().map(|device| Refusal {
                    device: *device,
                    kind: RefusalKind::VmUnknown {
                        error: format!(
                            "{} was asked without libvirt's facts",
                            path.policy().command
                        ),
                    },
                }));
            } else {
                notes.push(format!("VMs not checked: {why}"));
            }
        }
        _ => {}
    }
}

/// Why the udev hook and `persist apply` never ask libvirt (the facts they
/// judge with say so): `Path::asks_libvirt` is false for them.
pub const NOT_ASKED_AT_BOOT: &str =
    "the udev hook and persist apply never ask libvirt (at boot it may not be up, and udev must not start it)";

/// Refusals for claiming overrides (`arming`: device -> driver) on devices
/// the host uses: the next probe would hand them to the claiming driver.
/// Open handles do not count (they are judged when the device is
/// released); never overridden.
fn next_probe_refusals(facts: &Facts, arming: &BTreeMap<PciAddress, &DriverName>) -> Vec<Refusal> {
    if arming.is_empty() {
        return Vec::new();
    }
    let devices: BTreeSet<PciAddress> = arming.keys().copied().collect();
    let verdict = rules::judge(
        facts.inventory,
        facts.host,
        &devices,
        rules::Change::ClaimAtBoot,
        false,
    );
    verdict
        .refusals
        .into_iter()
        .filter_map(|r| match r.kind {
            RefusalKind::InUse(used) => Some(Refusal {
                device: r.device,
                kind: RefusalKind::NextProbe {
                    driver: arming[&r.device].clone(),
                    used,
                },
            }),
            _ => None,
        })
        .collect()
}

/// Overrides already in sysfs that the next probe would turn against the
/// host: a claiming driver_override on a device not on that driver, which
/// the host uses (`check` reports each CRITICAL, whoever wrote it).
pub fn override_threats(inv: &Inventory, uses: &dyn UsageFacts) -> Vec<Refusal> {
    let armed: BTreeMap<PciAddress, DriverName> = inv
        .devices
        .iter()
        .filter_map(|d| {
            let wanted = d.driver_override.as_ref()?;
            (wanted.kind() != DriverKind::Host && d.driver.as_ref() != Some(wanted))
                .then(|| (d.address, wanted.clone()))
        })
        .collect();
    if armed.is_empty() {
        return Vec::new();
    }
    let devices: BTreeSet<PciAddress> = armed.keys().copied().collect();
    let verdict = rules::judge(inv, uses, &devices, rules::Change::ClaimAtBoot, false);
    verdict
        .refusals
        .into_iter()
        .filter_map(|r| match r.kind {
            RefusalKind::InUse(used) => Some(Refusal {
                device: r.device,
                kind: RefusalKind::NextProbe {
                    driver: armed[&r.device].clone(),
                    used,
                },
            }),
            _ => None,
        })
        .collect()
}

/// What [`clear_vf_count`] found: the PF's uses (which the plan names
/// whatever the verdict) and the verdict.
pub struct VfCountJudged {
    /// What the host uses the PF for (each may be interrupted by the change).
    pub pf_uses: Vec<DeviceUse>,
    pub verdict: Result<ClearedVfCount, VfCountRefused>,
}

/// Why a VF count change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VfCountRefused {
    /// The host uses the PF (`--force` overrides).
    InterruptsPf(Vec<Refusal>),
    /// Destroying the VFs is refused (a holder, a domain, a host use).
    Destroys {
        vfs: Vec<PciAddress>,
        refusals: Vec<Refusal>,
    },
}

/// Judges changing `count.pf`'s VF count: the PF's uses (open handles aside:
/// it keeps its driver), and when VFs exist and the count changes, every VF
/// as released and given away (destroyed). The same count only puts
/// `sriov_drivers_autoprobe` back: nothing to judge.
pub fn clear_vf_count(facts: &Facts, path: Path, count: VfCount, force: bool) -> VfCountJudged {
    let force = force && path.has_force();
    let inv = facts.inventory;
    let mut notes = Vec::new();
    let mut checks = Vec::new();
    if count.from == count.to {
        return VfCountJudged {
            pf_uses: Vec::new(),
            verdict: Ok(ClearedVfCount::new(count, path, notes, checks)),
        };
    }
    let (pf_uses, verdict) = rules::judge_vf_count(inv, facts.host, &count.pf, force);
    if !verdict.allowed() {
        return VfCountJudged {
            pf_uses,
            verdict: Err(VfCountRefused::InterruptsPf(verdict.refusals)),
        };
    }
    notes.extend(verdict.forced);
    if pf_uses.is_empty() {
        checks.push(format!(
            "{} not in use by the host (mounts, addresses, routes, console)",
            count.pf
        ));
    }
    let vfs: Vec<PciAddress> = match inv.device(&count.pf).map(|d| &d.sriov) {
        Some(crate::model::SriovRole::Pf { vfs, .. }) if count.from > 0 => vfs.clone(),
        _ => Vec::new(),
    };
    if !vfs.is_empty() {
        let destroyed: BTreeSet<PciAddress> = vfs.iter().copied().collect();
        let released = rules::judge(
            inv,
            facts.host,
            &destroyed,
            rules::Change::ReleaseNow,
            force,
        );
        let mut refusals = released.refusals;
        let mut forced = released.forced;
        let mut vm_refusals = Vec::new();
        let mut vm_checks = Vec::new();
        judge_given_away(
            facts,
            path,
            &destroyed,
            force,
            &mut vm_refusals,
            &mut vm_checks,
            &mut forced,
        );
        refusals.extend(vm_refusals);
        if !refusals.is_empty() {
            return VfCountJudged {
                pf_uses,
                verdict: Err(VfCountRefused::Destroys { vfs, refusals }),
            };
        }
        notes.extend(forced);
        checks.push(format!(
            "VFs to destroy not in use (open handles, mounts, addresses, routes): {}",
            listed(&destroyed)
        ));
        checks.extend(vm_checks);
    }
    VfCountJudged {
        pf_uses,
        verdict: Ok(ClearedVfCount::new(count, path, notes, checks)),
    }
}

/// Judges declarations (`keys`; the boot files made from them:
/// `ClaimKey::BootFiles`) that claim `covered` at every boot: host uses,
/// open handles aside (they do not survive a reboot), and the NVLink fabric
/// for every device they cover.
pub fn clear_claims(
    inv: &Inventory,
    uses: &dyn UsageFacts,
    fabric: Option<&FabricReading>,
    keys: Vec<ClaimKey>,
    covered: &BTreeSet<PciAddress>,
    path: Path,
    force: bool,
) -> Result<ClearedClaims, Vec<Refusal>> {
    let force = force && path.has_force();
    let verdict = rules::judge(inv, uses, covered, rules::Change::ClaimAtBoot, force);
    let mut refusals = verdict.refusals;
    for addr in covered {
        if let Some(dev) = inv.device(addr) {
            if let Err(stays) = device_may_leave_host(fabric, dev) {
                refusals.push(Refusal {
                    device: *addr,
                    kind: RefusalKind::Fabric(stays),
                });
            }
        }
    }
    if !refusals.is_empty() {
        return Err(refusals);
    }
    Ok(ClearedClaims::new(
        keys.into_iter().collect(),
        path,
        verdict.forced,
    ))
}

/// Judges declaring `pf`'s VF count (`[[sriov]]`, `sriov --persist`): at
/// every boot the udev hook and `persist apply` change it without `--force`,
/// so a PF the host uses is refused here as it would be there.
pub fn clear_sriov_claim(
    inv: &Inventory,
    uses: &dyn UsageFacts,
    pf: PciAddress,
) -> Result<ClearedClaims, Vec<Refusal>> {
    let (_, verdict) = rules::judge_vf_count(inv, uses, &pf, false);
    if !verdict.allowed() {
        return Err(verdict.refusals);
    }
    Ok(ClearedClaims::new(
        BTreeSet::from([ClaimKey::Sriov(pf)]),
        Path::PersistAdd,
        Vec::new(),
    ))
}

/// Judges removing declarations (`keys`), which gives `released` back to the
/// host at the next boot: the VM rules (a domain using or naming a device).
pub fn clear_release_at_boot(
    inv: &Inventory,
    vms: &VmFacts,
    keys: Vec<ClaimKey>,
    released: &BTreeSet<PciAddress>,
    force: bool,
) -> Result<ClearedRelease, Vec<Refusal>> {
    let force = force && Path::PersistRemove.has_force();
    let verdict = rules::judge_vms(inv, vms, released, force);
    if !verdict.refusals.is_empty() {
        return Err(verdict.refusals);
    }
    let mut notes = verdict.forced;
    if let VmFacts::NotAsked(why) | VmFacts::Absent(why) = vms {
        if !released.is_empty() {
            notes.push(format!("VMs not checked: {why}"));
        }
    }
    Ok(ClearedRelease::new(keys, notes))
}

/// Judges resetting each of `requests` (`vfioctl reset`): the device and
/// every function the reset also resets must be on a VFIO driver or none,
/// held by no process, used by no running domain and not used by the host
/// (root filesystem, routes, the console...). Never forced: a reset under a
/// user corrupts what it is doing. libvirt silent: refused.
pub fn clear_reset(
    facts: &Facts,
    requests: Vec<ResetRequest>,
) -> Result<ClearedReset, Vec<Refusal>> {
    let inv = facts.inventory;
    let mut refusals = Vec::new();
    let mut affected: BTreeSet<PciAddress> = BTreeSet::new();
    for r in &requests {
        for addr in std::iter::once(&r.device).chain(&r.also) {
            affected.insert(*addr);
            let Some(driver) = inv.device(addr).and_then(|d| d.driver.clone()) else {
                continue;
            };
            if driver.kind() != DriverKind::Host {
                continue;
            }
            refusals.push(Refusal {
                device: r.device,
                kind: RefusalKind::ResetOnHostDriver {
                    function: *addr,
                    driver,
                },
            });
        }
    }
    let released = rules::judge(inv, facts.host, &affected, rules::Change::ReleaseNow, false);
    refusals.extend(released.refusals);
    let vms = rules::judge_vms(inv, facts.host.vms(), &affected, false);
    refusals.extend(vms.refusals.into_iter().filter(|r| match &r.kind {
        // A stopped domain keeps its config; a reset changes no binding.
        RefusalKind::Vm(u) => u.running,
        _ => true,
    }));
    if !refusals.is_empty() {
        return Err(refusals);
    }
    Ok(ClearedReset::new(requests))
}

/// The put-back of `reset_method` after an interrupted reset (`recover`):
/// the list recorded before it (or the kernel's `default`) written back to
/// `device`, and nothing else: no reset. Cleared without a verdict
/// (`policy`, recover's row): the list only decides how a later reset is
/// made, and the host had it before the interrupted change. `method` is the
/// one the interrupted reset wrote (none: nothing to put back, no permit).
pub fn clear_reset_method_put_back(
    device: PciAddress,
    method: Option<crate::model::reset::ResetMethod>,
    methods_before: Option<String>,
) -> Option<ClearedReset> {
    method?;
    Some(ClearedReset::put_back(ResetRequest {
        device,
        method,
        methods_before,
        also: Vec::new(),
    }))
}

/// `0000:01:00.0, 0000:01:00.1`.
fn listed<'a>(addresses: impl IntoIterator<Item = &'a PciAddress>) -> String {
    addresses
        .into_iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Host facts already complete (tests, `check`): a usage map and VM facts.
pub struct KnownFacts {
    pub usage: UsageMap,
    pub vms: VmFacts,
}

impl UsageFacts for KnownFacts {
    fn usage_of(&self, _devices: &BTreeSet<PciAddress>) -> UsageMap {
        self.usage.clone()
    }
}

impl HostFacts for KnownFacts {
    fn vms(&self) -> &VmFacts {
        &self.vms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::plan::{Expect, Goal, Step, Why};
    use crate::model::test_support::endpoint;
    use crate::model::{IommuGroup, SriovRole};

    fn vfio() -> DriverName {
        DriverName::vfio_pci()
    }

    /// The root NVMe 01:00.0 on nvme (group 1), an idle GPU 02:00.0 on
    /// nvidia (group 2).
    fn host() -> Inventory {
        let mut nvme = endpoint("01:00.0", 0x010802);
        nvme.driver = Some(DriverName::new("nvme"));
        nvme.iommu_group = Some(1);
        let mut gpu = endpoint("02:00.0", 0x030200);
        gpu.driver = Some(DriverName::new("nvidia"));
        gpu.iommu_group = Some(2);
        let group = |n: u32, m: &str| {
            (
                n,
                IommuGroup {
                    number: n,
                    domain_type: None,
                    pci_members: vec![m.parse().unwrap()],
                    other_members: vec![],
                },
            )
        };
        Inventory {
            devices: vec![nvme, gpu],
            groups: [group(1, "01:00.0"), group(2, "02:00.0")]
                .into_iter()
                .collect(),
            drivers: vec![vfio(), DriverName::new("nvme"), DriverName::new("nvidia")],
            ..Default::default()
        }
    }

    fn root_disk() -> KnownFacts {
        KnownFacts {
            usage: UsageMap::from([(
                "01:00.0".parse().unwrap(),
                vec![DeviceUse::RootFilesystem {
                    block: "/dev/nvme0n1".into(),
                }],
            )]),
            vms: VmFacts::NotAsked("tests".into()),
        }
    }

    fn plan(goal: Goal, actions: Vec<Action>) -> Plan {
        Plan {
            goal,
            load_modules: vec![],
            actions,
            notes: vec![],
            checks: vec![],
            with_group: false,
        }
    }

    fn override_only(addr: &str, driver: &str, to: Option<DriverName>) -> Action {
        Action {
            address: addr.parse().unwrap(),
            why: Why::Interrupted,
            before: Binding {
                driver: Some(DriverName::new(driver)),
                driver_override: None,
            },
            after: Binding {
                driver: Some(DriverName::new(driver)),
                driver_override: to.clone(),
            },
            steps: vec![Step::SetOverride { driver: to }],
        }
    }

    use crate::model::driver::Binding;

    #[test]
    fn an_override_that_would_hand_the_root_disk_over_is_refused_even_forced() {
        let inv = host();
        let uses = root_disk();
        let facts = Facts {
            inventory: &inv,
            host: &uses,
            fabric: None,
        };
        let p = plan(
            Goal::Recover,
            vec![override_only("01:00.0", "nvme", Some(vfio()))],
        );
        let refusals = clear(p, &facts, Path::Recover, true).unwrap_err();
        assert!(
            matches!(&refusals[0].kind, RefusalKind::NextProbe { driver, used: DeviceUse::RootFilesystem { .. } } if *driver == vfio()),
            "{refusals:?}"
        );
        let text = refusals[0].to_string();
        assert!(
            text.contains("would hand it to vfio-pci at its next probe"),
            "{text}"
        );
        assert!(!refusals[0].force_overrides());
        // The same override on a device the host does not use is no threat.
        let p = plan(
            Goal::Recover,
            vec![override_only("02:00.0", "nvidia", Some(vfio()))],
        );
        assert!(clear(p, &facts, Path::Recover, false).is_ok());
        // check's view of the same: the override already written.
        let mut armed = host();
        armed.devices[0].driver_override = Some(vfio());
        let found = override_threats(&armed, &uses.usage);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].device, "01:00.0".parse().unwrap());
    }

    #[test]
    fn recover_judges_an_override_write_to_a_held_device_other_paths_do_not() {
        let inv = host();
        let held = KnownFacts {
            usage: UsageMap::from([(
                "02:00.0".parse().unwrap(),
                vec![DeviceUse::Holder {
                    pid: 42,
                    command: "cuda".into(),
                    path: "/dev/nvidia0".into(),
                }],
            )]),
            vms: VmFacts::NotAsked("tests".into()),
        };
        let facts = Facts {
            inventory: &inv,
            host: &held,
            fabric: None,
        };
        let action = override_only("02:00.0", "nvidia", None);
        let refused = clear(
            plan(Goal::Recover, vec![action.clone()]),
            &facts,
            Path::Recover,
            true,
        )
        .unwrap_err();
        assert!(
            refused[0].to_string().contains("held open by PID 42"),
            "{refused:?}"
        );
        assert!(Path::Recover.judges_writes_to_held());
        for path in [Path::Bind, Path::Restore, Path::PersistApply] {
            assert!(!path.judges_writes_to_held());
            assert!(clear(
                plan(Goal::Restore, vec![action.clone()]),
                &facts,
                path,
                false
            )
            .is_ok());
        }
    }

    #[test]
    fn a_path_that_asks_libvirt_never_goes_on_without_its_answer() {
        let inv = host();
        let at_boot = KnownFacts {
            usage: UsageMap::new(),
            vms: VmFacts::NotAsked(NOT_ASKED_AT_BOOT.into()),
        };
        let facts = Facts {
            inventory: &inv,
            host: &at_boot,
            fabric: None,
        };
        let give_away = Action {
            address: "02:00.0".parse().unwrap(),
            why: Why::Requested,
            before: Binding {
                driver: Some(vfio()),
                driver_override: Some(vfio()),
            },
            after: Binding {
                driver: Some(DriverName::new("nvidia")),
                driver_override: None,
            },
            steps: vec![
                Step::SetOverride { driver: None },
                Step::Unbind { driver: vfio() },
                Step::Probe,
                Step::Verify {
                    expect: Expect::HostDriverOrNone,
                    vfio_group: None,
                },
            ],
        };
        let mut inv2 = inv.clone();
        inv2.devices[1].driver = Some(vfio());
        let facts2 = Facts {
            inventory: &inv2,
            ..facts
        };
        let refused = clear(
            plan(Goal::Restore, vec![give_away.clone()]),
            &facts2,
            Path::Restore,
            true,
        )
        .unwrap_err();
        assert!(
            matches!(refused[0].kind, RefusalKind::VmUnknown { .. }),
            "{refused:?}"
        );
        // The boot paths never ask: they go on, noting it.
        let cleared = clear(
            plan(Goal::Restore, vec![give_away]),
            &facts2,
            Path::UdevHook,
            false,
        )
        .unwrap();
        assert!(cleared
            .plan()
            .notes
            .iter()
            .any(|n| n.starts_with("VMs not checked")));
    }

    #[test]
    fn permits_bound_the_values_written() {
        let inv = host();
        let none = KnownFacts {
            usage: UsageMap::new(),
            vms: VmFacts::NotAsked("tests".into()),
        };
        let facts = Facts {
            inventory: &inv,
            host: &none,
            fabric: None,
        };
        let cleared = clear(
            plan(
                Goal::Recover,
                vec![override_only("02:00.0", "nvidia", None)],
            ),
            &facts,
            Path::Recover,
            false,
        )
        .unwrap();
        let w = cleared.writes().next().unwrap();
        assert!(w.check_override(None).is_ok());
        assert!(
            w.check_override(Some(&vfio())).is_err(),
            "not the target, not the value before"
        );
        assert!(
            w.check_driver_change("unbind").is_err(),
            "an override-only action"
        );
        // A VF count permit covers the judged count, 0 on the way, and the count before.
        let mut pf = endpoint("3b:00.0", 0x020000);
        pf.driver = Some(DriverName::new("igb"));
        pf.sriov = SriovRole::Pf {
            total_vfs: 7,
            num_vfs: 0,
            vfs: vec![],
        };
        let inv = Inventory {
            devices: vec![pf],
            ..Default::default()
        };
        let facts = Facts {
            inventory: &inv,
            host: &none,
            fabric: None,
        };
        let count = VfCount {
            pf: "3b:00.0".parse().unwrap(),
            from: 2,
            to: 4,
        };
        let cleared = clear_vf_count(&facts, Path::Sriov, count, false)
            .verdict
            .unwrap();
        let w = cleared.pf_write();
        for n in [0, 2, 4] {
            assert!(w.check_numvfs(n).is_ok(), "{n}");
        }
        assert!(w.check_numvfs(7).is_err());
    }

    #[test]
    fn a_rollback_clears_only_the_drivers_the_vfs_had() {
        let vf = "3b:00.2".parse::<PciAddress>().unwrap();
        let mut pf = endpoint("3b:00.0", 0x020000);
        pf.driver = Some(DriverName::new("igb"));
        pf.sriov = SriovRole::Pf {
            total_vfs: 7,
            num_vfs: 0,
            vfs: vec![],
        };
        let inv = Inventory {
            devices: vec![pf],
            ..Default::default()
        };
        let none = KnownFacts {
            usage: UsageMap::new(),
            vms: VmFacts::NotAsked("tests".into()),
        };
        let facts = Facts {
            inventory: &inv,
            host: &none,
            fabric: None,
        };
        let count = VfCount {
            pf: "3b:00.0".parse().unwrap(),
            from: 0,
            to: 1,
        };
        let cleared = clear_vf_count(&facts, Path::Sriov, count, false)
            .verdict
            .unwrap();
        let bind_to = |driver: &str| {
            plan(
                Goal::Bind(DriverName::new(driver)),
                vec![Action {
                    address: vf,
                    why: Why::Requested,
                    before: Binding {
                        driver: None,
                        driver_override: None,
                    },
                    after: Binding {
                        driver: Some(DriverName::new(driver)),
                        driver_override: Some(DriverName::new(driver)),
                    },
                    steps: vec![Step::Probe],
                }],
            )
        };
        let before = [(vf, vfio())];
        assert!(cleared.put_back(bind_to("vfio-pci"), &before).is_some());
        assert!(cleared.put_back(bind_to("igbvf"), &before).is_none());
    }

    #[test]
    fn a_reset_is_refused_for_a_host_driver_a_holder_or_a_running_domain_never_forced() {
        use crate::model::domain::{DomainDefinition, HostDevice, HostDeviceKind};
        let mut inv = host();
        // The GPU on vfio-pci with its audio function on snd_hda_intel.
        inv.devices[1].driver = Some(vfio());
        let mut audio = endpoint("02:00.1", 0x040300);
        audio.driver = Some(DriverName::new("snd_hda_intel"));
        inv.devices.push(audio);
        let none = KnownFacts {
            usage: UsageMap::new(),
            vms: VmFacts::NotAsked("tests".into()),
        };
        let request = |addr: &str, also: &[&str]| ResetRequest {
            device: addr.parse().unwrap(),
            method: None,
            methods_before: Some("flr bus".into()),
            also: also.iter().map(|a| a.parse().unwrap()).collect(),
        };
        let facts = |host: &'_ dyn HostFacts| -> Vec<Refusal> {
            let f = Facts {
                inventory: &inv,
                host,
                fabric: None,
            };
            clear_reset(&f, vec![request("02:00.0", &["02:00.1"])]).unwrap_err()
        };
        let r = facts(&none);
        assert!(r[0].to_string().contains("also resets 0000:02:00.1 (below the same bridge), which is on the host driver snd_hda_intel"), "{r:?}");
        // The root disk: on a host driver, and used by the host.
        let f = Facts {
            inventory: &inv,
            host: &root_disk(),
            fabric: None,
        };
        let r = clear_reset(&f, vec![request("01:00.0", &[])]).unwrap_err();
        assert!(r
            .iter()
            .any(|r| r.to_string().contains("is on the host driver nvme")));
        assert!(r.iter().any(|r| matches!(
            &r.kind,
            RefusalKind::InUse(DeviceUse::RootFilesystem { .. })
        )));
        // A function alone on VFIO: a running domain refuses, a stopped one does not.
        let def = DomainDefinition {
            name: "vm".into(),
            uuid: None,
            devices: vec![HostDevice {
                kind: HostDeviceKind::Hostdev,
                address: Some("02:00.0".parse().unwrap()),
                mdev: None,
                managed: Some(true),
            }],
            nova: None,
        };
        for (running, allowed) in [(true, false), (false, true)] {
            let vms = KnownFacts {
                usage: UsageMap::new(),
                vms: VmFacts::Known {
                    uri: "test:///x".into(),
                    domains: vec![crate::model::test_support::domain(
                        "vm",
                        running,
                        true,
                        false,
                        running.then(|| def.clone()),
                        Some(def.clone()),
                    )],
                },
            };
            let f = Facts {
                inventory: &inv,
                host: &vms,
                fabric: None,
            };
            assert_eq!(
                clear_reset(&f, vec![request("02:00.0", &[])]).is_ok(),
                allowed,
                "running {running}"
            );
        }
        // The permit bounds reset_method: the chosen method, default, the list before.
        let f = Facts {
            inventory: &inv,
            host: &none,
            fabric: None,
        };
        let mut chosen = request("02:00.0", &[]);
        chosen.method = Some(crate::model::reset::ResetMethod::Flr);
        let cleared = clear_reset(&f, vec![chosen]).unwrap();
        let w = cleared.writes().next().unwrap();
        for ok in ["flr", "default", "flr bus"] {
            assert!(w.check_methods(ok).is_ok(), "{ok}");
        }
        assert!(w.check_methods("bus").is_err());
        let cleared = clear_reset(&f, vec![request("02:00.0", &[])]).unwrap();
        assert!(
            cleared
                .writes()
                .next()
                .unwrap()
                .check_methods("flr bus")
                .is_err(),
            "no method chosen: nothing to write"
        );
    }

    #[test]
    fn a_put_back_permit_writes_only_the_list_before_and_never_resets() {
        let device: PciAddress = "02:00.0".parse().unwrap();
        let flr = Some(crate::model::reset::ResetMethod::Flr);
        assert!(clear_reset_method_put_back(device, None, Some("flr bus".into())).is_none());
        let cleared = clear_reset_method_put_back(device, flr, Some("flr bus".into())).unwrap();
        let w = cleared.writes().next().unwrap();
        assert!(w.check_methods("flr bus").is_ok());
        assert!(w.check_methods("default").is_ok());
        assert!(w.check_methods("flr").is_err(), "not the method again");
        assert!(w.check_reset().is_err(), "no reset");
    }

    /// The man page's SAFETY RULES rows for the rules this module adds.
    #[test]
    fn the_man_page_table_has_the_fabric_and_next_probe_rules() {
        for (words, kind) in [
            (
                "NVSwitch of a shared NVLink fabric",
                RefusalKind::Fabric(crate::model::fabric::StaysOnHost {
                    address: "b7:00.0".parse().unwrap(),
                    vendor: crate::model::VendorId(0x10de),
                    device: crate::model::DeviceId(0x1af1),
                    fabric_manager: None,
                }),
            ),
            (
                "A claiming driver_override",
                RefusalKind::NextProbe {
                    driver: vfio(),
                    used: DeviceUse::Swap { block: "x".into() },
                },
            ),
        ] {
            assert!(!kind.force_overrides());
            assert!(
                crate::cli::SAFETY
                    .iter()
                    .any(|(rule, force, _)| rule.contains(words) && !*force),
                "no SAFETY row with '{words}'"
            );
        }
        // Every path has one policy row, and its verb is unique.
        let mut verbs: Vec<&str> = policy::PATHS.iter().map(|p| p.path.verb()).collect();
        verbs.sort();
        verbs.dedup();
        assert_eq!(verbs.len(), policy::PATHS.len());
    }
}
