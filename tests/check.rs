//! `vfioctl check` against fake hosts: every check passing and failing,
//! verdicts, exit statuses, JSON and Prometheus output.

mod support;

use std::path::Path;

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
fn an_untrusted_state_directory_is_critical() {
    use std::os::unix::fs::PermissionsExt;
    let host = healthy();
    std::fs::create_dir_all(host.path("var/lib/vfioctl")).unwrap();
    for (mode, want) in [(0o755, 0), (0o777, 2)] {
        std::fs::set_permissions(
            host.path("var/lib/vfioctl"),
            std::fs::Permissions::from_mode(mode),
        )
        .unwrap();
        let (status, out) = check(&host);
        assert_eq!(status, want, "{out}");
        assert_eq!(out.contains("state_dir"), want == 2, "{out}");
    }
    let (_, out) = check(&host);
    assert!(
        line(&out, "state_dir").contains("CRITICAL")
            && line(&out, "state_dir")
                .contains("/var/lib/vfioctl is writable by everyone (mode 777)"),
        "{out}"
    );
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
    // The first line monitoring shows says why the check could not run.
    assert!(
        out.starts_with("VFIOCTL UNKNOWN - vfioctl check failed: ") && out.contains("symlink"),
        "{out}"
    );
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
    let run = support::cli::vfioctl_as_nobody(host.root(), &["check"]);
    let out = run.stdout;
    assert_eq!(run.status, 3, "{out}{}", run.stderr);
    assert!(
        line(&out, "iommu.interrupt_remapping").starts_with("UNKNOWN"),
        "{out}"
    );
    assert!(
        line(&out, "binding.0000:25:00.0").starts_with("OK"),
        "{out}"
    );
    // A driver's directory it may not list would hide what is bound there
    // (vfio-pci's: the GPUs it judges): the check cannot run, and says so.
    std::fs::set_permissions(
        host.path("sys/bus/pci/drivers/vfio-pci"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let run = support::cli::vfioctl_as_nobody(host.root(), &["check"]);
    let out = run.stdout;
    assert_eq!(run.status, 3, "{out}");
    assert!(
        out.starts_with("VFIOCTL UNKNOWN - cannot read the PCI inventory: cannot list ")
            && out.contains("/sys/bus/pci/drivers/vfio-pci"),
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

/// The seed's HGX host with every GPU and NVSwitch passed through (full
/// fabric: Fabric Manager off), where the firmware owns AER: no root port
/// has the OS's `pcie002` service.
fn hgx_firmware_first() -> FakeHost {
    let host = healthy();
    std::fs::remove_file(
        host.path("etc/systemd/system/multi-user.target.wants/nvidia-fabricmanager.service"),
    )
    .unwrap();
    let passed: Vec<String> = std::fs::read_dir(host.path("sys/bus/pci/devices"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|a| {
            let device = std::fs::read_to_string(host.device_dir(a).join("device")).unwrap();
            matches!(device.trim(), "0x20b0" | "0x1af1")
        })
        .collect();
    assert_eq!(passed.len(), 14, "8 GPUs and 6 NVSwitches");
    for a in &passed {
        host.unbind(a);
        host.bind(a, "vfio-pci", Some("vfio_pci"));
        host.write(
            &format!("sys/bus/pci/devices/{a}/driver_override"),
            "vfio-pci\n",
        );
        let group = std::fs::read_link(host.device_dir(a).join("iommu_group")).unwrap();
        let group = group.file_name().unwrap().to_string_lossy().into_owned();
        host.write(&format!("dev/vfio/{group}"), "");
    }
    for args in [
        &["persist", "remove", "25:00.0", "2b:00.0"][..],
        &["persist", "add", "10de:20b0", "10de:1af1"],
        &["host-config", "--write"],
    ] {
        let (status, _, stderr) = vfioctl(host.root(), args);
        assert_eq!(status, 0, "{args:?}: {stderr}");
    }
    for e in std::fs::read_dir(host.path("sys/bus/pci_express/devices")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    host
}

#[test]
fn firmware_first_aer_on_the_hgx_seed_is_ok_with_the_note() {
    let host = hgx_firmware_first();
    let (status, out) = check(&host);
    golden::check("check_firmware_first.txt", &out);
    assert_eq!(status, 0, "{out}");
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with("VFIOCTL OK - ")
            && first.contains("checks OK; not judged: firmware-first AER on 14 |"),
        "{first}"
    );
    let l = line(&out, "health.aer.0000:b7:00.0");
    assert!(
        l.starts_with("OK")
            && l.contains("not judged: the OS does not own AER below root port 0000:b4:01.0"),
        "{l}"
    );
    let run = support::cli::vfioctl(host.root(), &["check", "--npd"]);
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert!(
        run.stdout
            .ends_with("; not judged: firmware-first AER on 14\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.trim_end().len() <= 80, "{}", run.stdout);

    // The operator wants to hear of it: WARNING (exit 1; NPD: a problem).
    host.write(
        "etc/vfioctl/check.toml",
        "[not_judged]\nfirmware_first_aer = \"warning\"\n",
    );
    let (status, out) = check(&host);
    assert_eq!(status, 1, "{out}");
    assert!(
        out.starts_with("VFIOCTL WARNING - 14 warning: health.aer.0000:25:00.0, "),
        "{out}"
    );
    let run = support::cli::vfioctl(host.root(), &["check", "--npd"]);
    assert_eq!(run.status, 1, "{}", run.stdout);
    golden::check("check_npd_warning.txt", &run.stdout);
    assert!(run.stdout.trim_end().len() <= 80, "{}", run.stdout);
    host.write(
        "etc/vfioctl/check.toml",
        "[not_judged]\nfirmware_first_aer = \"unknown\"\n",
    );
    assert_eq!(check(&host).0, 3);
    let run = support::cli::vfioctl(host.root(), &["check", "--npd"]);
    assert_eq!(run.status, 2, "NPD's unknown: {}", run.stdout);
}

/// `check --npd`: Node Problem Detector's custom plugin contract. Exit 0
/// OK, 1 a problem (WARNING or CRITICAL), 2 unknown; one line of at most
/// 80 bytes naming the worst check (NPD keeps max_output_length bytes).
#[test]
fn npd_output_follows_the_custom_plugin_contract() {
    let host = topologies::no_iommu();
    host.write(
        "proc/cpuinfo",
        "vendor_id\t: GenuineIntel\nflags\t\t: vmx\n",
    );
    host.write("proc/cmdline", "root=/dev/vda1\n");
    host.write("proc/interrupts", "  1:  9  IO-APIC 1-edge i8042\n");
    let run = support::cli::vfioctl(host.root(), &["check", "--npd"]);
    assert_eq!(run.status, 1, "CRITICAL is a problem: {}", run.stdout);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    golden::check("check_npd_critical.txt", &run.stdout);
    assert_eq!(run.stdout.lines().count(), 1);
    assert!(run.stdout.trim_end().len() <= 80, "{}", run.stdout);

    let host = healthy();
    let run = support::cli::vfioctl(host.root(), &["check", "--npd"]);
    assert_eq!(
        (run.status, run.stdout.as_str()),
        (0, "OK: 27 checks\n"),
        "{}",
        run.stderr
    );
    std::fs::remove_file(host.path("proc/cpuinfo")).unwrap();
    let run = support::cli::vfioctl(host.root(), &["check", "--npd"]);
    assert_eq!(run.status, 2, "UNKNOWN is NPD's unknown: {}", run.stdout);
    assert!(
        run.stdout
            .starts_with("UNKNOWN cpu.virtualization: cannot read /proc/cpuinfo"),
        "{}",
        run.stdout
    );
    // No inventory at all: unknown, said in the line.
    let empty = tempfile::tempdir().unwrap();
    let run = support::cli::vfioctl(empty.path(), &["check", "--npd"]);
    assert_eq!(run.status, 2, "{}", run.stdout);
    assert!(
        run.stdout
            .starts_with("UNKNOWN: cannot read the PCI inventory: no PCI sysfs at "),
        "{}",
        run.stdout
    );
    assert!(run.stdout.trim_end().len() <= 80, "{}", run.stdout);
    // Two formats on stdout are a usage error (check's 3: NPD's unknown too).
    for args in [
        &["check", "--npd", "--json"][..],
        &["check", "--npd", "--prometheus", "-"],
    ] {
        let run = support::cli::vfioctl(host.root(), args);
        assert_eq!(run.status, 3, "{args:?}: {}{}", run.stdout, run.stderr);
    }
}

/// A duration as Go's time.ParseDuration reads it (NPD's `invoke_interval`
/// and `timeout`): one or more decimal numbers each with a unit (ns, us,
/// µs, ms, s, m, h), or "0".
fn go_duration(text: &str) -> Option<std::time::Duration> {
    if text == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Some(std::time::Duration::from_secs_f64(total))
}

/// The shipped Node Problem Detector config, read with NPD's own field names
/// (pkg/custompluginmonitor/types: CustomPluginConfig, pluginGlobalConfig,
/// CustomRule, and pkg/types Condition), its defaults applied and its
/// Validate rules checked (`plugin` is "custom"; no rule's timeout above
/// the global one; a permanent rule's condition has a default condition;
/// the rule's path is where the packages install vfioctl). NPD itself (Go)
/// is not in Debian or on crates.io/PyPI, so this is its documented
/// contract, not its code. Then the rule runs as NPD would run it.
#[test]
fn the_npd_config_reads_with_npd_fields_and_runs() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Global {
        invoke_interval: Option<String>,
        timeout: Option<String>,
        max_output_length: Option<usize>,
        concurrency: Option<usize>,
        enable_message_change_based_condition_update: Option<bool>,
        skip_initial_status: Option<bool>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Condition {
        #[serde(rename = "type")]
        kind: String,
        reason: String,
        message: String,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        #[serde(rename = "type")]
        kind: String,
        condition: String,
        reason: String,
        path: String,
        args: Vec<String>,
        timeout: Option<String>,
        invoke_interval: Option<String>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        plugin: String,
        #[serde(rename = "pluginConfig")]
        plugin_config: Global,
        source: String,
        conditions: Vec<Condition>,
        rules: Vec<Rule>,
        #[serde(rename = "metricsReporting")]
        metrics_reporting: Option<bool>,
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/npd/vfioctl-plugin-monitor.json");
    let config: Config = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // NPD's defaults (ApplyConfiguration), then Validate.
    let g = &config.plugin_config;
    let timeout = go_duration(g.timeout.as_deref().unwrap_or("5s")).expect("a Go duration");
    let interval =
        go_duration(g.invoke_interval.as_deref().unwrap_or("30s")).expect("a Go duration");
    let max_output = g.max_output_length.unwrap_or(80);
    assert!(g.concurrency.unwrap_or(3) >= 1);
    assert!(!g
        .enable_message_change_based_condition_update
        .unwrap_or(false));
    assert!(!g.skip_initial_status.unwrap_or(false));
    assert!(config.metrics_reporting.unwrap_or(true));
    assert_eq!(config.plugin, "custom");
    assert!(!config.source.is_empty());
    assert_eq!(config.rules.len(), 1);
    let rule = &config.rules[0];
    assert!(rule.invoke_interval.is_none());
    let rule_timeout = rule
        .timeout
        .as_deref()
        .map(|t| go_duration(t).expect("a Go duration"));
    assert!(
        rule_timeout.is_none_or(|t| t <= timeout),
        "rule timeout above the global one"
    );
    assert!(matches!(rule.kind.as_str(), "permanent" | "temporary"));
    if rule.kind == "permanent" {
        let default = config
            .conditions
            .iter()
            .find(|c| c.kind == rule.condition)
            .expect("a permanent rule's condition has a default condition");
        assert!(!default.reason.is_empty() && !default.message.is_empty());
        assert_ne!(
            default.reason, rule.reason,
            "the problem's reason differs from the default's"
        );
    }
    assert_eq!(
        rule.path, "/usr/sbin/vfioctl",
        "where the packages install it"
    );
    // vfioctl's own deadlines fit in the rule's: libvirt's (--connect-timeout,
    // 10 s by default) and the AER baseline's lock (2 s), with room to spare;
    // and a run ends before the next is due.
    let effective = rule_timeout.unwrap_or(timeout).min(timeout);
    assert!(
        effective >= std::time::Duration::from_secs(20),
        "{effective:?}"
    );
    assert!(interval >= effective, "{interval:?} < {effective:?}");
    assert!(max_output >= 80, "vfioctl's line is up to 80 bytes");
    assert_eq!(rule.args, ["check", "--npd"]);

    // The rule as NPD runs it: stdout trimmed and cut to max_output_length,
    // exit 0 OK, 1 NonOK, anything else Unknown.
    let host = healthy();
    let mut args = vec!["--root", host.root().to_str().unwrap()];
    args.extend(rule.args.iter().map(String::as_str));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .args(&args)
        .output()
        .unwrap();
    let message = String::from_utf8(output.stdout).unwrap();
    let message = message.trim();
    assert!(message.len() <= max_output, "cut by NPD: {message}");
    assert_eq!((output.status.code(), message), (Some(0), "OK: 27 checks"));
}

/// Every way /run/vfioctl/changes.json can be unreadable (truncated, empty,
/// a bad address, a bad driver in an intent, not a file) makes every change,
/// the udev hook and recover refuse: check is CRITICAL, naming the file,
/// why and what to do.
#[test]
fn a_broken_change_record_is_critical() {
    let host = healthy();
    let record = "run/vfioctl/changes.json";
    let intent = r#"{"devices":{},"intent":{"command":"bind","pid":42,"process_start":null,"boot_id":null,"started_at":0,"devices":[{"address":"0000:25:00.0","before":{"driver":"../../nvidia","driver_override":null},"target":{"driver":"vfio-pci","driver_override":"vfio-pci"}}]}}"#;
    for (what, text) in [
        ("truncated", r#"{"devices":{"0000:25:00.0":{"driver":"vfio"#),
        ("empty", ""),
        (
            "a bad address",
            r#"{"devices":{"0000:zz:00.0":{"driver":"vfio-pci","previous_driver":"nvidia","previous_override":null,"changed_at":0,"command":"bind"}}}"#,
        ),
        ("a bad driver", intent),
    ] {
        host.write(record, text);
        let (status, out) = check(&host);
        assert_eq!(status, 2, "{what}: {out}");
        let l = line(&out, "change_record");
        assert!(l.starts_with("CRITICAL"), "{what}: {l}");
        assert!(
            l.contains("run/vfioctl/changes.json is not a valid change record (")
                && l.contains("move it aside"),
            "{what}: {l}"
        );
        assert!(
            out.starts_with("VFIOCTL CRITICAL - 1 critical: change_record |"),
            "{what}: {out}"
        );
    }
    std::fs::remove_file(host.path(record)).unwrap();
    std::fs::create_dir(host.path(record)).unwrap();
    let (status, out) = check(&host);
    assert_eq!(status, 2, "{out}");
    assert!(
        line(&out, "change_record").contains("run/vfioctl/changes.json"),
        "{out}"
    );
}

/// A change recorded as in progress for longer than [change]
/// in_progress_minutes (15 by default) is WARNING, naming its PID and
/// command: a change blocked in the kernel, or a stuck process.
#[test]
fn a_change_in_progress_for_days_is_a_warning() {
    let host = healthy();
    let pid = 4242;
    host.write(
        &format!("proc/{pid}/stat"),
        format!(
            "{pid} (vfioctl) S 1 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 4711 0 0 \
             18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        ),
    );
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3 * 86_400
        - 2 * 3600;
    host.write(
        "run/vfioctl/changes.json",
        format!(
            r#"{{"devices":{{}},"intent":{{"command":"restore","pid":{pid},"process_start":4711,"boot_id":null,"started_at":{started},"devices":[{{"address":"0000:25:00.0","before":{{"driver":"vfio-pci","driver_override":"vfio-pci"}},"target":{{"driver":"nvidia","driver_override":null}}}}]}}}}"#
        ),
    );
    let (status, out) = check(&host);
    assert_eq!(status, 1, "{out}");
    let l = line(&out, "change.in_progress");
    assert!(l.starts_with("WARNING"), "{l}");
    assert!(
        l.contains(&format!("vfioctl restore (PID {pid}, started "))
            && l.contains("has been in progress for 3 d 2 h, longer than 15 min")
            && l.contains(&format!("PID {pid} (restore) may be blocked in the kernel")),
        "{l}"
    );
    assert!(l.contains(&format!("cat /proc/{pid}/stack")), "{l}");
    host.write(
        "etc/vfioctl/check.toml",
        "[change]\nin_progress_minutes = 10000\n",
    );
    let (_, out) = check(&host);
    assert!(line(&out, "change.in_progress").starts_with("OK"), "{out}");
    host.write(
        "etc/vfioctl/check.toml",
        "[change]\nin_progress_minutes = 0\n",
    );
    let (_, out) = check(&host);
    assert!(
        line(&out, "config.thresholds")
            .contains("/etc/vfioctl/check.toml:2: change.in_progress_minutes is at least 1"),
        "{out}"
    );
}
