//! A planned driver change as data: the goal, each device's action and its
//! kernel steps. Pure: the planner (`engine::plan`) makes it, the gate
//! (`gate`) judges it, dry-run prints it, apply executes it, tests assert on it.

use std::fmt;

use serde::Serialize;

use super::address::PciAddress;
use super::declaration::DeclaredDriver;
use super::driver::{DriverKind, DriverName, ModuleName};
use super::inventory::CompanionReason;

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

pub use super::driver::Binding;

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
    /// Checks that passed (the gate adds its own).
    pub checks: Vec<String>,
    /// `--with-group` was asked: a group the gate finds not viable is not
    /// one `--with-group` would mend.
    #[serde(skip)]
    pub with_group: bool,
}

impl Plan {
    pub fn changes(&self) -> bool {
        self.actions.iter().any(Action::changes)
    }

    /// The devices that change together, as indices into `actions`, each
    /// unit in the plan's order and the units by their first device: a
    /// function and its companions (a GPU's audio and USB functions, linked
    /// by the kernel or in its slot) form one; every other device is a unit
    /// of its own. Devices of one IOMMU group need no order among
    /// themselves (the kernel takes each device's own lock; the group is
    /// viable once all are bound, and the gate judged it as a whole).
    pub fn units(&self) -> Vec<Vec<usize>> {
        let index = |addr: &PciAddress| self.actions.iter().position(|a| a.address == *addr);
        // Each action's unit: its own, or the one of the function it is a companion of.
        let mut unit_of: Vec<usize> = (0..self.actions.len()).collect();
        fn root(unit_of: &[usize], mut i: usize) -> usize {
            while unit_of[i] != i {
                i = unit_of[i];
            }
            i
        }
        for (i, action) in self.actions.iter().enumerate() {
            if let Why::Companion { of, .. } = &action.why {
                if let Some(j) = index(of) {
                    let (a, b) = (root(&unit_of, i), root(&unit_of, j));
                    unit_of[a.max(b)] = a.min(b);
                }
            }
        }
        let mut units: Vec<Vec<usize>> = Vec::new();
        let mut first: Vec<usize> = Vec::new();
        for i in 0..self.actions.len() {
            let r = root(&unit_of, i);
            match first.iter().position(|f| *f == r) {
                Some(u) => units[u].push(i),
                None => {
                    first.push(r);
                    units.push(vec![i]);
                }
            }
        }
        units
    }
}

/// `vfio-pci, override vfio-pci`, `no driver`, ... (`Binding`'s Display).
pub fn describe(binding: &Binding) -> String {
    binding.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(addr: &str, why: Why) -> Action {
        Action {
            address: addr.parse().unwrap(),
            why,
            before: Binding {
                driver: None,
                driver_override: None,
            },
            after: Binding {
                driver: None,
                driver_override: None,
            },
            steps: vec![],
        }
    }

    #[test]
    fn a_function_and_its_companions_are_one_unit_everything_else_its_own() {
        let companion = |of: &str| Why::Companion {
            of: of.parse().unwrap(),
            link: CompanionReason::SameSlot,
        };
        let plan = Plan {
            goal: Goal::BindVfio,
            load_modules: vec![],
            actions: vec![
                action("01:00.0", Why::Requested),
                action("01:00.1", companion("01:00.0")),
                action("25:00.0", Why::Requested),
                action("b7:00.0", Why::Requested),
                action(
                    "b8:00.0",
                    Why::GroupMember {
                        of: "b7:00.0".parse().unwrap(),
                        group: 45,
                    },
                ),
                action("01:00.3", companion("01:00.0")),
            ],
            notes: vec![],
            checks: vec![],
            with_group: false,
        };
        assert_eq!(plan.units(), vec![vec![0, 1, 5], vec![2], vec![3], vec![4]]);
    }
}
