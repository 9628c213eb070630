//! vfioctl's state (/run/vfioctl: the change lock and record;
//! /var/lib/vfioctl: the AER baseline and its lock) trusted like the
//! declarations (#31): a FIFO or a device where a state file belongs is
//! refused, never opened to wait on, so `bind --timeout 2`, `check` and
//! `recover` return; a state directory owned by another user, a file others
//! may write, a symlinked record: refused with exit 7, naming the path and
//! the fix, and nothing is acted on.

mod support;

use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::cli::{vfioctl, Run};
use support::fakehost::FakeHost;
use support::topologies;
use vfioctl::host::state::{self, ChangeRecord, Intent, IntentDevice, StateError};
use vfioctl::host::HostRoot;
use vfioctl::model::driver::Binding;
use vfioctl::model::DriverName;

/// Runs `vfioctl --root ROOT ARGS...`; a run still going after a minute is
/// killed and fails the test. A hang guard, not a timing check: each run
/// here ends in well under a second, or never (a blocking open).
fn bounded(root: &Path, args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("VFIOCTL_ROOT")
        .env_remove("VFIOCTL_CONNECT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vfioctl");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vfioctl {args:?} hung (killed after a minute)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    Run {
        status: output.status.code().expect("exit status"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 output"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 errors"),
    }
}

fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// A refusal: exit 7, one line on stderr holding every `wanted` text.
fn refused(run: &Run, wanted: &[&str]) {
    assert_eq!(run.status, 7, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    for text in wanted {
        assert!(run.stderr.contains(text), "{text}: {}", run.stderr);
    }
}

/// An interrupted bind of the workstation's GPU (its process long gone).
fn interrupted(host: &FakeHost) {
    let root = HostRoot::new(host.root());
    let intent = Intent {
        command: "bind".into(),
        pid: 999_999,
        process_start: None,
        boot_id: None,
        started_at: 1_795_537_701,
        devices: vec![IntentDevice {
            address: "0000:01:00.0".parse().unwrap(),
            before: Binding {
                driver: Some(DriverName::new("nvidia")),
                driver_override: None,
            },
            target: Binding {
                driver: Some(DriverName::vfio_pci()),
                driver_override: Some(DriverName::vfio_pci()),
            },
        }],
        sriov: None,
        reset: None,
    };
    let record = ChangeRecord {
        intent: Some(intent),
        ..ChangeRecord::default()
    };
    state::write_record(&root, &record).unwrap();
    assert!(state::read_record(&root).unwrap().intent.is_some());
}

fn untrusted(root: &Path) -> (String, String) {
    match state::read_record(&HostRoot::new(root)) {
        Err(StateError::Untrusted { path, why, .. }) => (path, why),
        other => panic!("expected an untrusted record, got {other:?}"),
    }
}

#[test]
fn a_fifo_at_the_change_lock_is_refused_not_waited_on() {
    let host = topologies::workstation_gpu();
    mkfifo(&host.path("run/vfioctl/lock"));
    // Before: opening the FIFO for writing waited for a reader, forever.
    let run = bounded(
        host.root(),
        &["--no-libvirt", "bind", "01:00.0", "--timeout", "2"],
    );
    refused(
        &run,
        &[
            "/run/vfioctl/lock is not trusted: a FIFO, not a regular file",
            "(rm /run/vfioctl/lock): vfioctl recreates it",
        ],
    );
    // persist add waits up to a minute for the lock: refused at once too.
    let run = bounded(host.root(), &["persist", "add", "01:00.0"]);
    refused(&run, &["/run/vfioctl/lock is not trusted: a FIFO"]);
    assert!(
        !host.path("etc/vfioctl/bindings.d").exists(),
        "nothing declared"
    );
    // A device node there is judged without being opened.
    std::fs::remove_file(host.path("run/vfioctl/lock")).unwrap();
    nix::sys::stat::mknod(
        &host.path("run/vfioctl/lock"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let run = bounded(
        host.root(),
        &["--no-libvirt", "bind", "01:00.0", "--timeout", "2"],
    );
    refused(
        &run,
        &["/run/vfioctl/lock is not trusted: a character device"],
    );
    // A symlink planted there is not followed, and its target not created.
    std::fs::remove_file(host.path("run/vfioctl/lock")).unwrap();
    let target = host.path("planted-lock");
    symlink(&target, host.path("run/vfioctl/lock")).unwrap();
    let run = bounded(
        host.root(),
        &["--no-libvirt", "bind", "01:00.0", "--timeout", "2"],
    );
    refused(
        &run,
        &["/run/vfioctl/lock is not trusted: a symlink, which vfioctl never follows"],
    );
    assert!(!target.exists());
    assert_eq!(
        std::fs::read_link(host.path("sys/bus/pci/devices/0000:01:00.0/driver"))
            .unwrap()
            .file_name()
            .unwrap(),
        "nvidia",
        "nothing written"
    );
}

#[test]
fn a_fifo_at_the_record_is_refused_by_check_recover_and_every_change() {
    let host = topologies::workstation_gpu();
    mkfifo(&host.path("run/vfioctl/changes.json"));
    let (path, why) = untrusted(host.root());
    assert_eq!(path, "/run/vfioctl/changes.json");
    assert_eq!(why, "a FIFO, not a regular file");
    // check returns (what it reports of the record is check's own).
    let run = bounded(host.root(), &["check"]);
    assert!(
        (0..=3).contains(&run.status),
        "{}{}",
        run.stdout,
        run.stderr
    );
    for args in [
        &["recover"][..],
        &["recover", "--dry-run"],
        &["--no-libvirt", "bind", "01:00.0", "--timeout", "2"],
        &["bind", "01:00.0", "--dry-run"],
    ] {
        let run = bounded(host.root(), args);
        refused(
            &run,
            &[
                "/run/vfioctl/changes.json is not trusted: a FIFO, not a regular file",
                "(rm /run/vfioctl/changes.json)",
            ],
        );
    }
}

#[test]
fn a_fifo_at_the_aer_baseline_lock_does_not_hang_check() {
    let host = topologies::a100_two_switch_levels();
    mkfifo(&host.path("var/lib/vfioctl/aer-baseline.lock"));
    let run = bounded(host.root(), &["check"]);
    let line = run
        .stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("health.aer_baseline"))
        .unwrap_or_else(|| panic!("no health.aer_baseline in {}", run.stdout));
    assert!(line.starts_with("UNKNOWN"), "{line}");
    assert!(
        line.contains(
            "/var/lib/vfioctl/aer-baseline.lock is not trusted: a FIFO, not a regular file"
        ),
        "{line}"
    );
    assert!(!host.path("var/lib/vfioctl/aer-baseline.json").exists());
    // Once it is gone, the baseline is taken as before.
    std::fs::remove_file(host.path("var/lib/vfioctl/aer-baseline.lock")).unwrap();
    bounded(host.root(), &["check"]);
    assert!(host.path("var/lib/vfioctl/aer-baseline.json").exists());
}

#[test]
fn a_state_directory_owned_by_another_user_is_not_acted_on() {
    let host = topologies::workstation_gpu();
    interrupted(&host);
    chown(host.path("run/vfioctl"), Some(1000), Some(1000)).unwrap();
    let (path, why) = untrusted(host.root());
    assert_eq!(path, "/run/vfioctl");
    assert_eq!(why, "owned by uid 1000, not root");
    // Before: recover put the GPU "back" from that user's record.
    for args in [
        &["recover"][..],
        &["recover", "--dry-run"],
        &["recover", "--forget"],
    ] {
        let run = bounded(host.root(), args);
        refused(
            &run,
            &[
                "/run/vfioctl is not trusted: owned by uid 1000, not root",
                "(rm -r /run/vfioctl): vfioctl recreates it",
            ],
        );
    }
    // Nor does a change take the lock in it.
    let run = bounded(
        host.root(),
        &["--no-libvirt", "bind", "01:00.0", "--timeout", "2"],
    );
    refused(&run, &["/run/vfioctl is not trusted: owned by uid 1000"]);
    // The file itself owned by another user, in root's directory: the same.
    chown(host.path("run/vfioctl"), Some(0), Some(0)).unwrap();
    chown(
        host.path("run/vfioctl/changes.json"),
        Some(1000),
        Some(1000),
    )
    .unwrap();
    assert_eq!(
        untrusted(host.root()),
        (
            "/run/vfioctl/changes.json".to_string(),
            "owned by uid 1000, not root".to_string()
        )
    );
    refused(
        &bounded(host.root(), &["recover", "--dry-run"]),
        &["/run/vfioctl/changes.json is not trusted: owned by uid 1000, not root"],
    );
}

#[test]
fn a_record_others_may_write_is_refused() {
    let host = topologies::workstation_gpu();
    interrupted(&host);
    let record = host.path("run/vfioctl/changes.json");
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o664)).unwrap();
    // Group write by root's group is root's (as for declarations).
    assert!(state::read_record(&HostRoot::new(host.root())).is_ok());
    chown(&record, None, Some(1000)).unwrap();
    assert_eq!(
        untrusted(host.root()).1,
        "writable by group 1000 (mode 664)"
    );
    refused(
        &bounded(host.root(), &["recover"]),
        &[
            "/run/vfioctl/changes.json is not trusted: writable by group 1000 (mode 664)",
            "check what it holds, then chmod go-w /run/vfioctl/changes.json",
        ],
    );
    chown(&record, None, Some(0)).unwrap();
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o646)).unwrap();
    assert_eq!(untrusted(host.root()).1, "writable by everyone (mode 646)");
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(
        host.path("run/vfioctl"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    assert_eq!(
        untrusted(host.root()),
        (
            "/run/vfioctl".to_string(),
            "writable by everyone (mode 777)".to_string()
        )
    );
}

#[test]
fn a_symlinked_record_or_state_directory_is_not_followed() {
    let host = topologies::workstation_gpu();
    interrupted(&host);
    // The record moved elsewhere, a symlink in its place.
    let elsewhere = host.path("elsewhere.json");
    std::fs::rename(host.path("run/vfioctl/changes.json"), &elsewhere).unwrap();
    symlink(&elsewhere, host.path("run/vfioctl/changes.json")).unwrap();
    assert_eq!(
        untrusted(host.root()),
        (
            "/run/vfioctl/changes.json".to_string(),
            "a symlink, which vfioctl never follows".to_string()
        )
    );
    refused(
        &bounded(host.root(), &["recover"]),
        &["/run/vfioctl/changes.json is not trusted: a symlink, which vfioctl never follows"],
    );
    // The whole directory a symlink to another.
    std::fs::remove_file(host.path("run/vfioctl/changes.json")).unwrap();
    std::fs::rename(&elsewhere, host.path("run/vfioctl/changes.json")).unwrap();
    std::fs::rename(host.path("run/vfioctl"), host.path("state-elsewhere")).unwrap();
    symlink(host.path("state-elsewhere"), host.path("run/vfioctl")).unwrap();
    assert_eq!(
        untrusted(host.root()).0,
        "/run/vfioctl",
        "the directory is refused too"
    );
    refused(
        &bounded(
            host.root(),
            &["--no-libvirt", "bind", "01:00.0", "--timeout", "2"],
        ),
        &["/run/vfioctl is not trusted: a symlink, which vfioctl never follows"],
    );
}

/// Writes stay atomic and root's: the record is replaced by rename from an
/// exclusively created file, and a fresh state directory is root's, 0755.
#[test]
fn state_written_by_vfioctl_is_trusted_on_the_next_read() {
    let host = topologies::workstation_gpu();
    interrupted(&host);
    let meta = std::fs::metadata(host.path("run/vfioctl")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    let meta = std::fs::metadata(host.path("run/vfioctl/changes.json")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    let run = vfioctl(host.root(), &["recover", "--dry-run"]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("0000:01:00.0"), "{}", run.stdout);
}
