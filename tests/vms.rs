//! Which VM holds each device: libvirt's test driver serving the domains of
//! tests/fixtures/libvirt/vms.xml beside a fake sysfs host; `list`, `show`,
//! `check` and every refusal of the VM rules (and `--force`), end to end.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::cli::{vfioctl, Run};
use support::fakehost::{Dev, FakeHost};
use support::{golden, topologies};

/// A URI for libvirt's test driver serving a fixture file.
fn test_uri(fixture: &str) -> String {
    format!(
        "test://{}/tests/fixtures/libvirt/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn vms_uri() -> String {
    test_uri("vms.xml")
}

/// Golden files name the fixture directory and the host root, which differ per run.
fn portable(text: &str, root: &Path) -> String {
    text.replace(env!("CARGO_MANIFEST_DIR"), "SRC")
        .replace(&root.display().to_string(), "ROOT")
}

/// The lab host of tests/libvirt.rs (an A100 on vfio-pci, an NVMe, a
/// ConnectX-5 PF with two VFs), plus a second GPU with its audio function in
/// one IOMMU group on vfio-pci, and an e1000e NIC on its host driver; the
/// QEMU processes of the two running domains with libvirt's pid files.
fn vm_lab() -> FakeHost {
    let mut host = topologies::libvirt_lab();
    host.add(Dev::bridge("0000:40:01.0", 0x8086, 0x347a).group(59));
    host.add(
        Dev::endpoint("0000:41:00.0", 0x10de, 0x20b0, 0x030200)
            .parent("0000:40:01.0")
            .driver("vfio-pci", Some("vfio_pci"))
            .driver_override("vfio-pci")
            .group(60),
    );
    host.add(
        Dev::endpoint("0000:41:00.1", 0x10de, 0x1aef, 0x040300)
            .parent("0000:40:01.0")
            .driver("vfio-pci", Some("vfio_pci"))
            .driver_override("vfio-pci")
            .group(60),
    );
    host.add(
        Dev::endpoint("0000:5e:00.0", 0x8086, 0x10d3, 0x020000)
            .driver("e1000e", Some("e1000e"))
            .group(70),
    );
    host.register_driver("pci-stub", Some("pci_stub"));
    // instance-0000002b's QEMU holds the VF's group; gpu-desktop's holds nothing of its GPU.
    host.process(4343, "qemu-system-x86", &["/dev/null", "/dev/vfio/23"]);
    host.write(
        "proc/4343/cmdline",
        "/usr/bin/qemu-system-x86_64\0-name\0guest=instance-0000002b,debug-threads=on\0",
    );
    host.write("run/libvirt/qemu/instance-0000002b.pid", "4343\n");
    host.process(4444, "qemu-system-x86", &["/dev/null"]);
    host.write(
        "proc/4444/cmdline",
        "/usr/bin/qemu-system-x86_64\0-name\0guest=gpu-desktop,debug-threads=on\0",
    );
    host.write("run/libvirt/qemu/gpu-desktop.pid", "4444\n");
    host
}

fn run_at(host: &FakeHost, uri: &str, args: &[&str]) -> Run {
    let mut all = vec!["--connect", uri];
    all.extend_from_slice(args);
    vfioctl(host.root(), &all)
}

fn run(host: &FakeHost, args: &[&str]) -> Run {
    run_at(host, &vms_uri(), args)
}

/// Runs and asserts success with nothing on stderr; returns stdout.
fn ok(host: &FakeHost, args: &[&str]) -> String {
    let r = run(host, args);
    assert_eq!(r.status, 0, "vfioctl {args:?}: {}", r.stderr);
    assert!(
        r.stderr.is_empty(),
        "vfioctl {args:?} wrote to stderr: {}",
        r.stderr
    );
    r.stdout
}

fn json(host: &FakeHost, args: &[&str]) -> Value {
    serde_json::from_str(&ok(host, args)).expect("valid JSON")
}

/// The two-domain and split-group host: vm_lab with a two-function NIC
/// whose functions share an IOMMU group, one on vfio-pci and one on igb.
fn conflict_lab() -> FakeHost {
    let mut host = vm_lab();
    host.add(
        Dev::endpoint("0000:80:00.0", 0x8086, 0x10c9, 0x020000)
            .driver("vfio-pci", Some("vfio_pci"))
            .driver_override("vfio-pci")
            .group(80),
    );
    host.add(
        Dev::endpoint("0000:80:00.1", 0x8086, 0x10c9, 0x020000)
            .driver("igb", Some("igb"))
            .group(80),
    );
    host
}

/// `$ vfioctl ARGS`, the exit status, stdout and stderr, as a golden file shows them.
fn transcript(host: &FakeHost, cases: &[&[&str]]) -> String {
    portable(
        &support::cli::transcript(cases, |args| run(host, args)),
        host.root(),
    )
}

#[test]
fn list_names_the_vm_of_each_device() {
    let host = vm_lab();
    let text = ok(&host, &["list"]);
    golden::check("list_vms.txt", &portable(&text, host.root()));
    let raw = ok(&host, &["list", "--json"]);
    golden::check("list_vms.json", &portable(&raw, host.root()));
    let value: Value = serde_json::from_str(&raw).unwrap();
    let by = |addr: &str| {
        value
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["address"] == addr)
            .unwrap()
            .clone()
    };
    let gpu = by("0000:25:00.0");
    assert_eq!(gpu["vms_known"], true);
    assert_eq!(gpu["vm"]["domain"], "instance-0000002a");
    assert_eq!(gpu["vm"]["state"], "shut off");
    assert_eq!(gpu["vm"]["named_in"], "config");
    assert_eq!(gpu["vm"]["managed"], true);
    assert_eq!(gpu["vm"]["nova"]["name"], "gpu-trainer-1");
    assert_eq!(gpu["vm"]["nova"]["version"], "1.1");
    assert_eq!(gpu["vm"]["nova"]["project"]["name"], "ml-team");
    let vf = by("0000:3b:00.3");
    assert_eq!(vf["vm"]["domain"], "instance-0000002b");
    assert_eq!(vf["vm"]["active"], true);
    assert_eq!(vf["vm"]["kind"], "interface");
    assert_eq!(vf["vm"]["qemu_pid"], 4343);
    assert_eq!(vf["vm"]["nova"]["version"], "1.0");
    // Decimal 59 in the fixture is bus 0x3b; octal 0101 is bus 0x41.
    assert_eq!(by("0000:41:00.0")["vm"]["domain"], "gpu-desktop");
    assert_eq!(by("0000:3b:00.2")["vm"], Value::Null);
    assert_eq!(by("0000:01:00.0")["vm"]["kind"], "nvme");
}

#[test]
fn without_a_uri_for_another_root_the_vms_are_unknown_quietly() {
    let host = vm_lab();
    let r = vfioctl(host.root(), &["list", "3b:00.3"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    assert!(
        r.stdout.lines().nth(1).unwrap().contains("  ?  "),
        "{}",
        r.stdout
    );
    let r = vfioctl(host.root(), &["list", "3b:00.3", "--json"]);
    let value: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(value[0]["vms_known"], false);
    assert_eq!(value[0]["vm"], Value::Null);
}

#[test]
fn show_names_the_domain_its_nova_instance_and_the_holder() {
    let host = vm_lab();
    for (addr, file) in [
        ("25:00.0", "show_vm_defined.txt"),
        ("3b:00.3", "show_vm_running.txt"),
        ("41:00.0", "show_vm_not_held.txt"),
    ] {
        let text = ok(&host, &["show", addr]);
        golden::check(file, &portable(&text, host.root()));
    }
    let vf = json(&host, &["show", "3b:00.3", "--json"]);
    assert_eq!(vf["vms"]["known"], true);
    let d = &vf["vms"]["domains"][0];
    assert_eq!(d["domain"], "instance-0000002b");
    assert_eq!(d["named_in"], "both");
    assert_eq!(d["nova"]["user"]["name"], "bob");
    assert_eq!(d["nova"]["creation_time"], "2026-10-01 08:30:00");
    assert_eq!(vf["holders"][0]["pid"], 4343);
    assert_eq!(vf["holders"][0]["path"], "/dev/vfio/23");
    assert_eq!(vf["holders"][0]["domain"], "instance-0000002b");
    let gpu = json(&host, &["show", "41:00.0", "--json"]);
    assert_eq!(gpu["vms"]["domains"][0]["qemu_pid"], 4444);
    assert_eq!(gpu["holders"], Value::Array(vec![]));
}

#[test]
fn a_process_holding_the_group_that_is_not_the_domains_qemu_is_named() {
    let host = vm_lab();
    // Something else has gpu-desktop's GPU open.
    host.process(5000, "stray", &["/dev/vfio/60"]);
    let text = ok(&host, &["show", "41:00.0"]);
    assert!(
        text.contains("PID 5000 (stray) through /dev/vfio/60"),
        "{text}"
    );
    assert!(
        text.contains("PID 5000 (stray) holds /dev/vfio/60 and is not the QEMU of a running domain using this device"),
        "{text}"
    );
    // A stale pid file naming another guest's process is not the domain's QEMU.
    host.write("run/libvirt/qemu/gpu-desktop.pid", "5000\n");
    let value = json(&host, &["show", "41:00.0", "--json"]);
    assert_eq!(value["vms"]["domains"][0]["qemu_pid"], Value::Null);
    assert_eq!(value["holders"][0]["domain"], Value::Null);
}

#[test]
fn check_reports_what_the_domains_get_wrong() {
    let host = vm_lab();
    let r = run(&host, &["check"]);
    assert_eq!(r.status, 2, "{}", r.stderr);
    golden::check("check_vms.txt", &portable(&r.stdout, host.root()));

    let conflict = conflict_lab();
    let uri = test_uri("vms-conflict.xml");
    let r = run_at(&conflict, &uri, &["check"]);
    assert_eq!(r.status, 2, "{}", r.stderr);
    golden::check(
        "check_vms_conflict.txt",
        &portable(&r.stdout, conflict.root()),
    );
    assert!(
        r.stdout.contains("\"two\\nlines\""),
        "the line feed is escaped: {}",
        r.stdout
    );

    let r = run_at(&conflict, &uri, &["check", "--json"]);
    let value: Value = serde_json::from_str(&r.stdout).unwrap();
    let found: Vec<(String, String, Value)> = value["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"].as_str().unwrap().starts_with("vm."))
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["device"].clone(),
            )
        })
        .collect();
    let want = |id: &str, status: &str, device: Value| {
        assert!(
            found
                .iter()
                .any(|(i, s, d)| i == id && s == status && *d == device),
            "{id} {status} {device} not in {found:?}"
        );
    };
    want("vm.libvirt", "OK", Value::Null);
    want("vm.shared_device", "CRITICAL", "0000:3b:00.2".into());
    want("vm.split_group", "WARNING", "0000:41:00.0".into());
    want("vm.split_group", "WARNING", "0000:80:00.0".into());
    assert!(
        !found
            .iter()
            .any(|(i, _, d)| i == "vm.split_group" && *d == "0000:3b:00.2"),
        "one function named twice is shared, not split: {found:?}"
    );
}

#[test]
fn prometheus_names_the_vm_of_each_device_with_escaped_labels() {
    let host = conflict_lab();
    let r = run_at(
        &host,
        &test_uri("vms-conflict.xml"),
        &["check", "--prometheus", "-"],
    );
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "vfioctl_device_vm_info{address=\"0000:3b:00.2\",segment=\"0000\",bus=\"3b\",device=\"00\",function=\"2\",domain=\"quote\\\"back\\\\slash\",instance_uuid=\"11111111-2222-4333-8444-555555555502\",state=\"running\"} 1\n"
        ),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(
        "vfioctl_device_vm_info{address=\"0000:80:00.0\",segment=\"0000\",bus=\"80\",device=\"00\",function=\"0\",domain=\"split-vm\",instance_uuid=\"11111111-2222-4333-8444-555555555503\",state=\"shut off\"} 1\n"
    ));
    // promtool (the prometheus package) judges the exposition format.
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = promtool else {
        eprintln!("SKIP promtool: not installed (Debian package prometheus)");
        return;
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(r.stdout.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // Lint findings (naming advice) print but do not fail; a parse error does.
    assert!(!said.contains("error while linting"), "{said}");
    assert!(!said.to_lowercase().contains("parse"), "{said}");
}

/// Every refusal of the VM rules and what `--force` does, as the operator sees them.
#[test]
fn each_vm_refusal_and_force() {
    let host = vm_lab();
    let text = transcript(
        &host,
        &[
            // A defined domain's config names it: refused, --force gives it back.
            &["restore", "25:00.0", "--dry-run"],
            &["restore", "25:00.0", "--dry-run", "--force"],
            &["unbind", "25:00.0", "--dry-run"],
            &["bind", "25:00.0", "--driver", "pci-stub", "--dry-run"],
            &[
                "bind",
                "25:00.0",
                "--driver",
                "pci-stub",
                "--dry-run",
                "--force",
            ],
            // To VFIO: no VM rule, libvirt is not asked.
            &["bind", "25:00.0", "--dry-run"],
            // A running domain: refused, --force or not.
            &["restore", "3b:00.3", "--dry-run", "--force"],
            // A running domain uses another member of the group.
            &["restore", "41:00.1", "--dry-run", "--force"],
            // A running domain uses a VF of the PF.
            &["unbind", "3b:00.0", "--dry-run", "--force"],
            &["sriov", "3b:00.0", "--numvfs", "0", "--dry-run", "--force"],
            // A managed='no' device in a defined domain's config.
            &["restore", "5e:00.0", "--dry-run"],
            &["unbind", "5e:00.0", "--dry-run"],
        ],
    );
    golden::check("vm_refusals.txt", &text);
}

#[test]
fn persist_remove_is_refused_while_a_defined_vm_needs_the_device() {
    let host = vm_lab();
    let r = run(&host, &["persist", "add", "25:00.0"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let r = run(&host, &["persist", "remove", "25:00.0"]);
    assert_eq!(r.status, 4, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("is named by the config of domain instance-0000002a"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("gpu-trainer-1"), "{}", r.stderr);
    assert!(
        host.path("etc/vfioctl/bindings.d")
            .read_dir()
            .unwrap()
            .count()
            > 0
    );
    let r = run(&host, &["persist", "remove", "25:00.0", "--force"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("released anyway (--force)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("removed declaration 0000:25:00.0"),
        "{}",
        r.stdout
    );

    // A running domain's device: never, --force or not.
    let r = run(
        &host,
        &["persist", "add", "3b:00.3", "--driver", "mlx5_vfio_pci"],
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let r = run(&host, &["persist", "remove", "3b:00.3", "--force"]);
    assert_eq!(r.status, 4, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("is used by domain instance-0000002b (running, Nova instance \"web-1\""),
        "{}",
        r.stderr
    );
}

#[test]
fn force_gives_the_device_back_on_the_simulated_kernel() {
    use vfioctl::engine::plan::{Goal, PlanError};
    use vfioctl::engine::run::{self, ChangeSpec};
    use vfioctl::gate::RefusalKind;
    use vfioctl::host::libvirt::Target;
    use vfioctl::host::vms::VmSource;
    use vfioctl::host::HostRoot;

    // The library finds the helper beside the running executable; a test
    // binary is not there, so it names the helper (no environment variable
    // chooses a program vfioctl runs).
    vfioctl::host::libvirt::use_helper(env!("CARGO_BIN_EXE_vfioctl-libvirt"));
    let host = vm_lab();
    host.register_driver("nvidia", Some("nvidia"));
    let kernel = support::simkernel::SimKernel::new(&host);
    let spec = |force: bool| ChangeSpec {
        path: vfioctl::gate::Path::Restore,
        goal: Goal::Restore,
        selectors: vec!["25:00.0".parse().unwrap()],
        with_group: false,
        force,
        dry_run: false,
        timeout: Duration::from_millis(300),
        vms: VmSource::Libvirt {
            target: Target::Uri(vms_uri()),
            timeout: Duration::from_secs(10),
        },
    };
    let root = HostRoot::new(host.root());
    let err = run::run(&root, &spec(false), &kernel).expect_err("refused");
    let Some(PlanError::Refused(refusals)) = err.downcast_ref::<PlanError>() else {
        panic!("{err:#}");
    };
    assert!(
        matches!(&refusals[0].kind, RefusalKind::Vm(u) if u.domain == "instance-0000002a" && !u.running),
        "{refusals:?}"
    );
    assert!(kernel.writes().is_empty(), "nothing written when refused");
    let report = run::run(&root, &spec(true), &kernel).unwrap();
    assert!(report.result.unwrap().succeeded());
    assert!(report
        .plan
        .notes
        .iter()
        .any(|n| n.contains("instance-0000002a") && n.contains("released anyway (--force)")));
    assert!(!kernel.writes().is_empty());
}

#[test]
fn a_silent_libvirt_refuses_changes_unless_no_libvirt() {
    let dir = tempfile::tempdir().unwrap();
    let silent = support::silent::SilentLibvirt::at(&dir.path().join("virtqemud-sock-ro"));
    let host = vm_lab();
    let uri = silent.uri();
    let r = run_at(
        &host,
        &uri,
        &[
            "--connect-timeout",
            "1",
            "restore",
            "25:00.0",
            "--dry-run",
            "--force",
        ],
    );
    assert_eq!(r.status, 4, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("whether a VM uses it is unknown, as libvirt did not answer"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--no-libvirt"), "{}", r.stderr);
    let r = run_at(
        &host,
        &uri,
        &[
            "--connect-timeout",
            "1",
            "--no-libvirt",
            "restore",
            "25:00.0",
            "--dry-run",
        ],
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("VMs not checked: --no-libvirt"),
        "{}",
        r.stdout
    );
    let r = run_at(&host, &uri, &["--connect-timeout", "1", "check", "--json"]);
    let value: Value = serde_json::from_str(&r.stdout).unwrap();
    let vm = value["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "vm.libvirt")
        .unwrap();
    assert_eq!(vm["status"], "UNKNOWN", "{vm}");
    let r = run_at(&host, &uri, &["--connect-timeout", "1", "list", "25:00.0"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("VMs unknown (VM column ?)"),
        "{}",
        r.stderr
    );
}

#[test]
fn without_libvirt_on_the_host_changes_proceed_and_say_so() {
    let host = vm_lab();
    let uri = "qemu+unix:///system?socket=/nonexistent/vfioctl-test/libvirt-sock";
    let r = run_at(&host, uri, &["restore", "25:00.0", "--dry-run"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("VMs not checked: no libvirt on this host"),
        "{}",
        r.stdout
    );
    let r = run_at(&host, uri, &["list", "25:00.0"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stdout.lines().nth(1).unwrap().contains("  ?  "),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("no libvirt on this host"), "{}", r.stderr);
    // The holder search still runs without libvirt.
    let r = run_at(&host, uri, &["restore", "3b:00.3", "--dry-run", "--force"]);
    assert_eq!(r.status, 4, "{}", r.stderr);
    assert!(r.stderr.contains("held open by PID 4343"), "{}", r.stderr);
}

/// #31: `--root /proc/..` is this machine's root spelled otherwise: its
/// libvirt is asked, as with `--root /` (before, it was taken for another
/// host's tree, and the VM rules and vm.* checks were silently off). Reads
/// this machine's sysfs, never writes it.
#[test]
fn the_real_root_spelled_otherwise_is_this_host() {
    let list: Value = serde_json::from_str(&support::cli::ok(
        Path::new("/proc/.."),
        &["list", "--json"],
    ))
    .expect("valid JSON");
    let Some(address) = list[0]["address"].as_str() else {
        eprintln!("this machine has no PCI function to show");
        return;
    };
    let note = |root: &Path| {
        let run = vfioctl(root, &["show", address, "--json"]);
        assert_eq!(run.status, 0, "{}", run.stderr);
        let value: Value = serde_json::from_str(&run.stdout).expect("valid JSON");
        value["vms"]["note"].as_str().unwrap_or("").to_string()
    };
    for root in ["/proc/..", "/"] {
        let note = note(Path::new(root));
        assert!(!note.contains("another host tree"), "{root}: {note}");
    }
    // Another tree is still not this host.
    let host = vm_lab();
    let run = vfioctl(host.root(), &["show", "25:00.0", "--json"]);
    let value: Value = serde_json::from_str(&run.stdout).expect("valid JSON");
    assert!(
        value["vms"]["note"]
            .as_str()
            .unwrap()
            .contains("another host tree"),
        "{value}"
    );
}
