//! `vfioctl sriov` against fake hosts and a simulated kernel that creates
//! and removes VFs on `sriov_numvfs` writes: the order of the writes (no
//! native VF driver bind in between), going through 0, the refusals, dry
//! run, JSON, and rollback.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::cli::vfioctl;
use support::fakehost::FakeHost;
use support::simkernel::SimKernel;
use support::topologies;
use vfioctl::engine::apply::Status;
use vfioctl::engine::sriov::{self, SriovError, SriovReport, SriovSpec};
use vfioctl::host::sysfs::{read_inventory, Names};
use vfioctl::host::HostRoot;
use vfioctl::model::declaration::DeclaredDriver;
use vfioctl::model::{DriverName, PciAddress, SriovRole};

const PF: &str = "0000:01:00.0";

fn kernel(host: &FakeHost) -> SimKernel<'_> {
    let mut kernel = SimKernel::new(host);
    kernel.vf_native.insert(PF.into(), "igbvf".into());
    kernel
}

fn spec(numvfs: u16) -> SriovSpec {
    SriovSpec {
        selector: "01:00.0".parse().unwrap(),
        numvfs,
        vf_driver: DeclaredDriver::Auto,
        force: false,
        dry_run: false,
        timeout: Duration::from_millis(300),
        vms: vfioctl::host::vms::VmSource::Skipped,
    }
}

fn run(host: &FakeHost, kernel: &SimKernel, spec: &SriovSpec) -> anyhow::Result<SriovReport> {
    sriov::run(&HostRoot::new(host.root()), spec, kernel)
}

fn pf() -> PciAddress {
    PF.parse().unwrap()
}

/// The PF's VFs and their drivers, read back from the fake tree.
fn vfs(host: &FakeHost) -> Vec<(String, Option<String>)> {
    let inv = read_inventory(&HostRoot::new(host.root()), Names::Skip).unwrap();
    let SriovRole::Pf { vfs, num_vfs, .. } = &inv.device(&pf()).unwrap().sriov else {
        panic!("not a PF");
    };
    assert_eq!(
        *num_vfs as usize,
        vfs.len(),
        "sriov_numvfs matches virtfn links"
    );
    vfs.iter()
        .map(|a| {
            let dev = inv.device(a).expect("VF readable");
            (a.to_string(), dev.driver.as_ref().map(|d| d.to_string()))
        })
        .collect()
}

fn autoprobe(host: &FakeHost) -> String {
    std::fs::read_to_string(host.path(&format!("sys/bus/pci/devices/{PF}/sriov_drivers_autoprobe")))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn the_simulated_kernel_binds_new_vfs_natively_while_autoprobe_is_1() {
    // The control for the test below: without autoprobe 0, igbvf binds.
    let host = topologies::igb_pf();
    let kernel = kernel(&host);
    kernel.by_hand_numvfs(pf(), 2).expect("0 -> 2");
    assert_eq!(
        vfs(&host),
        [
            ("0000:01:00.2".to_string(), Some("igbvf".to_string())),
            ("0000:01:00.3".to_string(), Some("igbvf".to_string())),
        ]
    );
    // N -> M with both non-zero is EBUSY, as in the kernel.
    let err = kernel.by_hand_numvfs(pf(), 3).unwrap_err();
    assert!(err.to_string().contains("busy"), "{err}");
}

#[test]
fn zero_to_n_on_vfio_pci_with_no_native_bind_in_between() {
    let host = topologies::igb_pf();
    let kernel = kernel(&host);
    let report = run(&host, &kernel, &spec(7)).unwrap();
    let result = report.result.as_ref().unwrap();
    assert!(result.succeeded(), "{:?}", result.error);
    let writes = kernel.writes();
    assert_eq!(writes[0], format!("autoprobe {PF} 0"));
    assert_eq!(writes[1], format!("numvfs {PF} 7"));
    assert_eq!(writes.last().unwrap(), &format!("autoprobe {PF} 1"));
    assert!(
        writes.iter().all(|w| !w.starts_with("autobind")),
        "no native VF driver bound: {writes:?}"
    );
    // Each VF: override, probe; no unbind (it never had a driver).
    assert!(
        writes.iter().all(|w| !w.starts_with("unbind")),
        "{writes:?}"
    );
    let found = vfs(&host);
    assert_eq!(found.len(), 7);
    assert_eq!(found[0].0, "0000:01:00.2");
    assert_eq!(found[6].0, "0000:01:01.0");
    assert!(found.iter().all(|(_, d)| d.as_deref() == Some("vfio-pci")));
    // Each VF in its own group, with its /dev/vfio node.
    for vf in &result.vfs {
        assert_eq!(vf.driver, Some(DriverName::vfio_pci()));
    }
    let plan = result.vf_plan.as_ref().unwrap();
    assert_eq!(plan.actions.len(), 7);
    assert_eq!(autoprobe(&host), "1", "autoprobe restored");
    assert_eq!(result.numvfs, 7);
    assert!(sriov::failure(&report).is_none());
    // Again: already at 7 on vfio-pci, nothing to do.
    let before = kernel.writes().len();
    let again = run(&host, &kernel, &spec(7)).unwrap();
    assert!(again.result.is_none());
    assert_eq!(kernel.writes().len(), before);
}

#[test]
fn n_to_m_goes_through_zero_and_zero_removes_them() {
    let host = topologies::igb_pf();
    let kernel = kernel(&host);
    run(&host, &kernel, &spec(7)).unwrap();
    let start = kernel.writes().len();
    let report = run(&host, &kernel, &spec(3)).unwrap();
    assert!(report.result.as_ref().unwrap().succeeded());
    let writes = kernel.writes()[start..].to_vec();
    let counts: Vec<&String> = writes.iter().filter(|w| w.starts_with("numvfs")).collect();
    assert_eq!(
        counts,
        [&format!("numvfs {PF} 0"), &format!("numvfs {PF} 3")]
    );
    assert_eq!(writes[0], format!("autoprobe {PF} 0"), "{writes:?}");
    assert!(writes.iter().all(|w| !w.starts_with("autobind")));
    let found = vfs(&host);
    assert_eq!(found.len(), 3);
    assert!(found.iter().all(|(_, d)| d.as_deref() == Some("vfio-pci")));
    // The destroyed VFs' groups and nodes are gone.
    assert!(!host.path("sys/bus/pci/devices/0000:01:00.5").exists());

    let start = kernel.writes().len();
    let report = run(&host, &kernel, &spec(0)).unwrap();
    assert!(report.result.as_ref().unwrap().succeeded());
    assert_eq!(kernel.writes()[start..], [format!("numvfs {PF} 0")]);
    assert!(vfs(&host).is_empty());
    assert_eq!(autoprobe(&host), "1");
}

#[test]
fn a_count_above_totalvfs_is_refused_with_exit_4() {
    let host = topologies::igb_pf();
    let kernel = kernel(&host);
    let err = run(&host, &kernel, &spec(8)).unwrap_err();
    assert_eq!(
        err.downcast_ref::<SriovError>(),
        Some(&SriovError::TooMany {
            pf: pf(),
            asked: 8,
            total: 7
        })
    );
    assert!(kernel.writes().is_empty());
    let run = vfioctl(host.root(), &["sriov", "01:00.0", "--numvfs", "8"]);
    assert_eq!(run.status, 4, "{}", run.stderr);
    assert_eq!(
        run.stderr,
        "vfioctl: 0000:01:00.0 supports at most 7 VFs (sriov_totalvfs), not 8; ask for 0 to 7\n"
    );
}

#[test]
fn a_function_that_is_not_a_pf_is_refused() {
    let host = topologies::sriov_nic();
    // A VF.
    let run = vfioctl(host.root(), &["sriov", "3b:00.2", "--numvfs", "1"]);
    assert_eq!(run.status, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "0000:3b:00.2 is not an SR-IOV physical function: it is a VF of 0000:3b:00.0"
        ),
        "{}",
        run.stderr
    );
    // A bridge without SR-IOV.
    let run = vfioctl(host.root(), &["sriov", "3a:00.0", "--numvfs", "1"]);
    assert_eq!(run.status, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("no SR-IOV capability"),
        "{}",
        run.stderr
    );
    // A selector matching several functions names them.
    let run = vfioctl(host.root(), &["sriov", "15b3:", "--numvfs", "1"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("matches 3 functions"), "{}", run.stderr);
}

#[test]
fn held_vfs_are_never_destroyed_and_the_holder_is_named() {
    let host = topologies::igb_pf();
    let kernel = kernel(&host);
    run(&host, &kernel, &spec(2)).unwrap();
    let inv = read_inventory(&HostRoot::new(host.root()), Names::Skip).unwrap();
    let vf: PciAddress = "0000:01:00.3".parse().unwrap();
    let group = inv.device(&vf).unwrap().iommu_group.unwrap();
    host.process(
        4242,
        "qemu-system-x86",
        &[&format!("/dev/vfio/{group}"), "/dev/vfio/vfio"],
    );
    let start = kernel.writes().len();
    for (count, force) in [(0, false), (1, false), (3, true)] {
        let mut asked = spec(count);
        asked.force = force;
        let err = run(&host, &kernel, &asked).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err.downcast_ref::<SriovError>(),
                Some(SriovError::Held { .. })
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "0000:01:00.3 is held open by PID 4242 (qemu-system-x86) through /dev/vfio/{group}; refused even with --force"
            )),
            "{text}"
        );
    }
    assert_eq!(kernel.writes().len(), start, "nothing written");
    let run = vfioctl(
        host.root(),
        &["sriov", "01:00.0", "--numvfs", "0", "--json"],
    );
    assert_eq!(run.status, 4);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["exit_status"], 4);
    assert_eq!(doc["error"]["kind"], "refused");
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap()
        .contains("PID 4242 (qemu-system-x86)"));
    assert_eq!(vfs(&host).len(), 2);
}

#[test]
fn dry_run_prints_the_sysfs_writes_and_writes_nothing() {
    let host = topologies::igb_pf();
    let before = autoprobe(&host);
    let out = vfioctl(
        host.root(),
        &["sriov", "01:00.0", "--numvfs", "7", "--dry-run"],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "sriov plan: 0000:01:00.0 VFs 0 -> 7 (sriov_totalvfs 7), VF driver vfio-pci or its VFIO variant
  echo 0 > /sys/bus/pci/devices/0000:01:00.0/sriov_drivers_autoprobe
  echo 7 > /sys/bus/pci/devices/0000:01:00.0/sriov_numvfs
  wait for virtfn0..virtfn6 (deadline 10s)
  bind virtfn0..virtfn6 to vfio-pci or its VFIO variant (per VF: driver_override, drivers_probe, verify; rolled back newest first on failure)
  echo 1 > /sys/bus/pci/devices/0000:01:00.0/sriov_drivers_autoprobe
checks passed:
  0000:01:00.0 not in use by the host (mounts, addresses, routes, console)
notes:
  the VFs appear at 0000:01:00.2, 0000:01:00.3, 0000:01:00.4, 0000:01:00.5, 0000:01:00.6, 0000:01:00.7, 0000:01:01.0 (sriov_offset 2, sriov_stride 1); only they are bound, never 0000:01:00.0 itself
  sriov_drivers_autoprobe is 0 while the VFs are created, so no native VF driver probes them; then 1 again, as it was
dry run: nothing written
"
    );
    assert!(vfs(&host).is_empty());
    assert_eq!(autoprobe(&host), before);

    // From 2 to 3: through 0, after checking the VFs are not in use.
    let kernel = kernel(&host);
    run(&host, &kernel, &spec(2)).unwrap();
    let out = vfioctl(
        host.root(),
        &["sriov", "01:00.0", "--numvfs", "3", "--dry-run"],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stdout.contains(
        "  echo 0 > /sys/bus/pci/devices/0000:01:00.0/sriov_numvfs\n  echo 3 > /sys/bus/pci/devices/0000:01:00.0/sriov_numvfs\n"
    ), "{}", out.stdout);
    assert!(out
        .stdout
        .contains("VFs to destroy not in use (open handles, mounts, addresses, routes): 0000:01:00.2, 0000:01:00.3"));
    assert_eq!(vfs(&host).len(), 2);
}

#[test]
fn json_is_one_document_with_the_plan_and_result() {
    let host = topologies::igb_pf();
    let out = vfioctl(
        host.root(),
        &["sriov", "01:00.0", "--numvfs", "2", "--dry-run", "--json"],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["command"], "sriov");
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["result"], Value::Null);
    let plan = &doc["plan"];
    assert_eq!(plan["pf"], PF);
    assert_eq!(plan["total_vfs"], 7);
    assert_eq!(plan["numvfs_before"], 0);
    assert_eq!(plan["numvfs"], 2);
    assert_eq!(plan["vf_driver"], Value::Null);
    assert_eq!(plan["autoprobe_before"], true);
    let steps: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "autoprobe",
            "numvfs",
            "wait_virtfns",
            "bind_vfs",
            "autoprobe"
        ]
    );
    assert_eq!(
        plan["steps"][1],
        serde_json::json!({"step": "numvfs", "pf": PF, "count": 2})
    );

    // Applied, the result carries the VFs' binding plan and the VFs at the end.
    let kernel = kernel(&host);
    let report = run(&host, &kernel, &spec(2)).unwrap();
    let doc = serde_json::to_value(&report).unwrap();
    let result = &doc["result"];
    assert_eq!(result["error"], Value::Null);
    assert_eq!(result["numvfs"], 2);
    assert_eq!(result["autoprobe"], true);
    assert_eq!(
        result["vfs"],
        serde_json::json!([
            {"address": "0000:01:00.2", "driver": "vfio-pci"},
            {"address": "0000:01:00.3", "driver": "vfio-pci"},
        ])
    );
    assert_eq!(result["vf_plan"]["actions"].as_array().unwrap().len(), 2);
    assert_eq!(result["vf_result"]["devices"][0]["status"], "done");
    assert_eq!(result["done"].as_array().unwrap().len(), 5);
}

#[test]
fn a_vf_bind_failure_rolls_back_the_vfs_the_count_and_autoprobe() {
    let host = topologies::igb_pf();
    let mut kernel = kernel(&host);
    kernel
        .faults
        .rejects
        .insert(("0000:01:00.4".into(), "vfio-pci".into()));
    let report = run(&host, &kernel, &spec(4)).unwrap();
    let result = report.result.as_ref().unwrap();
    assert!(!result.succeeded());
    let statuses: Vec<(String, Status)> = result
        .vf_result
        .as_ref()
        .unwrap()
        .devices
        .iter()
        .map(|d| (d.address.to_string(), d.status.clone()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("0000:01:00.2".to_string(), Status::RolledBack),
            ("0000:01:00.3".to_string(), Status::RolledBack),
            ("0000:01:00.4".to_string(), Status::Failed),
            // Each VF is a unit of its own, changed at once with the others:
            // it was bound when 01:00.4 failed, and goes back with them.
            ("0000:01:00.5".to_string(), Status::RolledBack),
        ]
    );
    // The VF count back to 0 and autoprobe back to 1, in that order.
    let writes = kernel.writes();
    let tail: Vec<&String> = writes
        .iter()
        .filter(|w| w.starts_with("numvfs") || w.starts_with("autoprobe"))
        .collect();
    assert_eq!(
        tail,
        [
            &format!("autoprobe {PF} 0"),
            &format!("numvfs {PF} 4"),
            &format!("numvfs {PF} 0"),
            &format!("autoprobe {PF} 1"),
        ]
    );
    assert!(vfs(&host).is_empty());
    assert_eq!(autoprobe(&host), "1");
    let failed = sriov::failure(&report).unwrap();
    assert!(!failed.rollback_failed);
    assert!(
        failed
            .message
            .contains("0000:01:00.4: expected driver vfio-pci"),
        "{}",
        failed.message
    );
    assert!(
        failed
            .message
            .contains("sriov_numvfs back to 0 (verified: 0 virtfn links)"),
        "{}",
        failed.message
    );
    // Nothing recorded for the VFs.
    assert!(
        vfioctl::host::state::read_record(&HostRoot::new(host.root()))
            .unwrap()
            .devices
            .is_empty()
    );
}

#[test]
fn a_failed_change_from_a_non_zero_count_restores_the_old_vfs_and_their_driver() {
    let host = topologies::igb_pf();
    let mut kernel = kernel(&host);
    run(&host, &kernel, &spec(2)).unwrap();
    // 2 -> 3 fails on the third VF: back to 2 VFs, on vfio-pci again.
    kernel
        .faults
        .rejects
        .insert(("0000:01:00.4".into(), "vfio-pci".into()));
    let report = run(&host, &kernel, &spec(3)).unwrap();
    let failed = sriov::failure(&report).unwrap();
    assert!(!failed.rollback_failed, "{}", failed.message);
    assert!(
        failed
            .message
            .contains("0000:01:00.2, 0000:01:00.3 back on vfio-pci (verified)"),
        "{}",
        failed.message
    );
    assert_eq!(
        vfs(&host),
        [
            ("0000:01:00.2".to_string(), Some("vfio-pci".to_string())),
            ("0000:01:00.3".to_string(), Some("vfio-pci".to_string())),
        ]
    );
    assert_eq!(autoprobe(&host), "1");
}

#[test]
fn a_named_host_vf_driver_keeps_autoprobe_and_binds_through_the_engine() {
    let host = topologies::igb_pf();
    let kernel = kernel(&host);
    let mut asked = spec(2);
    asked.vf_driver = DeclaredDriver::Named(DriverName::new("igbvf"));
    let report = run(&host, &kernel, &asked).unwrap();
    assert!(report.result.as_ref().unwrap().succeeded());
    assert!(kernel.writes().iter().all(|w| !w.starts_with("autoprobe")));
    assert!(vfs(&host)
        .iter()
        .all(|(_, d)| d.as_deref() == Some("igbvf")));
}

#[test]
fn at_the_count_only_the_vfs_drivers_change_as_bind_changes_them() {
    // The ConnectX-5 has 2 VFs, one on mlx5_core: asking for 2 rebinds it
    // through the binding engine and leaves the count alone.
    let host = topologies::sriov_nic();
    host.register_driver("vfio-pci", Some("vfio_pci"));
    let kernel = SimKernel::new(&host);
    let mut asked = spec(2);
    asked.selector = "3b:00.0".parse().unwrap();
    let report = sriov::run(&HostRoot::new(host.root()), &asked, &kernel).unwrap();
    assert!(report.plan.steps.is_empty());
    let result = report.result.as_ref().unwrap();
    assert!(result.succeeded(), "{:?}", result.error);
    let writes = kernel.writes();
    assert!(writes
        .iter()
        .all(|w| !w.starts_with("numvfs") && !w.starts_with("autoprobe")));
    assert!(
        writes.contains(&"unbind 0000:3b:00.2 mlx5_core".to_string()),
        "{writes:?}"
    );
    let drivers: Vec<Option<DriverName>> = result.vfs.iter().map(|v| v.driver.clone()).collect();
    assert_eq!(
        drivers,
        [Some(DriverName::vfio_pci()), Some(DriverName::vfio_pci())]
    );
    // The change record knows the VF came from mlx5_core (restore takes it back).
    let record = vfioctl::host::state::read_record(&HostRoot::new(host.root())).unwrap();
    assert_eq!(
        record
            .previous_drivers()
            .get(&"0000:3b:00.2".parse().unwrap()),
        Some(&DriverName::new("mlx5_core"))
    );
}

/// igb with the default route on its PF's interface.
fn igb_with_default_route() -> FakeHost {
    let host = topologies::igb_pf();
    host.netdev(PF, "eno1").route("eno1", true);
    host
}

#[test]
fn a_vf_count_on_the_pf_with_the_default_route_is_never_declared() {
    // At boot the hook changes a declared count without --force, and would
    // refuse it there: `sriov --persist` refuses before changing anything.
    let host = igb_with_default_route();
    let out = vfioctl(
        host.root(),
        &["sriov", "01:00.0", "--numvfs", "2", "--force", "--persist"],
    );
    assert_eq!(out.status, 4, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("the VF count of 0000:01:00.0 cannot be declared")
            && out.stderr.contains("carries the default route (eno1)"),
        "{}",
        out.stderr
    );
    assert_eq!(vfs(&host), vec![], "no VF created");
    assert!(!host
        .path("etc/vfioctl/bindings.d")
        .join("sriov-0000_01_00.0.toml")
        .exists());
}

#[test]
fn a_vf_count_change_on_the_pf_with_the_default_route_needs_force() {
    let host = igb_with_default_route();
    let kernel = kernel(&host);
    let err = run(&host, &kernel, &spec(2)).unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<SriovError>(),
            Some(SriovError::InterruptsPf { .. })
        ),
        "{err:#}"
    );
    assert_eq!(
        err.to_string(),
        "changing the VF count of 0000:01:00.0 can interrupt what the host uses it for: 0000:01:00.0 carries the default route (eno1); 0000:01:00.0 carries addresses on eno1; some PF drivers reset the PF when SR-IOV is enabled or disabled (ixgbe reinitialises it, dropping its link); use --force to change it anyway; nothing was written"
    );
    assert!(kernel.writes().is_empty());
    // The CLI: exit 4, dry run included, one JSON error document.
    for args in [
        &["sriov", "01:00.0", "--numvfs", "2"][..],
        &["sriov", "01:00.0", "--numvfs", "2", "--dry-run"],
    ] {
        let out = vfioctl(host.root(), args);
        assert_eq!(out.status, 4, "{args:?}: {}", out.stderr);
    }
    let out = vfioctl(
        host.root(),
        &["sriov", "01:00.0", "--numvfs", "2", "--json"],
    );
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "refused");
    // The plan with --force names the use, in its notes and its JSON.
    let out = vfioctl(
        host.root(),
        &[
            "sriov",
            "01:00.0",
            "--numvfs",
            "2",
            "--force",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        doc["plan"]["pf_uses"],
        serde_json::json!([
            {"kind": "default_route", "interface": "eno1"},
            {"kind": "addresses", "interface": "eno1"}
        ])
    );
    let mut forced = spec(2);
    forced.force = true;
    let report = run(&host, &kernel, &forced).unwrap();
    assert!(sriov::failure(&report).is_none());
    assert!(
        report.plan.notes.iter().any(|n| n
            == "0000:01:00.0 carries the default route (eno1); its VF count changes anyway (--force): its driver may reset it"),
        "{:?}",
        report.plan.notes
    );
    assert_eq!(vfs(&host).len(), 2);
    // The count staying (only the VFs' drivers checked) interrupts nothing.
    let again = run(&host, &kernel, &spec(2)).unwrap();
    assert!(again.result.is_none());
    // Removing them is a count change too.
    assert_eq!(
        vfioctl(host.root(), &["sriov", "01:00.0", "--numvfs", "0"]).status,
        4
    );
}

#[test]
fn a_declared_vf_count_on_the_pf_with_the_default_route_is_not_applied() {
    let host = igb_with_default_route();
    host.write(
        "etc/vfioctl/bindings.d/nic.toml",
        "[[sriov]]\naddress = \"0000:01:00.0\"\nvendor = \"8086\"\ndevice = \"10c9\"\nnumvfs = 2\n",
    );
    let kernel = kernel(&host);
    let done = vfioctl::engine::enforce::apply_declarations(
        &HostRoot::new(host.root()),
        &kernel,
        false,
        Duration::from_millis(300),
    )
    .unwrap();
    assert_eq!(done.errors.len(), 1);
    assert!(
        format!("{:#}", done.errors[0]).contains("carries the default route (eno1)"),
        "{:#}",
        done.errors[0]
    );
    assert!(kernel.writes().is_empty());
}

#[test]
fn a_vf_count_change_on_the_root_disk_needs_force_and_the_disk_is_never_released() {
    let mut host = FakeHost::with_vfio();
    host.add(
        support::fakehost::Dev::endpoint("0000:02:00.0", 0x144d, 0xa824, 0x010802)
            .driver("nvme", Some("nvme"))
            .sriov(2)
            .group(3),
    );
    host.block_device("0000:02:00.0", "nvme0n1", "259:0")
        .mount("259:0", "/", "/dev/nvme0n1");
    let out = vfioctl(
        host.root(),
        &["sriov", "02:00.0", "--numvfs", "2", "--dry-run"],
    );
    assert_eq!(out.status, 4, "{}", out.stderr);
    assert!(
        out.stderr.contains("can interrupt what the host uses it for: 0000:02:00.0 backs the root filesystem (/dev/nvme0n1); "),
        "{}",
        out.stderr
    );
    let out = vfioctl(
        host.root(),
        &["sriov", "02:00.0", "--numvfs", "2", "--dry-run", "--force"],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    // Its driver is another matter: the root disk is never released.
    let out = vfioctl(host.root(), &["bind", "02:00.0", "--force", "--dry-run"]);
    assert_eq!(out.status, 4);
    assert!(
        out.stderr.contains("refused even with --force"),
        "{}",
        out.stderr
    );
}
