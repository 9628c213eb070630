//! Planning a driver change: desired state + inventory + the change record
//! -> ordered steps per device. Pure: which devices travel together
//! (companions, `--with-group`), each one's steps, the modules to load. It
//! judges nothing: the gate (`gate::clear`) judges the plan it returns, and
//! only a cleared plan can be applied.

use std::collections::BTreeMap;

use crate::gate::Refusal;
use crate::model::address::PciAddress;
use crate::model::device::PciDevice;
use crate::model::driver::{DriverKind, DriverName, ModuleName};
use crate::model::group::MemberState;
use crate::model::inventory::{CompanionReason, Inventory, IommuState};
use crate::model::modalias::{best_match, Alias};

pub use crate::model::plan::{describe, Action, Binding, Expect, Goal, Plan, Step, Why};

#[derive(Debug, Clone)]
pub struct Request {
    pub goal: Goal,
    pub targets: Vec<PciAddress>,
    pub with_group: bool,
}

/// What the planner needs to know besides the inventory.
pub struct Facts<'a> {
    /// `vfio_pci:` aliases from modules.alias (variant drivers).
    pub vfio_variants: &'a [Alias],
    /// The driver each device had before vfioctl changed it (the change record).
    pub previous: BTreeMap<PciAddress, DriverName>,
    /// What the change record says about a device, as a note for the operator.
    pub history: BTreeMap<PciAddress, String>,
    /// For `Goal::Recover`: the binding each device had before the
    /// interrupted change (its intent in the change record).
    pub recover_to: BTreeMap<PciAddress, Binding>,
}

/// Why a plan cannot be made. Nothing has been written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{}", crate::gate::joined(.0))]
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
            if self.request.with_group {
                self.add_group_members();
            }
        }
        let actions: Vec<Action> = self
            .set
            .iter()
            .map(|(a, why)| self.action(*a, why.clone()))
            .collect();
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
            checks: Vec::new(),
            with_group: self.request.with_group,
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

    /// `--with-group`: every endpoint of the planned devices' IOMMU groups
    /// on a host driver or none joins them (never a PF with VFs enabled: it
    /// cannot change driver). Whether each group is viable afterwards is the
    /// gate's to judge.
    fn add_group_members(&mut self) {
        let groups: Vec<(u32, PciAddress)> = self
            .set
            .keys()
            .filter_map(|a| Some((self.device(a).iommu_group?, *a)))
            .collect();
        for (number, of) in groups {
            let Some(group) = self.inv.groups.get(&number) else {
                continue;
            };
            let joining: Vec<PciAddress> = self
                .inv
                .members(group)
                .filter(|d| !d.is_bridge() && !self.set.contains_key(&d.address))
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
