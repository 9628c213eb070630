//! `vfioctl check` against fake hosts: every check passing and failing,
//! verdicts, exit statuses, JSON and Prometheus output.

mod support;

use std::path::Path;
use std::process::Command;

use support::fakehost::FakeHost;
use support::{golden, topologies};

fn vfioctl(root: &Path, args: &[&str]) -> (i32, String, String) {
    let run = support::cli::vfioctl(root, args);
    (run.status, run.stdout, run.stderr)
}

/// The HGX host, healthy: IOMMU on with interrupt remapping, vfio loaded, the
/// two vfio-bound GPUs declared, boot files and udev rules in place, and its
/// NVLink fabric shared (Fabric Manager enabled, NVSwitches on nvidia).
fn healthy() -> FakeHost {
    let host = topologies::hgx_a100();
    host.write(
        "etc/systemd/system/multi-user.target.wants/nvidia-fabricmanager.service",
        "",
    );
    host.write(
        "proc/cpuinfo",
        "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme de pse vmx ept\n",
    );
    host.write(
        "proc/cmdline",
        "BOOT_IMAGE=/vmlinuz root=/dev/nvme0n1p2 ro intel_iommu=on iommu=pt\n",
    );
    host.write(
        "proc/interrupts",
        "           CPU0\n 24:  0  IR-PCI-MSI 327680-edge  nvme0q0\n",
    );
    host.write("sys/firmware/acpi/tables/DMAR", "");
    host.write("etc/os-release", "ID=debian\n");
    for m in ["vfio", "vfio_iommu_type1"] {
        host.write(&format!("sys/module/{m}/initstate"), "live\n");
    }
    host.write(
        "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
        "N\n",
    );
    host.modules(
        "kernel/drivers/vfio/vfio.ko:\nkernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/vfio.ko\nkernel/drivers/vfio/vfio_iommu_type1.ko:\n",
        "alias pci:v000010DEd*sv*sd*bc03sc02i00* nvidia\n",
    );
    host.write("dev/vfio/vfio", "");
    host.write("dev/vfio/21", "");
    host.write("dev/vfio/23", "");
    host.write("lib/udev/rules.d/70-vfioctl.rules", "# shipped\n");
    for args in [
        &["persist", "add", "25:00.0", "2b:00.0"][..],
        &["host-config", "--write"],
    ] {
        let (status, _, stderr) = vfioctl(host.root(), args);
        assert_eq!(status, 0, "{args:?}: {stderr}");
    }
    host
}

fn check(host: &FakeHost) -> (i32, String) {
    let (status, stdout, stderr) = vfioctl(host.root(), &["check"]);
    assert!(stderr.is_empty(), "{stderr}");
    (status, stdout)
}

fn line<'a>(out: &'a str, id: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(id))
        .unwrap_or_else(|| panic!("no check {id} in\n{out}"))
}

#[test]
fn a_healthy_node_is_ok() {
    let host = healthy();
    let (status, out) = check(&host);
    golden::check("check_healthy.txt", &out);
    assert_eq!(status, 0, "{out}");
    assert!(line(&out, "binding.0000:25:00.0")
        .contains("on vfio-pci, group 21 viable, /dev/vfio/21 present"));

    let (status, json, _) = vfioctl(host.root(), &["check", "--json"]);
    assert_eq!(status, 0);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["status"], "OK");
    assert_eq!(value["exit_code"], 0);
    let binding = value["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "binding.0000:2b:00.0")
        .unwrap();
    assert_eq!(binding["device"], "0000:2b:00.0");
    assert!(binding["remedy"].is_null());

    let (status, prom, _) = vfioctl(host.root(), &["check", "--prometheus", "-"]);
    assert_eq!(status, 0);
    golden::check("check_healthy.prom", &prom);
    let file = host.path("textfile/vfioctl.prom");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let (status, _, _) = vfioctl(
        host.root(),
        &["check", "--prometheus", file.to_str().unwrap()],
    );
    assert_eq!(status, 0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), prom);
}

/// Whoever can write the textfile directory plants a symlink where the
/// metrics go, pointing at a file root owns: vfioctl refuses it, and neither
/// the file's text nor its mode changes.
#[test]
fn prometheus_file_refuses_a_planted_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let host = healthy();
    let dir = host.path("textfile");
    std::fs::create_dir_all(&dir).unwrap();
    let victim = host.path("etc/shadow");
    std::fs::write(&victim, "root:x:\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file = dir.join("vfioctl.prom");
    std::os::unix::fs::symlink(&victim, &file).unwrap();
    let (status, out, err) = vfioctl(
        host.root(),
        &["check", "--prometheus", file.to_str().unwrap()],
    );
    assert_eq!(status, 3, "{out}{err}");
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:x:\n");
    let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_declared_device_restored_by_hand_is_critical() {
    let host = healthy();
    host.unbind("0000:25:00.0");
    host.bind("0000:25:00.0", "nvidia", Some("nvidia"));
    host.write(
        "sys/bus/pci/devices/0000:25:00.0/driver_override",
        "(null)\n",
    );
    let (status, out) = check(&host);
    assert_eq!(status, 2, "{out}");
    let l = line(&out, "binding.0000:25:00.0");
    assert!(l.starts_with("CRITICAL"), "{l}");
    assert!(l.contains("0000:25:00.0: nvidia grabbed it (declared vfio-pci (or a variant)); driver_override is unset"), "{l}");
    assert!(l.contains("-> vfioctl persist apply"), "{l}");
    assert!(
        !l.contains("not viable"),
        "its own driver is not repeated as a blocker: {l}"
    );
    assert!(
        out.starts_with("VFIOCTL CRITICAL - 1 critical: binding.0000:25:00.0 | critical=1 warning=0 unknown=0 ok=26 not_judged=0\n"),
        "{out}"
    );
    assert!(
        out.ends_with("CRITICAL: 27 checks: 1 critical, 0 warning, 0 unknown, 26 ok\n"),
        "{out}"
    );
}

#[test]
fn iommu_off_is_critical_and_named() {
    let host = topologies::no_iommu();
    host.write(
        "proc/cpuinfo",
        "vendor_id\t: GenuineIntel\nflags\t\t: vmx\n",
    );
    host.write("proc/cmdline", "root=/dev/vda1\n");
    host.write("proc/interrupts", "  1:  9  IO-APIC 1-edge i8042\n");
    host.write("sys/firmware/acpi/tables/APIC", "");
    let (status, out) = check(&host);
    golden::check("check_no_iommu.txt", &out);
    assert_eq!(status, 2);
    assert!(line(&out, "iommu.active").contains("the IOMMU is off"));
    assert!(line(&out, "kernel.cmdline").contains("intel_iommu=on is missing"));
    assert!(line(&out, "iommu.firmware").contains("no ACPI DMAR or IVRS table"));
}

#[test]
fn each_declared_device_fault_is_reported() {
    // /dev/vfio node gone, D3cold, config space dead.
    let host = healthy();
    std::fs::remove_file(host.path("dev/vfio/23")).unwrap();
    host.write("sys/bus/pci/devices/0000:25:00.0/power_state", "D3cold\n");
    let (status, out) = check(&host);
    assert_eq!(status, 2);
    assert!(
        line(&out, "binding.0000:2b:00.0").contains("/dev/vfio/23 is missing"),
        "{out}"
    );
    let l = line(&out, "health.power.0000:25:00.0");
    assert!(
        l.starts_with("WARNING") && l.contains("idle in D3cold") && l.contains("d3cold_allowed"),
        "{l}"
    );
    assert!(
        line(&out, "binding.0000:25:00.0").starts_with("OK"),
        "power is the health check's: {out}"
    );

    // A slot that now holds another card.
    let host = healthy();
    host.write(
        "etc/vfioctl/bindings.d/moved.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"2330\"\naddress = \"0000:48:00.0\"\n",
    );
    let (status, out) = check(&host);
    assert_eq!(status, 2);
    assert!(
        line(&out, "binding.0000:48:00.0")
            .contains("declares 10de:2330 at 0000:48:00.0, but the slot holds 10de:20b0"),
        "{out}"
    );
    assert!(
        line(&out, "udev.rules").starts_with("WARNING"),
        "a new file makes the rules stale: {out}"
    );

    // An ID declaration with nothing present, and a broken config file.
    let host = healthy();
    host.write(
        "etc/vfioctl/bindings.d/h100.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"2330\"\n",
    );
    let (status, out) = check(&host);
    assert_eq!(status, 1, "{out}");
    assert!(
        line(&out, "binding.10de:2330").contains("no such device is present"),
        "{out}"
    );
    host.write(
        "etc/vfioctl/bindings.d/h100.toml",
        "[[binding]]\nvendor = 10de\n",
    );
    let (status, out) = check(&host);
    assert_eq!(status, 2);
    assert!(
        line(&out, "config.declarations").contains("/etc/vfioctl/bindings.d/h100.toml:2"),
        "{out}"
    );
}

#[test]
fn a_group_left_non_viable_is_critical() {
    let host = topologies::workstation_gpu();
    host.unbind("0000:01:00.0");
    host.bind("0000:01:00.0", "vfio-pci", Some("vfio_pci"));
    host.write("dev/vfio/1", "");
    host.write(
        "etc/vfioctl/bindings.d/gpu.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"1e87\"\n",
    );
    let (_, out) = check(&host);
    let l = line(&out, "binding.0000:01:00.0");
    assert!(
        l.contains("IOMMU group 1 is not viable: 0000:01:00.1 on snd_hda_intel, 0000:01:00.2 on xhci_hcd, 0000:01:00.3 on nvidia-gpu"),
        "{l}"
    );
}

#[test]
fn host_level_faults() {
    let host = healthy();
    host.write(
        "proc/cmdline",
        "root=/dev/sda1 intel_iommu=on vfio-pci.ids=10de:20b0,10de:1af1\n",
    );
    host.write("proc/interrupts", "  1:  9  IO-APIC 1-edge i8042\n");
    host.write(
        "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
        "Y\n",
    );
    std::fs::remove_file(host.path("etc/modprobe.d/vfioctl.conf")).unwrap();
    std::fs::remove_dir_all(host.path("sys/module/vfio_pci")).unwrap();
    let (status, out) = check(&host);
    golden::check("check_host_faults.txt", &out);
    assert_eq!(status, 1, "{out}");
    assert!(
        line(&out, "kernel.cmdline").contains("claims IDs no declaration covers: 10de:1af1"),
        "{out}"
    );
    assert!(
        line(&out, "iommu.interrupt_remapping").contains("allow_unsafe_interrupts=Y"),
        "{out}"
    );
    assert!(
        line(&out, "boot.files").contains("/etc/modprobe.d/vfioctl.conf missing"),
        "{out}"
    );
    assert!(
        line(&out, "vfio.modules")
            .contains("vfio_pci is not loaded although bindings are declared"),
        "{out}"
    );

    host.write("proc/cmdline", "root=/dev/sda1 intel_iommu=off\n");
    host.write(
        "proc/cpuinfo",
        "vendor_id\t: GenuineIntel\nflags\t\t: fpu\n",
    );
    let (status, out) = check(&host);
    assert_eq!(status, 2);
    assert!(
        line(&out, "kernel.cmdline").contains("turns the IOMMU off: intel_iommu=off"),
        "{out}"
    );
    assert!(
        line(&out, "cpu.virtualization").starts_with("CRITICAL"),
        "{out}"
    );
}

#[test]
fn unreadable_facts_are_unknown_not_ok() {
    let host = healthy();
    std::fs::remove_file(host.path("proc/cpuinfo")).unwrap();
    std::fs::remove_file(host.path("proc/interrupts")).unwrap();
    let (status, out) = check(&host);
    assert_eq!(status, 3, "{out}");
    assert!(line(&out, "cpu.virtualization").starts_with("UNKNOWN"));
    assert!(line(&out, "iommu.interrupt_remapping").starts_with("UNKNOWN"));
}

#[test]
fn expected_counts() {
    let host = healthy();
    let expect = host.path("expect.toml");
    std::fs::write(
        &expect,
        "[[expect]]\nids = \"10de:20b0\"\ndriver = \"vfio-pci\"\ncount = 2\n",
    )
    .unwrap();
    let (status, out, _) = vfioctl(
        host.root(),
        &["check", "--expect", expect.to_str().unwrap()],
    );
    assert_eq!(status, 0, "{out}");
    assert!(line(&out, "expect.10de:20b0").contains("2 x 10de:20b0 on vfio-pci, as expected"));
    std::fs::write(&expect, "[[expect]]\nids = \"10de:20b0\"\ncount = 8\n").unwrap();
    let (status, out, _) = vfioctl(
        host.root(),
        &["check", "--expect", expect.to_str().unwrap()],
    );
    assert_eq!(status, 2);
    assert!(
        line(&out, "expect.10de:20b0").contains("expected 8 x 10de:20b0 on a VFIO driver, found 2"),
        "{out}"
    );
    std::fs::write(&expect, "[[expect]]\nids = 5\n").unwrap();
    let (status, out, _) = vfioctl(
        host.root(),
        &["check", "--expect", expect.to_str().unwrap()],
    );
    assert_eq!(status, 3, "{out}");
}

#[test]
fn runs_without_privileges() {
    let host = healthy();
    // What an unprivileged user may read is checked; what it may not is UNKNOWN.
    let mut dir = host.root().to_path_buf();
    loop {
        let mode = std::fs::metadata(&dir).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode.mode() | 0o755))
            .unwrap();
        if dir == host.root() {
            break;
        }
        dir.pop();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        host.path("proc/interrupts"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_vfioctl"))
        .args(["--root", host.root().to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let out = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        output.status.code(),
        Some(3),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        line(&out, "iommu.interrupt_remapping").starts_with("UNKNOWN"),
        "{out}"
    );
    assert!(
        line(&out, "binding.0000:25:00.0").starts_with("OK"),
        "{out}"
    );
}

/// A declaration by IDs records how many functions it covered; one falling
/// off the bus is CRITICAL, naming its address, IDs and last driver.
#[test]
fn a_gpu_falling_off_the_bus_is_critical() {
    let host = topologies::hgx_a100();
    let present = support::cli::ok(host.root(), &["list", "10de:20b0"])
        .lines()
        .count()
        - 1;
    assert!(present >= 2);
    support::cli::ok(host.root(), &["persist", "add", "10de:20b0"]);
    let file =
        std::fs::read_to_string(host.path("etc/vfioctl/bindings.d/id-10de_20b0.toml")).unwrap();
    assert!(file.contains(&format!("expect = {present}\n")), "{file}");
    assert!(file.contains("\"0000:48:00.0\""), "{file}");

    // Identical and conflicting declarations are refused by persist add.
    let (status, _, err) = vfioctl(host.root(), &["persist", "add", "10de:20b0"]);
    assert_eq!(status, 4, "{err}");
    assert!(
        err.contains("already declared") && err.contains("identical"),
        "{err}"
    );
    let (status, _, err) = vfioctl(
        host.root(),
        &["persist", "add", "10de:20b0", "--driver", "pci-stub"],
    );
    assert_eq!(status, 4, "{err}");
    assert!(err.contains("conflicting"), "{err}");

    // 0000:48:00.0 falls off the bus; the change record knew it on vfio-pci.
    std::fs::remove_file(host.path("sys/bus/pci/devices/0000:48:00.0")).unwrap();
    host.write(
        "run/vfioctl/changes.json",
        r#"{"devices":{"0000:48:00.0":{"driver":"vfio-pci","previous_driver":"nvidia","previous_override":null,"changed_at":0,"command":"bind"}}}"#,
    );
    let (status, out) = check(&host);
    assert_eq!(status, 2, "{out}");
    let l = line(&out, "binding.10de:20b0.count");
    assert!(l.starts_with("CRITICAL"), "{l}");
    assert!(
        l.contains(&format!(
            "on {present} function(s), {} present",
            present - 1
        )),
        "{l}"
    );
    assert!(
        l.contains("missing: 0000:48:00.0 (10de:20b0, last on vfio-pci)"),
        "{l}"
    );

    // A hand-written declaration of the same IDs on another driver: check reports it.
    host.write(
        "etc/vfioctl/bindings.d/site.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\ndriver = \"pci-stub\"\n",
    );
    let (_, out) = check(&host);
    let l = line(&out, "binding.10de:20b0.duplicate");
    assert!(l.starts_with("CRITICAL"), "{l}");
    assert!(
        l.contains("conflicting with /etc/vfioctl/bindings.d/id-10de_20b0.toml"),
        "{l}"
    );
}

/// `sriov.<PF>.numvfs`: OK at the declared count, CRITICAL naming declared
/// and present counts otherwise, CRITICAL for a replaced card; the VFs the
/// PF governs are checked like any declared device.
#[test]
fn declared_vf_counts_and_vf_drivers_are_checked() {
    let host = topologies::sriov_nic();
    let declare = |numvfs: u32, device: &str| {
        host.write(
            "etc/vfioctl/bindings.d/nic.toml",
            format!("[[sriov]]\naddress = \"0000:3b:00.0\"\nvendor = \"15b3\"\ndevice = \"{device}\"\nnumvfs = {numvfs}\n"),
        );
    };
    declare(2, "1017");
    let (status, _, stderr) = vfioctl(host.root(), &["host-config", "--write"]);
    assert_eq!(status, 0, "{stderr}");
    let (status, out, _) = vfioctl(host.root(), &["check"]);
    assert_eq!(status, 2, "{out}");
    // Boot files leave VFs out, as host-config wrote them (found by
    // tests/vm 87-sriov-boot: check called them stale once VFs existed).
    assert!(!line(&out, "boot.files").contains("stale"), "{out}");
    assert!(
        line(&out, "sriov.0000:3b:00.0.numvfs")
            .contains("0000:3b:00.0 carries 2 VF(s) as declared"),
        "{out}"
    );
    assert!(
        line(&out, "sriov.0000:3b:00.0.numvfs").starts_with("OK"),
        "{out}"
    );
    // The VF on the host driver is CRITICAL; the one on the mlx5 variant is not.
    let vf = line(&out, "binding.0000:3b:00.2");
    assert!(vf.starts_with("CRITICAL"), "{out}");
    assert!(
        vf.contains("mlx5_core grabbed it (declared vfio-pci (or a variant))"),
        "{out}"
    );
    assert!(
        !line(&out, "binding.0000:3b:00.3").contains("grabbed"),
        "{out}"
    );
    assert!(
        !out.contains("binding.0000:3b:00.0"),
        "the PF keeps its host driver: {out}"
    );
    assert!(
        line(&out, "config.declarations").contains("1 declaration(s)"),
        "{out}"
    );

    declare(4, "1017");
    let (status, out, _) = vfioctl(host.root(), &["check"]);
    assert_eq!(status, 2);
    let count = line(&out, "sriov.0000:3b:00.0.numvfs");
    assert!(count.starts_with("CRITICAL"), "{out}");
    assert!(
        count.contains(
            "/etc/vfioctl/bindings.d/nic.toml:1: declared 4 VF(s) on 0000:3b:00.0, 2 present"
        ),
        "{out}"
    );
    declare(9, "1017");
    let (_, out, _) = vfioctl(host.root(), &["check"]);
    assert!(
        line(&out, "sriov.0000:3b:00.0.numvfs").contains("but its sriov_totalvfs is 8"),
        "{out}"
    );

    declare(2, "1015");
    let (status, json, _) = vfioctl(host.root(), &["check", "--json"]);
    assert_eq!(status, 2);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let checks = value["checks"].as_array().unwrap();
    let count = checks
        .iter()
        .find(|c| c["id"] == "sriov.0000:3b:00.0.numvfs")
        .unwrap();
    assert_eq!(count["status"], "CRITICAL");
    assert_eq!(count["device"], "0000:3b:00.0");
    assert!(
        count["message"]
            .as_str()
            .unwrap()
            .contains("declares 2 VF(s) on 15b3:1015 at 0000:3b:00.0, but the slot holds 15b3:1017:15b3:1017; not configured"),
        "{count}"
    );
    assert!(
        !checks.iter().any(|c| c["id"] == "binding.0000:3b:00.2"),
        "a replaced card's VFs are not governed"
    );
}
