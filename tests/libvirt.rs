//! `nodedev` and `nova` end to end: libvirt's test driver (no daemon) serving
//! fixture node devices, cross-checked against fake sysfs hosts; the Nova
//! configuration parsed back with Python's configparser and json.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::cli::vfioctl;
use support::fakehost::{Dev, FakeHost};
use support::topologies::{hgx_switches, NvSwitches};
use support::{golden, topologies};

/// Runs and asserts success with nothing on stderr; returns stdout.
fn ok(root: &Path, args: &[&str]) -> String {
    let run = vfioctl(root, args);
    assert_eq!(run.status, 0, "vfioctl {args:?}: {}", run.stderr);
    assert!(
        run.stderr.is_empty(),
        "vfioctl {args:?} wrote to stderr: {}",
        run.stderr
    );
    run.stdout
}

fn json(root: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(root, args)).expect("valid JSON")
}

/// A URI for libvirt's test driver serving a fixture file.
fn test_uri(fixture: &str) -> String {
    format!(
        "test://{}/tests/fixtures/libvirt/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Golden files name the fixture directory and the host root, which differ per run.
fn portable(text: &str, root: &Path) -> String {
    text.replace(env!("CARGO_MANIFEST_DIR"), "SRC")
        .replace(&root.display().to_string(), "ROOT")
}

/// Parses INI text the way oslo.config reads nova.conf (repeated keys make a
/// list) with Python's configparser, loading every alias and device spec with
/// Python's json; returns {section: {key: [values]}}.
fn python_ini(text: &str) -> Value {
    const SCRIPT: &str = r#"
import configparser, json, sys
class Multi(dict):
    def __setitem__(self, key, value):
        if key in self and isinstance(value, list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)
p = configparser.ConfigParser(dict_type=Multi, strict=False, interpolation=None)
p.read_string(sys.stdin.read())
out = {}
for section in p.sections():
    out[section] = {}
    for key in p[section]:
        lines = [l for l in p[section][key].split("\n") if l]
        if key in ("alias", "device_spec", "passthrough_whitelist"):
            lines = [json.loads(l) for l in lines]
        out[section][key] = lines
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (needed to check the generated INI)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "configparser rejected:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Each (arguments, exit status, part of the one-line error) is refused
/// that way, with nothing on stdout.
fn assert_refusals(host: &FakeHost, cases: &[(&[&str], i32, &str)]) {
    for (args, status, message) in cases {
        let run = vfioctl(host.root(), args);
        assert_eq!(run.status, *status, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        if args.contains(&"--json") {
            // --json: the one document is the error object.
            let doc: Value = serde_json::from_str(&run.stdout).unwrap();
            assert_eq!(doc["exit_status"], *status);
        } else {
            assert!(run.stdout.is_empty());
        }
    }
}

/// One `--part` of `args` (a nova command line), parsed.
fn ini_part(host: &FakeHost, args: &[&str], part: &str) -> Value {
    python_ini(&ok(host.root(), &[args, &["--part", part]].concat()))
}

fn devices_by_address(value: &Value) -> Vec<(&str, &Value)> {
    value["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["address"].as_str().unwrap(), d))
        .collect()
}

#[test]
fn nodedev_agrees_with_sysfs_on_the_lab_host() {
    let host = topologies::libvirt_lab();
    let uri = test_uri("node.xml");
    let text = ok(host.root(), &["nodedev", "--connect", &uri]);
    golden::check("nodedev_lab.txt", &portable(&text, host.root()));
    assert!(text.contains("libvirt and sysfs agree on all 7 devices shown."));

    let raw = ok(host.root(), &["nodedev", "-c", &uri, "--json"]);
    golden::check("nodedev_lab.json", &portable(&raw, host.root()));
    let value: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(value["agree"], true);
    assert_eq!(value["node_devices"], 7);
    let expected = [
        ("0000:00:01.0", "type-PCI"),
        ("0000:01:00.0", "type-PCI"),
        ("0000:25:00.0", "type-PF"),
        ("0000:3a:00.0", "type-PCI"),
        ("0000:3b:00.0", "type-PF"),
        ("0000:3b:00.2", "type-VF"),
        ("0000:3b:00.3", "type-VF"),
    ];
    let got = devices_by_address(&value);
    assert_eq!(got.len(), expected.len());
    for ((addr, dev), (want_addr, want_type)) in got.iter().zip(expected) {
        assert_eq!(*addr, want_addr);
        assert_eq!(dev["libvirt"]["nova_device_type"], want_type, "{addr}");
        assert_eq!(
            dev["libvirt"]["nova_device_type"], dev["sysfs"]["nova_device_type"],
            "{addr}: libvirt's derivation and sysfs's agree"
        );
        assert_eq!(dev["libvirt"]["iommu_group"], dev["sysfs"]["iommu_group"]);
        assert!(dev["disagreements"].as_array().unwrap().is_empty());
    }
    let a100 = got[2].1;
    assert_eq!(a100["libvirt"]["capabilities"][0]["type"], "virt_functions");
    assert_eq!(a100["libvirt"]["capabilities"][0]["max_count"], 16);
    assert_eq!(
        a100["libvirt"]["driver"],
        Value::Null,
        "the test driver drops <driver>"
    );
    assert_eq!(a100["sysfs"]["driver"], "vfio-pci");
    // The VF whose XML lists an empty virt_functions after phys_function.
    let vf = got[6].1;
    assert_eq!(vf["libvirt"]["nova_parent"], "0000:3b:00.0");
    assert_eq!(vf["libvirt"]["capabilities"][1]["type"], "virt_functions");
}

#[test]
fn nodedev_lists_every_disagreement() {
    let host = topologies::libvirt_lab();
    let uri = test_uri("node-stale.xml");
    let text = ok(host.root(), &["nodedev", "-c", &uri]);
    golden::check("nodedev_stale.txt", &portable(&text, host.root()));

    let value = json(host.root(), &["nodedev", "-c", &uri, "--json"]);
    assert_eq!(value["agree"], false);
    let kinds: Vec<(String, String)> = devices_by_address(&value)
        .iter()
        .flat_map(|(addr, d)| {
            d["disagreements"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| (addr.to_string(), x["kind"].as_str().unwrap().to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let kinds: Vec<(&str, &str)> = kinds
        .iter()
        .map(|(a, k)| (a.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("0000:01:00.0", "device_type"),
            ("0000:25:00.0", "iommu_group"),
            ("0000:3b:00.3", "missing_in_libvirt"),
            ("0000:af:00.0", "missing_in_sysfs"),
        ]
    );
    let by_addr = devices_by_address(&value);
    let nvme = by_addr
        .iter()
        .find(|(a, _)| *a == "0000:01:00.0")
        .unwrap()
        .1;
    assert_eq!(nvme["disagreements"][0]["libvirt"], "type-PF");
    assert_eq!(nvme["disagreements"][0]["sysfs"], "type-PCI");
    let renamed = by_addr
        .iter()
        .find(|(a, _)| *a == "0000:3b:00.2")
        .unwrap()
        .1;
    assert_eq!(
        renamed["name"], "pci_0000_99_00_0",
        "the address comes from the XML"
    );
    assert!(renamed["disagreements"].as_array().unwrap().is_empty());
}

#[test]
fn nodedev_selectors_reach_devices_only_libvirt_knows() {
    let host = topologies::libvirt_lab();
    let uri = test_uri("node-stale.xml");
    let value = json(
        host.root(),
        &["nodedev", "-c", &uri, "10de:", "group=23", "--json"],
    );
    let addrs: Vec<&str> = devices_by_address(&value).iter().map(|(a, _)| *a).collect();
    assert_eq!(addrs, ["0000:25:00.0", "0000:3b:00.3", "0000:af:00.0"]);
    let run = vfioctl(host.root(), &["nodedev", "-c", &uri, "class=usb"]);
    assert_eq!(run.status, 3);
    assert!(run
        .stderr
        .contains("selector 'class=usb' matched no PCI function"));
}

#[test]
fn unreachable_libvirt_is_one_clear_line() {
    let host = topologies::libvirt_lab();
    let uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock";
    let run = vfioctl(host.root(), &["nodedev", "--connect", uri]);
    assert_eq!(run.status, 5, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(&format!(
            "vfioctl: cannot connect to libvirt at {uri}: Failed to connect socket"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("--connect"),
        "names the fix: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("libvirt: "),
        "libvirt's own printing is off"
    );

    let missing = test_uri("no-such-file.xml");
    let run = vfioctl(host.root(), &["nodedev", "-c", &missing]);
    assert_eq!(run.status, 5);
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "no libxml2 noise: {}",
        run.stderr
    );

    // A host tree under --root is not this machine: its libvirt must be named.
    let run = vfioctl(host.root(), &["nodedev"]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("pass --connect URI"), "{}", run.stderr);
}

#[test]
fn a_silent_daemon_costs_the_timeout_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    // Every run below ends by its own timeout, whatever the time each
    // takes (no clock is asserted; the message says which way vfioctl came
    // back).
    let silent = support::silent::SilentLibvirt::at(&dir.path().join("libvirt-sock"));
    let host = topologies::libvirt_lab();
    let uri = silent.uri();
    let run = vfioctl(
        host.root(),
        &["nodedev", "-c", &uri, "--connect-timeout", "1"],
    );
    assert_eq!(run.status, 5, "{}", run.stderr);
    assert!(
        run.stderr.contains("did not answer within 1 s"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1);

    // nova goes on without libvirt and says why.
    let run = vfioctl(
        host.root(),
        &["nova", "-c", &uri, "--connect-timeout", "1", "--json"],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(value["libvirt"]["used"], false);
    assert!(value["libvirt"]["reason"]
        .as_str()
        .unwrap()
        .contains("did not answer"));
    assert!(value["notes"][0]
        .as_str()
        .unwrap()
        .starts_with("device_type comes from sysfs"));
}

/// A transport libvirt starts for a connection and that never answers: the
/// command of a `qemu+ext` URI, a script that records its PID and its
/// parent's (the helper), then sleeps. `sleep`'s argument marks it as this
/// test's, so a PID reused since is never taken for it.
struct Transport {
    dir: tempfile::TempDir,
    mark: String,
}

impl Transport {
    fn new(name: &str) -> Transport {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mark = format!("600.{}{}", std::process::id(), name.len());
        let pids = dir.path().join("pids");
        let script = dir.path().join("transport");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho $$ $PPID >{0}.tmp && mv {0}.tmp {0}\nexec sleep {mark}\n",
                pids.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Transport { dir, mark }
    }

    fn uri(&self) -> String {
        format!(
            "qemu+ext:///system?command={}",
            self.dir.path().join("transport").display()
        )
    }

    /// The transport's PID and its parent's (the helper), once it started.
    fn pids(&self) -> Option<(i32, i32)> {
        let text = std::fs::read_to_string(self.dir.path().join("pids")).ok()?;
        let mut it = text.split_whitespace().map(|p| p.parse().unwrap());
        Some((it.next()?, it.next()?))
    }

    /// Waits (a hang guard of a minute, not a timing check) for the
    /// transport to run its `sleep`.
    fn started(&self) -> (i32, i32) {
        let since = std::time::Instant::now();
        loop {
            if let Some(pids) = self.pids().filter(|(pid, _)| self.running(*pid)) {
                return pids;
            }
            assert!(
                since.elapsed() < std::time::Duration::from_secs(60),
                "the transport never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Whether `pid` is still this transport's `sleep` and not dead (a
    /// zombie waiting for PID 1 to reap it has ended).
    fn running(&self, pid: i32) -> bool {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        cmdline == format!("sleep\0{}\0", self.mark).into_bytes() && Self::alive(pid)
    }

    /// Whether `pid` is still this transport, as its script or its `sleep`.
    fn left(&self, pid: i32) -> bool {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let script = self.dir.path().join("transport").display().to_string();
        let ours = String::from_utf8_lossy(&cmdline)
            .split('\0')
            .any(|a| a == script);
        (ours || self.running(pid)) && Self::alive(pid)
    }

    /// Whether a process is alive and not a zombie.
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.chars().next())
            })
            .is_some_and(|state| !matches!(state, 'Z' | 'X'))
    }

    /// Asserts the transport ends: the kill is sent before vfioctl returns,
    /// its delivery takes a moment; a minute is a hang guard (the transport
    /// sleeps ten minutes on its own).
    fn assert_ends(&self, pid: i32) {
        let since = std::time::Instant::now();
        while self.left(pid) {
            if since.elapsed() > std::time::Duration::from_secs(60) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                panic!("the transport (PID {pid}) outlived vfioctl");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// #31: `--connect 'qemu+ext:///system?command=PROG'` whose PROG never
/// answers: vfioctl returns by --connect-timeout and the transport libvirt
/// started (once left running as root, reparented to PID 1, one more per
/// run) ends with it.
#[test]
fn a_transport_that_never_answers_ends_at_the_deadline() {
    let host = topologies::libvirt_lab();
    let transport = Transport::new("deadline");
    // The deadline must fall after libvirt started the command: a longer
    // one each time it came first (the outcome, not the time, decides).
    let mut started = None;
    for secs in [1, 2, 4, 8, 16, 32] {
        let run = vfioctl(
            host.root(),
            &[
                "nodedev",
                "-c",
                &transport.uri(),
                "--connect-timeout",
                &secs.to_string(),
            ],
        );
        assert_eq!(run.status, 5, "{}", run.stderr);
        assert!(
            run.stderr.contains("did not answer within"),
            "{}",
            run.stderr
        );
        if let Some(pids) = transport.pids() {
            started = Some(pids);
            break;
        }
    }
    let (pid, helper) = started.expect("libvirt started the transport");
    transport.assert_ends(pid);
    assert!(!Transport::alive(helper), "the helper was reaped");
}

/// The same transport, when vfioctl is done with the query early (an
/// error elsewhere drops it unfinished), and when vfioctl itself is killed
/// (kill -9): the helper's group goes with it.
#[test]
fn a_transport_ends_when_vfioctl_drops_the_query_or_dies() {
    use vfioctl::host::libvirt::{self, Want};
    libvirt::use_helper(env!("CARGO_BIN_EXE_vfioctl-libvirt"));
    let transport = Transport::new("dropped");
    let query = libvirt::start(&transport.uri(), Want::Domains).unwrap();
    let (pid, helper) = transport.started();
    drop(query);
    transport.assert_ends(pid);
    assert!(!Transport::alive(helper));

    let host = topologies::libvirt_lab();
    let transport = Transport::new("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .arg("--root")
        .arg(host.root())
        .args([
            "nodedev",
            "-c",
            &transport.uri(),
            "--connect-timeout",
            "600",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (pid, helper) = transport.started();
    child.kill().unwrap();
    child.wait().unwrap();
    // The helper got SIGTERM as vfioctl died and killed its group.
    transport.assert_ends(pid);
    let since = std::time::Instant::now();
    while Transport::alive(helper) {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(60),
            "the helper outlived vfioctl"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// #31: libvirt's client reads variables of its own; one makes it create
/// and append to a file of the caller's choosing, as root. The helper runs
/// with only what an ssh transport needs, so none reaches it.
#[test]
fn libvirts_own_variables_do_not_reach_the_helper() {
    let host = topologies::libvirt_lab();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("libvirt.log");
    let run = support::cli::vfioctl_env(
        host.root(),
        &["nodedev", "-c", &test_uri("node.xml")],
        &[("LIBVIRT_LOG_OUTPUTS", &format!("1:file:{}", log.display()))],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(!log.exists(), "libvirt wrote {}", log.display());
}

#[test]
fn nova_from_libvirt_for_the_vfio_bound_devices() {
    let host = topologies::libvirt_lab();
    let uri = test_uri("node.xml");
    let text = ok(host.root(), &["nova", "-c", &uri, "--release", "2024.1"]);
    golden::check("nova_lab.txt", &portable(&text, host.root()));
    let raw = ok(
        host.root(),
        &["nova", "-c", &uri, "--release", "2024.1", "--json"],
    );
    golden::check("nova_lab.json", &portable(&raw, host.root()));
    let value: Value = serde_json::from_str(&raw).unwrap();
    // Default selection: the devices on a VFIO driver (the A100 on vfio-pci,
    // one VF on mlx5_vfio_pci).
    let devices: Vec<(&str, &Value)> = devices_by_address(&value);
    assert_eq!(
        devices.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        ["0000:25:00.0", "0000:3b:00.3"]
    );
    for (_, d) in &devices {
        assert_eq!(d["device_type_source"], "libvirt");
        assert_eq!(d["binding"]["state"], "vfio_now");
    }
    assert_eq!(value["libvirt"]["used"], true);
    assert_eq!(value["spec_option"], "device_spec");

    let controller = python_ini(value["controller_conf"].as_str().unwrap());
    let aliases = controller["pci"]["alias"].as_array().unwrap();
    assert_eq!(aliases.len(), 2);
    assert_eq!(aliases[0]["name"], "nvidia-a100-sxm4-40gb");
    assert_eq!(aliases[0]["device_type"], "type-PF");
    assert_eq!(aliases[1]["name"], "mellanox-connectx-5-virtual-function");
    assert_eq!(aliases[1]["device_type"], "type-VF");
    let filters = controller["filter_scheduler"]["enabled_filters"][0]
        .as_str()
        .unwrap();
    assert!(filters.ends_with(",PciPassthroughFilter"), "{filters}");
    let compute = python_ini(value["compute_conf"].as_str().unwrap());
    let specs = compute["pci"]["device_spec"].as_array().unwrap();
    // The one A100 is every 10de:20b0 on the host; one of two VFs is not.
    assert_eq!(
        specs[0],
        serde_json::json!({"vendor_id": "10de", "product_id": "20b0"})
    );
    assert_eq!(
        specs[1],
        serde_json::json!({"vendor_id": "15b3", "product_id": "1018", "address": "0000:3b:00.3"})
    );
    assert_eq!(compute["pci"]["alias"], controller["pci"]["alias"]);
    // The same text comes out of --part.
    assert_eq!(
        ok(
            host.root(),
            &[
                "nova",
                "-c",
                &uri,
                "--release",
                "2024.1",
                "--part",
                "compute"
            ]
        ),
        value["compute_conf"].as_str().unwrap()
    );
    let commands = ok(host.root(), &["nova", "-c", &uri, "--part", "commands"]);
    assert_eq!(
        commands,
        "openstack flavor set FLAVOR --property pci_passthrough:alias=nvidia-a100-sxm4-40gb:1,mellanox-connectx-5-virtual-function:1\n\
         openstack image set IMAGE --property img_hide_hypervisor_id=true\n"
    );
}

#[test]
fn nova_follows_libvirt_where_it_disagrees_with_sysfs() {
    let host = topologies::libvirt_lab();
    let uri = test_uri("node-stale.xml");
    let value = json(
        host.root(),
        &["nova", "-c", &uri, "01:00.0", "3b:00.3", "--json"],
    );
    let devices = devices_by_address(&value);
    assert_eq!(
        devices[0].1["device_type"], "type-PF",
        "libvirt's, what Nova reads"
    );
    assert_eq!(devices[0].1["device_type_source"], "libvirt");
    assert_eq!(devices[1].1["device_type"], "type-VF");
    assert_eq!(devices[1].1["device_type_source"], "sysfs");
    let notes = value["notes"].to_string();
    assert!(
        notes.contains("0000:01:00.0: libvirt makes it type-PF, sysfs says type-PCI"),
        "{notes}"
    );
    assert!(
        notes.contains("0000:3b:00.3 is not a libvirt node device"),
        "{notes}"
    );
}

#[test]
fn nova_for_the_runbook_a100s_on_train() {
    // No --connect and a host tree under --root: device_type from sysfs, said so.
    let host = topologies::hgx_a100();
    let args = [
        "nova",
        "10de:20b0",
        "--fabric",
        "shared",
        "--release",
        "train",
        "--alias",
        "nvidia-a100",
    ];
    let text = ok(host.root(), &args);
    golden::check("nova_hgx_train.txt", &portable(&text, host.root()));
    assert!(text.contains(
        "alias = {\"name\": \"nvidia-a100\", \"vendor_id\": \"10de\", \"product_id\": \"20b0\", \"device_type\": \"type-PF\"}"
    ));
    assert!(text
        .contains("passthrough_whitelist = {\"vendor_id\": \"10de\", \"product_id\": \"20b0\"}"));
    assert!(text.contains("device_type comes from sysfs"));
    assert!(
        text.contains("openstack flavor set FLAVOR --property pci_passthrough:alias=nvidia-a100:1")
    );
    assert!(text.contains("openstack image set IMAGE --property img_hide_hypervisor_id=true"));
    let controller = ini_part(&host, &args, "controller");
    // Train's own default, AvailabilityZoneFilter included (the runbook's GPU
    // zone depends on it), plus PciPassthroughFilter; no Placement pre-filter
    // unless asked for.
    assert_eq!(
        controller["filter_scheduler"]["enabled_filters"][0],
        "AvailabilityZoneFilter,ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter,ServerGroupAntiAffinityFilter,ServerGroupAffinityFilter,PciPassthroughFilter"
    );
    assert!(controller.get("scheduler").is_none(), "{controller}");
    assert!(text.contains("# Before upgrading to 2023.2, which removed AvailabilityZoneFilter, drop it from this list"));

    // --az-prefilter: Placement filters zones, after sync_aggregates.
    let prefilter = [&args[..], &["--az-prefilter"]].concat();
    let controller = ini_part(&host, &prefilter, "controller");
    assert_eq!(
        controller["filter_scheduler"]["enabled_filters"][0],
        "ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter,ServerGroupAntiAffinityFilter,ServerGroupAffinityFilter,PciPassthroughFilter"
    );
    assert_eq!(
        controller["scheduler"]["query_placement_for_availability_zone"][0],
        "True"
    );
    let commands = ok(
        host.root(),
        &[&prefilter[..], &["--part", "commands"]].concat(),
    );
    assert!(
        commands.starts_with("nova-manage placement sync_aggregates\nopenstack flavor set FLAVOR"),
        "{commands}"
    );
    let text = ok(host.root(), &prefilter);
    golden::check(
        "nova_hgx_train_az_prefilter.txt",
        &portable(&text, host.root()),
    );
}

/// The compute part of `nova 10de:20b0` on `host` for `release`, parsed.
fn compute_pci(host: &FakeHost, release: &str) -> Value {
    let text = ok(
        host.root(),
        &[
            "nova",
            "10de:20b0",
            "--fabric",
            "shared",
            "--release",
            release,
            "--part",
            "compute",
        ],
    );
    python_ini(&text)["pci"].clone()
}

#[test]
fn the_release_switches_option_names_and_managed() {
    let host = topologies::hgx_a100();
    // Two A100s declared with vfioctl persist: vfioctl keeps them on vfio-pci.
    host.write(
        "etc/vfioctl/bindings.d/gpus.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\naddress = \"0000:25:00.0\"\n\n\
         [[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\naddress = \"0000:2b:00.0\"\n",
    );
    for (release, option) in [
        ("train", "passthrough_whitelist"),
        ("yoga", "passthrough_whitelist"),
        ("zed", "device_spec"),
        ("2023.1", "device_spec"),
        ("2024.2", "device_spec"),
        ("epoxy", "device_spec"),
        ("2026.2", "device_spec"),
    ] {
        let pci = compute_pci(&host, release);
        let other = if option == "device_spec" {
            "passthrough_whitelist"
        } else {
            "device_spec"
        };
        assert!(pci.get(other).is_none(), "{release}: {pci}");
        let specs = pci[option]
            .as_array()
            .unwrap_or_else(|| panic!("{release}: {pci}"));
        // Every A100 is selected: one spec by IDs, until 2025.1 makes the two
        // declared ones "managed": "no", which splits the specs per address.
        let from_epoxy = matches!(release, "epoxy" | "2026.2");
        assert_eq!(specs.len(), if from_epoxy { 8 } else { 1 }, "{release}");
        let managed: Vec<&Value> = specs
            .iter()
            .filter(|s| s.get("managed").is_some())
            .collect();
        assert_eq!(managed.len(), if from_epoxy { 2 } else { 0 }, "{release}");
        for spec in managed {
            assert_eq!(spec["managed"], "no");
            assert!(["0000:25:00.0", "0000:2b:00.0"].contains(&spec["address"].as_str().unwrap()));
        }
    }

    // The default selection: declared or on vfio-pci now (the same two here).
    let value = json(
        host.root(),
        &[
            "nova",
            "--fabric",
            "shared",
            "--release",
            "2025.1",
            "--json",
        ],
    );
    let addrs: Vec<&str> = devices_by_address(&value).iter().map(|(a, _)| *a).collect();
    assert_eq!(addrs, ["0000:25:00.0", "0000:2b:00.0"]);
    assert_eq!(value["devices"][0]["binding"]["state"], "declared");
    assert_eq!(value["device_specs"][0]["managed"], "no");
}

#[test]
fn mixed_device_types_of_one_id_get_two_aliases() {
    // Two A100s, one with SR-IOV hidden by firmware: type-PF and type-PCI.
    let mut host = FakeHost::new();
    host.iommu_unit("dmar0").pci_ids(&topologies::pci_ids());
    host.add(
        Dev::endpoint("0000:25:00.0", 0x10de, 0x20b0, 0x030200)
            .sriov(16)
            .driver("vfio-pci", Some("vfio_pci"))
            .group(1),
    );
    host.add(
        Dev::endpoint("0000:26:00.0", 0x10de, 0x20b0, 0x030200)
            .driver("vfio-pci", Some("vfio_pci"))
            .group(2),
    );
    let value = json(host.root(), &["nova", "--json"]);
    let aliases: Vec<(&str, &str)> = value["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap(),
                a["device_type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        aliases,
        [
            ("nvidia-a100-sxm4-40gb-pf", "type-PF"),
            ("nvidia-a100-sxm4-40gb-pci", "type-PCI")
        ]
    );
    assert!(value["notes"]
        .to_string()
        .contains("10de:20b0 comes as more than one device_type"));
    python_ini(value["controller_conf"].as_str().unwrap());
    let run = vfioctl(host.root(), &["nova", "--alias", "gpu"]);
    assert_eq!(run.status, 2);
    assert!(run
        .stderr
        .contains("--alias gpu names one alias, but the selected devices need 2"));
}

#[test]
fn nova_usage_errors() {
    let host = topologies::hgx_a100();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["nova", "--release", "kestrel"],
            2,
            "unknown OpenStack release 'kestrel'",
        ),
        (&["nova", "--release", "rocky"], 2, "older than Train"),
        (
            &["nova", "10de:20b0", "--fabric", "shared", "--alias", "a:b"],
            2,
            "alias name 'a:b' is not usable",
        ),
        (
            &[
                "nova",
                "10de:20b0",
                "--fabric",
                "shared",
                "--release",
                "victoria",
                "--numa-policy",
                "socket",
            ],
            2,
            "numa_policy 'socket' needs Wallaby",
        ),
        (&["nova", "class=0604"], 3, "match only bridges"),
        (
            &["nova", "dead:beef"],
            3,
            "selector 'dead:beef' matched no PCI function",
        ),
        (
            &["nova", "--part", "compute", "--json"],
            2,
            "cannot be used with",
        ),
    ];
    assert_refusals(&host, cases);
    let bare = topologies::no_iommu();
    let run = vfioctl(bare.root(), &["nova"]);
    assert_eq!(run.status, 3);
    assert!(
        run.stderr.contains("no device to configure"),
        "{}",
        run.stderr
    );
}

/// The `libvirt.devices` result of `vfioctl check --json`.
fn libvirt_check(host: &FakeHost, args: &[&str]) -> Value {
    let run = vfioctl(host.root(), &[&["check", "--json"], args].concat());
    let value: Value = serde_json::from_str(&run.stdout).expect("check --json");
    value["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "libvirt.devices")
        .expect("libvirt.devices check")
        .clone()
}

#[test]
fn check_asks_libvirt_about_declared_devices() {
    let host = topologies::libvirt_lab();
    host.write(
        "etc/vfioctl/bindings.d/lab.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\n\n\
         [[binding]]\nvendor = \"15b3\"\ndevice = \"1018\"\naddress = \"0000:3b:00.3\"\n\n\
         [[binding]]\nvendor = \"144d\"\ndevice = \"a80a\"\n",
    );
    let skipped = libvirt_check(&host, &[]);
    assert_eq!(skipped["status"], "OK");
    assert_eq!(
        skipped["message"],
        "skipped: --root names another host tree and no --connect URI names its libvirt"
    );

    let agreeing = libvirt_check(&host, &["-c", &test_uri("node.xml")]);
    assert_eq!(agreeing["status"], "OK", "{agreeing}");
    assert_eq!(
        agreeing["message"],
        "libvirt sees 3 declared device(s) as expected"
    );

    let stale = libvirt_check(&host, &["-c", &test_uri("node-stale.xml")]);
    assert_eq!(stale["status"], "CRITICAL", "{stale}");
    assert_eq!(
        stale["message"],
        "libvirt makes 0000:01:00.0 type-PF, sysfs says type-PCI; 0000:3b:00.3 is not a libvirt node device"
    );

    let unreachable = libvirt_check(
        &host,
        &["-c", "qemu+unix:///system?socket=/nonexistent/libvirt-sock"],
    );
    assert!(unreachable["message"]
        .as_str()
        .unwrap()
        .starts_with("skipped: cannot connect to libvirt at qemu+unix:///system"));
}

/// The runbook's HGX host with its NVSwitches in IOMMU groups of two
/// (b7+b8, b9+ba, bb+bc), as some baseboards group them.
/// `sriov_nic` with a second ConnectX-5 PF whose one VF stays on the host
/// driver: a spec naming the first PF for its VFs must not take it.
fn sriov_two_pfs() -> FakeHost {
    let mut host = topologies::sriov_nic();
    host.add(
        Dev::endpoint("0000:3b:00.1", 0x15b3, 0x1017, 0x020000)
            .parent("0000:3a:00.0")
            .driver("mlx5_core", Some("mlx5_core"))
            .sriov(8)
            .group(24)
            .numa(0),
    );
    host.add(
        Dev::endpoint("0000:3b:01.2", 0x15b3, 0x1018, 0x020000)
            .parent("0000:3a:00.0")
            .vf_of("0000:3b:00.1")
            .driver("mlx5_core", Some("mlx5_core"))
            .group(25)
            .numa(0),
    );
    host
}

fn hgx_paired_switches() -> FakeHost {
    let host = topologies::hgx_a100();
    for (first, second) in [("b7", "b8"), ("b9", "ba"), ("bb", "bc")] {
        let dev = |bus: &str| host.path(&format!("sys/bus/pci/devices/0000:{bus}:00.0"));
        let group_of = |bus: &str| {
            std::fs::read_link(dev(bus).join("iommu_group"))
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        let (group, old) = (group_of(first), group_of(second));
        let addr = format!("0000:{second}:00.0");
        std::fs::remove_file(host.path(&format!("sys/kernel/iommu_groups/{old}/devices/{addr}")))
            .unwrap();
        let dir = std::fs::canonicalize(dev(second)).unwrap();
        let rel = dir
            .strip_prefix(std::fs::canonicalize(host.root()).unwrap())
            .unwrap();
        host.link(
            Path::new(&format!("sys/kernel/iommu_groups/{group}/devices/{addr}")),
            rel,
        );
        host.link(
            &rel.join("iommu_group"),
            Path::new(&format!("sys/kernel/iommu_groups/{group}")),
        );
    }
    host
}

#[test]
fn hgx_fabric_shared_and_full_on_paired_nvswitch_groups() {
    let host = hgx_paired_switches();
    // The groups really are pairs now.
    let list = json(host.root(), &["list", "10de:1af1", "--json"]);
    let groups: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["iommu_group"].as_u64().unwrap())
        .collect();
    assert_eq!(groups[0], groups[1]);
    assert_ne!(groups[1], groups[2]);

    // Selecting NVSwitches without a fabric choice is refused.
    let run = vfioctl(host.root(), &["nova", "10de:1af1"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("0000:b7:00.0 is an NVSwitch and the host does not say how its NVLink fabric runs (NVSwitch 0000:b7:00.0, 0000:b8:00.0, 0000:b9:00.0, 0000:ba:00.0, 0000:bb:00.0, 0000:bc:00.0 on nvidia-nvswitch; Fabric Manager neither enabled nor running): choose how the NVLink fabric runs"),
        "{}",
        run.stderr
    );

    // Shared: NVSwitches stay on the host, never offered.
    let shared = json(
        host.root(),
        &[
            "nova",
            "--fabric",
            "shared",
            "10de:20b0",
            "10de:1af1",
            "--json",
        ],
    );
    assert_eq!(shared["devices"].as_array().unwrap().len(), 8);
    assert_eq!(shared["left_out"].as_array().unwrap().len(), 6);
    assert!(!shared["compute_conf"].as_str().unwrap().contains("1af1"));
    assert_eq!(
        shared["flavor_property"],
        "pci_passthrough:alias=nvidia-a100-sxm4-40gb:1"
    );

    // Full: the whole board, one flavor.
    let text = ok(
        host.root(),
        &["nova", "--fabric", "full", "--release", "2025.1"],
    );
    golden::check("nova_hgx_full.txt", &portable(&text, host.root()));
    assert!(text.contains(
        "openstack flavor set FLAVOR --property pci_passthrough:alias=nvidia-a100-sxm4-40gb:8,nvidia-a100-nvswitch:6\n"
    ));
    assert!(text.contains("share IOMMU group"));
}

/// The A100s in Placement under a resource class and a trait of their own.
const A100_PLACEMENT: &[&str] = &[
    "10de:20b0",
    "--placement",
    "--resource-class",
    "a100",
    "--trait",
    "nvlink",
];

#[test]
fn nova_placement_and_live_migratable() {
    let host = topologies::hgx_a100();
    let args = [
        "nova",
        "10de:20b0",
        "--fabric",
        "shared",
        "--placement",
        "--release",
        "2024.1",
    ];
    let controller = ini_part(&host, &args, "controller");
    assert_eq!(
        controller["filter_scheduler"]["pci_in_placement"][0],
        "True"
    );
    assert_eq!(
        controller["pci"]["alias"][0]["resource_class"],
        "CUSTOM_PCI_10DE_20B0"
    );
    let compute = ini_part(&host, &args, "compute");
    assert_eq!(compute["pci"]["report_in_placement"][0], "True");
    assert_eq!(
        compute["pci"]["device_spec"][0]["resource_class"],
        "CUSTOM_PCI_10DE_20B0"
    );
    let value = json(
        host.root(),
        &[&["nova", "--fabric", "shared"], A100_PLACEMENT, &["--json"]].concat(),
    );
    assert_eq!(
        value["aliases"][0]["placement"],
        serde_json::json!({"resource_class": "CUSTOM_A100", "traits": "CUSTOM_NVLINK"})
    );
    assert!(value["notes"]
        .to_string()
        .contains("report_in_placement cannot be switched off again"));

    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["nova", "10de:20b0", "--fabric", "shared", "--placement", "--release", "zed"],
            2,
            "--placement needs 2023.1 or later: Zed (Nova 26) reports PCI devices to Placement but cannot schedule them there",
        ),
        (
            &["nova", "10de:20b0", "--fabric", "shared", "--placement", "--release", "yoga"],
            2,
            "has neither [pci] report_in_placement",
        ),
        (
            &["nova", "10de:20b0", "--fabric", "shared", "--resource-class", "x"],
            2,
            "--placement",
        ),
        (
            &["nova", "10de:20b0", "--fabric", "shared", "--placement", "--trait", "a-b"],
            2,
            "trait 'a-b' is not usable",
        ),
        (
            &["nova", "10de:20b0", "--fabric", "shared", "--live-migratable"],
            2,
            "0000:25:00.0 is a GPU or NVSwitch",
        ),
        (
            &["nova", "10de:20b0", "--fabric", "shared", "--live-migratable", "--release", "2024.2"],
            2,
            "--live-migratable needs 2025.1",
        ),
    ];
    assert_refusals(&host, cases);

    // A VF on the mlx5 vfio variant driver can be marked live-migratable.
    let lab = topologies::libvirt_lab();
    let compute = python_ini(&ok(
        lab.root(),
        &["nova", "3b:00.3", "--live-migratable", "--part", "compute"],
    ));
    assert_eq!(compute["pci"]["device_spec"][0]["live_migratable"], "yes");
    assert_eq!(compute["pci"]["alias"][0]["live_migratable"], "yes");
}

/// `--one-time-use` on the runbook's A100s (2025.2, Placement): the specs
/// carry the tag, the commands part names each device's resource provider
/// after this host's name and returns it to service between tenants.
#[test]
fn nova_one_time_use_between_tenants() {
    let host = topologies::hgx_a100();
    host.write("proc/sys/kernel/hostname", "compute-7\n");
    let args = [
        "nova",
        "10de:20b0",
        "--fabric",
        "shared",
        "--placement",
        "--one-time-use",
        "--release",
        "2025.2",
    ];
    let text = ok(host.root(), &args);
    golden::check("nova_hgx_one_time_use.txt", &portable(&text, host.root()));
    let raw = ok(host.root(), &[&args[..], &["--json"]].concat());
    golden::check("nova_hgx_one_time_use.json", &portable(&raw, host.root()));
    let value: Value = serde_json::from_str(&raw).unwrap();

    let compute = ini_part(&host, &args, "compute");
    assert_eq!(compute["pci"]["report_in_placement"][0], "True");
    for spec in compute["pci"]["device_spec"].as_array().unwrap() {
        assert_eq!(spec["one_time_use"], "true", "{spec}");
    }
    assert!(value["device_specs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["one_time_use"] == true));
    // Every offered device has its provider, named as Nova names it.
    let otu = &value["one_time_use"];
    assert_eq!(otu["hypervisor_hostname"], "compute-7");
    assert_eq!(otu["hypervisor_hostname_source"], "host");
    assert_eq!(otu["trait"], "HW_PCI_ONE_TIME_USE");
    let offered: Vec<&str> = devices_by_address(&value).iter().map(|(a, _)| *a).collect();
    let providers = otu["providers"].as_array().unwrap();
    assert_eq!(providers.len(), offered.len());
    for (p, address) in providers.iter().zip(&offered) {
        assert_eq!(p["address"], *address);
        assert_eq!(
            p["name"],
            format!("compute-7_{}", address.to_ascii_uppercase())
        );
        assert_eq!(p["resource_class"], "CUSTOM_PCI_10DE_20B0");
    }
    // The commands part: the setup commands, then the between-tenants lines,
    // the same as the JSON's.
    let commands = ok(host.root(), &[&args[..], &["--part", "commands"]].concat());
    let lines: Vec<&str> = commands.lines().collect();
    let setup: Vec<&str> = value["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let between: Vec<&str> = otu["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(lines, [setup, between.clone()].concat());
    assert!(between.contains(
        &"openstack --os-placement-api-version 1.18 resource provider list --required HW_PCI_ONE_TIME_USE"
    ));
    assert!(between.contains(&"openstack resource provider inventory set --amend --resource CUSTOM_PCI_10DE_20B0:reserved=0 RP_UUID"));
    // The commands part is a shell script: every line is a comment or a command sh parses.
    let run = Command::new("sh")
        .args(["-n", "-c", &commands])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    // --hypervisor-hostname wins over this host's name, without the note.
    let named = json(
        host.root(),
        &[
            &args[..],
            &["--hypervisor-hostname", "gpu-7.example.org", "--json"],
        ]
        .concat(),
    );
    assert_eq!(
        named["one_time_use"]["hypervisor_hostname_source"],
        "option"
    );
    assert_eq!(
        named["one_time_use"]["providers"][0]["name"],
        "gpu-7.example.org_0000:25:00.0"
    );
    assert!(!named["notes"].to_string().contains("this host's name"));
    // Without --one-time-use: no tag, no providers.
    let plain = json(
        host.root(),
        &[
            "nova",
            "10de:20b0",
            "--fabric",
            "shared",
            "--placement",
            "--release",
            "2025.2",
            "--json",
        ],
    );
    assert_eq!(plain["one_time_use"], Value::Null);
    assert!(!plain["compute_conf"]
        .as_str()
        .unwrap()
        .contains("one_time_use"));
}

/// Every `--one-time-use` refusal: one line naming the fix, exit 2, one
/// JSON document with --json, nothing on stdout otherwise.
#[test]
fn nova_one_time_use_refusals() {
    let host = topologies::hgx_a100();
    host.write("proc/sys/kernel/hostname", "compute-7\n");
    let a100 = ["nova", "10de:20b0", "--fabric", "shared"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v: Vec<&'static str> = a100.to_vec();
        v.extend_from_slice(extra);
        v
    };
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            with(&["--placement", "--one-time-use", "--release", "2025.1"]),
            2,
            "--one-time-use needs 2025.2 or later: 2025.1 Epoxy (Nova 31) has no one_time_use device spec tag",
        ),
        (
            with(&["--placement", "--one-time-use", "--release", "train"]),
            2,
            "--one-time-use needs 2025.2 or later: Train (Nova 20)",
        ),
        (
            with(&["--one-time-use"]),
            2,
            "--one-time-use needs --placement: Nova refuses a one_time_use device spec unless [pci] report_in_placement = True",
        ),
        (
            with(&["--placement", "--one-time-use", "--hypervisor-hostname=-rf"]),
            2,
            "--hypervisor-hostname '-rf' is not usable as a hypervisor hostname",
        ),
        (
            with(&["--placement", "--one-time-use", "--hypervisor-hostname", "a$(reboot)"]),
            2,
            "--hypervisor-hostname 'a$(reboot)' is not usable",
        ),
        (
            with(&["--placement", "--hypervisor-hostname", "c1"]),
            2,
            "the following required arguments were not provided",
        ),
    ];
    for (args, status, message) in &cases {
        for json in [false, true] {
            let args: Vec<&str> = if json {
                [&args[..], &["--json"]].concat()
            } else {
                args.clone()
            };
            assert_refusals(&host, &[(&args[..], *status, message)]);
            let run = vfioctl(host.root(), &args);
            // clap's own usage errors (an option that needs another) add its usage lines.
            if json || !run.stderr.starts_with("error:") {
                assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
            }
        }
    }

    // A VF: the lab's mlx5 VF on its vfio variant driver.
    let lab = topologies::libvirt_lab();
    lab.write("proc/sys/kernel/hostname", "compute-7\n");
    assert_refusals(
        &lab,
        &[
            (
                &["nova", "3b:00.3", "--placement", "--one-time-use"],
                2,
                "--one-time-use: 0000:3b:00.3 is a VF (type-VF), and Nova takes one_time_use only on type-PCI and type-PF devices",
            ),
            (
                &["nova", "3b:00.3", "--placement", "--one-time-use", "--json"],
                2,
                "is a VF (type-VF)",
            ),
        ],
    );
    // This host's name: unreadable, or hostile (a planted name).
    let nameless = topologies::hgx_a100();
    let args = with(&["--placement", "--one-time-use"]);
    assert_refusals(
        &nameless,
        &[(
            &args[..],
            2,
            "this host's name cannot be read from /proc/sys/kernel/hostname; pass --hypervisor-hostname NAME",
        )],
    );
    for planted in ["gpu\u{1b}[2J;reboot\n", "a b\n", "\n", "x'\n"] {
        let host = topologies::hgx_a100();
        host.write("proc/sys/kernel/hostname", planted);
        let run = vfioctl(host.root(), &[&args[..], &["--json"]].concat());
        assert_eq!(run.status, 2, "{planted:?}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("this host's name (/proc/sys/kernel/hostname)")
                || run.stderr.contains("cannot be read"),
            "{planted:?}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains('\u{1b}'), "{}", run.stderr);
        let doc: Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(doc["exit_status"], 2);
        // --hypervisor-hostname gets past it.
        let run = vfioctl(
            host.root(),
            &[&args[..], &["--hypervisor-hostname", "compute-7"]].concat(),
        );
        assert_eq!(run.status, 0, "{}", run.stderr);
    }
}

#[test]
fn a_group_is_offered_whole_or_left_out_with_the_reason() {
    let host = topologies::workstation_gpu();
    // The GPU alone: its audio, USB and USB-C functions share its group.
    let run = vfioctl(host.root(), &["nova", "01:00.0"]);
    assert_eq!(run.status, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "0000:01:00.0 left out: IOMMU group 1 also holds 0000:01:00.1, 0000:01:00.2, 0000:01:00.3, which is not offered"
        ),
        "{}",
        run.stderr
    );
    // The whole group: one request for all four functions.
    let value = json(host.root(), &["nova", "group=1", "--json"]);
    assert_eq!(value["devices"].as_array().unwrap().len(), 4);
    let property = value["flavor_property"].as_str().unwrap();
    assert_eq!(property.matches(":1").count(), 4, "{property}");
    assert!(value["notes"]
        .to_string()
        .contains("share IOMMU group 1, which VFIO opens in one VM only"));
}

/// Releases vfioctl knows by name, oldest first.
const RELEASES: &[&str] = &[
    "train", "ussuri", "victoria", "wallaby", "xena", "yoga", "zed", "2023.1", "2023.2", "2024.1",
    "2024.2", "2025.1", "2025.2", "2026.1", "2026.2",
];

/// Whether a refusal is the expected one for these arguments and release.
fn expected_refusal(args: &[&str], release: &str, run: &support::cli::Run) -> bool {
    let before = |first: &str| {
        RELEASES.iter().position(|r| *r == release) < RELEASES.iter().position(|r| *r == first)
    };
    (args.contains(&"--placement")
        && before("2023.1")
        && run.stderr.contains("--placement needs 2023.1"))
        || (args.contains(&"--live-migratable")
            && before("2025.1")
            && run.stderr.contains("--live-migratable needs 2025.1"))
        || (args.contains(&"--one-time-use")
            && before("2025.2")
            && run.stderr.contains("--one-time-use needs 2025.2"))
}

/// vfioctl's output for one host, variant and release, as the oracle takes
/// it; `None` when vfioctl refuses, as it must, a release lacking a feature.
fn oracle_case(host_name: &str, host: &FakeHost, args: &[&str], release: &str) -> Option<Value> {
    let base: Vec<&str> = [&["nova", "--release", release][..], args].concat();
    let run = vfioctl(host.root(), &[&base[..], &["--json"]].concat());
    if run.status != 0 {
        assert!(
            expected_refusal(args, release, &run),
            "{base:?}: {}",
            run.stderr
        );
        return None;
    }
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    // Notes (a fabric mode read from the host) may go to stderr.
    let part = |p: &str| {
        let run = vfioctl(host.root(), &[&base[..], &["--part", p]].concat());
        assert_eq!(run.status, 0, "{base:?} --part {p}: {}", run.stderr);
        run.stdout
    };
    let (controller, compute, commands) = (part("controller"), part("compute"), part("commands"));
    assert_eq!(controller, value["controller_conf"].as_str().unwrap());
    assert_eq!(compute, value["compute_conf"].as_str().unwrap());
    let field = |list: &str, key: &str| -> Vec<Value> {
        value[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d[key].clone())
            .collect()
    };
    Some(serde_json::json!({
        "host": host_name,
        "args": args,
        "release": release,
        "nova_version": value["release"]["nova_version"],
        "controller": controller,
        "compute": compute,
        "commands": commands,
        "offered": field("devices", "address"),
        "aliases": field("aliases", "name"),
        "alias_records": value["aliases"],
        "placement": value["placement"],
        "one_time_use": value["one_time_use"],
        "spec_option": value["spec_option"],
        "facts": {
            "default_filters": value["scheduler_filters"]["default"],
            "release_facts": value["release"]["facts"],
            // AZ_PREFILTER_OPTION: written for releases before Xena,
            // gone from Nova 34 (which always filters zones in Placement).
            "options_gone_in_nova_34": ["scheduler.query_placement_for_availability_zone"],
        },
    }))
}

/// Nova 34 itself (tests/nova/oracle.py in the venv `make test-nova` builds)
/// judges vfioctl's output for every release, every part and the fake hosts.
#[test]
#[ignore = "runs Nova 34 from PyPI: make test-nova"]
fn nova_oracle() {
    let python = std::env::var("VFIOCTL_NOVA_PYTHON").expect(
        "VFIOCTL_NOVA_PYTHON: the venv python with nova installed (make test-nova sets it)",
    );
    let hosts: Vec<(&str, FakeHost)> = vec![
        ("hgx", topologies::hgx_a100()),
        ("hgx_fm", hgx_switches(NvSwitches::FabricManager)),
        ("hgx_vfio", hgx_switches(NvSwitches::OnVfio)),
        ("hgx_declared", hgx_switches(NvSwitches::Declared)),
        ("hgx_paired", hgx_paired_switches()),
        ("lab", topologies::libvirt_lab()),
        ("workstation", topologies::workstation_gpu()),
        ("sriov_two_pfs", sriov_two_pfs()),
    ];
    let variants: &[(&str, &[&str])] = &[
        ("hgx", &["10de:20b0", "--fabric", "shared"]),
        ("hgx", &["--fabric", "shared"]),
        ("hgx", &["--fabric", "full"]),
        ("hgx", &[A100_PLACEMENT, &["--fabric", "shared"]].concat()),
        // The fabric mode read from the host, in each state that says one.
        ("hgx_fm", &["10de:20b0"]),
        ("hgx_fm", &["10de:20b0", "--az-prefilter"]),
        ("hgx_vfio", &[]),
        ("hgx_declared", &[]),
        ("hgx_paired", &["--fabric", "full"]),
        ("hgx_paired", &["--fabric", "full", "--placement"]),
        (
            "hgx_paired",
            &["--fabric", "shared", "10de:20b0", "10de:1af1"],
        ),
        ("lab", &[]),
        ("lab", &["--placement"]),
        ("lab", &["3b:00.3", "--live-migratable"]),
        ("workstation", &["group=1"]),
        ("sriov_two_pfs", &["3b:00.2", "3b:00.3", "--vf-parent"]),
        ("sriov_two_pfs", &["3b:00.3", "--vf-parent"]),
        // One-time-use devices (2025.2 on), named after this host's name or
        // the one given; a VF in Placement, where --one-time-use is refused.
        (
            "hgx",
            &[A100_PLACEMENT, &["--fabric", "shared", "--one-time-use"]].concat(),
        ),
        (
            "hgx_paired",
            &["--fabric", "full", "--placement", "--one-time-use"],
        ),
        ("lab", &["25:00.0", "--placement", "--one-time-use"]),
        ("lab", &["3b:00.3", "--placement"]),
        (
            "workstation",
            &[
                "group=1",
                "--placement",
                "--one-time-use",
                "--hypervisor-hostname",
                "gpu-ws.example.org",
            ],
        ),
    ];
    for (_, host) in &hosts {
        host.write("proc/sys/kernel/hostname", "compute-7\n");
    }
    // Where vfioctl refuses --one-time-use, and the case without it whose
    // configuration Nova must refuse once the tag is added.
    let refusals: Vec<Value> = [
        (
            "vf",
            "lab",
            &["3b:00.3", "--placement"][..],
            "0000:3b:00.3 is a VF (type-VF)",
        ),
        (
            "no_placement",
            "hgx",
            &["10de:20b0", "--fabric", "shared"][..],
            "--one-time-use needs --placement",
        ),
    ]
    .iter()
    .map(|(kind, host_name, base, expect)| {
        let host = &hosts.iter().find(|(n, _)| n == host_name).unwrap().1;
        let args: Vec<&str> = [base, &["--one-time-use"][..]].concat();
        let run = vfioctl(
            host.root(),
            &[&["nova", "--release", "2025.2"][..], &args].concat(),
        );
        serde_json::json!({
            "kind": kind, "host": host_name, "args": args, "base_args": base,
            "release": "2025.2", "status": run.status, "stderr": run.stderr, "expect": expect,
        })
    })
    .collect();
    let mut host_devices = serde_json::Map::new();
    for (name, host) in &hosts {
        host_devices.insert(name.to_string(), json(host.root(), &["list", "--json"]));
    }
    // One thread per variant: the vfioctl runs, not Nova, take most of the time.
    let cases: Vec<Value> = std::thread::scope(|scope| {
        let workers: Vec<_> = variants
            .iter()
            .map(|(host_name, args)| {
                let host = &hosts.iter().find(|(n, _)| n == host_name).unwrap().1;
                scope.spawn(move || {
                    RELEASES
                        .iter()
                        .filter_map(|release| oracle_case(host_name, host, args, release))
                        .collect::<Vec<Value>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let doc = serde_json::json!({"hosts": host_devices, "cases": cases, "refusals": refusals});
    let mut child = Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nova/oracle.py"))
        .stdin(Stdio::piped())
        .spawn()
        .expect("run the Nova oracle");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.to_string().as_bytes())
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "Nova's own code refused vfioctl's output (see above)"
    );
}

/// The check result for one device's declaration, from `check --json`.
fn binding_check(host: &FakeHost, key: &str) -> Value {
    let run = vfioctl(host.root(), &["check", "--json"]);
    let value: Value = serde_json::from_str(&run.stdout).expect("check --json");
    value["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == format!("binding.{key}"))
        .unwrap_or_else(|| panic!("no binding.{key} in {value}"))
        .clone()
}

#[test]
fn fabric_manager_keeps_nvswitches_from_bind_persist_and_check() {
    let host = topologies::hgx_a100();
    // Before Fabric Manager: an NVSwitch may be planned for VFIO.
    let run = vfioctl(host.root(), &["bind", "b7:00.0", "--dry-run"]);
    assert_eq!(run.status, 0, "{}", run.stderr);

    host.write(
        "etc/systemd/system/multi-user.target.wants/nvidia-fabricmanager.service",
        "",
    );
    let refused =
        "0000:b7:00.0 is an NVSwitch (10de:1af1) and this host runs its NVLink fabric shared";
    let run = vfioctl(host.root(), &["bind", "b7:00.0", "--dry-run", "--force"]);
    assert_eq!(run.status, 4, "{}", run.stderr);
    assert!(run.stderr.contains(refused), "{}", run.stderr);
    let run = vfioctl(host.root(), &["persist", "add", "10de:1af1"]);
    assert_eq!(run.status, 4, "{}", run.stderr);
    assert!(run.stderr.contains(refused), "{}", run.stderr);
    assert!(
        !host.path("etc/vfioctl/bindings.d").exists()
            || std::fs::read_dir(host.path("etc/vfioctl/bindings.d"))
                .unwrap()
                .next()
                .is_none()
    );
    // GPUs still go.
    let run = vfioctl(host.root(), &["bind", "48:00.0", "--dry-run"]);
    assert_eq!(run.status, 0, "{}", run.stderr);

    // A declaration written by hand before Fabric Manager came is flagged.
    host.write(
        "etc/vfioctl/bindings.d/switch.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"1af1\"\naddress = \"0000:b7:00.0\"\n",
    );
    let check = binding_check(&host, "0000:b7:00.0");
    assert_eq!(check["status"], "CRITICAL", "{check}");
    assert!(
        check
            .to_string()
            .contains("stays on the host's nvidia driver for Fabric Manager"),
        "{check}"
    );

    // Fabric Manager running (not enabled) counts too.
    let running = topologies::hgx_a100();
    running.process(4242, "nv-fabricmanager", &[]);
    let run = vfioctl(running.root(), &["bind", "b8:00.0", "--dry-run"]);
    assert_eq!(run.status, 4, "{}", run.stderr);
}

/// `--vf-parent`: the VFs of one PF, all offered, get one spec naming the PF
/// (Nova matches a VF by its parent's address); a PF with VFs left out
/// keeps one spec per VF. Nova's own matcher judges both in nova_oracle.
#[test]
fn vf_parent_names_the_pf_of_whole_vf_sets() {
    let host = sriov_two_pfs();
    let both = ok(
        host.root(),
        &[
            "nova",
            "3b:00.2",
            "3b:00.3",
            "--vf-parent",
            "--part",
            "compute",
        ],
    );
    assert!(
        both.contains(r#"device_spec = {"vendor_id": "15b3", "product_id": "1018", "address": "0000:3b:00.0"}"#),
        "{both}"
    );
    assert!(!both.contains("0000:3b:00.2\""), "{both}");
    let one = ok(
        host.root(),
        &["nova", "3b:00.3", "--vf-parent", "--part", "compute"],
    );
    assert!(one.contains(r#""address": "0000:3b:00.3""#), "{one}");
    let without = ok(
        host.root(),
        &["nova", "3b:00.2", "3b:00.3", "--part", "compute"],
    );
    assert!(
        without.contains(r#""address": "0000:3b:00.2""#),
        "{without}"
    );
}

/// VFs a `[[sriov]]` declaration governs are declared devices for `nova`:
/// offered by default and `"managed": "no"` from 2025.1 (vfioctl keeps
/// them on vfio-pci); with `--vf-parent`, one spec names their PF.
#[test]
fn vfs_of_a_declared_pf_are_offered_as_declared() {
    let host = sriov_two_pfs();
    host.write(
        "etc/vfioctl/bindings.d/nic.toml",
        "[[sriov]]\naddress = \"0000:3b:00.0\"\nvendor = \"15b3\"\ndevice = \"1017\"\nnumvfs = 2\n",
    );
    let compute = ok(
        host.root(),
        &[
            "nova",
            "--release",
            "2025.1",
            "--vf-parent",
            "--part",
            "compute",
        ],
    );
    assert!(
        compute.contains(r#"device_spec = {"vendor_id": "15b3", "product_id": "1018", "address": "0000:3b:00.0", "managed": "no"}"#),
        "{compute}"
    );
    assert!(!compute.contains("0000:3b:01.2"), "{compute}");
}
