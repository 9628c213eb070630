//! `nodedev` and `nova` end to end: libvirt's test driver (no daemon) serving
//! fixture node devices, cross-checked against fake sysfs hosts; the Nova
//! configuration parsed back with Python's configparser and json.

mod support;

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cli::vfioctl;
use support::fakehost::{Dev, FakeHost};
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
    let socket = dir.path().join("libvirt-sock");
    // Accepts connections and never answers, like a wedged libvirtd.
    let listener = UnixListener::bind(&socket).unwrap();
    let held = std::thread::spawn(move || {
        let conn = listener.accept();
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let host = topologies::libvirt_lab();
    let uri = format!("qemu+unix:///system?socket={}", socket.display());
    let start = Instant::now();
    let run = vfioctl(
        host.root(),
        &["nodedev", "-c", &uri, "--connect-timeout", "1"],
    );
    let took = start.elapsed();
    assert_eq!(run.status, 5, "{}", run.stderr);
    assert!(took < Duration::from_secs(4), "took {took:?}");
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
    held.join().unwrap();
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
        "openstack flavor set FLAVOR --property pci_passthrough:alias=nvidia-a100-sxm4-40gb:1\n\
         openstack flavor set FLAVOR --property pci_passthrough:alias=mellanox-connectx-5-virtual-function:1\n\
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
    let controller = python_ini(&ok(
        host.root(),
        &[&args[..], &["--part", "controller"]].concat(),
    ));
    assert_eq!(
        controller["filter_scheduler"]["enabled_filters"][0],
        "AvailabilityZoneFilter,ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter,ServerGroupAntiAffinityFilter,ServerGroupAffinityFilter,PciPassthroughFilter"
    );
}

/// The compute part of `nova 10de:20b0` on `host` for `release`, parsed.
fn compute_pci(host: &FakeHost, release: &str) -> Value {
    let text = ok(
        host.root(),
        &[
            "nova",
            "10de:20b0",
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
    let value = json(host.root(), &["nova", "--release", "2025.1", "--json"]);
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
            &["nova", "10de:20b0", "--alias", "a:b"],
            2,
            "alias name 'a:b' is not usable",
        ),
        (
            &[
                "nova",
                "10de:20b0",
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
    for (args, status, message) in cases {
        let run = vfioctl(host.root(), args);
        assert_eq!(run.status, *status, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        if args.contains(&"--json") {
            // --json: the one document is the error object.
            let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
            assert_eq!(doc["exit_status"], *status);
            assert_eq!(doc["error"]["kind"], "usage");
        } else {
            assert!(run.stdout.is_empty());
        }
    }
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
