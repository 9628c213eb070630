//! `VFIOCTL_TRACE`: the udev hook's timing line (docs/benchmarks.md, boot
//! storm): one line per run, appended, its steps in order; a planted
//! symlink is not followed, and a trace that cannot be written does not
//! change the hook's outcome.

mod support;

use std::path::Path;

use support::cli::{ok, vfioctl_env};
use support::fakehost::FakeHost;
use support::topologies;

/// A host with 25:00.0 declared (and already on vfio-pci).
fn declared_host() -> FakeHost {
    let host = topologies::hgx_a100();
    ok(host.root(), &["persist", "add", "25:00.0"]);
    host
}

/// Runs the hook for 25:00.0 on "add", with `VFIOCTL_TRACE=trace` when given.
fn hook(host: &FakeHost, trace: Option<&Path>) {
    let mut env = vec![("ACTION", "add")];
    if let Some(path) = trace {
        env.push(("VFIOCTL_TRACE", path.to_str().unwrap()));
    }
    let run = vfioctl_env(host.root(), &["udev-hook", "25:00.0"], &env);
    assert_eq!(run.status, 0, "{}", run.stderr);
}

/// A trace file where the hook writes one: under the root's /run/vfioctl-trace.
fn trace_file(host: &FakeHost) -> std::path::PathBuf {
    let dir = host.path("run/vfioctl-trace");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("hook-trace")
}

#[test]
fn a_trace_file_elsewhere_is_never_written() {
    let host = declared_host();
    let dir = tempfile::tempdir().unwrap();
    for elsewhere in [
        dir.path().join("trace"),
        host.path("run/vfioctl-trace/../escape"),
    ] {
        let run = vfioctl_env(
            host.root(),
            &["udev-hook", "25:00.0"],
            &[
                ("ACTION", "add"),
                ("VFIOCTL_TRACE", elsewhere.to_str().unwrap()),
            ],
        );
        assert_eq!(run.status, 0, "{}", run.stderr);
        assert!(!elsewhere.exists(), "{}", elsewhere.display());
    }
}

/// The `key=value` fields of a trace line after "udev-hook ADDRESS".
fn fields(line: &str) -> Vec<(String, String)> {
    line.split_whitespace()
        .skip(2)
        .map(|w| {
            let (k, v) = w.split_once('=').expect("key=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn each_hook_run_appends_its_timings_in_order() {
    let host = topologies::hgx_a100();
    ok(host.root(), &["persist", "add", "25:00.0"]);
    let trace = trace_file(&host);
    let env = [
        ("ACTION", "add"),
        ("VFIOCTL_TRACE", trace.to_str().unwrap()),
    ];
    for _ in 0..2 {
        let run = vfioctl_env(host.root(), &["udev-hook", "25:00.0"], &env);
        assert_eq!(run.status, 0, "{}", run.stderr);
    }
    let text = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in lines {
        assert!(line.starts_with("udev-hook 0000:25:00.0 pid="), "{line}");
        let f = fields(line);
        let keys: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "pid",
                "start",
                "lock_asked",
                "lock_got",
                "lock_released",
                "end",
                "status"
            ]
        );
        assert_eq!(f[6].1, "ok");
        let times: Vec<f64> = f[1..6].iter().map(|(_, v)| v.parse().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{line}");
    }
    // Without the variable, nothing is written.
    std::fs::remove_file(&trace).unwrap();
    hook(&host, None);
    assert!(!trace.exists());
}

#[test]
fn a_planted_symlink_is_not_followed() {
    let host = declared_host();
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched\n").unwrap();
    let trace = trace_file(&host);
    std::os::unix::fs::symlink(&victim, &trace).unwrap();
    let run = vfioctl_env(
        host.root(),
        &["udev-hook", "25:00.0"],
        &[
            ("ACTION", "add"),
            ("VFIOCTL_TRACE", trace.to_str().unwrap()),
        ],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
}
