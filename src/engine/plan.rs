//! Planning a driver change: desired state + inventory + host facts ->
//! ordered steps per device, or refusals with reasons. Pure: dry-run prints
//! a plan, apply executes it, tests assert on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::model::address::PciAddress;
use crate::model::declaration::DeclaredDriver;
use crate::model::device::PciDevice;
use crate::model::driver::{DriverKind, DriverName, ModuleName};
use crate::model::fabric::{device_may_leave_host, FabricReading};
use crate::model::group::{GroupMember, MemberState, Viability};

use super::gate;
use super::refusal::{Refusal, RefusalKind};
use crate::model::domain::VmFacts;
use crate::model::inventory::{CompanionReason, Inventory, IommuState};
use crate::model::modalias::{best_match, Alias};
use crate::model::usage::UsageFacts;

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "goal", content = "driver", rename_all = "snake_case")]
pub enum Goal {
    /// vfio-pci, or the best VFIO variant driver for each device.
    BindVfio,
    /// A named driver.
    Bind(DriverName),
    /// Back to the driver the kernel picks without an override.
    Restore,
    /// No driver at all.
    Unbind,
    /// Each device back to the binding it had before an interrupted change
    /// (`Facts::recover_to`; `vfioctl recover`).
    Recover,
}

impl Goal {
    /// The devices end on a VFIO driver (what a VM wants).
    pub fn to_vfio(&self) -> bool {
        match self {
            Goal::BindVfio => true,
            Goal::Bind(d) => d.kind() == DriverKind::Vfio,
            // Recover may give a device back to its host driver.
            Goal::Restore | Goal::Unbind | Goal::Recover => false,
        }
    }

    pub fn verb(&self) -> &'static str {
        match self {
            Goal::BindVfio | Goal::Bind(_) => "bind",
            Goal::Restore => "restore",
            Goal::Unbind => "unbind",
            Goal::Recover => "recover",
        }
    }

    /// The bind goal for a declared (or `--driver`) driver: `Auto` is vfio-pci
    /// or the best VFIO variant.
    pub fn bind_to(driver: &DeclaredDriver) -> Goal {
        match driver {
            DeclaredDriver::Auto => Goal::BindVfio,
            DeclaredDriver::Named(d) => Goal::Bind(d.clone()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub goal: Goal,
    pub targets: Vec<PciAddress>,
    pub with_group: bool,
    pub force: bool,
}

/// What the planner needs to know besides the inventory.
pub struct Facts<'a> {
    /// Asked once, for the devices the plan would release.
    pub usage: &'a dyn UsageFacts,
    /// `vfio_pci:` aliases from modules.alias (variant drivers).
    pub vfio_variants: &'a [Alias],
    /// The driver each device had before vfioctl changed it (the change record).
    pub previous: BTreeMap<PciAddress, DriverName>,
    /// What the change record says about a device, as a note for the operator.
    pub history: BTreeMap<PciAddress, String>,
    /// The host's NVLink fabric as read from it (`None`: no NVSwitch);
    /// NVSwitches stay while Fabric Manager is enabled or running.
    pub fabric: Option<FabricReading>,
    /// For `Goal::Recover`: the binding each device had before the
    /// interrupted change (its intent in the change record).
    pub recover_to: BTreeMap<PciAddress, Binding>,
}

/// Why a device is part of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Why {
    Requested,
    /// A function that travels with a requested one (GPU audio, USB).
    Companion {
        of: PciAddress,
        link: CompanionReason,
    },
    /// Another endpoint of the same IOMMU group (`--with-group`).
    GroupMember {
        of: PciAddress,
        group: u32,
    },
    /// A device an interrupted change touched (`recover`).
    Interrupted,
}

pub use crate::model::driver::Binding;

/// What the driver link must name once the device has been probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "expect", content = "driver", rename_all = "snake_case")]
pub enum Expect {
    Driver(DriverName),
    /// Whatever the kernel picks, which may be nothing (restore without a record).
    HostDriverOrNone,
    NoDriver,
}

/// One kernel step on one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Write the driver name to `driver_override`, or clear it (`None`, writes "\n").
    SetOverride { driver: Option<DriverName> },
    /// Write the address to the current driver's `unbind`.
    Unbind { driver: DriverName },
    /// Write the address to `/sys/bus/pci/drivers_probe`.
    Probe,
    /// Poll until the driver link matches (and, for VFIO, `/dev/vfio/<group>` exists).
    Verify {
        #[serde(flatten)]
        expect: Expect,
        vfio_group: Option<u32>,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::SetOverride { driver: Some(d) } => write!(f, "write driver_override = {d}"),
            Step::SetOverride { driver: None } => write!(f, "clear driver_override"),
            Step::Unbind { driver } => write!(f, "unbind from {driver}"),
            Step::Probe => write!(f, "write address to drivers_probe"),
            Step::Verify { expect, vfio_group } => {
                match expect {
                    Expect::Driver(d) => write!(f, "verify driver is {d}")?,
                    Expect::HostDriverOrNone => {
                        write!(f, "verify override is gone (host driver or none)")?
                    }
                    Expect::NoDriver => write!(f, "verify no driver is bound")?,
                }
                match vfio_group {
                    Some(g) => write!(f, " and /dev/vfio/{g} exists"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The change planned for one device. No steps: it is already as wanted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    pub address: PciAddress,
    #[serde(flatten)]
    pub why: Why,
    pub before: Binding,
    pub after: Binding,
    pub steps: Vec<Step>,
}

impl Action {
    pub fn changes(&self) -> bool {
        !self.steps.is_empty()
    }
    /// The step list releases the device from its current driver.
    pub fn releases(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Unbind { .. }))
    }
    /// The step list changes the device's driver (unbinds or probes it).
    pub fn changes_driver(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, Step::Unbind { .. } | Step::Probe))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    #[serde(flatten)]
    pub goal: Goal,
    /// Modules to load before any device is touched.
    pub load_modules: Vec<ModuleName>,
    pub actions: Vec<Action>,
    /// Things the operator should know (devices added, forced refusals, ...).
    pub notes: Vec<String>,
    /// Checks that passed.
    pub checks: Vec<String>,
}

impl Plan {
    pub fn changes(&self) -> bool {
        self.actions.iter().any(Action::changes)
    }
}

/// Why a plan cannot be made. Nothing has been written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{}", super::refusal::joined(.0))]
    Refused(Vec<Refusal>),
    #[error("the IOMMU is off, so VFIO cannot use {0}: {remedy}, then reboot", remedy = IommuState::REMEDY)]
    IommuOff(PciAddress),
}

/// Works out the plan for `request`, or why it is refused.
pub fn plan(inv: &Inventory, facts: &Facts, request: &Request) -> Result<Plan, PlanError> {
    let mut planner = Planner {
        inv,
        facts,
        request,
        set: BTreeMap::new(),
        notes: Vec::new(),
        checks: Vec::new(),
        refusals: Vec::new(),
    };
    planner.run()
}

struct Planner<'a> {
    inv: &'a Inventory,
    facts: &'a Facts<'a>,
    request: &'a Request,
    /// Devices in the plan, with why.
    set: BTreeMap<PciAddress, Why>,
    notes: Vec<String>,
    checks: Vec<String>,
    refusals: Vec<Refusal>,
}

impl Planner<'_> {
    fn device(&self, addr: &PciAddress) -> &PciDevice {
        self.inv
            .device(addr)
            .expect("planned devices come from the inventory")
    }

    /// The driver a device should end on for a bind goal.
    fn bind_target(&self, dev: &PciDevice) -> DriverName {
        let wanted = match &self.request.goal {
            Goal::Bind(driver) => driver.clone(),
            _ => match best_match(self.facts.vfio_variants, "vfio_pci", dev) {
                Some(choice) => DriverName::new(choice.module.as_str()),
                None => DriverName::vfio_pci(),
            },
        };
        // Show (and write) the spelling the kernel registered, when it has.
        self.inv
            .drivers
            .iter()
            .find(|d| **d == wanted)
            .cloned()
            .unwrap_or(wanted)
    }

    fn run(&mut self) -> Result<Plan, PlanError> {
        let goal = &self.request.goal;
        for addr in &self.request.targets {
            let dev = self.device(addr);
            if dev.is_bridge() {
                self.refusals.push(Refusal {
                    device: *addr,
                    kind: RefusalKind::Bridge,
                });
            }
            let why = if *goal == Goal::Recover {
                Why::Interrupted
            } else {
                Why::Requested
            };
            self.set.insert(*addr, why);
        }
        let claims_group = match goal {
            Goal::BindVfio => true,
            Goal::Bind(d) => d.kind() != DriverKind::Host,
            Goal::Restore | Goal::Unbind | Goal::Recover => false,
        };
        if claims_group || *goal == Goal::Restore {
            self.add_companions();
        }
        if claims_group {
            if let Some(first) = self.request.targets.first() {
                let needs_iommu = match goal {
                    Goal::Bind(d) => d.kind() == DriverKind::Vfio,
                    _ => true,
                };
                if needs_iommu && !self.inv.iommu.enabled() {
                    return Err(PlanError::IommuOff(*first));
                }
            }
            self.check_groups();
            self.check_fabric();
        }
        let actions: Vec<Action> = self
            .set
            .iter()
            .map(|(a, why)| self.action(*a, why.clone()))
            .collect();
        self.check_safety(&actions);
        self.check_vms(&actions);
        if !self.refusals.is_empty() {
            return Err(PlanError::Refused(std::mem::take(&mut self.refusals)));
        }
        let mut load_modules: Vec<ModuleName> = Vec::new();
        for action in &actions {
            for step in &action.steps {
                if let Step::SetOverride { driver: Some(d) } = step {
                    let module = ModuleName::new(d.as_str().replace('-', "_"));
                    if !self.inv.drivers.contains(d) && !load_modules.contains(&module) {
                        load_modules.push(module);
                    }
                }
            }
        }
        if *goal == Goal::BindVfio {
            for action in actions.iter().filter(|a| a.changes()) {
                if let Some(choice) = best_match(
                    self.facts.vfio_variants,
                    "vfio_pci",
                    self.device(&action.address),
                ) {
                    self.notes.push(format!(
                        "{}: {} chosen: modules.alias {} ({} wildcards, the most specific vfio_pci alias)",
                        action.address, choice.module, choice.pattern, choice.wildcards
                    ));
                }
            }
        }
        for action in actions.iter().filter(|a| !a.changes()) {
            self.notes.push(format!(
                "{} is already as wanted ({}); left untouched",
                action.address,
                describe(&action.before)
            ));
        }
        for action in &actions {
            if let Some(note) = self.facts.history.get(&action.address) {
                self.notes.push(note.clone());
            }
        }
        Ok(Plan {
            goal: goal.clone(),
            load_modules,
            actions,
            notes: std::mem::take(&mut self.notes),
            checks: std::mem::take(&mut self.checks),
        })
    }

    fn add_companions(&mut self) {
        let requested: Vec<PciAddress> = self.set.keys().copied().collect();
        for addr in requested {
            for companion in self.inv.companions(self.device(&addr)) {
                if self.set.contains_key(&companion.address) {
                    continue;
                }
                let dev = self.device(&companion.address);
                // Restore only brings back companions vfioctl-style bound with it.
                if self.request.goal == Goal::Restore
                    && dev.driver_override.is_none()
                    && dev
                        .driver
                        .as_ref()
                        .is_none_or(|d| d.kind() == DriverKind::Host)
                {
                    continue;
                }
                self.notes.push(format!(
                    "{} added: companion of {addr} ({})",
                    companion.address,
                    match companion.reason {
                        CompanionReason::DeviceLink => "linked by the kernel",
                        CompanionReason::SameSlot => "same slot",
                    }
                ));
                self.set.insert(
                    companion.address,
                    Why::Companion {
                        of: addr,
                        link: companion.reason,
                    },
                );
            }
        }
    }

    /// A shared NVLink fabric keeps its NVSwitches on the host (Fabric Manager).
    fn check_fabric(&mut self) {
        for addr in self.set.keys() {
            if let Err(stays) = device_may_leave_host(self.facts.fabric.as_ref(), self.device(addr))
            {
                self.refusals.push(Refusal {
                    device: *addr,
                    kind: RefusalKind::Fabric(stays),
                });
            }
        }
    }

    /// Every IOMMU group touched must be known in full and viable once the
    /// plan is done.
    fn check_groups(&mut self) {
        let unknown: Vec<Refusal> = self
            .set
            .keys()
            .filter_map(|a| gate::group_refusal(self.inv, a))
            .collect();
        if !unknown.is_empty() {
            self.refusals.extend(unknown);
            return;
        }
        let groups: BTreeSet<u32> = self
            .set
            .keys()
            .filter_map(|a| self.device(a).iommu_group)
            .collect();
        for number in groups {
            let Some(group) = self.inv.groups.get(&number) else {
                continue;
            };
            if self.request.with_group {
                let of = *self
                    .set
                    .keys()
                    .find(|a| self.device(a).iommu_group == Some(number))
                    .expect("the group came from a planned device");
                let joining: Vec<PciAddress> = self
                    .inv
                    .members(group)
                    .filter(|d| !d.is_bridge() && !self.set.contains_key(&d.address))
                    // A PF with VFs enabled never joins (it cannot change driver).
                    .filter(|d| d.sriov.enabled_vfs().is_none())
                    .filter(|d| {
                        matches!(
                            MemberState::of(false, d.driver.as_ref()),
                            MemberState::HostDriver | MemberState::Unbound
                        )
                    })
                    .map(|d| d.address)
                    .collect();
                for member in joining {
                    self.notes.push(format!(
                        "{member} added: member of IOMMU group {number} (--with-group)"
                    ));
                    self.set
                        .insert(member, Why::GroupMember { of, group: number });
                }
            }
            let after = self.viability_after(number);
            if after.viable {
                self.checks
                    .push(format!("IOMMU group {number} will be viable"));
                continue;
            }
            let device = *self
                .set
                .keys()
                .find(|a| self.device(a).iommu_group == Some(number))
                .expect("the group came from a planned device");
            let with_group_helps = !self.request.with_group
                && after.blockers.iter().all(|b| match b.device {
                    GroupMember::Pci(a) => self
                        .inv
                        .device(&a)
                        .is_none_or(|d| d.sriov.enabled_vfs().is_none()),
                    _ => false,
                });
            self.refusals.push(Refusal {
                device,
                kind: RefusalKind::GroupNotViable {
                    group: number,
                    blockers: after.blockers,
                    with_group_helps,
                },
            });
        }
    }

    fn viability_after(&self, number: u32) -> Viability {
        let group = &self.inv.groups[&number];
        let targets: Vec<(&PciDevice, Option<DriverName>)> = self
            .inv
            .members(group)
            .map(|d| {
                let driver = if self.set.contains_key(&d.address) {
                    Some(self.bind_target(d))
                } else {
                    d.driver.clone()
                };
                (d, driver)
            })
            .collect();
        Viability::judge(
            targets.iter().map(|(d, drv)| (*d, drv.as_ref())),
            &group.other_members,
        )
    }

    fn action(&self, address: PciAddress, why: Why) -> Action {
        let dev = self.device(&address);
        let before = Binding {
            driver: dev.driver.clone(),
            driver_override: dev.driver_override.clone(),
        };
        let (after, steps) = match &self.request.goal {
            Goal::BindVfio | Goal::Bind(_) => self.bind_steps(dev, &before),
            Goal::Restore => self.restore_steps(address, &before),
            Goal::Unbind => unbind_steps(&before),
            Goal::Recover => {
                let target = self
                    .facts
                    .recover_to
                    .get(&address)
                    .cloned()
                    .unwrap_or_else(|| before.clone());
                let group = dev.iommu_group;
                let steps = put_back_steps(&before, &target, group);
                (target, steps)
            }
        };
        Action {
            address,
            why,
            before,
            after,
            steps,
        }
    }

    /// To the bind target: nothing when already there, only the override
    /// when bound without one (a VM may be using it), else the full change.
    fn bind_steps(&self, dev: &PciDevice, before: &Binding) -> (Binding, Vec<Step>) {
        let target = self.bind_target(dev);
        let after = Binding {
            driver: Some(target.clone()),
            driver_override: Some(target.clone()),
        };
        if before.driver.as_ref() == Some(&target) {
            let steps = if before.driver_override.as_ref() == Some(&target) {
                vec![]
            } else {
                vec![Step::SetOverride {
                    driver: Some(target),
                }]
            };
            return (after, steps);
        }
        let vfio_group = (target.kind() == DriverKind::Vfio)
            .then_some(dev.iommu_group)
            .flatten();
        let steps = change_steps(
            Some(target.clone()),
            before,
            Expect::Driver(target),
            vfio_group,
        );
        (after, steps)
    }

    /// Back to the host driver (the recorded one when known); a stale
    /// override on a host driver is only cleared.
    fn restore_steps(&self, address: PciAddress, before: &Binding) -> (Binding, Vec<Step>) {
        let previous = self.facts.previous.get(&address).cloned();
        let on_claiming_driver = before
            .driver
            .as_ref()
            .is_some_and(|d| d.kind() != DriverKind::Host);
        // A device left with no driver while vfioctl recorded its host
        // driver (an unbind that completed after a pending report) is probed
        // back too: the pending message tells the operator to run restore.
        // Found by tests/vm 75-safety-gpu: restore said "nothing to do".
        let steps = if on_claiming_driver
            || (before.driver.is_none() && (before.driver_override.is_some() || previous.is_some()))
        {
            let expect = previous
                .clone()
                .map_or(Expect::HostDriverOrNone, Expect::Driver);
            change_steps(None, before, expect, None)
        } else if before.driver_override.is_some() {
            vec![Step::SetOverride { driver: None }]
        } else {
            vec![]
        };
        let after = Binding {
            driver: if steps.iter().any(|s| matches!(s, Step::Probe)) {
                previous
            } else {
                before.driver.clone()
            },
            driver_override: None,
        };
        (after, steps)
    }

    /// Devices whose driver changes must pass the gate's VM rules, when
    /// this change asks libvirt (`Facts::usage.vms()`).
    fn check_vms(&mut self, actions: &[Action]) {
        let changing: BTreeSet<PciAddress> = actions
            .iter()
            .filter(|a| {
                a.steps
                    .iter()
                    .any(|s| matches!(s, Step::Unbind { .. } | Step::Probe))
            })
            .map(|a| a.address)
            .collect();
        if changing.is_empty() {
            return;
        }
        let Some(vms) = self.facts.usage.vms() else {
            return;
        };
        let change = if self.request.goal.to_vfio() {
            gate::VmChange::ToVfio
        } else {
            gate::VmChange::ToHost
        };
        let verdict = gate::judge_vms(self.inv, vms, &changing, change, self.request.force);
        let refused = !verdict.refusals.is_empty() || !verdict.forced.is_empty();
        self.refusals.extend(verdict.refusals);
        self.notes.extend(verdict.forced);
        match vms {
            VmFacts::Known { uri, domains } if !refused => {
                let list: Vec<String> = changing.iter().map(ToString::to_string).collect();
                self.checks.push(format!(
                    "no running libvirt domain uses, and no domain config names, {} ({} domains at {uri})",
                    list.join(", "),
                    domains.len()
                ));
            }
            VmFacts::NotAsked(why) | VmFacts::Absent(why) => {
                self.notes.push(format!("VMs not checked: {why}"))
            }
            _ => {}
        }
    }

    /// Devices about to be released from their driver must pass the gate;
    /// an SR-IOV PF with VFs enabled never changes driver.
    fn check_safety(&mut self, actions: &[Action]) {
        for action in actions.iter().filter(|a| a.changes_driver()) {
            self.refusals
                .extend(gate::sriov_pf_refusal(self.inv, &action.address));
        }
        let releasing: BTreeSet<PciAddress> = actions
            .iter()
            .filter(|a| a.releases())
            .map(|a| a.address)
            .collect();
        if releasing.is_empty() {
            return;
        }
        // Recover also writes the override of devices it does not release:
        // a process holding one may be waiting on an unbind the interrupted
        // change left pending, and the write would block behind it.
        if self.request.goal == Goal::Recover {
            let writing: BTreeSet<PciAddress> = actions
                .iter()
                .filter(|a| a.changes() && !a.releases())
                .map(|a| a.address)
                .collect();
            let verdict = gate::judge(
                self.inv,
                self.facts.usage,
                &writing,
                gate::Change::WriteOnly,
                false,
            );
            self.refusals.extend(verdict.refusals);
        }
        let verdict = gate::judge(
            self.inv,
            self.facts.usage,
            &releasing,
            gate::Change::ReleaseNow,
            self.request.force,
        );
        self.refusals.extend(verdict.refusals);
        self.notes.extend(verdict.forced);
        if !verdict.clear.is_empty() {
            let clear: Vec<String> = verdict.clear.iter().map(ToString::to_string).collect();
            self.checks.push(format!(
                "not in use by the host (mounts, swap, addresses, routes, console, open handles): {}",
                clear.join(", ")
            ));
        }
    }
}

/// Override, unbind from the current driver (if any), probe, verify.
fn change_steps(
    driver: Option<DriverName>,
    before: &Binding,
    expect: Expect,
    vfio_group: Option<u32>,
) -> Vec<Step> {
    let mut steps = vec![Step::SetOverride { driver }];
    if let Some(current) = &before.driver {
        steps.push(Step::Unbind {
            driver: current.clone(),
        });
    }
    steps.push(Step::Probe);
    steps.push(Step::Verify { expect, vfio_group });
    steps
}

/// From `now` to `target` (`recover`): the override first, so the probe
/// picks the target; then unbind and probe when the driver differs, and
/// verify.
fn put_back_steps(now: &Binding, target: &Binding, group: Option<u32>) -> Vec<Step> {
    if now == target {
        return vec![];
    }
    let mut steps = vec![Step::SetOverride {
        driver: target.driver_override.clone(),
    }];
    if now.driver == target.driver {
        return steps;
    }
    if let Some(current) = &now.driver {
        steps.push(Step::Unbind {
            driver: current.clone(),
        });
    }
    let (expect, vfio_group) = match &target.driver {
        Some(d) => {
            steps.push(Step::Probe);
            let vfio = (d.kind() == DriverKind::Vfio).then_some(group).flatten();
            (Expect::Driver(d.clone()), vfio)
        }
        None => (Expect::NoDriver, None),
    };
    steps.push(Step::Verify { expect, vfio_group });
    steps
}

/// Off the current driver, keeping the override.
fn unbind_steps(before: &Binding) -> (Binding, Vec<Step>) {
    let steps = match &before.driver {
        Some(current) => vec![
            Step::Unbind {
                driver: current.clone(),
            },
            Step::Verify {
                expect: Expect::NoDriver,
                vfio_group: None,
            },
        ],
        None => vec![],
    };
    let after = Binding {
        driver: None,
        driver_override: before.driver_override.clone(),
    };
    (after, steps)
}

/// `vfio-pci, override vfio-pci`, `no driver`, ... (`Binding`'s Display).
pub fn describe(binding: &Binding) -> String {
    binding.to_string()
}
