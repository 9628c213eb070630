//! The HGX NVLink fabric mode read from the host (`model::fabric::read_fabric`)
//! in every command that needs it: `nova` without `--fabric`, `bind`,
//! `persist add` and `check`, on the seed host with its NVSwitches in each
//! state.

mod support;

use serde_json::Value;
use support::cli::vfioctl;
use support::fakehost::FakeHost;
use support::golden;
use support::topologies::{hgx_switches, NvSwitches};

const FABRIC_MANAGER: &str =
    "/etc/systemd/system/multi-user.target.wants/nvidia-fabricmanager.service";
const ALL_SWITCHES: &str =
    "0000:b7:00.0, 0000:b8:00.0, 0000:b9:00.0, 0000:ba:00.0, 0000:bb:00.0, 0000:bc:00.0";

/// `vfioctl ARGS` as a golden text: exit status, stderr, stdout.
fn transcript(host: &FakeHost, args: &[&str]) -> String {
    let run = vfioctl(host.root(), args);
    format!(
        "$ vfioctl {}\n# exit status {}\n# stderr:\n{}# stdout:\n{}",
        args.join(" "),
        run.status,
        run.stderr,
        run.stdout
    )
}

fn nova_json(host: &FakeHost, args: &[&str]) -> Value {
    let run = vfioctl(host.root(), &[&["nova", "--json"], args].concat());
    assert_eq!(run.status, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

/// The `fabric` check's line of `vfioctl check`.
fn fabric_check(host: &FakeHost) -> String {
    let run = vfioctl(host.root(), &["check"]);
    run.stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("fabric"))
        .unwrap_or_else(|| panic!("no fabric check in\n{}", run.stdout))
        .to_string()
}

#[test]
fn nvswitches_on_vfio_pci_read_as_full() {
    let host = hgx_switches(NvSwitches::OnVfio);
    golden::check("nova_hgx_switches_vfio.txt", &transcript(&host, &["nova"]));
    let value = nova_json(&host, &[]);
    assert_eq!(value["fabric"], "full");
    assert_eq!(value["fabric_source"], "host");
    assert_eq!(value["host_fabric"]["mode"], "full");
    assert_eq!(
        value["host_fabric"]["evidence"],
        format!("NVSwitch {ALL_SWITCHES} on vfio-pci; Fabric Manager neither enabled nor running")
    );
    assert_eq!(value["host_fabric"]["fabric_manager"], Value::Null);
    // The whole board, one flavor, as with --fabric full.
    assert_eq!(
        value["flavor_property"],
        "pci_passthrough:alias=nvidia-a100-sxm4-40gb:8,nvidia-a100-nvswitch:6"
    );
    assert!(fabric_check(&host).starts_with("OK"));
    assert!(fabric_check(&host).contains("NVLink fabric full: NVSwitch"));
}

#[test]
fn nvswitches_declared_for_vfio_read_as_full() {
    let host = hgx_switches(NvSwitches::Declared);
    golden::check(
        "nova_hgx_switches_declared.txt",
        &transcript(&host, &["nova"]),
    );
    let value = nova_json(&host, &[]);
    assert_eq!(value["fabric"], "full");
    assert_eq!(value["fabric_source"], "host");
    assert!(value["host_fabric"]["evidence"]
        .as_str()
        .unwrap()
        .contains("on nvidia-nvswitch, declared for VFIO"));
    assert!(fabric_check(&host).starts_with("OK"));
}

#[test]
fn nvswitches_with_fabric_manager_read_as_shared() {
    let host = hgx_switches(NvSwitches::FabricManager);
    golden::check(
        "nova_hgx_switches_fabric_manager.txt",
        &transcript(&host, &["nova"]),
    );
    let value = nova_json(&host, &[]);
    assert_eq!(value["fabric"], "shared");
    assert_eq!(value["fabric_source"], "host");
    assert_eq!(
        value["host_fabric"]["fabric_manager"],
        format!("enabled ({FABRIC_MANAGER})")
    );
    assert_eq!(
        value["flavor_property"],
        "pci_passthrough:alias=nvidia-a100-sxm4-40gb:1"
    );
    // Selecting the NVSwitches leaves them on the host, with the reason.
    let value = nova_json(&host, &["10de:1af1", "10de:20b0"]);
    assert_eq!(value["left_out"].as_array().unwrap().len(), 6);
    assert!(fabric_check(&host).starts_with("OK"));

    // Running counts as well as enabled; the kernel cuts the name to 15 bytes.
    let running = hgx_switches(NvSwitches::HostDriver);
    running.process(4242, "nv-fabricmanage", &[]);
    let value = nova_json(&running, &[]);
    assert_eq!(value["fabric"], "shared");
    assert_eq!(value["host_fabric"]["fabric_manager"], "running (pid 4242)");
    let run = vfioctl(running.root(), &["bind", "b7:00.0", "--dry-run"]);
    assert_eq!(run.status, 4, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("runs its NVLink fabric shared (Fabric Manager running (pid 4242))"),
        "{}",
        run.stderr
    );

    // A masked unit is not enabled, whatever links remain.
    let masked = hgx_switches(NvSwitches::FabricManager);
    std::os::unix::fs::symlink(
        "/dev/null",
        masked.path("etc/systemd/system/nvidia-fabricmanager.service"),
    )
    .unwrap();
    let run = vfioctl(masked.root(), &["nova"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run
        .stderr
        .contains("Fabric Manager neither enabled nor running"));
}

#[test]
fn nvswitches_on_nvidia_without_fabric_manager_ask_for_fabric() {
    let host = hgx_switches(NvSwitches::HostDriver);
    golden::check(
        "nova_hgx_switches_host_driver.txt",
        &transcript(&host, &["nova"]),
    );
    let run = vfioctl(host.root(), &["nova", "--json"]);
    assert_eq!(run.status, 2);
    let error: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(error["error"]["kind"], "usage");
    assert!(error["error"]["message"].as_str().unwrap().contains(&format!(
        "0000:25:00.0 is a GPU of an HGX board and the host does not say how its NVLink fabric runs (NVSwitch {ALL_SWITCHES} on nvidia-nvswitch; Fabric Manager neither enabled nor running): choose how the NVLink fabric runs: --fabric shared"
    )), "{}", run.stdout);
    // A selection off the board needs no fabric mode.
    let run = vfioctl(host.root(), &["nova", "8086:1521"]);
    assert!(!run.stderr.contains("--fabric"), "{}", run.stderr);
    // check warns, naming both ways out.
    let line = fabric_check(&host);
    assert!(line.starts_with("WARNING"), "{line}");
    assert!(
        line.contains("-> shared: NVSwitches on nvidia with Fabric Manager enabled"),
        "{line}"
    );
    // bind and persist add may still take NVSwitches (toward full).
    let run = vfioctl(host.root(), &["bind", "b7:00.0", "--dry-run"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
}

#[test]
fn a_mix_or_a_contradiction_does_not_say() {
    // Half the NVSwitches on vfio-pci.
    let mix = hgx_switches(NvSwitches::HostDriver);
    for addr in ["0000:b7:00.0", "0000:b8:00.0", "0000:b9:00.0"] {
        mix.unbind(addr).bind(addr, "vfio-pci", Some("vfio_pci"));
    }
    let run = vfioctl(mix.root(), &["nova"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains(
        "NVSwitch 0000:b7:00.0, 0000:b8:00.0, 0000:b9:00.0 on vfio-pci; NVSwitch 0000:ba:00.0, 0000:bb:00.0, 0000:bc:00.0 on nvidia-nvswitch"
    ), "{}", run.stderr);

    // On vfio-pci, yet Fabric Manager enabled: nova asks; bind, persist
    // and check keep NVSwitches for Fabric Manager.
    let both = hgx_switches(NvSwitches::OnVfio);
    both.write(FABRIC_MANAGER.trim_start_matches('/'), "");
    let run = vfioctl(both.root(), &["nova"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains(&format!(
        "on vfio-pci; Fabric Manager enabled ({FABRIC_MANAGER})"
    )));
    assert!(fabric_check(&both).starts_with("WARNING"));
    let run = vfioctl(both.root(), &["persist", "add", "10de:1af1"]);
    assert_eq!(run.status, 4, "{}", run.stderr);
    assert!(run
        .stderr
        .contains("runs its NVLink fabric shared (Fabric Manager enabled"));
}

#[test]
fn an_explicit_fabric_wins_with_a_note_when_the_host_disagrees() {
    let host = hgx_switches(NvSwitches::FabricManager);
    let run = vfioctl(host.root(), &["nova", "--fabric", "full", "--json"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains(
        "vfioctl: note: --fabric full contradicts the host, which runs its NVLink fabric shared"
    ), "{}", run.stderr);
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(value["fabric"], "full");
    assert_eq!(value["fabric_source"], "option");
    assert_eq!(value["host_fabric"]["mode"], "shared");
    assert!(value["notes"].to_string().contains("contradicts the host"));
    // Agreeing says nothing more.
    let run = vfioctl(host.root(), &["nova", "--fabric", "shared"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}
