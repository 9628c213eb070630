//! Node health checks: facts in, verdicts out. Pure; `commands::check`
//! gathers the facts and renders. Each check has a stable id, a verdict, the
//! evidence it saw and, when not OK, the remedy.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Serialize, Serializer};

mod declarations;
mod devices;
mod fabric;
mod health;
mod health_aer;
mod health_input;
mod host;
mod reset;
mod sriov;
mod vms;
mod wanted;

pub use vms::VmHold;

pub use health::{judge as judge_health, judged};
pub use health_aer::{plan as aer_plan, updates as aer_updates, Decision as AerDecision};
pub use health_input::HealthInput;
pub use wanted::{wanted, Wanted};

use declarations::{bindings, expectations};
use devices::{change_record, interrupted_change, override_threats, pending_unbinds, state_dir};
use fabric::fabric;
use host::{
    boot_files, cpu_virtualization, iommu_active, kernel_cmdline, libvirt, udev_rules, vfio_modules,
};

use crate::integrations::boot_files::CpuVendor;
use crate::model::declaration::{Declaration, Declarations, DeclaredDriver, Fit, SriovDeclaration};
use crate::model::fabric::{device_may_leave_host, FabricReading};
use crate::model::health::{NotJudged, Severity};
use crate::model::{
    DeviceId, DriverKind, DriverName, Inventory, IommuState, ModuleName, PciAddress, PciDevice,
    SriovRole, VendorId,
};

/// Verdicts in the monitoring-plugins convention. Ordered by severity for
/// the overall result: CRITICAL > WARNING > UNKNOWN > OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Unknown,
    Warning,
    Critical,
}

impl Verdict {
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Ok => 0,
            Verdict::Warning => 1,
            Verdict::Critical => 2,
            Verdict::Unknown => 3,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warning => "WARNING",
            Verdict::Critical => "CRITICAL",
            Verdict::Unknown => "UNKNOWN",
        }
    }
    /// Node Problem Detector's custom plugin status: 0 OK, 1 a problem
    /// (WARNING or CRITICAL), 2 unknown.
    pub fn npd_exit_code(self) -> i32 {
        match self {
            Verdict::Ok => 0,
            Verdict::Warning | Verdict::Critical => 1,
            Verdict::Unknown => 2,
        }
    }
    /// The verdicts, most severe first (the order summaries count them in).
    pub const BY_SEVERITY: [Verdict; 4] = [
        Verdict::Critical,
        Verdict::Warning,
        Verdict::Unknown,
        Verdict::Ok,
    ];
}

impl From<Severity> for Verdict {
    fn from(s: Severity) -> Verdict {
        match s {
            Severity::Ok => Verdict::Ok,
            Severity::Warning => Verdict::Warning,
            Severity::Critical => Verdict::Critical,
            Severity::Unknown => Verdict::Unknown,
        }
    }
}

impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub id: String,
    pub status: Verdict,
    pub message: String,
    pub evidence: Vec<String>,
    pub remedy: Option<String>,
    /// The declared device this check is about, if any.
    pub device: Option<PciAddress>,
    /// Why this family of the device is not judged, when the host cannot
    /// report it by design (its verdict: check.toml's `[not_judged]`).
    pub not_judged: Option<NotJudged>,
}

fn result(
    id: &str,
    status: Verdict,
    message: impl Into<String>,
    evidence: Vec<String>,
    remedy: Option<&str>,
) -> CheckResult {
    CheckResult {
        id: id.to_string(),
        status,
        message: message.into(),
        evidence,
        remedy: remedy.map(str::to_string),
        device: None,
        not_judged: None,
    }
}

/// A module's availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleState {
    /// Loaded or built in (/sys/module/NAME).
    Loaded,
    /// Installed for the running kernel, not loaded.
    Installed,
    Missing,
    Unknown,
}

/// The state of a file vfioctl generates, against what it would generate now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    Current,
    Stale,
    Missing,
    NotOwned,
}

/// An operator's expectation: `count` functions with IDs on a driver.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub ids: String,
    /// Driver they must be on; "auto" (or absent) means any VFIO driver.
    pub driver: Option<String>,
    pub count: usize,
}

impl Expectation {
    /// The vendor and device `ids` names (`VENDOR:DEVICE`), or `None`.
    pub fn vendor_device(&self) -> Option<(VendorId, DeviceId)> {
        let mut parts = self.ids.split(':');
        let ids = (
            parts.next().and_then(VendorId::parse_hex4)?,
            parts.next().and_then(DeviceId::parse_hex4)?,
        );
        parts.next().is_none().then_some(ids)
    }
}

/// What libvirt reported for one declared device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtView {
    pub address: PciAddress,
    pub seen: bool,
    pub driver: Option<String>,
    pub device_type: Option<String>,
}

/// Everything the checks look at. `None` means "could not be read".
#[derive(Debug)]
pub struct Facts<'a> {
    pub inv: &'a Inventory,
    pub cpu: CpuVendor,
    pub cpu_flags: Option<Vec<String>>,
    pub cmdline: Option<Vec<String>>,
    /// (DMAR present, IVRS present) under /sys/firmware/acpi/tables.
    pub acpi_tables: Option<(bool, bool)>,
    /// Interrupt remapping in use (IR- interrupt chips in /proc/interrupts).
    pub irq_remapping: Option<bool>,
    /// vfio_iommu_type1's allow_unsafe_interrupts parameter.
    pub unsafe_interrupts: Option<bool>,
    pub modules: Vec<(ModuleName, ModuleState)>,
    pub declarations: Result<Declarations, String>,
    /// Groups with a /dev/vfio/N node.
    pub vfio_nodes: BTreeSet<u32>,
    pub boot_files: Vec<(String, FileState)>,
    pub udev_rules: Option<FileState>,
    pub udev_static_installed: bool,
    /// For each declared device present: whether udev's database carries the
    /// mark the generated rules set (`None`: udev cannot be asked).
    pub udev_marks: Vec<(PciAddress, Option<bool>)>,
    pub expectations: Option<Result<Vec<Expectation>, String>>,
    /// The driver vfioctl last left each device it changed on (the change record).
    pub last_drivers: BTreeMap<PciAddress, String>,
    /// `None`: libvirt not reachable (the message says why).
    pub libvirt: Result<Vec<LibvirtView>, String>,
    /// Unbinds the change record says vfioctl stopped waiting for.
    pub pending: Vec<(PciAddress, String)>,
    /// The host's NVLink fabric as read from it (`None`: no NVSwitch).
    pub fabric: Option<FabricReading>,
    /// The change the record says is under way or was interrupted.
    pub interrupted: Option<InterruptedFact>,
    /// How many devices the change record (/run/vfioctl/changes.json) lists,
    /// or why it cannot be used (the reader's message: file, why, the fix).
    pub record: Result<usize, String>,
    /// /var/lib/vfioctl (the AER baseline, the reset outcomes) trusted, or
    /// why not (`Ok(false)`: not there yet).
    pub state_dir: Result<bool, String>,
    /// The devices judged fit for the next VM, and what was read of them.
    pub health: HealthInput<'a>,
    /// The host's libvirt domains, or why they are unknown.
    pub vms: crate::model::domain::VmFacts,
    /// Each running domain's functions, held by its QEMU or not.
    pub vm_holds: Vec<VmHold>,
    /// Claiming driver_overrides that the next probe would turn against the
    /// host (`gate::override_threats`).
    pub override_threats: Vec<crate::gate::Refusal>,
    /// Each device's last reset by `vfioctl reset` (/var/lib/vfioctl/reset.json).
    pub resets: Result<crate::model::reset::ResetState, String>,
}

/// A change's intent found in the change record (`host::state`).
#[derive(Debug, Clone)]
pub struct InterruptedFact {
    pub intent: crate::host::state::Intent,
    pub state: crate::host::state::IntentState,
    /// The SR-IOV PF's `sriov_drivers_autoprobe` now, when the intent has one.
    pub autoprobe_now: Option<bool>,
}

/// Runs every check, in a stable order.
pub fn run_checks(f: &Facts) -> Vec<CheckResult> {
    let mut out = vec![cpu_virtualization(f), kernel_cmdline(f)];
    out.extend(iommu_active(f));
    out.push(vfio_modules(f));
    out.extend(bindings(f));
    out.extend(fabric(f));
    out.extend(override_threats(f));
    out.extend(pending_unbinds(f));
    out.push(change_record(f));
    out.extend(state_dir(f));
    out.extend(interrupted_change(f));
    out.push(boot_files(f));
    out.push(udev_rules(f));
    out.push(libvirt(f));
    out.extend(vms::vm_checks(f));
    out.extend(expectations(f));
    out.extend(health::health(f));
    out.extend(reset::resets(f));
    out
}

/// The overall verdict: the most severe one.
pub fn overall(results: &[CheckResult]) -> Verdict {
    results
        .iter()
        .map(|r| r.status)
        .max()
        .unwrap_or(Verdict::Ok)
}

/// How many results have each verdict, most severe first, and how many
/// families are not judged, by reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub by_verdict: [(Verdict, usize); 4],
    pub not_judged: BTreeMap<NotJudged, usize>,
}

impl Counts {
    pub fn of(results: &[CheckResult]) -> Counts {
        let by_verdict =
            Verdict::BY_SEVERITY.map(|v| (v, results.iter().filter(|r| r.status == v).count()));
        let mut not_judged = BTreeMap::new();
        for why in results.iter().filter_map(|r| r.not_judged) {
            *not_judged.entry(why).or_insert(0) += 1;
        }
        Counts {
            by_verdict,
            not_judged,
        }
    }
    pub fn of_verdict(&self, verdict: Verdict) -> usize {
        self.by_verdict
            .iter()
            .find(|(v, _)| *v == verdict)
            .map_or(0, |(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::declaration::Declaration;

    fn facts(inv: &Inventory, marks: Vec<(PciAddress, Option<bool>)>) -> Facts<'_> {
        Facts {
            inv,
            cpu: CpuVendor::Intel,
            cpu_flags: None,
            cmdline: None,
            acpi_tables: None,
            irq_remapping: None,
            unsafe_interrupts: None,
            modules: vec![],
            declarations: Ok(Declarations::new(vec![Declaration::of_ids(
                VendorId(0x8086),
                DeviceId(0x10d3),
                "/etc/vfioctl/bindings.d/a.toml",
                1,
            )])),
            vfio_nodes: BTreeSet::new(),
            boot_files: vec![],
            udev_rules: Some(FileState::Current),
            udev_static_installed: true,
            udev_marks: marks,
            expectations: None,
            last_drivers: BTreeMap::new(),
            libvirt: Err("not asked".into()),
            pending: vec![],
            fabric: None,
            interrupted: None,
            record: Ok(0),
            state_dir: Ok(false),
            health: HealthInput::default(),
            vms: crate::model::domain::VmFacts::NotAsked("tests".into()),
            vm_holds: vec![],
            override_threats: vec![],
            resets: Ok(Default::default()),
        }
    }

    #[test]
    fn udev_database_marks_decide_the_rules_check() {
        let inv = Inventory::default();
        let addr: PciAddress = "01:00.0".parse().unwrap();
        let marked = udev_rules(&facts(&inv, vec![(addr, Some(true))]));
        assert_eq!(marked.status, Verdict::Ok);
        assert!(marked
            .message
            .contains("udev marks all 1 declared device(s)"));
        let unmarked = udev_rules(&facts(&inv, vec![(addr, Some(false))]));
        assert_eq!(unmarked.status, Verdict::Warning);
        assert!(unmarked.message.contains("does not mark 0000:01:00.0"));
        let unknown = udev_rules(&facts(&inv, vec![(addr, None)]));
        assert_eq!(unknown.status, Verdict::Ok, "a fake root cannot ask udev");
    }

    #[test]
    fn domains_that_start_together_share_a_device_critically() {
        use crate::model::domain::{Domain, DomainDefinition, HostDevice, HostDeviceKind, VmFacts};
        let dom = |name: &str, active: bool, autostart: bool| {
            let def = DomainDefinition {
                name: name.into(),
                uuid: None,
                devices: vec![HostDevice {
                    kind: HostDeviceKind::Hostdev,
                    address: Some("41:00.0".parse().unwrap()),
                    mdev: None,
                    managed: Some(true),
                }],
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
        };
        let inv = Inventory::default();
        let shared = |domains: Vec<Domain>| {
            let mut f = facts(&inv, vec![]);
            f.vms = VmFacts::Known {
                uri: "test:///x".into(),
                domains,
            };
            run_checks(&f)
                .into_iter()
                .filter(|r| r.id == "vm.shared_device")
                .count()
        };
        // Alternatives: two stopped domains that do not autostart.
        assert_eq!(
            shared(vec![dom("a", false, false), dom("b", false, false)]),
            0
        );
        // One runs, the other starts with libvirt at boot.
        assert_eq!(
            shared(vec![dom("a", true, false), dom("b", false, true)]),
            1
        );
        // Both autostart.
        assert_eq!(
            shared(vec![dom("a", false, true), dom("b", false, true)]),
            1
        );
        // One running, one stopped and not autostarting: the stopped one's start fails cleanly.
        assert_eq!(
            shared(vec![dom("a", true, false), dom("b", false, false)]),
            0
        );
    }

    #[test]
    fn expected_ids_are_vendor_and_device_only() {
        let e = |ids: &str| Expectation {
            ids: ids.into(),
            driver: None,
            count: 1,
        };
        assert_eq!(
            e("10de:20b0").vendor_device(),
            Some((VendorId(0x10de), DeviceId(0x20b0)))
        );
        for bad in ["10de:20b0:10de:134f", "10de", "10de:", "nvidia:a100", ""] {
            assert_eq!(e(bad).vendor_device(), None, "{bad}");
        }
    }

    #[test]
    fn the_overall_verdict_is_the_most_severe() {
        let inv = Inventory::default();
        let f = facts(&inv, vec![]);
        let results = run_checks(&f);
        assert_eq!(
            overall(&results),
            Verdict::Critical,
            "no IOMMU in an empty inventory"
        );
        assert_eq!(Verdict::Unknown.exit_code(), 3);
        assert!(Verdict::Warning > Verdict::Unknown && Verdict::Critical > Verdict::Warning);
    }
}
