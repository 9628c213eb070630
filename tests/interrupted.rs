//! Interrupted changes: `bind`, `sriov` and `persist apply` killed (SIGKILL,
//! as kill -9 or the OOM killer) at every step boundary on the simulated
//! kernel (`support::killpoint`), each followed by `check` (CRITICAL, naming
//! each device and `vfioctl recover`), a refused next change, and `recover`
//! (the host back as before, `check` as before). Also: a failed rollback
//! stays recorded, a record from another boot is ignored, a change in
//! progress is not reported as interrupted.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::cli::{vfioctl, vfioctl_env};
use support::fakehost::{Dev, FakeHost};
use support::killpoint::{self, KillAt};
use support::simkernel::SimKernel;
use support::topologies;
use vfioctl::engine::enforce::apply_declarations;
use vfioctl::engine::plan::Goal;
use vfioctl::engine::recover::{self, RecoverSpec};
use vfioctl::engine::run::{self, ChangeSpec};
use vfioctl::engine::sriov::{self, SriovSpec};
use vfioctl::host::kernel::PciKernel;
use vfioctl::host::state::{self, IntentState};
use vfioctl::host::HostRoot;
use vfioctl::model::declaration::DeclaredDriver;
use vfioctl::model::Selector;

const TIMEOUT: Duration = Duration::from_millis(300);
const IGB_PF: &str = "0000:01:00.0";

/// Every function's driver and override, and each PF's VF count and
/// autoprobe: what a change and its recovery must agree on.
fn snapshot(root: &Path) -> Vec<String> {
    let dir = root.join("sys/bus/pci/devices");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .iter()
        .map(|name| {
            let dev = dir.join(name);
            let driver = std::fs::read_link(dev.join("driver"))
                .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
                .unwrap_or_else(|_| "-".into());
            let read = |f: &str| {
                std::fs::read_to_string(dev.join(f))
                    .map(|t| t.trim().to_string())
                    .unwrap_or_default()
            };
            let mut line = format!(
                "{name} driver={driver} override={}",
                read("driver_override")
            );
            if dev.join("sriov_numvfs").exists() {
                line.push_str(&format!(
                    " numvfs={} autoprobe={}",
                    read("sriov_numvfs"),
                    read("sriov_drivers_autoprobe")
                ));
            }
            line
        })
        .collect()
}

/// `check --json`: its exit status, and each check's id, status and
/// device, without the interrupted-change checks.
fn check(root: &Path) -> (i32, Vec<String>, Vec<Value>) {
    let run = vfioctl(root, &["check", "--json"]);
    let doc: Value = serde_json::from_str(&run.stdout).expect(&run.stderr);
    let checks = doc["checks"].as_array().unwrap().clone();
    let (changes, rest): (Vec<Value>, Vec<Value>) = checks
        .into_iter()
        .partition(|c| c["id"].as_str().unwrap().starts_with("change."));
    let rest = rest
        .iter()
        .map(|c| format!("{} {} {}", c["id"], c["status"], c["device"]))
        .collect();
    (run.status, rest, changes)
}

fn selectors(texts: &[&str]) -> Vec<Selector> {
    texts.iter().map(|t| t.parse().unwrap()).collect()
}

fn recover_spec() -> RecoverSpec {
    RecoverSpec {
        dry_run: false,
        force: false,
        forget: false,
        timeout: TIMEOUT,
        vms: vfioctl::host::vms::VmSource::Skipped,
    }
}

/// A change killed at each of its step boundaries, then checked and recovered.
struct Scenario {
    /// The `#[test]` that runs the change as the killed child.
    child: &'static str,
    /// The host before the change.
    host: fn() -> FakeHost,
    /// The simulated kernel for that host.
    kernel: fn(&FakeHost) -> SimKernel<'_>,
    /// The change.
    change: fn(&Path, &dyn PciKernel),
    /// The command the intent names.
    command: &'static str,
    /// Whether `check` before the change is the baseline to come back to
    /// (not with declarations, which the change itself enforces).
    same_check: bool,
}

impl Scenario {
    /// Kills the change at every boundary; returns how many were tried.
    /// `after_recover(snapshot)` judges each recovered host.
    fn run(&self, mut after_recover: impl FnMut(usize, &[String])) -> usize {
        // The boundaries, from a run that is not killed.
        let scratch = (self.host)();
        let sim = (self.kernel)(&scratch);
        let counted = KillAt::new(&sim, None);
        (self.change)(scratch.root(), &counted);
        let points = killpoint::boundaries(&counted.calls());
        assert!(points.len() >= 3, "{:?}", counted.calls());
        for &at in &points {
            let host = (self.host)();
            let kernel = (self.kernel)(&host);
            let before = snapshot(host.root());
            let (baseline, baseline_checks, _) = check(host.root());
            let signal = killpoint::run_child(self.child, host.root(), at);
            assert_eq!(
                signal,
                Some(libc::SIGKILL),
                "{} killed before call {at}",
                self.child
            );
            let root = HostRoot::new(host.root());
            let intent = state::read_record(&root)
                .unwrap()
                .intent
                .unwrap_or_else(|| panic!("{}: no intent at call {at}", self.child));
            assert_eq!(intent.command, self.command);
            assert_eq!(intent.state(&root), IntentState::Interrupted);

            // check: CRITICAL, each device named, the remedy is recover.
            let (status, _, changes) = check(host.root());
            assert_eq!(status, 2, "{} at {at}: {changes:?}", self.child);
            let named: Vec<&str> = changes
                .iter()
                .map(|c| c["device"].as_str().unwrap())
                .collect();
            for address in intent
                .devices
                .iter()
                .map(|d| d.address)
                .chain(intent.sriov.as_ref().map(|s| s.pf))
            {
                assert!(
                    named.contains(&address.to_string().as_str()),
                    "{address} in {changes:?}"
                );
            }
            for c in &changes {
                assert_eq!(c["id"], "change.interrupted");
                assert_eq!(c["status"], "CRITICAL");
                let message = c["message"].as_str().unwrap();
                assert!(
                    message.contains(&format!("vfioctl {}", self.command)),
                    "{message}"
                );
                assert!(c["remedy"]
                    .as_str()
                    .unwrap()
                    .starts_with("run vfioctl recover"));
            }

            // The next change is refused, dry run included, naming recover.
            for args in [
                &["bind", "0000:01:00.0"][..],
                &["restore", "0000:01:00.0", "--dry-run"],
                &["persist", "apply"],
            ] {
                let run = vfioctl(host.root(), args);
                assert_eq!(run.status, 4, "{args:?}: {}", run.stderr);
                assert!(
                    run.stderr.contains("run `vfioctl recover` first"),
                    "{}",
                    run.stderr
                );
            }
            let run = vfioctl(host.root(), &["sriov", IGB_PF, "--numvfs", "1"]);
            assert_eq!(run.status, 4, "{}", run.stderr);

            // recover --dry-run shows the plan and writes nothing.
            let after_kill = snapshot(host.root());
            let dry = vfioctl(host.root(), &["recover", "--dry-run", "--json"]);
            assert_eq!(dry.status, 0, "{}", dry.stderr);
            let doc: Value = serde_json::from_str(&dry.stdout).unwrap();
            assert_eq!(doc["state"], "interrupted");
            assert_eq!(doc["interrupted"]["command"], self.command);
            assert!(doc["plan"].is_object());
            assert_eq!(snapshot(host.root()), after_kill);

            // recover: back as before, verified, record cleared, check as before.
            let report = recover::run(&root, &recover_spec(), &kernel)
                .unwrap_or_else(|e| panic!("{} at {at}: {e:#}", self.child));
            assert!(
                recover::failure(&report).is_none(),
                "{:?}",
                recover::failure(&report)
            );
            assert!(state::read_record(&root).unwrap().intent.is_none());
            let now = snapshot(host.root());
            after_recover(at, &now);
            if self.same_check {
                assert_eq!(now, before, "{} killed before call {at}", self.child);
                let (status, checks, changes) = check(host.root());
                assert!(changes.is_empty(), "{changes:?}");
                assert_eq!((status, checks), (baseline, baseline_checks));
            } else {
                let (_, _, changes) = check(host.root());
                assert!(changes.is_empty(), "{changes:?}");
            }
            // Recovering again finds nothing.
            let again = recover::run(&root, &recover_spec(), &kernel).unwrap();
            assert!(again.interrupted.is_none());
        }
        points.len()
    }
}

// --- bind: a GPU and its three companions -------------------------------

/// `bind` of `addresses` to VFIO, verified.
fn bind_all(root: &Path, kernel: &dyn PciKernel, addresses: &[&str]) {
    let spec = ChangeSpec {
        path: vfioctl::gate::Path::Bind,
        goal: Goal::BindVfio,
        selectors: selectors(addresses),
        with_group: false,
        force: false,
        dry_run: false,
        timeout: TIMEOUT,
        vms: vfioctl::host::vms::VmSource::Skipped,
    };
    let report = run::run(&HostRoot::new(root), &spec, kernel).unwrap();
    assert!(run::failure(&report).is_none());
}

fn bind_change(root: &Path, kernel: &dyn PciKernel) {
    bind_all(root, kernel, &["01:00.0"]);
}

fn plain_kernel(host: &FakeHost) -> SimKernel<'_> {
    SimKernel::new(host)
}

const BIND: Scenario = Scenario {
    child: "child_bind",
    host: topologies::workstation_gpu,
    kernel: plain_kernel,
    change: bind_change,
    command: "bind",
    same_check: true,
};

/// The killed child of a scenario: `change` on the root the parent gave,
/// through a kernel that kills this process before the call it names.
fn child(kernel: fn(&FakeHost) -> SimKernel<'_>, change: fn(&Path, &dyn PciKernel)) {
    if let Some((root, at)) = killpoint::child() {
        let host = FakeHost::attach(&root);
        let sim = kernel(&host);
        change(&root, &KillAt::new(&sim, Some(at)));
    }
}

#[test]
fn child_bind() {
    child(plain_kernel, bind_change);
}

#[test]
fn bind_killed_at_every_step_is_reported_and_recovered() {
    // 4 devices x (override, unbind, probe) and the end, every step verified.
    assert_eq!(BIND.run(|_, _| {}), 13);
}

// --- bind: three GPUs of the HGX board, three units in flight at once ------

fn hgx_bind_change(root: &Path, kernel: &dyn PciKernel) {
    bind_all(root, kernel, &["48:00.0", "4d:00.0", "8c:00.0"]);
}

fn hgx_host() -> FakeHost {
    let host = topologies::hgx_a100();
    host.register_driver("vfio-pci", Some("vfio_pci"));
    host
}

const HGX_BIND: Scenario = Scenario {
    child: "child_hgx_bind",
    host: hgx_host,
    kernel: plain_kernel,
    change: hgx_bind_change,
    command: "bind",
    same_check: true,
};

#[test]
fn child_hgx_bind() {
    child(plain_kernel, hgx_bind_change);
}

#[test]
fn a_multi_unit_bind_killed_with_several_devices_in_flight_is_recovered() {
    // Three GPUs, each a unit of its own, changed at once: the units take
    // turns one step each (the killed child's kernel asks for one order), so
    // the kills land with the GPUs at different stages together: overridden,
    // unbound, probed. check names all three; recover puts all back.
    let host = hgx_host();
    let sim = plain_kernel(&host);
    let counted = KillAt::new(&sim, None);
    hgx_bind_change(host.root(), &counted);
    let writes: Vec<String> = counted
        .calls()
        .into_iter()
        .filter(|c| c.write)
        .map(|c| c.what)
        .collect();
    assert_eq!(
        writes,
        [
            "override 0000:48:00.0",
            "override 0000:4d:00.0",
            "override 0000:8c:00.0",
            "unbind 0000:48:00.0",
            "unbind 0000:4d:00.0",
            "unbind 0000:8c:00.0",
            "probe 0000:48:00.0",
            "probe 0000:4d:00.0",
            "probe 0000:8c:00.0",
        ]
    );
    // 3 GPUs x (override, unbind, probe) and the end.
    assert_eq!(HGX_BIND.run(|_, _| {}), 10);
}

// --- sriov: 0 -> 3 VFs, and 2 -> 3 -----------------------------------------

fn igb_kernel(host: &FakeHost) -> SimKernel<'_> {
    let mut kernel = SimKernel::new(host);
    kernel.vf_native.insert(IGB_PF.into(), "igbvf".into());
    kernel
}

fn sriov_to(numvfs: u16) -> impl Fn(&Path, &dyn PciKernel) {
    move |root: &Path, kernel: &dyn PciKernel| {
        let spec = SriovSpec {
            selector: "01:00.0".parse().unwrap(),
            numvfs,
            vf_driver: DeclaredDriver::Auto,
            force: false,
            dry_run: false,
            timeout: TIMEOUT,
            vms: vfioctl::host::vms::VmSource::Skipped,
        };
        let report = sriov::run(&HostRoot::new(root), &spec, kernel).unwrap();
        assert!(sriov::failure(&report).is_none());
    }
}

fn sriov_up(root: &Path, kernel: &dyn PciKernel) {
    sriov_to(3)(root, kernel)
}

/// igb with two VFs on vfio-pci, made by `sriov` itself.
fn igb_with_two() -> FakeHost {
    let host = topologies::igb_pf();
    sriov_to(2)(host.root(), &igb_kernel(&host));
    host
}

const SRIOV_UP: Scenario = Scenario {
    child: "child_sriov_up",
    host: topologies::igb_pf,
    kernel: igb_kernel,
    change: sriov_up,
    command: "sriov",
    same_check: true,
};

const SRIOV_CHANGE: Scenario = Scenario {
    child: "child_sriov_change",
    host: igb_with_two,
    kernel: igb_kernel,
    change: sriov_up,
    command: "sriov",
    same_check: true,
};

#[test]
fn child_sriov_up() {
    child(igb_kernel, sriov_up);
}

#[test]
fn child_sriov_change() {
    child(igb_kernel, sriov_up);
}

#[test]
fn sriov_killed_at_every_step_is_reported_and_recovered() {
    // autoprobe 0, numvfs 3, 3 x (override, probe), autoprobe 1, the end.
    assert_eq!(SRIOV_UP.run(|_, _| {}), 10);
    // 2 -> 3: through 0; recover recreates the 2 VFs and binds them to
    // vfio-pci again.
    assert_eq!(SRIOV_CHANGE.run(|_, _| {}), 11);
}

#[test]
fn a_later_sriov_never_takes_the_killed_ones_autoprobe_0_as_the_value_to_restore() {
    let host = topologies::igb_pf();
    let kernel = igb_kernel(&host);
    // Killed right after writing autoprobe 0 (before sriov_numvfs).
    assert_eq!(
        killpoint::run_child("child_sriov_up", host.root(), 2),
        Some(libc::SIGKILL)
    );
    let autoprobe = || {
        std::fs::read_to_string(host.path(&format!(
            "sys/bus/pci/devices/{IGB_PF}/sriov_drivers_autoprobe"
        )))
        .unwrap()
        .trim()
        .to_string()
    };
    assert_eq!(autoprobe(), "0");
    let root = HostRoot::new(host.root());
    let intent = state::read_record(&root).unwrap().intent.unwrap();
    assert_eq!(intent.sriov.as_ref().unwrap().autoprobe_before, Some(true));
    // The later sriov is refused: it would have read 0 as "before".
    let later = SriovSpec {
        selector: "01:00.0".parse().unwrap(),
        numvfs: 1,
        vf_driver: DeclaredDriver::Auto,
        force: false,
        dry_run: false,
        timeout: TIMEOUT,
        vms: vfioctl::host::vms::VmSource::Skipped,
    };
    let err = sriov::run(&root, &later, &kernel).unwrap_err();
    assert!(format!("{err:#}").contains("vfioctl recover"), "{err:#}");
    assert_eq!(autoprobe(), "0");
    // recover puts autoprobe back to the recorded 1; the later sriov runs
    // and ends with 1.
    let report = recover::run(&root, &recover_spec(), &kernel).unwrap();
    let plan = report.plan.as_ref().unwrap();
    assert_eq!(
        plan.sriov_steps
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [format!(
            "echo 1 > /sys/bus/pci/devices/{IGB_PF}/sriov_drivers_autoprobe"
        )]
    );
    assert_eq!(autoprobe(), "1");
    let report = sriov::run(&root, &later, &kernel).unwrap();
    assert!(sriov::failure(&report).is_none());
    assert_eq!(autoprobe(), "1");
}

// --- persist apply: a declared PF's VFs, then a declared GPU --------------

const DECLARED: &str = "[[sriov]]\naddress = \"0000:01:00.0\"\nvendor = \"8086\"\ndevice = \"10c9\"\nnumvfs = 2\n\n[[binding]]\naddress = \"0000:03:00.0\"\nvendor = \"10de\"\ndevice = \"1e87\"\n";

/// igb (no VFs) and an undeclared-until-now GPU on nvidia, both declared.
fn declared_host() -> FakeHost {
    let mut host = topologies::igb_pf();
    host.add(Dev::bridge("0000:00:03.0", 0x8086, 0x347a).group(5));
    host.add(
        Dev::endpoint("0000:03:00.0", 0x10de, 0x1e87, 0x030000)
            .parent("0000:00:03.0")
            .driver("nvidia", Some("nvidia"))
            .boot_vga(false)
            .group(6),
    );
    host.write("etc/vfioctl/bindings.d/site.toml", DECLARED);
    host
}

fn persist_apply(root: &Path, kernel: &dyn PciKernel) {
    let done = apply_declarations(&HostRoot::new(root), kernel, false, TIMEOUT).unwrap();
    assert!(done.errors.is_empty(), "{:?}", done.errors);
}

const PERSIST_APPLY: Scenario = Scenario {
    child: "child_persist_apply",
    host: declared_host,
    kernel: igb_kernel,
    change: persist_apply,
    command: "persist apply",
    same_check: false,
};

#[test]
fn child_persist_apply() {
    child(igb_kernel, persist_apply);
}

#[test]
fn persist_apply_killed_at_every_step_is_reported_and_recovered() {
    // The host before, after the [[sriov]] part alone, and after both.
    let before = snapshot(declared_host().root());
    let sriov_only = {
        let host = declared_host();
        let kernel = igb_kernel(&host);
        let decls = vfioctl::host::config::load(&HostRoot::new(host.root())).unwrap();
        vfioctl::engine::enforce::apply_sriov(
            &HostRoot::new(host.root()),
            &kernel,
            vfioctl::gate::Path::PersistApply,
            &decls,
            &decls.sriov[0],
            false,
            TIMEOUT,
        )
        .unwrap();
        snapshot(host.root())
    };
    let full = {
        let host = declared_host();
        persist_apply(host.root(), &igb_kernel(&host));
        snapshot(host.root())
    };
    assert!(before != sriov_only && sriov_only != full);
    let mut seen = (0, 0);
    let tried = PERSIST_APPLY.run(|at, now| {
        // Each interrupted part is put back; a part that finished stays.
        if now == before {
            seen.0 += 1;
        } else if now == sriov_only {
            seen.1 += 1;
        } else {
            panic!("killed before call {at}, recovered to neither state: {now:#?}");
        }
    });
    // The [[sriov]] part's 7 boundaries, the GPU's 3 and the end.
    assert_eq!(tried, 11);
    assert_eq!(seen, (7, 4));
    // And persist apply, run again, finishes the job.
    let host = declared_host();
    let kernel = igb_kernel(&host);
    assert_eq!(
        killpoint::run_child("child_persist_apply", host.root(), 9),
        Some(libc::SIGKILL)
    );
    let root = HostRoot::new(host.root());
    recover::run(&root, &recover_spec(), &kernel).unwrap();
    persist_apply(host.root(), &kernel);
    assert_eq!(snapshot(host.root()), full);
}

// --- records that are not interrupted changes -----------------------------

#[test]
fn a_failed_rollback_stays_recorded_until_recover() {
    let host = topologies::shared_group();
    let before = snapshot(host.root());
    let mut kernel = SimKernel::new(&host);
    kernel
        .faults
        .rejects
        .insert(("0000:03:00.0".into(), "vfio-pci".into()));
    kernel
        .faults
        .rejects
        .insert(("0000:02:00.0".into(), "nvidia".into()));
    let spec = ChangeSpec {
        path: vfioctl::gate::Path::Bind,
        goal: Goal::BindVfio,
        selectors: selectors(&["02:00.0"]),
        with_group: true,
        force: false,
        dry_run: false,
        timeout: TIMEOUT,
        vms: vfioctl::host::vms::VmSource::Skipped,
    };
    let root = HostRoot::new(host.root());
    let report = run::run(&root, &spec, &kernel).unwrap();
    let failed = run::failure(&report).unwrap();
    assert!(failed.rollback_failed);
    assert!(
        failed.message.contains("`vfioctl recover`"),
        "{}",
        failed.message
    );
    // Recorded: check names the GPU left with no driver; changes are refused.
    let (status, _, changes) = check(host.root());
    assert_eq!(status, 2);
    assert!(
        changes.iter().any(|c| c["device"] == "0000:02:00.0"
            && c["message"].as_str().unwrap().ends_with("now no driver")),
        "{changes:?}"
    );
    assert_eq!(vfioctl(host.root(), &["bind", "02:00.0"]).status, 4);
    // Still failing: recover says so and keeps the record.
    let report = recover::run(&root, &recover_spec(), &kernel).unwrap();
    let failed = recover::failure(&report).unwrap();
    assert!(
        failed.message.starts_with("recover failed: "),
        "{}",
        failed.message
    );
    assert!(state::read_record(&root).unwrap().intent.is_some());
    // The cause fixed (nvidia takes the GPU again): recovered.
    kernel
        .faults
        .rejects
        .remove(&("0000:02:00.0".to_string(), "nvidia".to_string()));
    let report = recover::run(&root, &recover_spec(), &kernel).unwrap();
    assert!(recover::failure(&report).is_none());
    assert_eq!(snapshot(host.root()), before);
    assert!(check(host.root()).2.is_empty());
}

#[test]
fn a_record_from_an_earlier_boot_blocks_nothing() {
    let host = topologies::workstation_gpu();
    host.write("proc/sys/kernel/random/boot_id", "this-boot\n");
    // Killed mid-bind in an earlier boot whose /run was not a tmpfs.
    host.write("proc/sys/kernel/random/boot_id", "earlier-boot\n");
    assert_eq!(
        killpoint::run_child("child_bind", host.root(), 3),
        Some(libc::SIGKILL)
    );
    host.write("proc/sys/kernel/random/boot_id", "this-boot\n");
    let root = HostRoot::new(host.root());
    let intent = state::read_record(&root).unwrap().intent.unwrap();
    assert_eq!(intent.boot_id.as_deref(), Some("earlier-boot"));
    assert_eq!(intent.state(&root), IntentState::OtherBoot);
    // check does not report it; the udev hook's and any change's way is clear.
    assert!(check(host.root()).2.is_empty());
    let dry = vfioctl(host.root(), &["bind", "01:00.0", "--dry-run"]);
    assert_eq!(dry.status, 0, "{}", dry.stderr);
    let kernel = SimKernel::new(&host);
    bind_change(host.root(), &kernel);
    // The change replaced the stale record with its own, then cleared it.
    assert!(state::read_record(&root).unwrap().intent.is_none());
}

#[test]
fn a_change_in_progress_is_not_an_interrupted_one() {
    let host = topologies::workstation_gpu();
    assert_eq!(
        killpoint::run_child("child_bind", host.root(), 3),
        Some(libc::SIGKILL)
    );
    let root = HostRoot::new(host.root());
    let mut record = state::read_record(&root).unwrap();
    // Make its PID a live process, with the start time the intent recorded.
    let intent = record.intent.as_mut().unwrap();
    intent.process_start = Some(4711);
    host.write(
        &format!("proc/{}/stat", intent.pid),
        format!(
            "{} (vfioctl bind) S 1 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 4711 0 0 \
             18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
            intent.pid
        ),
    );
    state::write_record(&root, &record).unwrap();
    let (_, _, changes) = check(host.root());
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["id"], "change.in_progress");
    assert_eq!(changes[0]["status"], "OK");
    // A dry run plans on; a change (under the lock, where nothing else can
    // run) takes it for unfinished.
    let dry = vfioctl(host.root(), &["restore", "01:00.0", "--dry-run"]);
    assert_eq!(dry.status, 0, "{}", dry.stderr);
    let real = vfioctl(host.root(), &["restore", "01:00.0"]);
    assert_eq!(real.status, 4, "{}", real.stderr);
    let dry = vfioctl(host.root(), &["recover", "--dry-run"]);
    assert!(
        dry.stdout.contains("the change is in progress"),
        "{}",
        dry.stdout
    );
}

#[test]
fn recover_json_is_one_document_and_forget_touches_no_device() {
    let host = topologies::workstation_gpu();
    let nothing = vfioctl(host.root(), &["recover", "--dry-run", "--json"]);
    assert_eq!(nothing.status, 0);
    let doc: Value = serde_json::from_str(&nothing.stdout).unwrap();
    assert_eq!(doc["interrupted"], Value::Null);
    assert_eq!(doc["plan"], Value::Null);
    let text = vfioctl(host.root(), &["recover", "--dry-run"]);
    assert_eq!(
        text.stdout,
        "no interrupted change is recorded; nothing to recover\n"
    );
    assert_eq!(
        killpoint::run_child("child_bind", host.root(), 5),
        Some(libc::SIGKILL)
    );
    let killed = snapshot(host.root());
    let dry = vfioctl(host.root(), &["recover", "--dry-run"]);
    assert_eq!(dry.status, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.starts_with("recorded: vfioctl bind (PID "),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("recover plan: "), "{}", dry.stdout);
    assert!(
        dry.stdout.ends_with("dry run: nothing written\n"),
        "{}",
        dry.stdout
    );
    let doc: Value =
        serde_json::from_str(&vfioctl(host.root(), &["recover", "--dry-run", "--json"]).stdout)
            .unwrap();
    let actions = doc["plan"]["devices"]["actions"].as_array().unwrap();
    assert_eq!(doc["plan"]["devices"]["goal"], "recover");
    assert!(actions.iter().all(|a| a["reason"] == "interrupted"));
    // Killed after the GPU's probe, before its verification: it is on
    // vfio-pci, and goes back to nvidia.
    let gpu = actions
        .iter()
        .find(|a| a["address"] == "0000:01:00.0")
        .unwrap();
    assert_eq!(gpu["after"]["driver"], "nvidia");
    // Not privileged would be exit 77; as root, --forget clears the record
    // without a write to any device.
    let forget = vfioctl_env(host.root(), &["recover", "--forget", "--json"], &[]);
    assert_eq!(forget.status, 0, "{}", forget.stderr);
    let doc: Value = serde_json::from_str(&forget.stdout).unwrap();
    assert_eq!(doc["forgotten"], true);
    assert_eq!(snapshot(host.root()), killed);
    assert!(state::read_record(&HostRoot::new(host.root()))
        .unwrap()
        .intent
        .is_none());
}

#[test]
fn a_device_the_kernel_still_holds_is_reported_and_recover_waits_for_it() {
    let host = topologies::workstation_gpu();
    let before = snapshot(host.root());
    let kernel = SimKernel::new(&host);
    // Killed before the GPU's unbind: its override says vfio-pci.
    assert_eq!(
        killpoint::run_child("child_bind", host.root(), 3),
        Some(libc::SIGKILL)
    );
    // As if that unbind were pending in the kernel: reading driver_override
    // blocks (a FIFO with a writer and no data).
    let file = host.device_dir("0000:01:00.0").join("driver_override");
    std::fs::remove_file(&file).unwrap();
    nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    // check does not hang on it, and says so.
    let (status, _, changes) = check(host.root());
    assert_eq!(status, 2);
    let gpu = changes
        .iter()
        .find(|c| c["device"] == "0000:01:00.0")
        .unwrap();
    assert!(
        gpu["message"]
            .as_str()
            .unwrap()
            .ends_with("now nvidia, its unbind still pending in the kernel (a process holds it)"),
        "{gpu}"
    );
    // recover refuses to write to it, and says what to do.
    let run = vfioctl(host.root(), &["recover"]);
    assert_eq!(run.status, 4, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("an unbind of 0000:01:00.0 is still pending in the kernel"),
        "{}",
        run.stderr
    );
    // The holder lets go: the override reads again, and recover finishes.
    drop(held);
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, "vfio-pci\n").unwrap();
    let root = HostRoot::new(host.root());
    let report = recover::run(&root, &recover_spec(), &kernel).unwrap();
    assert!(recover::failure(&report).is_none());
    assert_eq!(snapshot(host.root()), before);
}

#[test]
fn the_udev_hook_is_refused_by_an_interrupted_change_of_this_boot_only() {
    let host = declared_host();
    host.write("proc/sys/kernel/random/boot_id", "this-boot\n");
    // persist apply killed in its [[sriov]] part (before sriov_numvfs).
    assert_eq!(
        killpoint::run_child("child_persist_apply", host.root(), 2),
        Some(libc::SIGKILL)
    );
    let root = HostRoot::new(host.root());
    let kernel = igb_kernel(&host);
    let hook = |kernel: &dyn PciKernel| {
        vfioctl::engine::enforce::enforce(
            &root,
            kernel,
            vfioctl::gate::Path::UdevHook,
            Goal::BindVfio,
            &["0000:03:00.0".parse().unwrap()],
            false,
            TIMEOUT,
        )
    };
    // The hook for the declared GPU (hot-plugged, say) is refused this boot.
    let err = hook(&kernel).unwrap_err();
    assert!(
        format!("{err:#}").contains("vfioctl persist apply (PID "),
        "{err:#}"
    );
    assert_eq!(
        vfioctl(host.root(), &["udev-hook", "0000:03:00.0"]).status,
        4
    );
    // After a reboot whose /run survived, the record is stale: the hook
    // binds the GPU, and its own intent replaces the stale one.
    host.write("proc/sys/kernel/random/boot_id", "next-boot\n");
    let report = hook(&kernel).unwrap();
    assert!(run::failure(&report).is_none());
    let gpu = host.device_dir("0000:03:00.0");
    assert_eq!(
        std::fs::read_link(gpu.join("driver"))
            .unwrap()
            .file_name()
            .unwrap(),
        "vfio-pci"
    );
    assert!(state::read_record(&root).unwrap().intent.is_none());
}
