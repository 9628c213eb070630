//! `vfioctl reset` end to end on a fake host: every refusal (a host driver,
//! a function a bus reset also resets on a host driver, a holder, a running
//! domain from libvirt's test driver, no method, an empty reset_method, an
//! unknown method, a method the device does not list), a verified reset
//! and its JSON, a reset that fails verification (CRITICAL in `check` until
//! a later reset verifies it), a reset that does not return by the deadline
//! (exit 8, found by `check`, put back by `recover`), a reset_method that
//! cannot be put back (exit 6, recorded until `recover`), and a reset killed
//! (SIGKILL) at each step boundary, found by `check` and `recover`.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::cli::{vfioctl, Run};
use support::fakehost::{Dev, FakeHost};
use support::golden;
use support::killpoint::{self, KillAt};
use support::simkernel::SimKernel;
use vfioctl::engine::recover::{self, RecoverSpec};
use vfioctl::engine::reset::{self, ResetSpec};
use vfioctl::host::kernel::PciKernel;
use vfioctl::host::state;
use vfioctl::host::HostRoot;
use vfioctl::model::reset::ResetMethod;

const TIMEOUT: Duration = Duration::from_millis(300);

/// A URI for libvirt's test driver serving tests/fixtures/libvirt/reset.xml.
fn test_uri() -> String {
    format!(
        "test://{}/tests/fixtures/libvirt/reset.xml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// One function behind its own root port `00:NN.0`, in group `group`.
fn behind_port(host: &mut FakeHost, port: u8, dev: Dev, group: u32) {
    let port = format!("0000:00:{port:02x}.0");
    if host.path(&format!("sys/bus/pci/devices/{port}")).exists() {
        host.add(dev.parent(&port).group(group));
        return;
    }
    host.add(Dev::bridge(&port, 0x8086, 0x1901).group(100 + group));
    host.add(dev.parent(&port).group(group));
}

fn vfio(addr: &str, vendor: u16, device: u16, class: u32) -> Dev {
    Dev::endpoint(addr, vendor, device, class)
        .driver("vfio-pci", Some("vfio_pci"))
        .driver_override("vfio-pci")
}

/// One case per rule, each device behind its own root port:
/// 01:00.0 on vfio-pci (flr bus, alone on its bus); 02:00.0 a GPU on
/// vfio-pci (pm bus) beside its audio function on snd_hda_intel; 03:00.0
/// with an empty reset_method; 04:00.0 an NVMe on nvme; 05:00.0 held by a
/// process through /dev/vfio/15; 06:00.0 used by a running domain; 07:00.0
/// on no driver (flr pm), named by a stopped domain; 08:00.0 without
/// reset_method or reset.
fn reset_lab() -> FakeHost {
    let mut host = FakeHost::with_vfio();
    behind_port(
        &mut host,
        1,
        vfio("0000:01:00.0", 0x8086, 0x10d3, 0x020000),
        11,
    );
    behind_port(
        &mut host,
        2,
        vfio("0000:02:00.0", 0x10de, 0x1e87, 0x030000).reset_method(Some("pm bus")),
        12,
    );
    behind_port(
        &mut host,
        2,
        Dev::endpoint("0000:02:00.1", 0x10de, 0x10f8, 0x040300)
            .driver("snd_hda_intel", Some("snd_hda_intel"))
            .supplier("0000:02:00.0"),
        13,
    );
    behind_port(
        &mut host,
        3,
        vfio("0000:03:00.0", 0x8086, 0x10d3, 0x020000).reset_method(Some("")),
        14,
    );
    behind_port(
        &mut host,
        4,
        Dev::endpoint("0000:04:00.0", 0x144d, 0xa80a, 0x010802)
            .driver("nvme", Some("nvme"))
            .reset_method(Some("flr")),
        15,
    );
    behind_port(
        &mut host,
        5,
        vfio("0000:05:00.0", 0x8086, 0x10d3, 0x020000).reset_method(Some("flr")),
        16,
    );
    behind_port(
        &mut host,
        6,
        vfio("0000:06:00.0", 0x8086, 0x10d3, 0x020000).reset_method(Some("flr")),
        17,
    );
    behind_port(
        &mut host,
        7,
        Dev::endpoint("0000:07:00.0", 0x1b36, 0x0010, 0x010802).reset_method(Some("flr pm")),
        18,
    );
    behind_port(
        &mut host,
        8,
        vfio("0000:08:00.0", 0x8086, 0x10d3, 0x020000).reset_method(None),
        19,
    );
    for group in [11, 12, 14, 16, 17, 19] {
        host.write(&format!("dev/vfio/{group}"), "");
    }
    host.process(4242, "qemu-system-x86", &["/dev/null", "/dev/vfio/16"]);
    host
}

fn run(host: &FakeHost, args: &[&str]) -> Run {
    let uri = test_uri();
    let mut all = vec!["--connect", uri.as_str()];
    all.extend_from_slice(args);
    vfioctl(host.root(), &all)
}

/// `$ vfioctl ARGS`, the exit status, stdout and stderr, as a golden file shows them.
fn transcript(host: &FakeHost, cases: &[&[&str]]) -> String {
    portable(
        &support::cli::transcript(cases, |args| run(host, args)),
        host.root(),
    )
}

fn portable(text: &str, root: &Path) -> String {
    let text = text
        .replace(env!("CARGO_MANIFEST_DIR"), "SRC")
        .replace(&root.display().to_string(), "ROOT");
    timeless(&text)
}

/// `text` with each PID after "PID " and each UTC time
/// (`2026-11-24T16:28:21Z`) masked: they differ per run.
fn timeless(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("PID ") {
            let digits = after.chars().take_while(char::is_ascii_digit).count();
            if digits > 0 {
                out.push_str("PID N");
                rest = &after[digits..];
                continue;
            }
        }
        let b = rest.as_bytes();
        let time = b.len() >= 20
            && b[4] == b'-'
            && b[10] == b'T'
            && b[19] == b'Z'
            && b[..4].iter().all(u8::is_ascii_digit);
        if time {
            out.push_str("TIME");
            rest = &rest[20..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn read(host: &FakeHost, addr: &str, attr: &str) -> String {
    std::fs::read_to_string(host.path(&format!("sys/bus/pci/devices/{addr}/{attr}")))
        .unwrap()
        .trim()
        .to_string()
}

/// `check --json`'s checks whose id starts with `prefix`: "ID STATUS".
fn checks(host: &FakeHost, prefix: &str) -> Vec<String> {
    let r = run(host, &["check", "--json"]);
    let doc: Value = serde_json::from_str(&r.stdout).expect(&r.stderr);
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"].as_str().unwrap().starts_with(prefix))
        .map(|c| {
            format!(
                "{} {}",
                c["id"].as_str().unwrap(),
                c["status"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn every_refusal_names_the_device_and_the_rule_and_writes_nothing() {
    let host = reset_lab();
    let text = transcript(
        &host,
        &[
            &["reset", "0000:04:00.0"],
            &["reset", "0000:02:00.0"],
            &["reset", "0000:02:00.0", "--method", "pm", "--dry-run"],
            &["reset", "0000:05:00.0"],
            &["reset", "0000:06:00.0"],
            &["reset", "0000:03:00.0"],
            &["reset", "0000:08:00.0"],
            &["reset", "0000:07:00.0", "--method", "warp"],
            &["reset", "0000:07:00.0", "--method", "bus"],
            &["reset", "0000:04:00.0", "--json"],
            &["reset", "0000:07:00.0", "--dry-run"],
        ],
    );
    golden::check("reset_refusals.txt", &text);
    // Nothing was written: no reset, no record.
    for addr in ["0000:02:00.0", "0000:04:00.0", "0000:07:00.0"] {
        assert_eq!(read(&host, addr, "reset"), "", "{addr}");
    }
    assert_eq!(read(&host, "0000:02:00.0", "reset_method"), "pm bus");
    assert!(!host.path("var/lib/vfioctl/reset.json").exists());
    assert!(state::read_record(&HostRoot::new(host.root()))
        .unwrap()
        .intent
        .is_none());
}

#[test]
fn a_verified_reset_is_reported_recorded_and_ok_in_check() {
    let host = reset_lab();
    let r = run(&host, &["reset", "0000:07:00.0"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let mut text = format!("$ vfioctl reset 0000:07:00.0\n{}", r.stdout);
    // --method: that method only, reset_method put back.
    let r = run(
        &host,
        &["reset", "0000:01:00.0", "--method", "flr", "--json"],
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    golden::check("reset_verified.json", &portable(&r.stdout, host.root()));
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["result"]["devices"][0]["status"], "verified");
    assert_eq!(read(&host, "0000:01:00.0", "reset_method"), "flr bus");
    assert_eq!(read(&host, "0000:01:00.0", "reset"), "1");
    let r = run(&host, &["recover", "--dry-run"]);
    text.push_str(&format!("$ vfioctl recover --dry-run\n{}", r.stdout));
    golden::check("reset_verified.txt", &portable(&text, host.root()));
    assert_eq!(
        checks(&host, "reset."),
        ["reset.0000:01:00.0 OK", "reset.0000:07:00.0 OK"]
    );
}

fn spec(addr: &str, method: Option<ResetMethod>) -> ResetSpec {
    ResetSpec {
        selectors: vec![addr.parse().unwrap()],
        method,
        dry_run: false,
        timeout: TIMEOUT,
        vms: vfioctl::host::vms::VmSource::Skipped,
    }
}

#[test]
fn a_device_that_fails_verification_is_critical_until_a_reset_verifies_it() {
    let host = reset_lab();
    let root = HostRoot::new(host.root());
    let dir = host.path("sys/bus/pci/devices/0000:07:00.0");
    let saved: Vec<(&str, Vec<u8>)> = [
        "config",
        "current_link_speed",
        "current_link_width",
        "power_state",
    ]
    .into_iter()
    .map(|f| (f, std::fs::read(dir.join(f)).unwrap()))
    .collect();
    let mut kernel = SimKernel::new(&host);
    kernel.faults.reset_breaks.insert("0000:07:00.0".into());
    let report = reset::run(&root, &spec("07:00.0", None), &kernel).unwrap();
    let failed = reset::failure(&report).expect("unfit");
    assert!(!failed.pending && !failed.rollback_failed);
    let mut text = vfioctl::output::reset::render(&report);
    text.push_str(&format!("error: {}\n", failed.message));
    golden::check("reset_unfit.txt", &portable(&text, host.root()));
    assert_eq!(checks(&host, "reset."), ["reset.0000:07:00.0 CRITICAL"]);
    // Another reset of the same dead device: still unfit.
    kernel.faults.reset_breaks.clear();
    let report = reset::run(&root, &spec("07:00.0", None), &kernel).unwrap();
    assert!(reset::failure(&report).is_some());
    assert_eq!(checks(&host, "reset."), ["reset.0000:07:00.0 CRITICAL"]);
    // It came back (a reset that works): verified, OK.
    for (f, bytes) in &saved {
        std::fs::write(dir.join(f), bytes).unwrap();
    }
    let report = reset::run(&root, &spec("07:00.0", None), &kernel).unwrap();
    assert!(
        reset::failure(&report).is_none(),
        "{:?}",
        reset::failure(&report)
    );
    assert_eq!(checks(&host, "reset."), ["reset.0000:07:00.0 OK"]);
    assert_eq!(
        kernel.writes(),
        [
            "reset 0000:07:00.0",
            "reset 0000:07:00.0",
            "reset 0000:07:00.0"
        ]
    );
}

#[test]
fn a_reset_past_the_deadline_is_pending_exit_8_found_by_check_and_put_back_by_recover() {
    let host = reset_lab();
    let reset_file = host.path("sys/bus/pci/devices/0000:01:00.0/reset");
    std::fs::remove_file(&reset_file).unwrap();
    nix::unistd::mkfifo(&reset_file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let r = run(
        &host,
        &["reset", "0000:01:00.0", "--method", "flr", "--timeout", "1"],
    );
    // The helper holding the blocked write is released whatever happens.
    let mut written = String::new();
    let release = || {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(&reset_file)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    if r.status != 8 {
        written = release();
    }
    assert_eq!(r.status, 8, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("PENDING: the reset is still in the kernel"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains("the reset did not return within 1s and is still pending in the kernel"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("puts reset_method back"), "{}", r.stderr);
    // reset_method stays as the pending reset needs it; the intent stays.
    assert_eq!(read(&host, "0000:01:00.0", "reset_method"), "flr");
    let root = HostRoot::new(host.root());
    let intent = state::read_record(&root).unwrap().intent.unwrap();
    assert!(intent.reset.as_ref().unwrap().devices[0].pending);
    let interrupted = run(&host, &["check", "--json"]);
    assert_eq!(interrupted.status, 2);
    assert!(
        interrupted
            .stdout
            .contains("vfioctl stopped waiting for its reset, which may still be in the kernel; reset_method narrowed to flr (before: flr bus)"),
        "{}",
        interrupted.stdout
    );
    assert_eq!(
        checks(&host, "reset."),
        ["reset.0000:01:00.0 CRITICAL"],
        "pending: not verified"
    );
    let next = run(&host, &["reset", "0000:07:00.0"]);
    assert_eq!(next.status, 4, "{}", next.stderr);
    assert!(next.stderr.contains("run `vfioctl recover` first"));
    if written.is_empty() {
        written = release();
    }
    assert_eq!(
        written, "1",
        "the pending reset lands once the lock is free"
    );
    std::fs::remove_file(&reset_file).unwrap();
    std::fs::write(&reset_file, "").unwrap();
    let r = run(&host, &["recover"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let mut text = format!("$ vfioctl recover\n{}", r.stdout);
    assert_eq!(read(&host, "0000:01:00.0", "reset_method"), "flr bus");
    assert_eq!(checks(&host, "change."), Vec::<String>::new());
    assert_eq!(checks(&host, "reset."), ["reset.0000:01:00.0 CRITICAL"]);
    let r = run(&host, &["check"]);
    text.push_str(
        &r.stdout
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|id| id.starts_with("reset."))
            })
            .map(|l| format!("{}\n", l.split_whitespace().collect::<Vec<_>>().join(" ")))
            .collect::<String>(),
    );
    golden::check("reset_pending_recovered.txt", &portable(&text, host.root()));
    // A reset that verifies it clears it.
    assert_eq!(run(&host, &["reset", "0000:01:00.0"]).status, 0);
    assert_eq!(checks(&host, "reset."), ["reset.0000:01:00.0 OK"]);
}

#[test]
fn a_reset_method_that_cannot_be_put_back_exits_6_and_stays_recorded_for_recover() {
    let host = reset_lab();
    let dir = host.path("sys/bus/pci/devices/0000:01:00.0");
    let reset_file = dir.join("reset");
    std::fs::remove_file(&reset_file).unwrap();
    nix::unistd::mkfifo(&reset_file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Once reset_method is narrowed, and before the reset's write can open
    // `reset` (a FIFO: its open waits for this reader), reset_method becomes
    // something no write lands in (a directory): putting it back fails.
    let swap = {
        let (reset_file, method) = (reset_file.clone(), dir.join("reset_method"));
        std::thread::spawn(move || {
            let given_up = std::time::Instant::now() + Duration::from_secs(30);
            while std::fs::read_to_string(&method).unwrap().trim() != "flr" {
                assert!(std::time::Instant::now() < given_up, "never narrowed");
                std::thread::sleep(Duration::from_millis(5));
            }
            std::fs::remove_file(&method).unwrap();
            std::fs::create_dir(&method).unwrap();
            std::fs::read_to_string(&reset_file).unwrap()
        })
    };
    let r = run(
        &host,
        &["reset", "0000:01:00.0", "--method", "flr", "--timeout", "5"],
    );
    assert_eq!(swap.join().unwrap(), "1");
    assert_eq!(r.status, 6, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("0000:01:00.0: reset_method could not be put back (",)
            && r.stderr
                .contains("the reset stays recorded and vfioctl recover puts it back"),
        "{}",
        r.stderr
    );
    // Recorded: check finds it, other changes wait for recover.
    let interrupted = run(&host, &["check"]);
    assert_eq!(interrupted.status, 2, "{}", interrupted.stdout);
    assert_eq!(run(&host, &["reset", "0000:07:00.0"]).status, 4);
    // Once the cause is gone, recover puts the device's reset_method back.
    std::fs::remove_dir(dir.join("reset_method")).unwrap();
    std::fs::write(dir.join("reset_method"), "flr\n").unwrap();
    std::fs::remove_file(&reset_file).unwrap();
    std::fs::write(&reset_file, "").unwrap();
    let r = run(&host, &["recover"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(read(&host, "0000:01:00.0", "reset_method"), "flr bus");
    assert_eq!(checks(&host, "change."), Vec::<String>::new());
}

// --- killed at every step boundary -----------------------------------------

fn reset_change(root: &Path, kernel: &dyn PciKernel) {
    let report = reset::run(
        &HostRoot::new(root),
        &spec("01:00.0", Some(ResetMethod::Flr)),
        kernel,
    )
    .unwrap();
    assert!(reset::failure(&report).is_none());
}

#[test]
fn child_reset() {
    if let Some((root, at)) = killpoint::child() {
        let host = FakeHost::attach(&root);
        let sim = SimKernel::new(&host);
        reset_change(&root, &KillAt::new(&sim, Some(at)));
    }
}

#[test]
fn a_reset_killed_at_every_step_is_found_by_check_and_recovered() {
    let scratch = reset_lab();
    let sim = SimKernel::new(&scratch);
    let counted = KillAt::new(&sim, None);
    reset_change(scratch.root(), &counted);
    let points = killpoint::boundaries(&counted.calls());
    // reset_method flr, reset, reset_method back, the end (verified).
    assert_eq!(points.len(), 4, "{:?}", counted.calls());
    for at in points {
        let host = reset_lab();
        let kernel = SimKernel::new(&host);
        assert_eq!(
            killpoint::run_child("child_reset", host.root(), at),
            Some(libc::SIGKILL)
        );
        let root = HostRoot::new(host.root());
        let intent = state::read_record(&root).unwrap().intent.unwrap();
        assert_eq!(intent.command, "reset");
        let r = run(&host, &["check", "--json"]);
        assert_eq!(r.status, 2, "killed before call {at}");
        let doc: Value = serde_json::from_str(&r.stdout).unwrap();
        let interrupted: Vec<&Value> = doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["id"] == "change.interrupted")
            .collect();
        assert_eq!(interrupted.len(), 1, "{interrupted:?}");
        assert_eq!(interrupted[0]["device"], "0000:01:00.0");
        let message = interrupted[0]["message"].as_str().unwrap();
        assert!(
            message.contains("vfioctl reset (PID")
                && message.contains("whether it was reset, and how it came back, is unknown"),
            "{message}"
        );
        assert!(interrupted[0]["remedy"]
            .as_str()
            .unwrap()
            .starts_with("run vfioctl recover"));
        let refused = run(&host, &["reset", "0000:07:00.0"]);
        assert_eq!(refused.status, 4, "{}", refused.stderr);
        let dry = run(&host, &["recover", "--dry-run", "--json"]);
        assert_eq!(dry.status, 0, "{}", dry.stderr);
        let doc: Value = serde_json::from_str(&dry.stdout).unwrap();
        assert_eq!(doc["state"], "interrupted");
        assert_eq!(doc["interrupted"]["command"], "reset");
        assert_eq!(doc["reset"]["devices"][0]["address"], "0000:01:00.0");
        let narrowed = read(&host, "0000:01:00.0", "reset_method") == "flr";
        assert_eq!(narrowed, at == 4 || at == 5, "killed before call {at}");
        let report = recover::run(
            &root,
            &RecoverSpec {
                dry_run: false,
                force: false,
                forget: false,
                timeout: TIMEOUT,
                vms: vfioctl::host::vms::VmSource::Skipped,
            },
            &kernel,
        )
        .unwrap();
        assert!(recover::failure(&report).is_none());
        let put_back = report.reset.as_ref().unwrap().devices[0]
            .reset_method
            .clone();
        assert_eq!(put_back.is_some(), narrowed, "killed before call {at}");
        assert_eq!(read(&host, "0000:01:00.0", "reset_method"), "flr bus");
        assert!(state::read_record(&root).unwrap().intent.is_none());
        assert_eq!(checks(&host, "change."), Vec::<String>::new());
        assert_eq!(checks(&host, "reset."), ["reset.0000:01:00.0 CRITICAL"]);
        // The next reset verifies it.
        let report = reset::run(&root, &spec("01:00.0", None), &kernel).unwrap();
        assert!(reset::failure(&report).is_none());
        assert_eq!(checks(&host, "reset."), ["reset.0000:01:00.0 OK"]);
    }
}

#[test]
fn check_judges_a_reset_device_on_no_driver_too() {
    // `check` reads in depth only what some check looks at: a device with a
    // reset outcome is among them even with no driver (and so not judged
    // for health).
    let host = support::topologies::disks_and_nic();
    host.unbind("0000:02:00.0");
    let root = HostRoot::new(host.root());
    let entry = vfioctl::model::reset::ResetEntry {
        outcome: vfioctl::model::reset::Outcome::Unfit,
        at: 1_795_537_701,
        boot_id: None,
        ids: "144d:a80a".into(),
        method: None,
        findings: vec!["config space reads all ones".into()],
    };
    vfioctl::host::reset::save_state(
        &root,
        &std::collections::BTreeMap::from([("0000:02:00.0".parse().unwrap(), entry)]),
    )
    .unwrap();
    assert_eq!(checks(&host, "reset."), ["reset.0000:02:00.0 CRITICAL"]);
}
