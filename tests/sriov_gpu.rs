//! An A100 as an SR-IOV PF (`topologies::a100_sriov`): its VFs sit in its
//! own slot from function .4 on, so the "same slot" companion rule must not
//! apply to SR-IOV functions. `sriov` binds only the new VFs (never the PF),
//! a VF's plan holds only that VF, and a PF with VFs enabled never changes
//! driver; `--dry-run` and `--json` show the VFs' addresses.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::cli::vfioctl;
use support::fakehost::{Dev, FakeHost};
use support::simkernel::SimKernel;
use support::topologies::a100_sriov;
use vfioctl::engine::plan::Goal;
use vfioctl::engine::run::{self, ChangeSpec};
use vfioctl::engine::sriov::{self, SriovSpec};
use vfioctl::host::HostRoot;
use vfioctl::model::declaration::DeclaredDriver;

const PF: &str = "0000:25:00.0";

fn kernel(host: &FakeHost) -> SimKernel<'_> {
    let mut kernel = SimKernel::new(host);
    kernel.vf_native.insert(PF.into(), "nvidia".into());
    kernel
}

fn spec(numvfs: u16) -> SriovSpec {
    SriovSpec {
        selector: PF.parse().unwrap(),
        numvfs,
        vf_driver: DeclaredDriver::Auto,
        force: false,
        dry_run: false,
        timeout: Duration::from_millis(300),
        vms: vfioctl::host::vms::VmSource::Skipped,
    }
}

fn link(host: &FakeHost, addr: &str, name: &str) -> Option<String> {
    std::fs::read_link(host.path(&format!("sys/bus/pci/devices/{addr}/{name}")))
        .ok()
        .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
}

fn override_of(host: &FakeHost, addr: &str) -> String {
    std::fs::read_to_string(host.path(&format!("sys/bus/pci/devices/{addr}/driver_override")))
        .unwrap()
        .trim()
        .to_string()
}

fn virtfns(host: &FakeHost) -> Vec<String> {
    (0..)
        .map_while(|i| link(host, PF, &format!("virtfn{i}")))
        .collect()
}

fn addresses(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a["address"]
                .as_str()
                .unwrap_or_else(|| a.as_str().unwrap())
                .to_string()
        })
        .collect()
}

#[test]
fn sriov_on_an_a100_binds_only_its_new_vfs_never_the_pf() {
    let host = a100_sriov(0);
    let kernel = kernel(&host);
    let report = sriov::run(&HostRoot::new(host.root()), &spec(2), &kernel).unwrap();
    assert!(sriov::failure(&report).is_none());
    assert_eq!(virtfns(&host), ["0000:25:00.4", "0000:25:00.5"]);
    // The PF stays on nvidia, its override untouched: no write names it but
    // the SR-IOV attributes.
    assert_eq!(link(&host, PF, "driver").as_deref(), Some("nvidia"));
    assert_eq!(override_of(&host, PF), "(null)");
    let writes = kernel.writes();
    assert!(
        writes
            .iter()
            .filter(|w| w.contains(PF))
            .all(|w| w.starts_with("autoprobe ") || w.starts_with("numvfs ")),
        "{writes:?}"
    );
    for vf in ["0000:25:00.4", "0000:25:00.5"] {
        assert_eq!(link(&host, vf, "driver").as_deref(), Some("vfio-pci"));
    }
    // JSON: the predicted VFs, the VF plan of exactly those two, requested.
    let doc = serde_json::to_value(&report).unwrap();
    assert_eq!(
        addresses(&doc["plan"]["vfs_after"]),
        ["0000:25:00.4", "0000:25:00.5"]
    );
    assert_eq!(doc["plan"]["pf_uses"], serde_json::json!([]));
    let actions = &doc["result"]["vf_plan"]["actions"];
    assert_eq!(addresses(actions), ["0000:25:00.4", "0000:25:00.5"]);
    assert!(actions
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["reason"] == "requested"));
}

#[test]
fn sixteen_vfs_spill_into_the_next_device_numbers_as_offset_and_stride_say() {
    let host = a100_sriov(0);
    let kernel = kernel(&host);
    let report = sriov::run(&HostRoot::new(host.root()), &spec(16), &kernel).unwrap();
    assert!(sriov::failure(&report).is_none());
    let mut expected: Vec<String> = (4..8).map(|f| format!("0000:25:00.{f}")).collect();
    expected.extend((0..8).map(|f| format!("0000:25:01.{f}")));
    expected.extend((0..4).map(|f| format!("0000:25:02.{f}")));
    assert_eq!(virtfns(&host), expected);
    let predicted: Vec<String> = report
        .plan
        .vfs_after
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        predicted, expected,
        "the plan read sriov_offset and sriov_stride"
    );
    assert_eq!(link(&host, PF, "driver").as_deref(), Some("nvidia"));
    let bound = &report.result.as_ref().unwrap().vfs;
    assert_eq!(bound.len(), 16);
    assert!(bound
        .iter()
        .all(|v| v.driver.as_ref().map(ToString::to_string).as_deref() == Some("vfio-pci")));
}

#[test]
fn sriov_dry_run_and_json_show_the_vfs_and_write_nothing() {
    let host = a100_sriov(0);
    let out = vfioctl(
        host.root(),
        &["sriov", "25:00.0", "--numvfs", "2", "--dry-run"],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("  the VFs appear at 0000:25:00.4, 0000:25:00.5 (sriov_offset 4, sriov_stride 1); only they are bound, never 0000:25:00.0 itself\n"),
        "{}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains("  echo 2 > /sys/bus/pci/devices/0000:25:00.0/sriov_numvfs\n"));
    assert!(out.stdout.ends_with("dry run: nothing written\n"));
    let json = vfioctl(
        host.root(),
        &["sriov", "25:00.0", "--numvfs", "2", "--dry-run", "--json"],
    );
    assert_eq!(json.status, 0, "{}", json.stderr);
    let doc: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["result"], Value::Null);
    assert_eq!(
        addresses(&doc["plan"]["vfs_after"]),
        ["0000:25:00.4", "0000:25:00.5"]
    );
    let steps: Vec<&str> = doc["plan"]["steps"]
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
    assert!(virtfns(&host).is_empty(), "nothing written");
}

#[test]
fn binding_a_vf_moves_that_vf_alone() {
    let host = a100_sriov(4);
    let dry = vfioctl(host.root(), &["bind", "25:00.4", "--dry-run", "--json"]);
    assert_eq!(dry.status, 0, "{}", dry.stderr);
    let doc: Value = serde_json::from_str(&dry.stdout).unwrap();
    assert_eq!(addresses(&doc["plan"]["actions"]), ["0000:25:00.4"]);
    assert_eq!(doc["plan"]["actions"][0]["reason"], "requested");
    let text = vfioctl(host.root(), &["bind", "25:00.4", "--dry-run"]);
    assert!(
        text.stdout
            .starts_with("bind plan: 1 of 1 device(s) to change\n"),
        "{}",
        text.stdout
    );
    // Neither the PF nor a VF has companions.
    for addr in ["25:00.0", "25:00.4", "25:00.7"] {
        let show = vfioctl(host.root(), &["show", addr, "--json"]);
        let doc: Value = serde_json::from_str(&show.stdout).unwrap();
        assert_eq!(doc["device"]["companions"], serde_json::json!([]), "{addr}");
    }
    // Applied: only 25:00.4 moves.
    let kernel = kernel(&host);
    let spec = ChangeSpec {
        path: vfioctl::gate::Path::Bind,
        goal: Goal::BindVfio,
        selectors: vec!["25:00.4".parse().unwrap()],
        with_group: false,
        force: false,
        dry_run: false,
        timeout: Duration::from_millis(300),
        vms: vfioctl::host::vms::VmSource::Skipped,
    };
    let report = run::run(&HostRoot::new(host.root()), &spec, &kernel).unwrap();
    assert!(run::failure(&report).is_none());
    assert!(
        kernel.writes().iter().all(|w| w.contains("0000:25:00.4")),
        "{:?}",
        kernel.writes()
    );
    assert_eq!(
        link(&host, "0000:25:00.4", "driver").as_deref(),
        Some("vfio-pci")
    );
    for other in [PF, "0000:25:00.5", "0000:25:00.6", "0000:25:00.7"] {
        assert_eq!(
            link(&host, other, "driver").as_deref(),
            Some("nvidia"),
            "{other}"
        );
    }
}

#[test]
fn a_vgpu_created_on_a_vf_or_a_pf_is_never_destroyed_by_a_change() {
    // NVIDIA vGPU on an A100: the mdev lives on a VF (on nvidia). Binding
    // that VF, or destroying the VFs, would destroy the vGPU under its VM.
    let host = a100_sriov(2);
    let uuid = "c2177883-f1bb-47f0-914d-32a22e3a8804";
    host.mdev("0000:25:00.5", uuid, "nvidia-471");
    let named = format!("has mediated device {uuid} (nvidia-471) created on");
    for args in [&["bind", "25:00.5"][..], &["bind", "25:00.5", "--force"]] {
        let run = vfioctl(host.root(), args);
        assert_eq!(run.status, 4, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("0000:25:00.5 {named} it, which its driver's unbind destroys under any VM using it; once no VM uses it, remove it first (echo 1 > /sys/bus/mdev/devices/{uuid}/remove, or mdevctl stop); refused even with --force")),
            "{args:?}: {}",
            run.stderr
        );
    }
    let mut destroy = spec(0);
    destroy.force = true;
    let refused = sriov::run(&HostRoot::new(host.root()), &destroy, &kernel(&host)).unwrap_err();
    assert!(
        refused.to_string().contains(&format!("{named} it")),
        "{refused:#}"
    );
    assert_eq!(virtfns(&host).len(), 2);
    assert_eq!(
        link(&host, "0000:25:00.5", "driver").as_deref(),
        Some("nvidia")
    );
    // Another VF, with none on it, binds.
    let dry = vfioctl(host.root(), &["bind", "25:00.4", "--dry-run"]);
    assert_eq!(dry.status, 0, "{}", dry.stderr);
    // Time-sliced vGPU on the PF itself (no VFs).
    let host = a100_sriov(0);
    host.mdev(PF, uuid, "nvidia-471");
    let run = vfioctl(host.root(), &["bind", "25:00.0", "--force"]);
    assert_eq!(run.status, 4, "{}", run.stderr);
    assert!(run.stderr.contains(&named), "{}", run.stderr);
    assert_eq!(link(&host, PF, "driver").as_deref(), Some("nvidia"));
}

#[test]
fn a_pf_with_vfs_enabled_never_changes_driver() {
    let host = a100_sriov(4);
    for args in [
        &["bind", "25:00.0"][..],
        &["bind", "25:00.0", "--force"],
        &["bind", "25:00.0", "--dry-run"],
        &["bind", "25:00.0", "--driver", "pci-stub"],
        &["unbind", "25:00.0", "--force"],
    ] {
        let run = vfioctl(host.root(), args);
        assert_eq!(run.status, 4, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("0000:25:00.0 is an SR-IOV PF with 4 VF(s) enabled (0000:25:00.4, 0000:25:00.5, 0000:25:00.6, 0000:25:00.7): unbinding its driver destroys them or leaves them orphaned, and vfio-pci refuses a PF with VFs enabled (EBUSY); refused even with --force: remove them first (vfioctl sriov 0000:25:00.0 --numvfs 0)"),
            "{args:?}: {}",
            run.stderr
        );
    }
    let json = vfioctl(host.root(), &["bind", "25:00.0", "--json"]);
    let doc: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "refused");
    assert_eq!(link(&host, PF, "driver").as_deref(), Some("nvidia"));
    assert_eq!(virtfns(&host).len(), 4);
    // Without VFs the PF binds alone: no VF, no slot sibling, comes along.
    let host = a100_sriov(0);
    let dry = vfioctl(host.root(), &["bind", "25:00.0", "--dry-run", "--json"]);
    assert_eq!(dry.status, 0, "{}", dry.stderr);
    let doc: Value = serde_json::from_str(&dry.stdout).unwrap();
    assert_eq!(addresses(&doc["plan"]["actions"]), [PF]);
}

#[test]
fn a_vf_sharing_its_pfs_group_never_pulls_the_pf_in() {
    // No ACS between PF and VF: one IOMMU group holds both.
    let mut host = a100_sriov(0);
    host.add(
        Dev::endpoint("0000:25:00.4", 0x10de, 0x20b0, 0x030200)
            .parent("0000:00:03.0")
            .vf_of(PF)
            .driver("nvidia", Some("nvidia"))
            .group(2),
    );
    for args in [
        &["bind", "25:00.4", "--dry-run"][..],
        &["bind", "25:00.4", "--with-group", "--dry-run"],
    ] {
        let run = vfioctl(host.root(), args);
        assert_eq!(run.status, 4, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("IOMMU group 2 would not be viable: 0000:25:00.0 on nvidia cannot be moved by vfioctl"),
            "{args:?}: {}",
            run.stderr
        );
    }
}
