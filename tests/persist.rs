//! Declared bindings: config files, trust checks, udev rules, persist
//! add/remove/list/apply, host-config, and the udev hook's guards.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use support::cli::{ok, vfioctl, vfioctl_env};
use support::fakehost::FakeHost;
use support::simkernel::SimKernel;
use support::{golden, topologies};
use vfioctl::engine::enforce::apply_declarations;
use vfioctl::host::HostRoot;

fn read(host: &FakeHost, rel: &str) -> String {
    std::fs::read_to_string(host.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn add_list_and_remove_declarations() {
    let host = topologies::hgx_a100();
    let out = ok(host.root(), &["persist", "add", "25:00.0", "10de:1af1"]);
    assert!(out.contains("declared 0000:25:00.0 on vfio-pci (or its variant) in /etc/vfioctl/bindings.d/addr-0000_25_00.0.toml"), "{out}");
    assert!(out.contains("declared 10de:1af1 on vfio-pci (or its variant) in /etc/vfioctl/bindings.d/id-10de_1af1.toml"), "{out}");
    assert!(
        out.contains("rewrote /etc/udev/rules.d/69-vfioctl-bindings.rules"),
        "{out}"
    );
    assert!(out.contains("70-vfioctl.rules is not installed"), "{out}");
    golden::check(
        "persist_addr_file.toml",
        &read(&host, "etc/vfioctl/bindings.d/addr-0000_25_00.0.toml"),
    );
    golden::check(
        "persist_udev_rules.rules",
        &read(&host, "etc/udev/rules.d/69-vfioctl-bindings.rules"),
    );
    let mode = std::fs::metadata(host.path("etc/vfioctl/bindings.d/id-10de_1af1.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);

    golden::check("persist_list.txt", &ok(host.root(), &["persist", "list"]));
    let json: serde_json::Value =
        serde_json::from_str(&ok(host.root(), &["persist", "list", "--json"])).unwrap();
    assert_eq!(json[0]["key"], "0000:25:00.0");
    assert_eq!(json[0]["devices"][0]["enforced"], true);
    assert_eq!(json[1]["key"], "10de:1af1");
    assert_eq!(json[1]["devices"].as_array().unwrap().len(), 6);
    assert_eq!(json[1]["devices"][0]["enforced"], false);
    assert!(
        json[1]["devices"][0]["udev_marked"].is_null(),
        "a fake root cannot ask udev"
    );

    // Removing by a selector of a governed device, then by key.
    let out = ok(host.root(), &["persist", "remove", "b7:00.0"]);
    assert!(out.contains("removed declaration 10de:1af1"), "{out}");
    assert!(!host
        .path("etc/vfioctl/bindings.d/id-10de_1af1.toml")
        .exists());
    ok(host.root(), &["persist", "remove", "0000:25:00.0"]);
    assert!(
        !read(&host, "etc/udev/rules.d/69-vfioctl-bindings.rules").contains("ENV{VFIOCTL_DRIVER}")
    );
    let run = vfioctl(host.root(), &["persist", "remove", "25:00.0"]);
    assert_eq!(run.status, 3, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("selector '25:00.0' names no declaration"),
        "{}",
        run.stderr
    );
}

#[test]
fn rules_can_be_regenerated_after_hand_edits() {
    let host = topologies::hgx_a100();
    host.write(
        "etc/vfioctl/bindings.d/site.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"1af1\"\n",
    );
    let printed = ok(host.root(), &["persist", "rules"]);
    assert!(
        printed.contains("# 10de:1af1 (/etc/vfioctl/bindings.d/site.toml:1)"),
        "{printed}"
    );
    assert!(!host
        .path("etc/udev/rules.d/69-vfioctl-bindings.rules")
        .exists());
    let out = ok(host.root(), &["persist", "rules", "--write"]);
    assert!(
        out.contains("rewrote /etc/udev/rules.d/69-vfioctl-bindings.rules"),
        "{out}"
    );
    assert_eq!(
        read(&host, "etc/udev/rules.d/69-vfioctl-bindings.rules"),
        printed
    );
    let out = ok(host.root(), &["persist", "rules", "--write"]);
    assert!(out.contains("is current"), "{out}");
}

#[test]
fn gpu_companions_are_declared_with_it() {
    let host = topologies::workstation_gpu();
    let out = ok(host.root(), &["persist", "add", "01:00.0"]);
    for f in ["01_00.0", "01_00.1", "01_00.2", "01_00.3"] {
        assert!(
            host.path(&format!("etc/vfioctl/bindings.d/addr-0000_{f}.toml"))
                .exists(),
            "{out}"
        );
    }
    let run = vfioctl(host.root(), &["persist", "add", "00:01.0"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("a bridge or port"), "{}", run.stderr);
}

#[test]
fn untrusted_and_malformed_config_is_refused_with_file_and_line() {
    let host = topologies::hgx_a100();
    host.write(
        "etc/vfioctl/bindings.d/site.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\n\n[[binding]]\nvendor = \"10de\"\ndevice = \"xyz\"\n",
    );
    let run = vfioctl(host.root(), &["persist", "list"]);
    assert_eq!(run.status, 7, "{}", run.stderr);
    assert_eq!(
        run.stderr.trim(),
        "vfioctl: /etc/vfioctl/bindings.d/site.toml:5: device = \"xyz\" is not 4 hex digits"
    );
    // Nothing is applied from a bad configuration.
    let run = vfioctl(host.root(), &["persist", "apply"]);
    assert_eq!(run.status, 7);
    assert_eq!(
        read(&host, "sys/bus/pci/devices/0000:48:00.0/driver_override"),
        "(null)\n"
    );

    host.write(
        "etc/vfioctl/bindings.d/site.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\n",
    );
    let file = host.path("etc/vfioctl/bindings.d/site.toml");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = vfioctl(host.root(), &["persist", "list"]);
    assert_eq!(run.status, 7);
    assert!(
        run.stderr
            .contains("site.toml is writable by everyone (mode 666): vfioctl refuses it"),
        "{}",
        run.stderr
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(&file, Some(1000), Some(1000)).unwrap();
    let run = vfioctl(host.root(), &["persist", "list"]);
    assert_eq!(run.status, 7);
    assert!(
        run.stderr
            .contains("site.toml is owned by uid 1000, not root"),
        "{}",
        run.stderr
    );
    std::os::unix::fs::chown(&file, Some(0), Some(0)).unwrap();
    std::os::unix::fs::chown(host.path("etc/vfioctl"), Some(1000), None).unwrap();
    let run = vfioctl(host.root(), &["persist", "list"]);
    assert!(
        run.stderr.contains("/etc/vfioctl is owned by uid 1000"),
        "{}",
        run.stderr
    );
}

#[test]
fn hand_written_files_are_not_removed() {
    let host = topologies::hgx_a100();
    host.write(
        "etc/vfioctl/bindings.d/site.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"1af1\"\n",
    );
    let run = vfioctl(host.root(), &["persist", "remove", "10de:1af1"]);
    assert_eq!(run.status, 4, "refused (man page), {}", run.stderr);
    assert!(
        run.stderr
            .contains("site.toml:1: declared in a file vfioctl did not write"),
        "{}",
        run.stderr
    );
    assert!(host.path("etc/vfioctl/bindings.d/site.toml").exists());
}

#[test]
fn apply_binds_everything_declared_and_skips_moved_slots() {
    let host = topologies::workstation_gpu();
    ok(host.root(), &["persist", "add", "01:00.0"]);
    // A declaration for an address that now holds another device.
    host.write(
        "etc/vfioctl/bindings.d/moved.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"2204\"\naddress = \"0000:00:02.0\"\n",
    );
    let kernel = SimKernel::new(&host);
    let root = HostRoot::new(host.root());
    let done = apply_declarations(&root, &kernel, false, Duration::from_millis(300)).unwrap();
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    assert_eq!(done.reports.len(), 1);
    assert_eq!(done.reports[0].plan.actions.len(), 4);
    assert_eq!(
        done.warnings,
        ["/etc/vfioctl/bindings.d/moved.toml:1: 0000:00:02.0 declares 10de:2204 but the slot holds 8086:3e92:8086:3e92; not applied"]
    );
    let list = ok(host.root(), &["persist", "list"]);
    assert!(list.contains("warning: /etc/vfioctl/bindings.d/moved.toml:1 declares 10de:2204 at 0000:00:02.0, but that slot now holds 8086:3e92:8086:3e92"), "{list}");
    assert!(
        list.contains("0000:01:00.0  auto    0000:01:00.0  1/1"),
        "{list}"
    );
    // Applying again changes nothing.
    let again = apply_declarations(&root, &kernel, false, Duration::from_millis(300)).unwrap();
    assert!(again.reports.iter().all(|r| !r.plan.changes()));
}

#[test]
fn bind_persist_binds_and_declares() {
    let host = topologies::hgx_a100();
    // The fake kernel does not move drivers, so the bind fails and nothing is declared.
    let run = vfioctl(
        host.root(),
        &["bind", "--persist", "48:00.0", "--timeout", "1"],
    );
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(!host.path("etc/vfioctl/bindings.d").exists());
    // Already bound: nothing to change, and the declaration is written.
    let out = ok(host.root(), &["bind", "--persist", "2b:00.0"]);
    assert!(out.contains("declared 0000:2b:00.0"), "{out}");
}

fn host_config_host() -> FakeHost {
    let host = topologies::hgx_a100();
    host.write(
        "proc/cpuinfo",
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\n",
    );
    host.write(
        "proc/cmdline",
        "BOOT_IMAGE=/vmlinuz root=/dev/nvme0n1p2 ro quiet\n",
    );
    host.write(
        "etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n",
    );
    std::fs::create_dir_all(host.path("etc/initramfs-tools")).unwrap();
    host.modules(
        "",
        "alias pci:v000010DEd*sv*sd*bc03sc02i00* nvidia\nalias pci:v000010DEd*sv*sd*bc03sc*i* nouveau\nalias pci:v000010DEd*sv*sd*bc06sc80i00* nvidia\nalias pci:v00008086d00001521sv*sd*bc*sc*i* igb\n",
    );
    host
}

#[test]
fn host_config_previews_writes_idempotently_and_removes() {
    let host = host_config_host();
    ok(host.root(), &["persist", "add", "10de:20b0", "10de:1af1"]);
    ok(
        host.root(),
        &["persist", "add", "02:00.0", "--driver", "pci-stub"],
    );
    let preview = ok(host.root(), &["host-config"]);
    golden::check("host_config_preview.txt", &preview);
    assert!(
        !host.path("etc/modprobe.d/vfioctl.conf").exists(),
        "preview writes nothing"
    );

    let written = ok(host.root(), &["host-config", "--write"]);
    assert!(
        written.contains("== /etc/modprobe.d/vfioctl.conf (written, mode 644) =="),
        "{written}"
    );
    assert!(
        written.contains("rebuild the initramfs now: update-initramfs -u -k all"),
        "{written}"
    );
    let script = host.path("etc/initramfs-tools/scripts/init-top/vfioctl");
    assert_eq!(
        std::fs::metadata(&script).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let again = ok(host.root(), &["host-config", "--write"]);
    assert!(again.contains("(unchanged, mode 644)"), "{again}");
    assert!(!again.contains("rebuild the initramfs"), "{again}");

    // The init-top script claims exactly the declared devices: run it against
    // the fake sysfs (paths redirected, module loading left out).
    let text = read(&host, "etc/initramfs-tools/scripts/init-top/vfioctl")
        .replace(
            "/sys/bus/pci/devices/*",
            &format!("{}/sys/bus/pci/devices/*", host.root().display()),
        )
        .replace("modprobe -q ", "true ");
    assert!(
        !text.contains("modprobe"),
        "the test must not load modules on this host"
    );
    let sh = Command::new("sh").arg("-c").arg(&text).status().unwrap();
    assert!(sh.success());
    for (dev, expected) in [
        ("0000:48:00.0", "vfio-pci\n"),
        ("0000:b7:00.0", "vfio-pci\n"),
        ("0000:02:00.0", "pci-stub\n"),
        ("0000:04:00.0", "(null)\n"),
        ("0000:24:00.0", "(null)\n"),
    ] {
        assert_eq!(
            read(&host, &format!("sys/bus/pci/devices/{dev}/driver_override")),
            expected,
            "{dev}"
        );
    }

    let json: serde_json::Value =
        serde_json::from_str(&ok(host.root(), &["host-config", "--json"])).unwrap();
    assert_eq!(
        json["kernel_cmdline"]["missing"],
        serde_json::json!(["intel_iommu=on", "iommu=pt"])
    );

    let removed = ok(host.root(), &["host-config", "--remove"]);
    assert!(
        removed.contains("/etc/modprobe.d/vfioctl.conf: removed"),
        "{removed}"
    );
    assert!(!script.exists());
    let removed = ok(host.root(), &["host-config", "--remove"]);
    assert!(
        removed.contains("/etc/modprobe.d/vfioctl.conf: absent"),
        "{removed}"
    );
}

#[test]
fn host_config_refuses_files_it_does_not_own_and_flags_conflicts() {
    let host = host_config_host();
    host.write(
        "proc/cmdline",
        "root=/dev/sda1 intel_iommu=off vfio-pci.ids=10de:1234\n",
    );
    host.write(
        "etc/os-release",
        "ID=rocky\nID_LIKE=\"rhel centos fedora\"\n",
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(host.root(), &["host-config", "--json"])).unwrap();
    assert_eq!(
        json["kernel_cmdline"]["conflicting"],
        serde_json::json!(["intel_iommu=off", "vfio-pci.ids=10de:1234"])
    );
    assert_eq!(
        json["kernel_cmdline"]["how"],
        "grubby --update-kernel=ALL --args=\"intel_iommu=on iommu=pt\" --remove-args=\"intel_iommu=off vfio-pci.ids=10de:1234\", then reboot"
    );
    host.write(
        "etc/modprobe.d/vfioctl.conf",
        "options vfio-pci ids=10de:20b0\n",
    );
    let run = vfioctl(host.root(), &["host-config", "--write"]);
    assert_eq!(run.status, 4, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("/etc/modprobe.d/vfioctl.conf exists and was not written by vfioctl"),
        "{}",
        run.stderr
    );
    assert_eq!(
        read(&host, "etc/modprobe.d/vfioctl.conf"),
        "options vfio-pci ids=10de:20b0\n"
    );
}

#[test]
fn udev_hook_ignores_other_events_and_undeclared_devices() {
    let host = topologies::hgx_a100();
    ok(host.root(), &["persist", "add", "25:00.0"]);
    for action in ["bind", "unbind", "change", "remove"] {
        let run = vfioctl_env(
            host.root(),
            &["udev-hook", "48:00.0"],
            &[("ACTION", action)],
        );
        assert_eq!(run.status, 0);
        assert!(
            run.stderr.is_empty() && run.stdout.is_empty(),
            "{action}: {}",
            run.stderr
        );
    }
    let run = vfioctl_env(host.root(), &["udev-hook", "48:00.0"], &[("ACTION", "add")]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("0000:48:00.0: no declaration covers it"),
        "{}",
        run.stderr
    );
    let run = vfioctl_env(
        host.root(),
        &["udev-hook"],
        &[("ACTION", "add"), ("PCI_SLOT_NAME", "0000:25:00.0")],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("0000:25:00.0: declared by /etc/vfioctl/bindings.d/addr-0000_25_00.0.toml:2; on vfio-pci (0 device(s) changed)"), "{}", run.stderr);
    assert_eq!(
        read(&host, "sys/bus/pci/devices/0000:48:00.0/driver_override"),
        "(null)\n"
    );
}

#[test]
fn udev_hook_without_an_address_is_a_usage_error() {
    let host = topologies::hgx_a100();
    let run = vfioctl_env(host.root(), &["udev-hook"], &[("ACTION", "add")]);
    assert_eq!(run.status, 2, "usage (man page), {}", run.stderr);
    assert!(
        run.stderr.contains("udev-hook needs the device address"),
        "{}",
        run.stderr
    );
}
