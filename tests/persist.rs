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
    let run = vfioctl(host.root(), &["persist", "add", "25:00.0", "10de:1af1"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let out = run.stdout;
    assert!(out.contains("declared 0000:25:00.0 on vfio-pci (or its variant) in /etc/vfioctl/bindings.d/addr-0000_25_00.0.toml"), "{out}");
    assert!(out.contains("declared 10de:1af1 on vfio-pci (or its variant) in /etc/vfioctl/bindings.d/id-10de_1af1.toml"), "{out}");
    assert!(
        out.contains("rewrote /etc/udev/rules.d/69-vfioctl-bindings.rules"),
        "{out}"
    );
    // Notes go to stderr (the one note policy), not into the output.
    assert!(
        run.stderr
            .contains("vfioctl: note: 70-vfioctl.rules is not installed"),
        "{}",
        run.stderr
    );
    assert!(!out.contains("note:"), "{out}");
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
    assert_eq!(run.status, 4, "{}", run.stderr);
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
    let script = host.path("etc/initramfs-tools/scripts/init-top/00-vfioctl");
    assert_eq!(
        std::fs::metadata(&script).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let again = ok(host.root(), &["host-config", "--write"]);
    assert!(again.contains("(unchanged, mode 644)"), "{again}");
    assert!(!again.contains("rebuild the initramfs"), "{again}");

    // The init-top script claims exactly the declared devices: run it against
    // the fake sysfs (paths redirected, module loading left out).
    let text = read(&host, "etc/initramfs-tools/scripts/init-top/00-vfioctl")
        .replace(
            "/sys/bus/pci/",
            &format!("{}/sys/bus/pci/", host.root().display()),
        )
        .replace("modprobe -q ", "true ")
        .replace("/dev/kmsg", "/dev/null");
    assert!(
        !text.contains("modprobe"),
        "the test must not load modules on this host"
    );
    assert!(
        !text.contains(" /sys/") && !text.contains("/dev/kmsg"),
        "the test must not write to this host's sysfs or kernel log"
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
fn host_config_gives_dracut_the_same_claim_as_a_pre_udev_hook() {
    let host = host_config_host();
    ok(host.root(), &["persist", "add", "10de:20b0"]);
    std::fs::create_dir_all(host.path("etc/dracut.conf.d")).unwrap();
    ok(host.root(), &["host-config", "--write"]);
    let conf = read(&host, "etc/dracut.conf.d/vfioctl.conf");
    assert!(conf.contains("add_dracutmodules+=\" vfioctl \""), "{conf}");
    let setup = "usr/lib/dracut/modules.d/90vfioctl/module-setup.sh";
    assert!(
        read(&host, setup).contains("inst_hook pre-udev 00 \"$moddir/vfioctl-claim.sh\""),
        "{setup}"
    );
    let hook = read(&host, "usr/lib/dracut/modules.d/90vfioctl/vfioctl-claim.sh");
    let init_top = read(&host, "etc/initramfs-tools/scripts/init-top/00-vfioctl");
    // One claim for both initramfs flavours.
    let claim = |text: &str| text[text.find("claimed=").unwrap()..].to_string();
    assert_eq!(claim(&hook), claim(&init_top));
    assert!(
        hook.contains("*\" 0x10de:0x20b0 \"*) printf '%s\\n' vfio-pci"),
        "{hook}"
    );
    for file in [setup, "usr/lib/dracut/modules.d/90vfioctl/vfioctl-claim.sh"] {
        assert_eq!(
            std::fs::metadata(host.path(file))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755,
            "{file}"
        );
    }
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

#[test]
fn a_driver_name_that_is_not_one_is_refused_before_anything_is_written() {
    let host = topologies::hgx_a100();
    for driver in [
        "vfio pci",
        "vfio-pci\"\n[[binding]]\nvendor = \"8086\"\ndevice = \"10d3",
        "x\", RUN+=\"/bin/sh",
        "",
    ] {
        for args in [
            &["persist", "add", "25:00.0", "--driver", driver][..],
            &["bind", "25:00.0", "--dry-run", "--driver", driver],
        ] {
            let run = vfioctl(host.root(), args);
            assert_eq!(run.status, 2, "{args:?}: {}", run.stderr);
            assert!(
                run.stderr.contains("is not a driver name"),
                "{}",
                run.stderr
            );
            assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        }
    }
    assert!(!host.path("etc/vfioctl/bindings.d").exists());
    // A good name is written by the toml crate and read back; remove deletes it.
    ok(
        host.root(),
        &["persist", "add", "25:00.0", "--driver", "pci-stub"],
    );
    let text = read(&host, "etc/vfioctl/bindings.d/addr-0000_25_00.0.toml");
    assert!(text.contains("driver = \"pci-stub\"\n"), "{text}");
    assert!(ok(host.root(), &["persist", "list"]).contains("pci-stub"));
    ok(host.root(), &["persist", "remove", "25:00.0"]);
    assert!(!host
        .path("etc/vfioctl/bindings.d/addr-0000_25_00.0.toml")
        .exists());
}

#[test]
fn a_bindings_file_name_that_could_inject_is_refused() {
    let host = topologies::hgx_a100();
    ok(host.root(), &["persist", "add", "25:00.0"]);
    let evil = "x\nACTION==\"add\", RUN+=\"reboot\"\n#.toml";
    host.write(
        &format!("etc/vfioctl/bindings.d/{evil}"),
        "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\n",
    );
    for args in [
        &["persist", "list"][..],
        &["persist", "rules"],
        &["host-config"],
    ] {
        let run = vfioctl(host.root(), args);
        assert_eq!(run.status, 7, "{args:?}: {}{}", run.stdout, run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains("rename it"), "{}", run.stderr);
        assert!(!run.stdout.contains("reboot"), "{}", run.stdout);
    }
    let rules = read(&host, "etc/udev/rules.d/69-vfioctl-bindings.rules");
    assert!(!rules.contains("reboot"), "{rules}");
}

/// Many `persist add` processes at once on one fake root: each holds the
/// change lock, so every declaration is kept and the generated rules name
/// every one of them.
#[test]
fn parallel_persist_adds_lose_no_declaration() {
    let host = topologies::hgx_a100();
    let devices: serde_json::Value =
        serde_json::from_str(&ok(host.root(), &["list", "--json"])).unwrap();
    let addresses: Vec<String> = devices
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["is_bridge"] == false)
        .map(|d| d["address"].as_str().unwrap().to_string())
        .collect();
    assert!(addresses.len() >= 10, "{addresses:?}");
    let children: Vec<_> = addresses
        .iter()
        .map(|addr| {
            Command::new(env!("CARGO_BIN_EXE_vfioctl"))
                .arg("--root")
                .arg(host.root())
                // --force: the fake host's boot display is among them.
                .args(["persist", "add", addr, "--force"])
                .env_remove("VFIOCTL_ROOT")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let listed: serde_json::Value =
        serde_json::from_str(&ok(host.root(), &["persist", "list", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), addresses.len());
    let rules = read(&host, "etc/udev/rules.d/69-vfioctl-bindings.rules");
    for addr in &addresses {
        assert!(
            rules.contains(&format!("KERNEL==\"{addr}\"")),
            "{addr} missing:\n{rules}"
        );
    }
}

/// Config trust, checked on open descriptors, every directory from the root
/// down: group write only for root's group, no world write, no other owner,
/// no symlinks; under a fake --root the owner trusted is the root's owner.
#[test]
fn config_trust_covers_every_directory_and_refuses_links() {
    use std::os::unix::fs::{chown, symlink};
    let set_mode = |host: &FakeHost, rel: &str, mode: u32| {
        std::fs::set_permissions(host.path(rel), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let site = "etc/vfioctl/bindings.d/site.toml";
    let fresh = || {
        let host = topologies::hgx_a100();
        host.write(site, "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\n");
        for dir in ["etc", "etc/vfioctl", "etc/vfioctl/bindings.d"] {
            set_mode(&host, dir, 0o755);
        }
        set_mode(&host, site, 0o644);
        host
    };
    let refused = |host: &FakeHost, expect: &str| {
        let run = vfioctl(host.root(), &["persist", "list"]);
        assert_eq!(run.status, 7, "{expect}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(expect), "{expect}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    };

    let host = fresh();
    assert!(ok(host.root(), &["persist", "list"]).contains("10de:20b0"));
    // Group write: allowed for group root, refused for any other group.
    set_mode(&host, site, 0o664);
    assert!(ok(host.root(), &["persist", "list"]).contains("10de:20b0"));
    chown(host.path(site), None, Some(1000)).unwrap();
    refused(&host, "site.toml is writable by group 1000 (mode 664)");

    // /etc world-writable, or owned by someone else.
    let host = fresh();
    set_mode(&host, "etc", 0o777);
    refused(&host, "/etc is writable by everyone (mode 777)");
    let host = fresh();
    chown(host.path("etc"), Some(1000), None).unwrap();
    refused(&host, "/etc is owned by uid 1000, not root");

    // A symlinked file or directory is never followed.
    let host = fresh();
    let elsewhere = host.path("tmp-site.toml");
    std::fs::rename(host.path(site), &elsewhere).unwrap();
    symlink(&elsewhere, host.path(site)).unwrap();
    refused(&host, "site.toml is a symlink or not a regular file");
    let host = fresh();
    std::fs::rename(host.path("etc/vfioctl"), host.path("vfioctl-real")).unwrap();
    symlink(host.path("vfioctl-real"), host.path("etc/vfioctl")).unwrap();
    refused(&host, "/etc/vfioctl is a symlink or not a directory");

    // A fake root owned by another user: that user's files are trusted,
    // root's are not (the owner trusted is the --root directory's).
    let host = fresh();
    let chown_tree = |uid: u32| {
        let status = Command::new("chown")
            .args(["-R", &format!("{uid}:{uid}")])
            .arg(host.root())
            .status()
            .unwrap();
        assert!(status.success());
    };
    chown_tree(1000);
    assert!(ok(host.root(), &["persist", "list"]).contains("10de:20b0"));
    chown(host.path(site), Some(0), Some(0)).unwrap();
    refused(&host, "site.toml is owned by uid 0, not uid 1000");
}

/// A ConnectX-5 PF declared with 2 VFs on the default driver, one VF named
/// by a `[[binding]]` on another driver: the address wins for that VF.
const NIC_SRIOV: &str = "[[sriov]]\naddress = \"0000:3b:00.0\"\nvendor = \"15b3\"\ndevice = \"1017\"\nnumvfs = 2\n\n[[binding]]\nvendor = \"15b3\"\ndevice = \"1018\"\naddress = \"0000:3b:00.3\"\ndriver = \"mlx5_vfio_pci\"\n";

#[test]
fn sriov_declarations_are_listed_marked_and_govern_their_vfs() {
    let host = topologies::sriov_nic();
    host.register_driver("vfio-pci", Some("vfio_pci"));
    host.write("etc/vfioctl/bindings.d/nic.toml", NIC_SRIOV);
    let list = ok(host.root(), &["persist", "list"]);
    assert!(
        list.contains("SRIOV PF      IDS        NUMVFS  VF DRIVER  VFS           ENFORCED  ORIGIN\n0000:3b:00.0  15b3:1017  2/2     auto       0000:3b:00.2  0/1       /etc/vfioctl/bindings.d/nic.toml:1\n"),
        "{list}"
    );
    assert!(
        list.contains("0000:3b:00.3  mlx5_vfio_pci  0000:3b:00.3  1/1"),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(host.root(), &["persist", "list", "--json"])).unwrap();
    assert_eq!(json[0]["key"], "0000:3b:00.3");
    assert!(
        json[0].get("kind").is_none(),
        "binding entries keep their schema"
    );
    assert_eq!(json[1]["kind"], "sriov");
    assert_eq!(json[1]["numvfs"], 2);
    assert_eq!(json[1]["numvfs_present"], 2);
    assert!(json[1]["vf_driver"].is_null());
    assert_eq!(json[1]["devices"][0]["address"], "0000:3b:00.2");
    assert_eq!(json[1]["devices"][0]["enforced"], false);

    let rules = ok(host.root(), &["persist", "rules"]);
    assert!(
        rules.contains("KERNEL==\"0000:3b:00.0\", ATTR{vendor}==\"0x15b3\", ATTR{device}==\"0x1017\", ENV{VFIOCTL_NUMVFS}=\"2\"\n"),
        "{rules}"
    );

    // persist apply binds the VF its PF governs; the PF keeps its driver.
    let kernel = SimKernel::new(&host);
    let root = HostRoot::new(host.root());
    let done = apply_declarations(&root, &kernel, false, Duration::from_millis(300)).unwrap();
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    assert!(done.warnings.is_empty(), "{:?}", done.warnings);
    let list = ok(host.root(), &["persist", "list"]);
    assert!(
        list.contains("0000:3b:00.0  15b3:1017  2/2     auto       0000:3b:00.2  1/1"),
        "{list}"
    );
    assert_eq!(
        read(&host, "sys/bus/pci/devices/0000:3b:00.0/driver_override"),
        "(null)\n"
    );

    // A hand-written file is never removed; a written one is.
    let run = vfioctl(host.root(), &["persist", "remove", "3b:00.0"]);
    assert_ne!(run.status, 0);
    assert!(
        run.stderr
            .contains("nic.toml:1: declared in a file vfioctl did not write"),
        "{}",
        run.stderr
    );
    host.write(
        "etc/vfioctl/bindings.d/nic.toml",
        vfioctl::host::config::seal(NIC_SRIOV.split("\n\n").next().unwrap()),
    );
    let out = ok(host.root(), &["persist", "remove", "3b:00.0"]);
    assert!(
        out.contains("removed SR-IOV declaration 0000:3b:00.0 (/etc/vfioctl/bindings.d/nic.toml:2); its VFs stay as they are"),
        "{out}"
    );
    assert!(!host.path("etc/vfioctl/bindings.d/nic.toml").exists());
}

#[test]
fn a_replaced_sriov_card_is_reported_not_configured() {
    let host = topologies::sriov_nic();
    host.write(
        "etc/vfioctl/bindings.d/nic.toml",
        "[[sriov]]\naddress = \"0000:3b:00.0\"\nvendor = \"8086\"\ndevice = \"10c9\"\nnumvfs = 7\n",
    );
    let kernel = SimKernel::new(&host);
    let root = HostRoot::new(host.root());
    let done = apply_declarations(&root, &kernel, false, Duration::from_millis(300)).unwrap();
    assert!(done.reports.is_empty(), "no VF is governed");
    assert_eq!(
        done.warnings,
        ["/etc/vfioctl/bindings.d/nic.toml:1: 0000:3b:00.0 declares SR-IOV PF 8086:10c9 but the slot holds 15b3:1017:15b3:1017; its VFs are not configured"]
    );
    let list = ok(host.root(), &["persist", "list"]);
    assert!(list.contains("warning: /etc/vfioctl/bindings.d/nic.toml:1 declares SR-IOV PF 8086:10c9 at 0000:3b:00.0, but that slot now holds 15b3:1017:15b3:1017: not configured"), "{list}");
    assert!(
        list.contains("VFS           ENFORCED") || list.contains("none present"),
        "{list}"
    );

    let run = vfioctl(host.root(), &["persist", "list"]);
    assert_eq!(run.status, 0);
    host.write(
        "etc/vfioctl/bindings.d/nic.toml",
        "[[sriov]]\naddress = \"0000:3b:00.0\"\nvendor = \"15b3\"\ndevice = \"1017\"\nnumvfs = 2\nvf_driver = \"vfio pci\"\n",
    );
    let run = vfioctl(host.root(), &["persist", "list"]);
    assert_eq!(run.status, 7, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("/etc/vfioctl/bindings.d/nic.toml:1: vf_driver = "),
        "{}",
        run.stderr
    );
}

/// Boot files do not depend on the VFs a `[[sriov]]` declaration governs:
/// they do not exist at boot until the PF's hook creates them with autoprobe
/// off, so no softdep orders their native driver; the files stay the same
/// whether VFs exist now or not, and the PF is never claimed.
#[test]
fn host_config_leaves_a_declared_pf_and_its_vfs_to_the_hook() {
    let host = topologies::sriov_nic();
    host.write(
        "etc/vfioctl/bindings.d/nic.toml",
        "[[sriov]]\naddress = \"0000:3b:00.0\"\nvendor = \"15b3\"\ndevice = \"1017\"\nnumvfs = 2\n",
    );
    let preview = ok(host.root(), &["host-config"]);
    assert!(!preview.contains("softdep mlx5_core"), "{preview}");
    assert!(!preview.contains("\"0000:3b:00."), "{preview}");
    assert!(!preview.contains("0x15b3:0x101"), "{preview}");
    let all = |run: support::cli::Run| format!("{}{}", run.stdout, run.stderr);
    assert!(!all(vfioctl(host.root(), &["host-config"])).contains("no declarations"));
    std::fs::remove_file(host.path("etc/vfioctl/bindings.d/nic.toml")).unwrap();
    assert!(all(vfioctl(host.root(), &["host-config"]))
        .contains("no declarations in /etc/vfioctl/bindings.d"));
}

const IGB_PF: &str = "0000:01:00.0";
const IGB_SRIOV: &str =
    "[[sriov]]\naddress = \"0000:01:00.0\"\nvendor = \"8086\"\ndevice = \"10c9\"\nnumvfs = 7\n";

fn igb_kernel(host: &FakeHost) -> SimKernel<'_> {
    let mut kernel = SimKernel::new(host);
    kernel.vf_native.insert(IGB_PF.into(), "igbvf".into());
    kernel
}

/// The VF drivers of the igb PF, read back from the fake tree.
fn igb_vf_drivers(host: &FakeHost) -> Vec<String> {
    let pf = host.path(&format!("sys/bus/pci/devices/{IGB_PF}"));
    (0..)
        .map_while(|i| std::fs::canonicalize(pf.join(format!("virtfn{i}"))).ok())
        .map(|vf| {
            std::fs::read_link(vf.join("driver"))
                .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
                .unwrap_or_else(|_| "none".into())
        })
        .collect()
}

/// A VF that a [[binding]] names is left to it: created with the others,
/// then bound once, to its own driver, never to vfio-pci first.
#[test]
fn a_vf_named_by_its_own_binding_is_bound_once_to_its_driver() {
    let host = topologies::igb_pf();
    host.register_driver("igbvf", Some("igbvf"));
    host.write("etc/vfioctl/bindings.d/igb.toml", IGB_SRIOV);
    host.write(
        "etc/vfioctl/bindings.d/host-vf.toml",
        "[[binding]]\nvendor = \"8086\"\ndevice = \"10ca\"\naddress = \"0000:01:00.4\"\ndriver = \"igbvf\"\n",
    );
    let kernel = igb_kernel(&host);
    let root = HostRoot::new(host.root());
    let done = apply_declarations(&root, &kernel, false, Duration::from_millis(300)).unwrap();
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    let mut want = vec!["vfio-pci"; 7];
    want[2] = "igbvf";
    assert_eq!(igb_vf_drivers(&host), want);
    let writes = kernel.writes();
    assert!(
        !writes
            .iter()
            .any(|w| w.contains("0000:01:00.4") && w.contains("vfio-pci")),
        "{writes:?}"
    );
    assert!(
        writes.iter().all(|w| !w.starts_with("autobind")),
        "{writes:?}"
    );
    // Applied again: nothing left to do, for the kept VF either.
    let start = kernel.writes().len();
    let again = apply_declarations(&root, &kernel, false, Duration::from_millis(300)).unwrap();
    assert!(again.errors.is_empty(), "{:?}", again.errors);
    assert_eq!(kernel.writes().len(), start, "{:?}", kernel.writes());
}

/// persist apply (the boot unit) creates the declared VFs with autoprobe off
/// around their creation (no native VF driver ever binds them), binds them
/// to vfio-pci, puts autoprobe back; a second apply changes nothing; a count
/// changed by hand is CRITICAL in check and put back by the next apply.
#[test]
fn persist_apply_creates_the_declared_vfs_with_no_native_bind() {
    let host = topologies::igb_pf();
    host.write("etc/vfioctl/bindings.d/igb.toml", IGB_SRIOV);
    let kernel = igb_kernel(&host);
    let root = HostRoot::new(host.root());
    let done = apply_declarations(&root, &kernel, false, Duration::from_millis(300)).unwrap();
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    assert_eq!(done.sriov.len(), 1);
    let writes = kernel.writes();
    assert_eq!(writes[0], format!("autoprobe {IGB_PF} 0"), "{writes:?}");
    assert_eq!(writes[1], format!("numvfs {IGB_PF} 7"), "{writes:?}");
    assert_eq!(writes.last().unwrap(), &format!("autoprobe {IGB_PF} 1"));
    assert!(
        writes.iter().all(|w| !w.starts_with("autobind")),
        "no native VF driver bound: {writes:?}"
    );
    assert_eq!(igb_vf_drivers(&host), vec!["vfio-pci"; 7]);
    let list = ok(host.root(), &["persist", "list"]);
    assert!(
        list.contains("0000:01:00.0  8086:10c9  7/7     auto"),
        "{list}"
    );
    assert!(
        list.contains("7/7       /etc/vfioctl/bindings.d/igb.toml:1"),
        "{list}"
    );

    let start = kernel.writes().len();
    let again = apply_declarations(&root, &kernel, false, Duration::from_millis(300)).unwrap();
    assert!(again.errors.is_empty(), "{:?}", again.errors);
    assert!(again.sriov[0].result.is_none(), "already at 7 on vfio-pci");
    assert!(again.reports.iter().all(|r| !r.plan.changes()));
    assert_eq!(kernel.writes().len(), start);

    // Removed by hand: check names declared and present; apply puts them back.
    let out = vfioctl(host.root(), &["check"]).stdout;
    assert!(
        out.contains("OK        sriov.0000:01:00.0.numvfs")
            || out
                .lines()
                .any(|l| l.starts_with("OK") && l.contains("sriov.0000:01:00.0.numvfs")),
        "{out}"
    );
    kernel.by_hand_numvfs(IGB_PF.parse().unwrap(), 0).unwrap();
    let out = vfioctl(host.root(), &["check"]).stdout;
    let count = out
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("sriov.0000:01:00.0.numvfs"))
        .unwrap();
    assert!(count.starts_with("CRITICAL"), "{out}");
    assert!(
        count.contains("declared 7 VF(s) on 0000:01:00.0, 0 present"),
        "{out}"
    );
    let done = apply_declarations(&root, &kernel, false, Duration::from_millis(300)).unwrap();
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    assert_eq!(igb_vf_drivers(&host), vec!["vfio-pci"; 7]);
}

/// `sriov --persist`: the declaration is written after the verified change
/// (through `run_then`), under its lock; it reads back as declared and the
/// rules mark the PF. A dry run declares nothing.
#[test]
fn sriov_persist_declares_the_verified_count() {
    let host = topologies::igb_pf();
    let kernel = igb_kernel(&host);
    let root = HostRoot::new(host.root());
    let spec = vfioctl::engine::sriov::SriovSpec {
        selector: "01:00.0".parse().unwrap(),
        numvfs: 3,
        vf_driver: vfioctl::model::declaration::DeclaredDriver::Auto,
        force: false,
        dry_run: false,
        timeout: Duration::from_millis(300),
        vms: vfioctl::host::vms::VmSource::Skipped,
    };
    let mut lines = Vec::new();
    let mut declare = |inv: &vfioctl::model::Inventory,
                       report: &vfioctl::engine::sriov::SriovReport|
     -> anyhow::Result<()> {
        lines = vfioctl::engine::enforce::declare_sriov(
            &root,
            inv,
            report,
            vfioctl::integrations::udev::render_rules,
        )?
        .lines;
        Ok(())
    };
    let report =
        vfioctl::engine::sriov::run_then(&root, &spec, &kernel, Some(&mut declare)).unwrap();
    assert!(vfioctl::engine::sriov::failure(&report).is_none());
    assert_eq!(
        lines[0],
        "declared 3 VF(s) of 0000:01:00.0 on vfio-pci (or its variant) in /etc/vfioctl/bindings.d/sriov-0000_01_00.0.toml"
    );
    let text = read(&host, "etc/vfioctl/bindings.d/sriov-0000_01_00.0.toml");
    assert_eq!(
        text,
        vfioctl::host::config::seal("[[sriov]]\naddress = \"0000:01:00.0\"\nvendor = \"8086\"\ndevice = \"10c9\"\nnumvfs = 3\n")
    );
    assert!(text.starts_with(
        "# Written by vfioctl persist add; remove with vfioctl persist remove. sha256="
    ));
    assert!(read(&host, "etc/udev/rules.d/69-vfioctl-bindings.rules")
        .contains("KERNEL==\"0000:01:00.0\", ATTR{vendor}==\"0x8086\", ATTR{device}==\"0x10c9\", ENV{VFIOCTL_NUMVFS}=\"3\""));
    // The count went back to 0 by hand: persist apply restores the declared 3.
    kernel.by_hand_numvfs(IGB_PF.parse().unwrap(), 0).unwrap();
    let done = apply_declarations(&root, &kernel, false, Duration::from_millis(300)).unwrap();
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    assert_eq!(igb_vf_drivers(&host), vec!["vfio-pci"; 3]);

    // A dry run through the command writes nothing, declaration included.
    let other = topologies::igb_pf();
    let run = vfioctl(
        other.root(),
        &[
            "sriov",
            "01:00.0",
            "--numvfs",
            "2",
            "--persist",
            "--dry-run",
        ],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(!other.path("etc/vfioctl/bindings.d").exists());
}

/// The udev hook on a declared PF: on "add" before its driver is bound it
/// waits for the bind event; on the bind event it creates the VFs.
#[test]
fn udev_hook_on_a_declared_pf_waits_for_its_driver() {
    let host = topologies::igb_pf();
    host.write("etc/vfioctl/bindings.d/igb.toml", IGB_SRIOV);
    std::fs::remove_file(host.path(&format!("sys/bus/pci/devices/{IGB_PF}/driver"))).unwrap();
    let run = vfioctl_env(host.root(), &["udev-hook", IGB_PF], &[("ACTION", "add")]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "SR-IOV PF 0000:01:00.0 has no driver yet; its VFs are created once it binds one"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(
        read(&host, &format!("sys/bus/pci/devices/{IGB_PF}/sriov_numvfs")).trim(),
        "0"
    );
    // Other events of undeclared devices, and "change", do nothing.
    let run = vfioctl_env(host.root(), &["udev-hook", IGB_PF], &[("ACTION", "change")]);
    assert_eq!(run.status, 0);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

/// Runs vfioctl under `umask`, as root's shell with that umask would.
fn vfioctl_umask(host: &FakeHost, umask: u32, args: &[&str]) {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_vfioctl"));
    command
        .arg("--root")
        .arg(host.root())
        .args(args)
        .env_remove("VFIOCTL_ROOT");
    // SAFETY: umask is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// #24 class 7: under root's `umask 000` the directories vfioctl makes were
/// 0777 (it then refused its own configuration; anyone could replace the
/// lock); under 077 `check` could not read them. Every directory and file
/// gets its mode whatever the umask.
#[test]
fn directories_and_files_get_their_modes_whatever_the_umask() {
    let mode = |host: &FakeHost, rel: &str| {
        std::fs::metadata(host.path(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .permissions()
            .mode()
            & 0o7777
    };
    for umask in [0o000, 0o077] {
        let host = topologies::hgx_a100();
        for made in ["etc/vfioctl", "run/vfioctl", "etc/modprobe.d", "etc/udev"] {
            assert!(!host.path(made).exists(), "{made} is vfioctl's to make");
        }
        vfioctl_umask(&host, umask, &["persist", "add", "25:00.0"]);
        vfioctl_umask(&host, umask, &["host-config", "--write"]);
        for dir in [
            "etc/vfioctl",
            "etc/vfioctl/bindings.d",
            "run/vfioctl",
            "etc/modprobe.d",
            "etc/modules-load.d",
            "etc/udev/rules.d",
        ] {
            assert_eq!(mode(&host, dir), 0o755, "{dir} under umask {umask:03o}");
        }
        for file in [
            "etc/vfioctl/bindings.d/addr-0000_25_00.0.toml",
            "etc/modprobe.d/vfioctl.conf",
            "etc/udev/rules.d/69-vfioctl-bindings.rules",
        ] {
            assert_eq!(mode(&host, file), 0o644, "{file} under umask {umask:03o}");
        }
        assert_eq!(mode(&host, "run/vfioctl/lock"), 0o600);
        // vfioctl trusts what it made.
        let list = ok(host.root(), &["persist", "list"]);
        assert!(list.contains("0000:25:00.0"), "{list}");
    }
}

/// #24 class 7: a declared driver `-n` became `echo -n > driver_override`
/// in the boot script, an empty claim. Refused where it is read (file and
/// line), and on the command line; the scripts write with printf.
#[test]
fn a_driver_name_that_reads_as_an_option_is_refused() {
    let host = topologies::hgx_a100();
    host.write(
        "etc/vfioctl/bindings.d/site.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\naddress = \"0000:25:00.0\"\ndriver = \"-n\"\n",
    );
    for args in [&["host-config", "--write"][..], &["persist", "apply"]] {
        let run = vfioctl(host.root(), args);
        assert_eq!(run.status, 7, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(
                "/etc/vfioctl/bindings.d/site.toml:1: driver = '-n' is not a driver name"
            ),
            "{}",
            run.stderr
        );
    }
    assert!(!host.path("etc/modprobe.d/vfioctl.conf").exists());
    std::fs::remove_file(host.path("etc/vfioctl/bindings.d/site.toml")).unwrap();
    let run = vfioctl(host.root(), &["persist", "add", "25:00.0", "--driver=-n"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("not starting with '-'"),
        "{}",
        run.stderr
    );
    // What is declared is written with printf, never echo.
    ok(
        host.root(),
        &["persist", "add", "25:00.0", "--driver", "pci-stub"],
    );
    std::fs::create_dir_all(host.path("etc/initramfs-tools")).unwrap();
    ok(host.root(), &["host-config", "--write"]);
    let script = read(&host, "etc/initramfs-tools/scripts/init-top/00-vfioctl");
    assert!(
        script.contains("printf '%s\\n' pci-stub > \"$dev/driver_override\""),
        "{script}"
    );
    assert!(
        script.lines().filter(|l| l.contains("echo")).count() == 1
            && script.contains("prereqs() { echo \"$PREREQ\"; }"),
        "only initramfs-tools' own prereqs line echoes: {script}"
    );
}

fn numvfs(host: &FakeHost) -> String {
    read(host, &format!("sys/bus/pci/devices/{IGB_PF}/sriov_numvfs"))
        .trim()
        .to_string()
}

/// #24 class 5: two `[[sriov]]` tables for one PF both applied (every
/// `persist apply` went 4 -> 2 -> 4, exit 0). Conflicting declarations are
/// refused when loaded: nothing is applied for the PF (apply, hook, boot
/// files), `check` is CRITICAL; identical ones apply once; a second
/// `persist apply` writes nothing.
#[test]
fn conflicting_sriov_tables_apply_nothing_for_their_pf() {
    let host = topologies::igb_pf();
    host.write(
        "etc/vfioctl/bindings.d/a.toml",
        IGB_SRIOV.replace("= 7", "= 4"),
    );
    host.write(
        "etc/vfioctl/bindings.d/b.toml",
        IGB_SRIOV.replace("= 7", "= 2"),
    );
    let kernel = igb_kernel(&host);
    let root = HostRoot::new(host.root());
    for _ in 0..2 {
        let done = apply_declarations(&root, &kernel, false, Duration::from_millis(300)).unwrap();
        assert!(done.sriov.is_empty(), "nothing applied for the PF");
        let errors: Vec<String> = done.errors.iter().map(|e| format!("{e:#}")).collect();
        assert_eq!(
            errors,
            ["/etc/vfioctl/bindings.d/b.toml:1 declares SR-IOV PF 0000:01:00.0, conflicting with /etc/vfioctl/bindings.d/a.toml:1: neither is applied until one of them goes (vfioctl persist remove, or edit by hand)"]
        );
    }
    assert!(kernel.writes().is_empty(), "{:?}", kernel.writes());
    assert_eq!(numvfs(&host), "0");
    // The command: exit 7 (the configuration), the hook too; check CRITICAL.
    let run = vfioctl(host.root(), &["persist", "apply"]);
    assert_eq!(run.status, 7, "{}", run.stderr);
    assert!(run.stderr.contains("conflicting with"), "{}", run.stderr);
    let hook = vfioctl_env(host.root(), &["udev-hook", IGB_PF], &[("ACTION", "bind")]);
    assert_ne!(hook.status, 0, "{}", hook.stderr);
    assert_eq!(numvfs(&host), "0");
    let check = vfioctl(host.root(), &["check"]);
    assert_eq!(check.status, 2, "{}", check.stdout);
    assert!(
        check.stdout.lines().any(|l| l.starts_with("CRITICAL")
            && l.contains("sriov.0000:01:00.0.duplicate")
            && l.contains("neither is applied")),
        "{}",
        check.stdout
    );

    // Identical tables: applied once; the second apply writes nothing.
    host.write(
        "etc/vfioctl/bindings.d/b.toml",
        IGB_SRIOV.replace("= 7", "= 4"),
    );
    let kernel = igb_kernel(&host);
    let done = apply_declarations(&root, &kernel, false, Duration::from_millis(300)).unwrap();
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    assert_eq!(done.sriov.len(), 1);
    assert_eq!(numvfs(&host), "4");
    let first = kernel.writes().len();
    assert!(first > 0);
    let done = apply_declarations(&root, &kernel, false, Duration::from_millis(300)).unwrap();
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    assert_eq!(
        kernel.writes().len(),
        first,
        "{:?}",
        &kernel.writes()[first..]
    );
}

/// #24 class 5: one device declared twice on different drivers: neither
/// is applied by persist apply, and host-config --write refuses.
#[test]
fn conflicting_bindings_apply_nothing_for_their_device() {
    let host = host_config_host();
    let decl = "[[binding]]\nvendor = \"8086\"\ndevice = \"1521\"\naddress = \"0000:02:00.0\"\n";
    host.write("etc/vfioctl/bindings.d/a.toml", decl);
    host.write(
        "etc/vfioctl/bindings.d/b.toml",
        format!("{decl}driver = \"pci-stub\"\n"),
    );
    let run = vfioctl(host.root(), &["persist", "apply", "--dry-run"]);
    assert_eq!(run.status, 7, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("/etc/vfioctl/bindings.d/b.toml:1 declares 0000:02:00.0, conflicting with /etc/vfioctl/bindings.d/a.toml:1"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("0000:02:00.0"), "{}", run.stdout);
    let run = vfioctl(host.root(), &["host-config", "--write"]);
    assert_eq!(run.status, 7, "{}", run.stderr);
    assert!(!host.path("etc/modprobe.d/vfioctl.conf").exists());
    let preview = ok(host.root(), &["host-config"]);
    assert!(
        !preview.contains("0000:02:00.0 0x8086"),
        "left out of the claim: {preview}"
    );
}

/// #24 class 5: vfioctl writes and removes only what it wrote, exactly.
#[test]
fn declarations_written_or_edited_by_hand_are_never_replaced_or_removed() {
    let host = topologies::hgx_a100();
    ok(host.root(), &["persist", "add", "25:00.0"]);
    let file = "etc/vfioctl/bindings.d/addr-0000_25_00.0.toml";
    let appended = format!(
        "{}\n[[binding]]\nvendor = \"10de\"\ndevice = \"1af1\"\n",
        read(&host, file)
    );
    host.write(file, &appended);
    // persist remove, bind --persist and persist add refuse it, exit 4.
    for args in [
        &["persist", "remove", "25:00.0"][..],
        &["persist", "remove", "10de:1af1"],
        &["bind", "25:00.0", "--persist", "--dry-run"],
    ] {
        let run = vfioctl(host.root(), args);
        if args.contains(&"--dry-run") {
            continue; // a dry run declares nothing
        }
        assert_eq!(run.status, 4, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("addr-0000_25_00.0.toml:") && run.stderr.contains("edited by hand"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert_eq!(read(&host, file), appended);
    // A binding the operator wrote for the same key elsewhere: vfioctl
    // makes no second one beside it (bind --persist refuses before binding).
    let host = topologies::hgx_a100();
    host.write(
        "etc/vfioctl/bindings.d/site.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\naddress = \"0000:25:00.0\"\n",
    );
    let before = read(&host, "sys/bus/pci/devices/0000:25:00.0/driver_override");
    let run = vfioctl(host.root(), &["bind", "25:00.0", "--persist"]);
    assert_eq!(run.status, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("0000:25:00.0 is already declared at /etc/vfioctl/bindings.d/site.toml:1, in a file vfioctl did not write"),
        "{}",
        run.stderr
    );
    assert_eq!(
        read(&host, "sys/bus/pci/devices/0000:25:00.0/driver_override"),
        before
    );
    assert!(!host.path(file).exists());
}

/// #24 class 5: `sriov --persist` replaced a hand-written file of the same
/// name, losing the other declarations in it. Refused before any change.
#[test]
fn sriov_persist_never_replaces_a_file_written_by_hand() {
    let host = topologies::igb_pf();
    let file = "etc/vfioctl/bindings.d/sriov-0000_01_00.0.toml";
    let mine = format!("{IGB_SRIOV}\n[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\n");
    host.write(file, &mine);
    let run = vfioctl(
        host.root(),
        &["sriov", "01:00.0", "--numvfs", "2", "--persist"],
    );
    assert_eq!(run.status, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("0000:01:00.0 is already declared at /etc/vfioctl/bindings.d/sriov-0000_01_00.0.toml:1, in a file vfioctl did not write"),
        "{}",
        run.stderr
    );
    assert_eq!(read(&host, file), mine);
    assert_eq!(numvfs(&host), "0", "nothing changed");
    // Declared by hand under another name: no second table beside it.
    std::fs::remove_file(host.path(file)).unwrap();
    host.write("etc/vfioctl/bindings.d/site.toml", IGB_SRIOV);
    let run = vfioctl(
        host.root(),
        &["sriov", "01:00.0", "--numvfs", "2", "--persist"],
    );
    assert_eq!(run.status, 4, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("0000:01:00.0 is already declared at /etc/vfioctl/bindings.d/site.toml:1"),
        "{}",
        run.stderr
    );
    assert_eq!(numvfs(&host), "0", "nothing changed");
}

/// #24 class 5: the package's purge (packaging/maint/generated.sh, run by
/// sh) removes a declaration file only while it is exactly what vfioctl
/// wrote: the same digest rule, with sha256sum.
#[test]
fn purge_removes_only_declarations_exactly_as_vfioctl_wrote_them() {
    let host = topologies::hgx_a100();
    ok(host.root(), &["persist", "add", "25:00.0", "10de:1af1"]);
    let dir = "etc/vfioctl/bindings.d";
    let appended = format!("{dir}/id-10de_1af1.toml");
    host.write(
        &appended,
        format!(
            "{}[[binding]]\nvendor = \"8086\"\ndevice = \"1521\"\n",
            read(&host, &appended)
        ),
    );
    host.write(
        &format!("{dir}/copied.toml"),
        "# Written by vfioctl persist add; remove with vfioctl persist remove.\n[[binding]]\nvendor = \"8086\"\ndevice = \"10d3\"\n",
    );
    host.write(
        &format!("{dir}/site.toml"),
        "[[binding]]\nvendor = \"8086\"\ndevice = \"10d3\"\n",
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/maint/generated.sh");
    let out = Command::new("sh")
        .arg("-c")
        .arg(". \"$0\"; vfioctl_remove_generated \"$1\"")
        .arg(script)
        .arg(host.root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("removed /etc/vfioctl/bindings.d/addr-0000_25_00.0.toml"),
        "{said}"
    );
    assert!(!host.path(&format!("{dir}/addr-0000_25_00.0.toml")).exists());
    for kept in ["id-10de_1af1.toml", "copied.toml", "site.toml"] {
        assert!(
            host.path(&format!("{dir}/{kept}")).exists(),
            "{kept}: {said}"
        );
    }
}

/// Lists every file under the fake root's etc/ and run/ (what a command wrote).
fn written_files(host: &FakeHost) -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(format!(
                    "{} {}",
                    path.display(),
                    std::fs::read_to_string(&path).unwrap_or_default().len()
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(&host.path("etc"), &mut out);
    walk(&host.path("run"), &mut out);
    out.sort();
    out
}

/// #24 class 6: `persist add/remove` and `host-config --write/--remove`
/// have `--dry-run`: the same refusals and exit statuses as the real run,
/// nothing written. And `--` ends the options: what follows is a selector,
/// never a flag.
#[test]
fn dry_runs_refuse_exactly_where_the_real_run_would() {
    let host = topologies::hgx_a100();
    let before = written_files(&host);
    // Selectors after `--`: an option-shaped one is a malformed selector.
    for args in [
        &["bind", "--dry-run", "--", "--force"][..],
        &["persist", "add", "--dry-run", "--", "--persist"],
        &["persist", "remove", "--", "--force"],
        &["unbind", "--", "--json"],
    ] {
        let run = vfioctl(host.root(), args);
        assert_eq!(run.status, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("malformed selector '--"),
            "{}",
            run.stderr
        );
    }
    let run = vfioctl(host.root(), &["bind", "--dry-run", "--", "25:00.0"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    // persist add --dry-run: says what it would declare, writes nothing.
    let out = ok(host.root(), &["persist", "add", "--dry-run", "25:00.0"]);
    assert!(out.contains("would declare 0000:25:00.0 on vfio-pci (or its variant) in /etc/vfioctl/bindings.d/addr-0000_25_00.0.toml"), "{out}");
    assert!(out.contains("dry run: nothing written"), "{out}");
    assert_eq!(written_files(&host), before);
    // host-config --write --dry-run: nothing written, exit 0.
    let out = ok(host.root(), &["host-config", "--write", "--dry-run"]);
    assert!(out.contains("dry run: nothing written"), "{out}");
    assert_eq!(written_files(&host), before);

    // Where the real run refuses, the dry run refuses the same way.
    ok(host.root(), &["persist", "add", "25:00.0"]);
    ok(host.root(), &["host-config", "--write"]);
    let file = "etc/vfioctl/bindings.d/addr-0000_25_00.0.toml";
    let mine = format!("{}# mine\n", read(&host, file));
    host.write(file, &mine);
    host.write("etc/modprobe.d/vfioctl.conf", "# the operator's\n");
    let before = written_files(&host);
    for (args, status, words) in [
        (&["persist", "add", "25:00.0"][..], 4, "already declared"),
        (&["persist", "remove", "25:00.0"], 4, "edited by hand"),
        (
            &["host-config", "--write"],
            4,
            "/etc/modprobe.d/vfioctl.conf",
        ),
        (
            &["host-config", "--remove"],
            4,
            "/etc/modprobe.d/vfioctl.conf",
        ),
        (&["persist", "add", "99:00.0"], 3, "matched no PCI function"),
    ] {
        let dry: Vec<&str> = args.iter().copied().chain(["--dry-run"]).collect();
        let real = vfioctl(host.root(), args);
        let dry = vfioctl(host.root(), &dry);
        assert_eq!(real.status, status, "{args:?}: {}", real.stderr);
        assert_eq!(dry.status, status, "{args:?} --dry-run: {}", dry.stderr);
        assert!(real.stderr.contains(words), "{args:?}: {}", real.stderr);
        assert_eq!(dry.stderr, real.stderr, "{args:?}");
        assert_eq!(written_files(&host), before, "{args:?}");
    }
    // persist remove --dry-run of a file vfioctl owns: says so, keeps it.
    ok(
        host.root(),
        &["persist", "add", "10de:1af1", "--expect", "6"],
    );
    let out = ok(
        host.root(),
        &["persist", "remove", "--dry-run", "10de:1af1"],
    );
    assert!(out.contains("would remove declaration 10de:1af1"), "{out}");
    assert!(host
        .path("etc/vfioctl/bindings.d/id-10de_1af1.toml")
        .exists());
}
