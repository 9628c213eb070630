//! The `vfioctl` binary end to end against fake hosts: golden text and JSON
//! outputs, selector errors and exit statuses.

mod support;

use std::process::Command;

use support::cli::{ok, vfioctl};
use support::{golden, topologies};

#[test]
fn list_hgx_text_and_json() {
    let host = topologies::hgx_a100();
    golden::check("list_hgx.txt", &ok(host.root(), &["list"]));
    let json = ok(host.root(), &["list", "--json"]);
    golden::check("list_hgx.json", &json);

    // The documented contract, checked field by field on the parsed JSON.
    let devices: serde_json::Value = serde_json::from_str(&json).unwrap();
    let gpu = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["address"] == "0000:25:00.0")
        .unwrap();
    assert_eq!(gpu["vendor_id"], "10de");
    assert_eq!(gpu["device_id"], "20b0");
    assert_eq!(gpu["class"], "030200");
    assert_eq!(gpu["driver"], "vfio-pci");
    assert_eq!(gpu["driver_override"], "vfio-pci");
    assert!(gpu["iommu_group"].is_u64());
    assert_eq!(gpu["nova_device_type"], "type-PF");
    assert_eq!(gpu["is_bridge"], false);
    let nvidia = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["address"] == "0000:48:00.0")
        .unwrap();
    assert!(nvidia["driver_override"].is_null());
}

#[test]
fn list_with_selectors() {
    let host = topologies::hgx_a100();
    golden::check(
        "list_hgx_gpus_and_switches.txt",
        &ok(host.root(), &["list", "10de:20b0", "10de:1af1"]),
    );
    let vfio = ok(host.root(), &["list", "driver=vfio_pci", "--json"]);
    let vfio: Vec<serde_json::Value> = serde_json::from_str(&vfio).unwrap();
    let addrs: Vec<&str> = vfio
        .iter()
        .map(|d| d["address"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, ["0000:25:00.0", "0000:2b:00.0"]);
    let one = ok(host.root(), &["list", "25:00.0", "--json"]);
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&one)
            .unwrap()
            .len(),
        1
    );
    let bridges = ok(host.root(), &["list", "class=bridge", "--json"]);
    let bridges: Vec<serde_json::Value> = serde_json::from_str(&bridges).unwrap();
    assert_eq!(
        bridges.len(),
        6 + 16 + 8 + 3 + 1,
        "NVSwitches are in class 06 too"
    );
}

#[test]
fn show_texts_and_json() {
    let hgx = topologies::hgx_a100();
    golden::check("show_hgx_gpu.txt", &ok(hgx.root(), &["show", "25:00.0"]));
    golden::check(
        "show_hgx_nvswitch.txt",
        &ok(hgx.root(), &["show", "b7:00.0"]),
    );
    let ws = topologies::workstation_gpu();
    golden::check(
        "show_workstation_gpu.txt",
        &ok(ws.root(), &["show", "01:00.0"]),
    );
    let json = ok(ws.root(), &["show", "01:00.0", "--json"]);
    golden::check("show_workstation_gpu.json", &json);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["iommu_group"]["viable"], false);
    assert_eq!(value["iommu_group"]["members"][0]["state"], "bridge");
    assert_eq!(
        value["iommu_group"]["blockers"][1]["driver"],
        "snd_hda_intel"
    );
    let nic = topologies::sriov_nic();
    golden::check("show_sriov_pf.txt", &ok(nic.root(), &["show", "3b:00.0"]));
    golden::check(
        "show_sriov_vf.json",
        &ok(nic.root(), &["show", "3b:00.3", "--json"]),
    );
    golden::check("list_sriov.txt", &ok(nic.root(), &["list"]));
    let pf: serde_json::Value =
        serde_json::from_str(&ok(nic.root(), &["show", "3b:00.0", "--json"])).unwrap();
    assert_eq!(pf["vfs"][1]["address"], "0000:3b:00.3");
    assert_eq!(pf["vfs"][1]["index"], 1);
    assert_eq!(pf["vfs"][1]["driver"], "mlx5_vfio_pci");
    assert_eq!(pf["vfs"][0]["driver"], "mlx5_core");
}

#[test]
fn iommu_off_is_said_once() {
    let host = topologies::no_iommu();
    // The note goes to stderr (one note policy), once; the table alone on stdout.
    let run = vfioctl(host.root(), &["list"]);
    assert_eq!(run.status, 0);
    golden::check("list_no_iommu.txt", &run.stdout);
    assert_eq!(run.stdout.matches("IOMMU: off").count(), 0);
    assert_eq!(run.stderr.matches("vfioctl: note: IOMMU: off").count(), 1);
    let run = vfioctl(host.root(), &["list", "--json"]);
    assert_eq!(run.status, 0);
    assert!(run.stderr.contains("IOMMU: off"));
    let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(value[0]["iommu_group"].is_null());
    golden::check("show_no_iommu.txt", &ok(host.root(), &["show", "00:03.0"]));
}

#[test]
fn bad_selectors_exit_with_usage_or_not_found() {
    let host = topologies::hgx_a100();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["list", "25:00"], 2, "malformed selector '25:00'"),
        (
            &["list", "class=gpus"],
            2,
            "malformed selector 'class=gpus'",
        ),
        (
            &["list", "10de:20b0", "dead:beef"],
            3,
            "selector 'dead:beef' matched no PCI function",
        ),
        (
            &["show", "10de:20b0"],
            2,
            "selector '10de:20b0' matches 8 functions",
        ),
        (
            &["show", "ff:00.0"],
            3,
            "selector 'ff:00.0' matched no PCI function",
        ),
        (&["list", "--bogus"], 2, "unexpected argument"),
    ];
    for (args, status, message) in cases {
        let run = vfioctl(host.root(), args);
        assert_eq!(run.status, *status, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?} printed to stdout");
        if *status != 2 || !message.contains("unexpected") {
            assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
        }
    }
}

#[test]
fn wrong_root_is_an_environment_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = vfioctl(dir.path(), &["list"]);
    assert_eq!(run.status, 5);
    assert!(run.stderr.starts_with("vfioctl: no PCI sysfs at "));
}

#[test]
fn bind_refusals_and_environment_errors_exit_as_documented() {
    let ws = topologies::workstation_gpu();
    // The integrated GPU is the boot display: refused (4), one line, nothing written.
    let run = vfioctl(ws.root(), &["bind", "00:02.0"]);
    assert_eq!(run.status, 4, "{}", run.stderr);
    assert_eq!(
        run.stderr.trim(),
        "vfioctl: 0000:00:02.0 is the boot display (boot_vga); use --force to release it anyway"
    );
    let off = topologies::no_iommu();
    let run = vfioctl(off.root(), &["bind", "00:03.0"]);
    assert_eq!(run.status, 5, "{}", run.stderr);
    assert!(run.stderr.contains("the IOMMU is off"));
    let run = vfioctl(
        ws.root(),
        &["bind", "--driver", "nvidia", "00:02.0", "--dry-run"],
    );
    assert_eq!(
        run.status, 4,
        "refusals apply to dry runs too: {}",
        run.stderr
    );
}

#[test]
fn bind_dry_run_json_parses_and_writes_nothing() {
    let ws = topologies::workstation_gpu();
    let json = ok(ws.root(), &["bind", "01:00.0", "--dry-run", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["plan"]["actions"].as_array().unwrap().len(), 4);
    assert!(report["result"].is_null());
    assert!(!ws.path("run/vfioctl").exists());
}

#[test]
fn changes_need_cap_sys_admin_but_dry_runs_do_not() {
    let ws = topologies::workstation_gpu();
    let drop_admin = |args: &[&str]| {
        let output = Command::new("setpriv")
            .args(["--inh-caps=-all", "--bounding-set=-sys_admin", "--"])
            .arg(env!("CARGO_BIN_EXE_vfioctl"))
            .arg("--root")
            .arg(ws.root())
            .args(args)
            .env_remove("VFIOCTL_ROOT")
            .output()
            .expect("setpriv");
        (
            output.status.code().unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let (status, stderr) = drop_admin(&["bind", "01:00.0"]);
    assert_eq!(status, 77, "{stderr}");
    assert!(stderr.contains("bind needs CAP_SYS_ADMIN"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(ws.device_dir("0000:01:00.0").join("driver_override")).unwrap(),
        "(null)\n"
    );
    let (status, stderr) = drop_admin(&["bind", "01:00.0", "--dry-run"]);
    assert_eq!(status, 0, "{stderr}");
}

#[test]
fn a_held_lock_exits_busy() {
    let ws = topologies::workstation_gpu();
    let root = vfioctl::host::HostRoot::new(ws.root());
    let _held = vfioctl::host::state::lock(&root, std::time::Duration::from_secs(1)).unwrap();
    let run = vfioctl(ws.root(), &["restore", "01:00.0", "--timeout", "1"]);
    assert_eq!(run.status, 75, "{}", run.stderr);
    assert!(
        run.stderr.contains("another vfioctl holds"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_change_the_kernel_ignores_is_rolled_back_and_fails() {
    // A fake root has no kernel behind it: the unbind write lands in a plain
    // file, the driver link never moves, verification fails, and vfioctl puts
    // the override back and exits 1 naming the device.
    let hgx = topologies::hgx_a100();
    let run = vfioctl(hgx.root(), &["bind", "48:00.0", "--timeout", "1"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("0000:48:00.0: expected driver vfio-pci after 1s but found driver nvidia; every device changed was put back"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(hgx.device_dir("0000:48:00.0").join("driver_override")).unwrap(),
        "\n"
    );
    assert!(run.stdout.contains("FAILED (put back)"), "{}", run.stdout);
}

/// Parses stdout as exactly one JSON document (serde_json rejects trailing data).
fn one_document(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout}"))
}

#[test]
fn json_errors_print_one_error_document() {
    let host = topologies::hgx_a100();
    // (args, exit status, error kind): a clap usage error, a malformed
    // selector, one matching nothing, a config error.
    let cases: &[(&[&str], i32, &str)] = &[
        (&["list", "--json", "--bogus"], 2, "usage"),
        (&["list", "--json", "10de:zz"], 2, "usage"),
        (&["show", "--json", "0000:99:00.0"], 3, "not-found"),
        (&["check", "--json", "--bogus"], 3, "usage"),
        (&["check", "--json", "--prometheus", "-"], 3, "usage"),
    ];
    for (args, status, kind) in cases {
        let run = vfioctl(host.root(), args);
        assert_eq!(
            run.status, *status,
            "{args:?}: {}{}",
            run.stdout, run.stderr
        );
        let doc = one_document(&run.stdout);
        assert_eq!(doc["exit_status"], *status, "{args:?}");
        assert_eq!(doc["error"]["kind"], *kind, "{args:?}");
        assert!(doc["error"]["message"].as_str().unwrap().len() > 5);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    }
    // An inventory that cannot be read: check --json still prints one document.
    let empty = tempfile::tempdir().unwrap();
    let run = vfioctl(empty.path(), &["check", "--json"]);
    assert_eq!(run.status, 3, "{}{}", run.stdout, run.stderr);
    assert_eq!(one_document(&run.stdout)["exit_status"], 3);
}

#[test]
fn check_usage_errors_are_unknown_not_critical() {
    let host = topologies::hgx_a100();
    for args in [
        &["check", "--bogus"][..],
        &["check", "--expect"],
        &["--root", "check", "check", "--nope"],
    ] {
        let run = vfioctl(host.root(), args);
        assert_eq!(run.status, 3, "{args:?}: {}", run.stderr);
    }
    // Other commands keep the usage status.
    assert_eq!(vfioctl(host.root(), &["list", "--bogus"]).status, 2);
}

#[test]
fn an_io_error_names_its_os_error_once() {
    let host = topologies::hgx_a100();
    let dir = host.path("textfile");
    std::fs::create_dir_all(&dir).unwrap();
    // A directory where the file goes: the rename fails.
    std::fs::create_dir_all(dir.join("vfioctl.prom")).unwrap();
    let target = dir.join("vfioctl.prom");
    let run = vfioctl(
        host.root(),
        &["check", "--prometheus", target.to_str().unwrap()],
    );
    assert_eq!(run.status, 3, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    let line = run.stderr.trim();
    let reason = "not a regular file";
    assert_eq!(line.matches(reason).count(), 1, "{line}");
}
