//! `vfioctl check`'s health family against fake hosts: every rule and every
//! format the kernel prints (link, AER and its baseline, reset, power, BARs,
//! SR-IOV), the thresholds file, `show`'s health section, and the
//! Prometheus series (judged by promtool when installed).

mod support;

use std::path::Path;

use support::fakehost::{Dev, FakeHost};
use support::topologies;

const GPU: &str = "0000:05:00.0";

fn check(host: &FakeHost, args: &[&str]) -> (i32, String) {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    let run = support::cli::vfioctl(host.root(), &all);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    (run.status, run.stdout)
}

fn line<'a>(out: &'a str, id: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(id))
        .unwrap_or_else(|| panic!("no check {id} in\n{out}"))
}

fn health(out: &str, family: &str, address: &str) -> String {
    line(out, &format!("health.{family}.{address}")).to_string()
}

fn json(host: &FakeHost, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["check", "--json"];
    all.extend_from_slice(args);
    let run = support::cli::vfioctl(host.root(), &all);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

/// One check of a `check --json` document, by id.
fn by_id(value: &serde_json::Value, id: &str) -> serde_json::Value {
    value["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {value}"))
        .clone()
}

/// Replaces bytes of a function's config space.
fn patch_config(host: &FakeHost, addr: &str, offset: usize, bytes: &[u8]) {
    let path = host.device_dir(addr).join("config");
    let mut config = std::fs::read(&path).unwrap();
    config[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, config).unwrap();
}

fn write_attr(host: &FakeHost, addr: &str, name: &str, text: &str) {
    std::fs::write(host.device_dir(addr).join(name), text).unwrap();
}

#[test]
fn a_link_downtrained_at_one_hop_of_two_switch_levels_is_a_warning() {
    let host = topologies::a100_two_switch_levels();
    let (_, out) = check(&host, &[]);
    let l = health(&out, "link", GPU);
    assert!(l.starts_with("OK"), "{l}");
    assert!(
        l.contains("x16 at 16.0 GT/s PCIe on 6 function(s) up to root port 0000:00:01.0 (x16, 16 GT/s expected)"),
        "{l}"
    );

    // The link between the two switches trains at x8: both its ends say so.
    host.set_link("0000:03:00.0", "16.0 GT/s PCIe", 8);
    host.set_link("0000:02:00.0", "16.0 GT/s PCIe", 8);
    let (status, out) = check(&host, &[]);
    assert!(status >= 1, "{out}");
    let l = health(&out, "link", GPU);
    assert!(l.starts_with("WARNING"), "{l}");
    assert!(
        l.contains("link degraded: x8 at 0000:03:00.0, 0000:02:00.0 (x16 expected)"),
        "{l}"
    );
    assert!(l.contains("-> a degraded link: reseat"), "{l}");

    // A switch that is only x8 capable sets the expectation instead.
    for port in ["0000:03:00.0", "0000:02:00.0"] {
        write_attr(&host, port, "max_link_width", "8\n");
    }
    let (_, out) = check(&host, &[]);
    let l = health(&out, "link", GPU);
    assert!(
        l.starts_with("OK") && l.contains("(x8, 16 GT/s expected)"),
        "{l}"
    );

    // Width 63 (a status register reading all ones) and 0 are a dead link.
    host.set_link("0000:04:00.0", "Unknown", 63);
    let (status, out) = check(&host, &[]);
    assert_eq!(status, 2, "{out}");
    let l = health(&out, "link", GPU);
    assert!(l.starts_with("CRITICAL"), "{l}");
    assert!(
        l.contains("link down: width 63 (status reads all ones) at 0000:04:00.0"),
        "{l}"
    );
    host.set_link("0000:04:00.0", "Unknown", 0);
    let (_, out) = check(&host, &[]);
    assert!(
        health(&out, "link", GPU).contains("width 0 (no link trained) at 0000:04:00.0"),
        "{out}"
    );

    // Attributes the kernel cannot read (EINVAL once it gave up on a port
    // after a failed recovery; here a read that fails): CRITICAL, not skipped.
    host.set_link("0000:04:00.0", "16.0 GT/s PCIe", 16);
    let width = host.device_dir("0000:02:00.0").join("current_link_width");
    std::fs::remove_file(&width).unwrap();
    std::fs::create_dir(&width).unwrap();
    let (_, out) = check(&host, &[]);
    let l = health(&out, "link", GPU);
    assert!(l.starts_with("CRITICAL"), "{l}");
    assert!(
        l.contains("link down: link status unreadable (the kernel cannot reach its config space: disconnected, or given up after a failed error recovery) at 0000:02:00.0"),
        "{l}"
    );

    // A port whose link capability reads 0 (a root port after a failed
    // recovery, tests/vm 88-health): the path cannot be judged.
    std::fs::remove_dir(&width).unwrap();
    host.set_link("0000:02:00.0", "16.0 GT/s PCIe", 16);
    write_attr(&host, "0000:00:01.0", "max_link_width", "0\n");
    let (_, out) = check(&host, &[]);
    let l = health(&out, "link", GPU);
    assert!(l.starts_with("UNKNOWN"), "{l}");
    assert!(
        l.contains("link capability unreadable: max_link_width reads 0 at 0000:00:01.0"),
        "{l}"
    );
}

#[test]
fn link_speed_is_judged_while_idle_in_every_kernel_format() {
    let host = topologies::a100_two_switch_levels();
    // Kernels 4.13 to 5.x print "16 GT/s"; the GPU and its port run at 8.
    for port in [
        "0000:00:01.0",
        "0000:01:00.0",
        "0000:02:00.0",
        "0000:03:00.0",
    ] {
        write_attr(&host, port, "current_link_speed", "16 GT/s\n");
        write_attr(&host, port, "max_link_speed", "16 GT/s\n");
    }
    host.set_link(GPU, "8 GT/s", 16);
    host.set_link("0000:04:00.0", "8 GT/s", 16);
    let (_, out) = check(&host, &[]);
    let l = health(&out, "link", GPU);
    assert!(l.starts_with("WARNING"), "{l}");
    assert!(
        l.contains("link slow while idle: 8 GT/s at 0000:05:00.0, 0000:04:00.0 (16 GT/s expected)"),
        "{l}"
    );
    // In use by a VM (enable count 1): its driver may lower the speed.
    write_attr(&host, GPU, "enable", "1\n");
    let (_, out) = check(&host, &[]);
    let l = health(&out, "link", GPU);
    assert!(
        l.starts_with("OK") && l.contains("slower while in use, judged when idle"),
        "{l}"
    );
    // "Unknown speed" (older kernels' dead link) parses as no speed.
    host.set_link(GPU, "Unknown speed", 63);
    let (_, out) = check(&host, &[]);
    assert!(health(&out, "link", GPU).starts_with("CRITICAL"), "{out}");

    // check.toml: speed judged always; a degraded width is CRITICAL.
    host.set_link(GPU, "8 GT/s", 8);
    host.write(
        "etc/vfioctl/check.toml",
        "[link]\nspeed = \"always\"\nwidth_below_expected = \"critical\"\n",
    );
    let (_, out) = check(&host, &[]);
    let l = health(&out, "link", GPU);
    assert!(l.starts_with("CRITICAL"), "{l}");
    assert!(l.contains("link slow while idle: 8 GT/s"), "{l}");
    assert!(
        line(&out, "config.thresholds").contains("health thresholds from /etc/vfioctl/check.toml"),
        "{out}"
    );
}

#[test]
fn a_gpu_without_link_attributes_or_in_d3cold_is_not_misjudged() {
    let mut host = FakeHost::new();
    host.iommu_unit("dmar0");
    host.add(Dev::bridge("0000:00:01.0", 0x8086, 0x347a).group(1));
    host.add(
        Dev::endpoint("0000:01:00.0", 0x10de, 0x20b0, 0x030200)
            .parent("0000:00:01.0")
            .no_link()
            .driver("vfio-pci", Some("vfio_pci"))
            .group(2),
    );
    let (_, out) = check(&host, &[]);
    assert!(
        health(&out, "link", "0000:01:00.0").contains("no PCIe link to judge"),
        "{out}"
    );
    host.write("sys/bus/pci/devices/0000:01:00.0/power_state", "D3cold\n");
    host.set_link("0000:00:01.0", "Unknown", 63);
    let (_, out) = check(&host, &[]);
    assert!(
        health(&out, "link", "0000:01:00.0").contains("in D3cold, its link is down by design"),
        "{out}"
    );
}

/// The baseline file's entry for a function, to age it as time would.
fn age_baseline(host: &FakeHost, address: &str, hours: u64) {
    let path = host.path("var/lib/vfioctl/aer-baseline.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let entry = &mut value["functions"][address];
    let since = entry["correctable_since"].as_u64().unwrap() - hours * 3600;
    entry["correctable_since"] = since.into();
    entry["taken_at"] = since.into();
    std::fs::write(&path, serde_json::to_string(&value).unwrap()).unwrap();
}

#[test]
fn aer_counts_rising_between_runs_and_a_reboot_resetting_them() {
    let host = topologies::a100_two_switch_levels();
    // Counts since enumeration before the first run raise nothing.
    host.aer_counts(GPU, &[("RxErr", 3)], &[], &[]);
    let (_, out) = check(&host, &[]);
    let l = health(&out, "aer", GPU);
    assert!(l.starts_with("OK"), "{l}");
    assert!(
        l.contains("baseline taken (first seen) on 6 function(s) up to root port 0000:00:01.0: 0 fatal, 0 nonfatal, 3 correctable since enumeration"),
        "{l}"
    );
    let (_, out) = check(&host, &[]);
    assert!(
        health(&out, "aer", GPU).contains("no new errors on 6 function(s)"),
        "{out}"
    );

    // A fatal error counted at the link partner (the downstream port).
    host.aer_counts("0000:04:00.0", &[], &[], &[("SDES", 1)]);
    let (status, out) = check(&host, &[]);
    assert_eq!(status, 2, "{out}");
    let l = health(&out, "aer", GPU);
    assert!(l.starts_with("CRITICAL"), "{l}");
    assert!(l.contains("1 new fatal error(s) at 0000:04:00.0"), "{l}");
    assert!(l.contains("--new-aer-baseline"), "{l}");
    // It stays reported: the baseline is not moved by a rise.
    let (_, out) = check(&host, &[]);
    assert!(health(&out, "aer", GPU).starts_with("CRITICAL"), "{out}");
    // A nonfatal error on the GPU itself adds a warning to it.
    host.aer_counts(GPU, &[("RxErr", 3)], &[("CmpltTO", 2)], &[]);
    let aer = by_id(&json(&host, &[]), &format!("health.aer.{GPU}"));
    assert_eq!(aer["status"], "CRITICAL");
    assert_eq!(aer["device"], GPU);
    let message = aer["message"].as_str().unwrap();
    assert!(
        message.contains("2 new nonfatal error(s) at 0000:05:00.0"),
        "{message}"
    );
    assert!(
        aer["evidence"].as_array().unwrap().iter().any(|e| e
            == "0000:04:00.0: 1 fatal, 0 nonfatal, 0 correctable; since the baseline +1, +0, +0"),
        "{aer}"
    );

    // A reboot: a new boot id and counters from zero. No false alarm, and
    // the message says the counters restarted and what the baseline held.
    host.boot_id("0b7e8a2c-1111-4222-8333-444455556666");
    host.aer_counts("0000:04:00.0", &[], &[], &[]);
    host.aer_counts(GPU, &[], &[], &[]);
    let (_, out) = check(&host, &[]);
    let l = health(&out, "aer", GPU);
    assert!(
        l.starts_with("OK")
            && l.contains("counters restarted (after a reboot): no new errors since on 6 function(s) up to root port 0000:00:01.0; the baseline held 0 fatal, 0 nonfatal, 3 correctable"),
        "{l}"
    );

    // Errors looked into: --new-aer-baseline takes them as they are.
    host.aer_counts(GPU, &[], &[], &[("MalfTLP", 1)]);
    let (_, out) = check(&host, &[]);
    assert!(health(&out, "aer", GPU).starts_with("CRITICAL"), "{out}");
    let (_, out) = check(&host, &["--new-aer-baseline"]);
    assert!(
        health(&out, "aer", GPU).contains("baseline taken (asked for)"),
        "{out}"
    );
    let (_, out) = check(&host, &[]);
    assert!(health(&out, "aer", GPU).starts_with("OK"), "{out}");

    // Counters that went down without a reboot: enumerated again (hot-plug).
    host.aer_counts(GPU, &[], &[], &[]);
    let (_, out) = check(&host, &[]);
    assert!(
        health(&out, "aer", GPU).contains("counters restarted (enumerated again)"),
        "{out}"
    );
    // Another card in the slot (other subsystem IDs): its counters started
    // at its enumeration, after the last baseline, so its errors are new.
    host.aer_counts(GPU, &[], &[], &[("MalfTLP", 4)]);
    std::fs::write(
        host.device_dir(GPU).join("subsystem_device"),
        "0x1463
",
    )
    .unwrap();
    let (status, out) = check(&host, &[]);
    assert_eq!(status, 2, "{out}");
    assert!(
        health(&out, "aer", GPU).contains("4 new fatal error(s) at 0000:05:00.0 since its counters restarted (another card: IDs changed; the baseline held 0 fatal, 0 nonfatal, 0 correctable)"),
        "{out}"
    );
}

/// The issue's case: after a re-enumeration (or a reboot) three fatal
/// errors are counted before the next run. They happened after the last
/// baseline: CRITICAL, saying the counters restarted and what the baseline
/// held, and reported on every run until --new-aer-baseline, like any rise.
#[test]
fn fatal_errors_after_a_restart_are_judged_as_new() {
    let host = topologies::a100_two_switch_levels();
    host.aer_counts(GPU, &[("RxErr", 5)], &[], &[]);
    let (_, out) = check(&host, &[]);
    assert!(health(&out, "aer", GPU).starts_with("OK"), "{out}");
    // Removed and rescanned: the counters restart at 0, then count 3 fatal
    // errors (the correctable count is below the baseline's 5).
    host.aer_counts(GPU, &[], &[], &[("SDES", 3)]);
    let (status, out) = check(&host, &[]);
    assert_eq!(status, 2, "{out}");
    let l = health(&out, "aer", GPU);
    assert!(l.starts_with("CRITICAL"), "{l}");
    assert!(
        l.contains("3 new fatal error(s) at 0000:05:00.0 since its counters restarted (enumerated again; the baseline held 0 fatal, 0 nonfatal, 5 correctable)"),
        "{l}"
    );
    assert!(l.contains("--new-aer-baseline"), "{l}");
    let aer = by_id(&json(&host, &[]), &format!("health.aer.{GPU}"));
    assert_eq!(aer["status"], "CRITICAL", "reported again: {aer}");
    assert!(
        aer["message"]
            .as_str()
            .unwrap()
            .contains("3 new fatal error(s) at 0000:05:00.0"),
        "{aer}"
    );
    // The baseline moved to the restart (all 0), not to the 3 errors.
    let baseline = std::fs::read_to_string(host.path("var/lib/vfioctl/aer-baseline.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&baseline).unwrap();
    assert_eq!(value["functions"][GPU]["totals"]["fatal"], 0, "{baseline}");
    let (_, out) = check(&host, &["--new-aer-baseline"]);
    assert!(health(&out, "aer", GPU).starts_with("OK"), "{out}");
    let (_, out) = check(&host, &[]);
    assert!(health(&out, "aer", GPU).starts_with("OK"), "{out}");

    // The same after a reboot, at the link partner: a new boot id.
    host.boot_id("0b7e8a2c-1111-4222-8333-444455556666");
    host.aer_counts(GPU, &[], &[], &[]);
    host.aer_counts("0000:04:00.0", &[], &[], &[("DLP", 3)]);
    let (status, out) = check(&host, &[]);
    assert_eq!(status, 2, "{out}");
    assert!(
        health(&out, "aer", GPU).contains(
            "3 new fatal error(s) at 0000:04:00.0 since its counters restarted (after a reboot"
        ),
        "{out}"
    );
}

#[test]
fn correctable_errors_above_a_rate_are_a_warning() {
    let host = topologies::a100_two_switch_levels();
    check(&host, &[]);
    age_baseline(&host, GPU, 2);
    host.aer_counts(GPU, &[("BadTLP", 200)], &[], &[]);
    let (status, out) = check(&host, &[]);
    let l = health(&out, "aer", GPU);
    assert!(l.starts_with("WARNING"), "{l}");
    assert!(
        l.contains("100.0 correctable error(s) per hour at 0000:05:00.0 over 2.0 h (above 60)"),
        "{l}"
    );
    assert!(status >= 1);
    // check.toml raises the threshold.
    host.write(
        "etc/vfioctl/check.toml",
        "[aer]\ncorrectable_per_hour = 100\n",
    );
    let (_, out) = check(&host, &[]);
    assert!(health(&out, "aer", GPU).starts_with("OK"), "{out}");
    // Within the first hour the rate is over one hour: 100 in a minute is 100/h.
    let fresh = topologies::a100_two_switch_levels();
    check(&fresh, &[]);
    fresh.aer_counts(GPU, &[("BadTLP", 100)], &[], &[]);
    let (_, out) = check(&fresh, &[]);
    assert!(
        health(&out, "aer", GPU)
            .contains("100.0 correctable error(s) per hour at 0000:05:00.0 over 1.0 h (above 60)"),
        "{out}"
    );
    // Past the window, the rate's reference moves to now.
    age_baseline(&fresh, GPU, 25);
    let (_, out) = check(&fresh, &[]);
    assert!(
        health(&out, "aer", GPU).starts_with("OK"),
        "100 over 25 h: {out}"
    );
    let (_, out) = check(&fresh, &[]);
    assert!(
        health(&out, "aer", GPU).starts_with("OK"),
        "renewed: no new errors since: {out}"
    );
    let baseline =
        std::fs::read_to_string(fresh.path("var/lib/vfioctl/aer-baseline.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&baseline).unwrap();
    assert_eq!(
        value["functions"][GPU]["correctable_base"], 100,
        "{baseline}"
    );
}

/// What the host cannot report by design is not UNKNOWN: the firmware
/// owning AER (no pcie002 service) and a device on a root bus are OK with
/// the reason by default, and check.toml's [not_judged] chooses otherwise.
#[test]
fn aer_the_host_cannot_report_is_not_judged() {
    let mut host = FakeHost::new();
    host.iommu_unit("dmar0");
    host.add(
        Dev::bridge("0000:00:01.0", 0x8086, 0x347a)
            .no_aer()
            .group(1),
    );
    host.add(
        Dev::endpoint("0000:01:00.0", 0x10de, 0x20b0, 0x030200)
            .parent("0000:00:01.0")
            .driver("vfio-pci", Some("vfio_pci"))
            .group(2),
    );
    // An integrated endpoint on the root bus: no root port at all.
    host.add(
        Dev::endpoint("0000:00:18.0", 0x8086, 0x10d3, 0x020000)
            .driver("vfio-pci", Some("vfio_pci"))
            .group(3),
    );
    // No AER capability anywhere on its path.
    host.add(
        Dev::bridge("0000:00:02.0", 0x8086, 0x347a)
            .no_aer()
            .group(4),
    );
    host.add(
        Dev::endpoint("0000:02:00.0", 0x8086, 0x10d3, 0x020000)
            .parent("0000:00:02.0")
            .no_aer()
            .driver("vfio-pci", Some("vfio_pci"))
            .group(5),
    );
    let (_, out) = check(&host, &[]);
    let l = health(&out, "aer", "0000:01:00.0");
    assert!(l.starts_with("OK"), "{l}");
    assert!(
        l.contains("0000:01:00.0: not judged: the OS does not own AER below root port 0000:00:01.0 (no /sys/bus/pci_express/devices/0000:00:01.0:pcie002: firmware-first, or pcie_ports=compat)"),
        "{l}"
    );
    assert!(!l.contains("->"), "no remedy while OK: {l}");
    let l = health(&out, "aer", "0000:00:18.0");
    assert!(
        l.starts_with("OK") && l.contains("not judged: on a root bus"),
        "{l}"
    );
    let l = health(&out, "aer", "0000:02:00.0");
    assert!(
        l.starts_with("OK") && l.contains("not judged: no AER counters on it"),
        "{l}"
    );
    let value = json(&host, &[]);
    let reason = |id: &str| by_id(&value, id)["not_judged"].clone();
    assert_eq!(reason("health.aer.0000:01:00.0"), "firmware_first_aer");
    assert_eq!(reason("health.aer.0000:00:18.0"), "no_root_port");
    assert_eq!(reason("health.aer.0000:02:00.0"), "no_aer_capability");
    assert_eq!(reason("health.link.0000:01:00.0"), serde_json::Value::Null);
    assert_eq!(value["not_judged"]["firmware_first_aer"], 1, "{value}");

    // An operator who wants to hear of it: WARNING with the remedy, or UNKNOWN.
    host.write(
        "etc/vfioctl/check.toml",
        "[not_judged]\nfirmware_first_aer = \"warning\"\nno_root_port = \"unknown\"\n",
    );
    let (_, out) = check(&host, &[]);
    let l = health(&out, "aer", "0000:01:00.0");
    assert!(l.starts_with("WARNING"), "{l}");
    assert!(
        l.contains("-> read the firmware's (BMC's) error log"),
        "{l}"
    );
    assert!(
        health(&out, "aer", "0000:00:18.0").starts_with("UNKNOWN"),
        "{out}"
    );
    // A value that is not a verdict is refused with file and line, and the
    // defaults judge meanwhile.
    host.write(
        "etc/vfioctl/check.toml",
        "[not_judged]\nfirmware_first_aer = \"maybe\"\n",
    );
    let (_, out) = check(&host, &[]);
    assert!(
        line(&out, "config.thresholds")
            .contains("/etc/vfioctl/check.toml:2: unknown variant `maybe`"),
        "{out}"
    );
    assert!(
        health(&out, "aer", "0000:01:00.0").starts_with("OK"),
        "{out}"
    );
}

#[test]
fn reset_methods() {
    let mut host = FakeHost::new();
    host.iommu_unit("dmar0");
    host.add(Dev::bridge("0000:00:01.0", 0x8086, 0x347a).group(1));
    host.add(
        Dev::endpoint("0000:01:00.0", 0x10de, 0x1e87, 0x030000)
            .parent("0000:00:01.0")
            .reset_method(Some("bus"))
            .driver("vfio-pci", Some("vfio_pci"))
            .group(2),
    );
    host.add(
        Dev::endpoint("0000:01:00.1", 0x10de, 0x10f8, 0x040300)
            .parent("0000:00:01.0")
            .reset_method(None)
            .driver("vfio-pci", Some("vfio_pci"))
            .group(2),
    );
    host.add(Dev::bridge("0000:00:02.0", 0x8086, 0x347a).group(3));
    host.add(
        Dev::endpoint("0000:02:00.0", 0x10de, 0x1e87, 0x030000)
            .parent("0000:00:02.0")
            .driver("nvidia", Some("nvidia"))
            .reset_method(None)
            .group(4),
    );
    let (status, out) = check(&host, &["--all"]);
    assert_eq!(status, 2, "{out}");
    let l = health(&out, "reset", "0000:01:00.1");
    assert!(l.starts_with("CRITICAL"), "{l}");
    assert!(
        l.contains("the kernel found no way to reset it (no reset_method): it cannot be safely handed from one tenant to the next"),
        "{l}"
    );
    let l = health(&out, "reset", "0000:01:00.0");
    assert!(l.starts_with("WARNING"), "{l}");
    assert!(
        l.contains("its only reset is a bus reset, which also resets 0000:01:00.1 on its bus"),
        "{l}"
    );
    // --all judges a GPU on its host driver; not passed through, no alarm.
    let l = health(&out, "reset", "0000:02:00.0");
    assert!(
        l.starts_with("OK") && l.contains("it is not passed through"),
        "{l}"
    );

    // Disabled by an admin (empty), and a kernel before 5.15 (reset only).
    write_attr(&host, "0000:01:00.0", "reset_method", "\n");
    let (_, out) = check(&host, &[]);
    let l = health(&out, "reset", "0000:01:00.0");
    assert!(
        l.starts_with("CRITICAL") && l.contains("reset_method is empty"),
        "{l}"
    );
    assert!(
        l.contains("echo default > /sys/bus/pci/devices/0000:01:00.0/reset_method"),
        "{l}"
    );
    std::fs::remove_file(host.device_dir("0000:01:00.0").join("reset_method")).unwrap();
    let (_, out) = check(&host, &[]);
    assert!(
        health(&out, "reset", "0000:01:00.0")
            .contains("resettable (this kernel does not list methods"),
        "{out}"
    );
    assert!(
        !out.contains("health.reset.0000:02:00.0"),
        "without --all a GPU on its host driver is not judged: {out}"
    );
}

#[test]
fn power_states() {
    let host = topologies::a100_two_switch_levels();
    write_attr(&host, GPU, "power_state", "error\n");
    let (_, out) = check(&host, &[]);
    let l = health(&out, "power", GPU);
    assert!(
        l.starts_with("CRITICAL") && l.contains("power state error"),
        "{l}"
    );
    write_attr(&host, GPU, "power_state", "D3cold\n");
    let (_, out) = check(&host, &[]);
    let l = health(&out, "power", GPU);
    assert!(
        l.starts_with("WARNING") && l.contains("idle in D3cold"),
        "{l}"
    );
    assert!(
        l.contains("echo 0 > /sys/bus/pci/devices/0000:05:00.0/d3cold_allowed"),
        "{l}"
    );
    write_attr(&host, GPU, "enable", "1\n");
    let (_, out) = check(&host, &[]);
    assert!(
        health(&out, "power", GPU).starts_with("OK"),
        "in use: {out}"
    );
    write_attr(&host, GPU, "enable", "0\n");
    host.write(
        "etc/vfioctl/check.toml",
        "[power]\nd3cold_idle_gpu = \"ok\"\n",
    );
    let (_, out) = check(&host, &[]);
    assert!(health(&out, "power", GPU).contains("in D3cold"), "{out}");
    assert!(health(&out, "power", GPU).starts_with("OK"), "{out}");
    std::fs::remove_file(host.device_dir(GPU).join("power_state")).unwrap();
    let (_, out) = check(&host, &[]);
    assert!(health(&out, "power", GPU).starts_with("UNKNOWN"), "{out}");
}

#[test]
fn a_gpu_off_the_bus_fails_the_bars_check() {
    let host = topologies::a100_two_switch_levels();
    let (_, out) = check(&host, &[]);
    assert!(
        health(&out, "bars", GPU).contains("config space readable, BAR0 at 0x80500000"),
        "{out}"
    );
    // A reset that was not restored: BAR0 reads 0, the kernel assigned it.
    patch_config(&host, GPU, 0x10, &[0, 0, 0, 0]);
    let (status, out) = check(&host, &[]);
    assert_eq!(status, 2);
    let l = health(&out, "bars", GPU);
    assert!(l.starts_with("CRITICAL"), "{l}");
    assert!(
        l.contains("BAR0 reads 0 although the kernel assigned it an address"),
        "{l}"
    );
    patch_config(&host, GPU, 0x10, &[0xff; 4]);
    let (_, out) = check(&host, &[]);
    assert!(
        health(&out, "bars", GPU).contains("BAR0 reads all ones"),
        "{out}"
    );
    // The ID registers read all ones too: the inventory's dead-config rule.
    patch_config(&host, GPU, 0, &[0xff; 64]);
    let (_, out) = check(&host, &[]);
    let l = health(&out, "bars", GPU);
    assert!(
        l.contains("config space reads all ones: fell off the bus"),
        "{l}"
    );
}

#[test]
fn a_pf_passed_through_with_vfs_enabled_is_critical() {
    let mut host = FakeHost::new();
    host.iommu_unit("dmar0");
    host.add(Dev::bridge("0000:00:02.0", 0x8086, 0x347a).group(1));
    host.add(
        Dev::endpoint("0000:01:00.0", 0x8086, 0x10c9, 0x020000)
            .parent("0000:00:02.0")
            .driver("vfio-pci", Some("vfio_pci"))
            .sriov(7)
            .group(2),
    );
    host.add_vf(
        Dev::endpoint("0000:01:10.0", 0x8086, 0x10ca, 0x020000)
            .vf_of("0000:01:00.0")
            .driver("vfio-pci", Some("vfio_pci"))
            .group(3),
    );
    let (status, out) = check(&host, &[]);
    assert_eq!(status, 2, "{out}");
    let l = health(&out, "sriov", "0000:01:00.0");
    assert!(l.starts_with("CRITICAL"), "{l}");
    assert!(
        l.contains("1 VF(s) enabled while the PF is on vfio-pci"),
        "{l}"
    );
    assert!(l.contains("vfioctl sriov 0000:01:00.0 --numvfs 0"), "{l}");
    // The VF is judged by its PF for the link and AER counters.
    let l = health(&out, "link", "0000:01:10.0");
    assert!(l.contains("judged by its PF 0000:01:00.0: x16"), "{l}");
    let l = health(&out, "aer", "0000:01:10.0");
    assert!(
        l.contains("judged by its PF 0000:01:00.0: baseline taken"),
        "{l}"
    );
    assert!(
        health(&out, "bars", "0000:01:10.0").contains("a VF's BARs are set in its PF"),
        "{out}"
    );
    assert!(
        health(&out, "reset", "0000:01:10.0").contains("reset by flr"),
        "{out}"
    );
}

#[test]
fn the_thresholds_file_is_trusted_like_the_declarations() {
    use std::os::unix::fs::PermissionsExt;
    let host = topologies::a100_two_switch_levels();
    host.write("etc/vfioctl/check.toml", "[aer]\nfatal = 2\n");
    let (_, out) = check(&host, &[]);
    let l = line(&out, "config.thresholds");
    assert!(l.starts_with("UNKNOWN"), "{l}");
    assert!(
        l.contains("/etc/vfioctl/check.toml:2: unknown field `fatal`"),
        "{l}"
    );
    assert!(
        health(&out, "aer", GPU).starts_with("OK"),
        "the defaults still judge: {out}"
    );
    host.write("etc/vfioctl/check.toml", "[aer]\nfatal_rise = 2\n");
    let file = host.path("etc/vfioctl/check.toml");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (_, out) = check(&host, &[]);
    assert!(
        line(&out, "config.thresholds").contains("/etc/vfioctl/check.toml is writable by everyone"),
        "{out}"
    );
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &file).unwrap();
    let (_, out) = check(&host, &[]);
    assert!(
        line(&out, "config.thresholds").contains("is a symlink"),
        "{out}"
    );
}

#[test]
fn concurrent_checks_keep_one_valid_baseline() {
    let host = topologies::a100_two_switch_levels();
    let bin = env!("CARGO_BIN_EXE_vfioctl");
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(bin)
                .args(["--root", host.root().to_str().unwrap(), "check", "--all"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        child.wait().unwrap();
    }
    let text = std::fs::read_to_string(host.path("var/lib/vfioctl/aer-baseline.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let functions = value["functions"].as_object().unwrap();
    assert_eq!(functions.len(), 8, "both GPUs and their 6 ports: {text}");
    let left: Vec<_> = std::fs::read_dir(host.path("var/lib/vfioctl"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".vfioctl-tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn without_privileges_the_baseline_is_read_not_written() {
    let host = topologies::a100_two_switch_levels();
    use std::os::unix::fs::PermissionsExt;
    let mut dir = host.root().to_path_buf();
    loop {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o755)).unwrap();
        if dir == host.root() {
            break;
        }
        dir.pop();
    }
    let unprivileged = |root: &Path| support::cli::vfioctl_as_nobody(root, &["check"]).stdout;
    let out = unprivileged(host.root());
    let l = line(&out, "health.aer_baseline");
    assert!(l.starts_with("UNKNOWN"), "{l}");
    assert!(l.contains("cannot be saved"), "{l}");
    // Once root kept one, an unprivileged check judges against it.
    check(&host, &[]);
    host.aer_counts(GPU, &[], &[], &[("DLP", 1)]);
    let out = unprivileged(host.root());
    assert!(health(&out, "aer", GPU).starts_with("CRITICAL"), "{out}");
    assert!(!out.contains("health.aer_baseline"), "{out}");
}

#[test]
fn show_prints_the_health_section() {
    let host = topologies::a100_two_switch_levels();
    host.set_link("0000:03:00.0", "16.0 GT/s PCIe", 8);
    host.aer_counts("0000:04:00.0", &[("RxErr", 2)], &[], &[]);
    let out = support::cli::ok(host.root(), &["show", GPU]);
    let section = out
        .split("Health:")
        .nth(1)
        .unwrap_or_else(|| panic!("no health section in\n{out}"));
    assert!(section.contains("WARNING  link"), "{section}");
    assert!(
        section.contains("link degraded: x8 at 0000:03:00.0"),
        "{section}"
    );
    assert!(
        section.contains("port 0000:04:00.0")
            && section.contains("AER 0 fatal, 0 nonfatal, 2 correctable (correctable RxErr 2)"),
        "{section}"
    );
    assert!(
        section
            .lines()
            .any(|l| l.contains("reset_method") && l.ends_with("flr bus")),
        "{section}"
    );
    let run = support::cli::vfioctl(host.root(), &["show", GPU, "--json"]);
    let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let health = &value["health"];
    assert_eq!(
        health["functions"][1]["address"], "0000:04:00.0",
        "{health}"
    );
    assert_eq!(
        health["functions"][2]["link"]["current_width"], 8,
        "{health}"
    );
    let link = by_id(health, &format!("health.link.{GPU}"));
    assert_eq!(link["status"], "WARNING");
    assert!(
        !host.path("var/lib/vfioctl/aer-baseline.json").exists(),
        "show never writes the baseline"
    );
}

/// `promtool`, when installed (`make test-alerts` requires it); `None`
/// (with a SKIP line) when it is not and nothing requires it.
fn promtool() -> Option<std::process::Command> {
    match std::process::Command::new("promtool")
        .arg("--version")
        .output()
    {
        Ok(_) => Some(std::process::Command::new("promtool")),
        Err(e) if std::env::var_os("VFIOCTL_REQUIRE_PROMTOOL").is_none() => {
            eprintln!("SKIP promtool: {e} (Debian: apt-get install prometheus)");
            None
        }
        Err(e) => panic!("promtool: {e}"),
    }
}

/// node_exporter's `pcidevice` labels of a sysfs device name, spelled as
/// procfs's `PciDeviceLocation.Strings()` spells them: `%04x`, `%02x`,
/// `%02x`, `%x` of the numbers it parses from the name.
fn node_exporter_location(name: &str) -> String {
    let (segment, rest) = name.split_once(':').unwrap();
    let (bus, rest) = rest.split_once(':').unwrap();
    let (device, function) = rest.split_once('.').unwrap();
    let hex = |s: &str| u32::from_str_radix(s, 16).unwrap();
    format!(
        "segment=\"{:04x}\",bus=\"{:02x}\",device=\"{:02x}\",function=\"{:x}\"",
        hex(segment),
        hex(bus),
        hex(device),
        hex(function)
    )
}

#[test]
fn prometheus_series_pass_promtool_and_join_node_exporter() {
    let host = topologies::a100_two_switch_levels();
    host.set_link("0000:03:00.0", "16.0 GT/s PCIe", 8);
    host.aer_counts("0000:04:00.0", &[("RxErr", 2)], &[], &[("DLP", 1)]);
    let (_, prom) = check(&host, &["--all", "--prometheus", "-"]);
    let at = |a: &str| format!("address=\"{a}\",{}", node_exporter_location(a));
    for want in [
        format!("vfioctl_pcie_link_width{{{}}} 8", at("0000:03:00.0")),
        format!(
            "vfioctl_pcie_link_width_expected{{{}}} 16",
            at("0000:05:00.0")
        ),
        format!("vfioctl_pcie_link_speed_gts{{{}}} 16", at("0000:05:00.0")),
        format!(
            "vfioctl_pcie_aer_errors_total{{{},severity=\"correctable\"}} 2",
            at("0000:04:00.0")
        ),
        format!(
            "vfioctl_pcie_aer_errors_total{{{},severity=\"fatal\"}} 1",
            at("0000:04:00.0")
        ),
        format!(
            "vfioctl_pcie_aer_rootport_errors_total{{{},severity=\"fatal\"}} 0",
            at("0000:00:01.0")
        ),
        format!(
            "vfioctl_device_reset_methods_info{{{},methods=\"flr bus\"}} 1",
            at("0000:05:00.0")
        ),
        format!(
            "vfioctl_device_power_state_info{{{},state=\"D0\"}} 1",
            at("0000:05:00.0")
        ),
        format!(
            "vfioctl_device_status{{check=\"health.link.0000:06:00.0\",{}}} 1",
            at("0000:06:00.0")
        ),
    ] {
        assert!(prom.contains(&want), "{want} in\n{prom}");
    }
    // No series clashes with node_exporter's names (node_*).
    let names: std::collections::BTreeSet<&str> = prom
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("vfioctl_")), "{names:?}");

    // The firmware owns AER below the root port: an info series says which
    // families are not judged and why.
    std::fs::remove_file(host.path("sys/bus/pci_express/devices/0000:00:01.0:pcie002")).unwrap();
    let (_, prom) = check(&host, &["--all", "--prometheus", "-"]);
    let info = format!(
        "vfioctl_device_not_judged_info{{check=\"health.aer.0000:05:00.0\",{},reason=\"firmware_first_aer\"}} 1",
        at("0000:05:00.0")
    );
    assert!(prom.contains(&info), "{info} in\n{prom}");

    let Some(mut promtool) = promtool() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("vfioctl.prom");
    std::fs::write(&metrics, &prom).unwrap();
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg("promtool check metrics < \"$1\"")
        .arg("sh")
        .arg(&metrics)
        .output()
        .unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // Joined with node_exporter's pcidevice series, as PromQL evaluates it
    // (promtool test rules): the series vfioctl wrote, and node_pcidevice_info
    // and node_pcidevice_max_link_width for every function of the host as
    // node_exporter would write them, scraped from one instance.
    let mut series = String::new();
    let quote = |s: &str| s.replace('\'', "''");
    for line in prom.lines().filter(|l| !l.starts_with('#')) {
        let (name_labels, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match name_labels.split_once('{') {
            Some((name, labels)) => (name, format!(",{labels}")),
            None => (name_labels, "}".to_string()),
        };
        series.push_str(&format!(
            "      - series: '{name}{{instance=\"gpu1\"{}'\n        values: '{value}'\n",
            quote(&labels)
        ));
    }
    for entry in std::fs::read_dir(host.path("sys/bus/pci/devices")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let dir = host.device_dir(&name);
        let read = |attr: &str| {
            std::fs::read_to_string(dir.join(attr))
                .unwrap()
                .trim()
                .to_string()
        };
        series.push_str(&format!(
            "      - series: 'node_pcidevice_info{{instance=\"gpu1\",{},vendor_id=\"{}\",device_id=\"{}\"}}'\n        values: '1'\n",
            node_exporter_location(&name),
            read("vendor"),
            read("device")
        ));
        if let Ok(width) = std::fs::read_to_string(dir.join("max_link_width")) {
            series.push_str(&format!(
                "      - series: 'node_pcidevice_max_link_width{{instance=\"gpu1\",{}}}'\n        values: '{}'\n",
                node_exporter_location(&name),
                width.trim()
            ));
        }
    }
    let gpu = node_exporter_location("0000:05:00.0");
    let tests = format!(
        r#"tests:
  - interval: 1m
    input_series:
{series}    promql_expr_test:
      # The README's join: each device verdict with node_exporter's IDs.
      - expr: vfioctl_device_status{{check="health.aer.0000:05:00.0"}} * on(instance, segment, bus, device, function) group_left(vendor_id, device_id) node_pcidevice_info
        eval_time: 0m
        exp_samples:
          - labels: '{{instance="gpu1",check="health.aer.0000:05:00.0",address="0000:05:00.0",{gpu},vendor_id="0x10de",device_id="0x20b0"}}'
            value: 0
      # Hops running narrower than node_exporter says they can.
      - expr: vfioctl_pcie_link_width < on(instance, segment, bus, device, function) node_pcidevice_max_link_width
        eval_time: 0m
        exp_samples:
          - labels: '{{instance="gpu1",{}}}'
            value: 8
      # Both GPUs below the root port without its AER service.
      - expr: count(vfioctl_device_not_judged_info{{reason="firmware_first_aer"}} * on(instance, segment, bus, device, function) group_left node_pcidevice_info)
        eval_time: 0m
        exp_samples:
          - labels: '{{}}'
            value: 2
"#,
        node_exporter_location("0000:03:00.0"),
    );
    let file = dir.path().join("join.test.yml");
    std::fs::write(&file, tests).unwrap();
    let output = promtool
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "promtool test rules:\n{}{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(&file).unwrap()
    );
}
