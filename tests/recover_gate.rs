//! `recover` is a change like any other: judged by the gate as the command
//! it puts back (a bind put back as `restore`, a restore as `bind`, an sriov
//! as `sriov`), with libvirt's test driver serving the domains of
//! tests/fixtures/libvirt/vms.xml and fake hosts; each case of issue 31's
//! list, refused with exit 4 and nothing written, and allowed where that
//! command allows it.

mod support;

use support::cli::{vfioctl, Run};
use support::fakehost::{Dev, FakeHost};
use support::topologies;
use vfioctl::host::state::{self, Intent, IntentDevice, IntentSriov, IntentVf};
use vfioctl::host::HostRoot;
use vfioctl::model::driver::Binding;
use vfioctl::model::DriverName;

fn vms_uri() -> String {
    format!(
        "test://{}/tests/fixtures/libvirt/vms.xml",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn binding(driver: Option<&str>, over: Option<&str>) -> Binding {
    Binding {
        driver: driver.map(DriverName::new),
        driver_override: over.map(DriverName::new),
    }
}

/// Records an intent of a change whose process is gone (no such PID under
/// the fake /proc): an interrupted change, as `recover` finds one.
fn interrupted(
    host: &FakeHost,
    command: &str,
    devices: Vec<IntentDevice>,
    sriov: Option<IntentSriov>,
) {
    let root = HostRoot::new(host.root());
    let mut record = state::read_record(&root).unwrap();
    record.intent = Some(Intent {
        command: command.to_string(),
        pid: 4_000_000,
        process_start: None,
        boot_id: None,
        started_at: 1_795_537_701,
        devices,
        sriov,
        reset: None,
    });
    state::write_record(&root, &record).unwrap();
}

fn device(addr: &str, before: Binding, target: Binding) -> IntentDevice {
    IntentDevice {
        address: addr.parse().unwrap(),
        before,
        target,
    }
}

fn recover(host: &FakeHost, uri: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--connect", uri, "recover"];
    args.extend_from_slice(extra);
    vfioctl(host.root(), &args)
}

fn override_of(host: &FakeHost, addr: &str) -> String {
    std::fs::read_to_string(host.path(&format!("sys/bus/pci/devices/{addr}/driver_override")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The record gone, so that the command recover is judged as can be asked
/// the same (it refuses while an interrupted change is recorded).
fn without_record(host: &FakeHost) {
    std::fs::remove_file(host.path("run/vfioctl/changes.json")).unwrap();
}

fn still_recorded(host: &FakeHost) -> bool {
    state::read_record(&HostRoot::new(host.root()))
        .unwrap()
        .intent
        .is_some()
}

/// The lab of tests/vms.rs, reduced to what these cases need: the GPU
/// 41:00.0 (+ audio 41:00.1, one group) that the running domain
/// gpu-desktop uses, the e1000e 5e:00.0 that the stopped nic-vm names with
/// managed='no', the ConnectX-5 PF 3b:00.0 whose VF 3b:00.3 the running
/// instance-0000002b uses as an `<interface type='hostdev'>`. No QEMU
/// process holds anything: what refuses is the VM rule, not the open-handle
/// rule.
fn lab() -> FakeHost {
    let mut host = topologies::libvirt_lab();
    host.add(Dev::bridge("0000:40:01.0", 0x8086, 0x347a).group(59));
    for (addr, device, class) in [
        ("0000:41:00.0", 0x20b0, 0x030200),
        ("0000:41:00.1", 0x1aef, 0x040300),
    ] {
        host.add(
            Dev::endpoint(addr, 0x10de, device, class)
                .parent("0000:40:01.0")
                .driver("vfio-pci", Some("vfio_pci"))
                .driver_override("vfio-pci")
                .group(60),
        );
    }
    host.add(
        Dev::endpoint("0000:5e:00.0", 0x8086, 0x10d3, 0x020000)
            .driver("vfio-pci", Some("vfio_pci"))
            .driver_override("vfio-pci")
            .group(70),
    );
    host.register_driver("nvidia", Some("nvidia"));
    host.register_driver("snd_hda_intel", Some("snd_hda_intel"));
    host.register_driver("e1000e", Some("e1000e"));
    host
}

/// An interrupted `bind` of the GPU and its audio function (both got to
/// vfio-pci): recover gives them back to the host.
fn gpu_bind_interrupted(host: &FakeHost) {
    interrupted(
        host,
        "bind",
        vec![
            device(
                "0000:41:00.0",
                binding(Some("nvidia"), None),
                binding(Some("vfio-pci"), Some("vfio-pci")),
            ),
            device(
                "0000:41:00.1",
                binding(Some("snd_hda_intel"), None),
                binding(Some("vfio-pci"), Some("vfio-pci")),
            ),
        ],
        None,
    );
}

#[test]
fn recover_of_a_bind_is_refused_while_a_running_domain_uses_the_device() {
    let host = lab();
    gpu_bind_interrupted(&host);
    for extra in [&[][..], &["--force"], &["--dry-run"]] {
        let r = recover(&host, &vms_uri(), extra);
        assert_eq!(r.status, 4, "{extra:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr
                .contains("0000:41:00.0 is used by domain gpu-desktop (running)")
                && r.stderr.contains("refused even with --force"),
            "{}",
            r.stderr
        );
    }
    // Nothing written; the interrupted change stays recorded.
    assert_eq!(override_of(&host, "0000:41:00.0"), "vfio-pci");
    assert!(still_recorded(&host));
    // `restore` of the same device refuses the same.
    without_record(&host);
    let r = vfioctl(
        host.root(),
        &["--connect", &vms_uri(), "restore", "41:00.0", "--dry-run"],
    );
    assert_eq!(r.status, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("is used by domain gpu-desktop (running)"),
        "{}",
        r.stderr
    );
}

#[test]
fn recover_of_a_bind_named_by_a_stopped_unmanaged_domain_needs_force() {
    let host = lab();
    interrupted(
        &host,
        "bind",
        vec![device(
            "0000:5e:00.0",
            binding(Some("e1000e"), None),
            binding(Some("vfio-pci"), Some("vfio-pci")),
        )],
        None,
    );
    let r = recover(&host, &vms_uri(), &[]);
    assert_eq!(r.status, 4, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("0000:5e:00.0 is named by the config of domain nic-vm (shut off)")
            && r.stderr.contains("managed='no'")
            && r.stderr.contains("use --force to release it anyway"),
        "{}",
        r.stderr
    );
    assert_eq!(override_of(&host, "0000:5e:00.0"), "vfio-pci");
    // --force takes it, exactly as `restore --force` does.
    let r = recover(&host, &vms_uri(), &["--force", "--dry-run"]);
    assert_eq!(r.status, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("nic-vm") && r.stdout.contains("released anyway (--force)"),
        "{}",
        r.stdout
    );
}

#[test]
fn recover_of_a_bind_is_refused_while_libvirt_does_not_answer() {
    let host = lab();
    gpu_bind_interrupted(&host);
    let dir = tempfile::tempdir().unwrap();
    let silent = support::silent::SilentLibvirt::at(&dir.path().join("virtqemud-sock-ro"));
    let uri = silent.uri();
    let r = vfioctl(
        host.root(),
        &[
            "--connect",
            &uri,
            "--connect-timeout",
            "1",
            "recover",
            "--force",
        ],
    );
    assert_eq!(r.status, 4, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("whether a VM uses it is unknown, as libvirt did not answer"),
        "{}",
        r.stderr
    );
    assert!(still_recorded(&host));
    // --no-libvirt goes on without the VM rules, and says so.
    let r = vfioctl(host.root(), &["--no-libvirt", "recover", "--dry-run"]);
    assert_eq!(r.status, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("VMs not checked: --no-libvirt"),
        "{}",
        r.stdout
    );
}

#[test]
fn recover_of_an_sriov_change_never_destroys_a_vf_a_running_domain_uses() {
    let host = lab();
    // The interrupted `sriov 3b:00.0 --numvfs 2` created both VFs; putting
    // it back (0 VFs) destroys 3b:00.3, which instance-0000002b uses.
    interrupted(
        &host,
        "sriov",
        vec![],
        Some(IntentSriov {
            pf: "0000:3b:00.0".parse().unwrap(),
            numvfs_before: 0,
            numvfs: 2,
            autoprobe_before: Some(true),
            vfs_before: Vec::<IntentVf>::new(),
        }),
    );
    let numvfs = || {
        std::fs::read_to_string(host.path("sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs")).unwrap()
    };
    let before = numvfs();
    for extra in [&[][..], &["--force"]] {
        let r = recover(&host, &vms_uri(), extra);
        assert_eq!(r.status, 4, "{}{}", r.stdout, r.stderr);
        assert!(
            r.stderr
                .contains("recover would destroy the VFs the interrupted change created")
                && r.stderr
                    .contains("0000:3b:00.3 is used by domain instance-0000002b (running"),
            "{}",
            r.stderr
        );
    }
    assert_eq!(numvfs(), before, "sriov_numvfs untouched");
    // `sriov --numvfs 0` refuses the same.
    without_record(&host);
    let r = vfioctl(
        host.root(),
        &[
            "--connect",
            &vms_uri(),
            "sriov",
            "3b:00.0",
            "--numvfs",
            "0",
            "--dry-run",
        ],
    );
    assert_eq!(r.status, 4, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("is used by domain instance-0000002b (running"),
        "{}",
        r.stderr
    );
}

#[test]
fn recover_of_a_restore_of_an_nvswitch_is_judged_as_bind() {
    use support::topologies::{hgx_switches, NvSwitches};
    // Fabric Manager is enabled: the NVSwitches stay on the host (shared
    // fabric). An interrupted `restore` of b7:00.0 had moved it to
    // nvidia-nvswitch; putting it back onto vfio-pci is what `bind` refuses.
    let host = hgx_switches(NvSwitches::FabricManager);
    interrupted(
        &host,
        "restore",
        vec![device(
            "0000:b7:00.0",
            binding(Some("vfio-pci"), Some("vfio-pci")),
            binding(Some("nvidia-nvswitch"), None),
        )],
        None,
    );
    let r = vfioctl(host.root(), &["recover", "--force"]);
    assert_eq!(r.status, 4, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("0000:b7:00.0 is an NVSwitch"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("Fabric Manager"), "{}", r.stderr);
    assert!(still_recorded(&host));
    without_record(&host);
    let bind = vfioctl(host.root(), &["bind", "b7:00.0", "--dry-run", "--force"]);
    assert_eq!(bind.status, 4, "{}", bind.stderr);
    assert!(
        bind.stderr.contains("0000:b7:00.0 is an NVSwitch"),
        "{}",
        bind.stderr
    );
}

#[test]
fn recover_of_a_restore_of_a_group_member_keeps_the_group_viable() {
    // Two endpoints in one IOMMU group; an interrupted `restore` of only one
    // had moved it to its host driver while the other is on its own host
    // driver too: putting the first back on vfio-pci leaves the group split,
    // which `bind` refuses.
    let mut host = topologies::disks_and_nic();
    host.add(
        Dev::endpoint("0000:09:00.0", 0x8086, 0x10d3, 0x020000)
            .driver("e1000e", Some("e1000e"))
            .group(9),
    );
    host.add(
        Dev::endpoint("0000:09:00.1", 0x8086, 0x10d3, 0x020000)
            .driver("e1000e", Some("e1000e"))
            .group(9),
    );
    interrupted(
        &host,
        "restore",
        vec![device(
            "0000:09:00.0",
            binding(Some("vfio-pci"), Some("vfio-pci")),
            binding(Some("e1000e"), None),
        )],
        None,
    );
    let r = vfioctl(host.root(), &["recover", "--force"]);
    assert_eq!(r.status, 4, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("IOMMU group 9 would not be viable: 0000:09:00.1 on e1000e"),
        "{}",
        r.stderr
    );
    assert!(still_recorded(&host));
}

#[test]
fn recover_never_rearms_an_override_that_would_take_the_root_disk() {
    // `restore` of the root NVMe had cleared a stale driver_override of
    // vfio-pci (the device on nvme all along) and was killed before it
    // cleared its intent. Writing vfio-pci back would hand the root disk to
    // vfio-pci at its next probe: recover leaves it out, says so, and clears
    // the intent.
    let host = topologies::disks_and_nic();
    interrupted(
        &host,
        "restore",
        vec![device(
            "0000:01:00.0",
            binding(Some("nvme"), Some("vfio-pci")),
            binding(Some("nvme"), None),
        )],
        None,
    );
    let r = vfioctl(host.root(), &["recover", "--dry-run"]);
    assert_eq!(r.status, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("0000:01:00.0: its driver_override vfio-pci is not written back"),
        "{}",
        r.stdout
    );
    let r = vfioctl(host.root(), &["recover"]);
    assert_eq!(r.status, 0, "{}{}", r.stdout, r.stderr);
    assert_ne!(override_of(&host, "0000:01:00.0"), "vfio-pci");
    assert!(!still_recorded(&host));
}

#[test]
fn check_is_critical_for_an_override_the_next_probe_turns_against_the_host() {
    // Whoever wrote it: the root NVMe with driver_override vfio-pci.
    let host = topologies::disks_and_nic();
    host.write(
        "sys/bus/pci/devices/0000:01:00.0/driver_override",
        "vfio-pci\n",
    );
    let r = vfioctl(host.root(), &["check"]);
    assert_eq!(r.status, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("binding.0000:01:00.0.override")
            && r.stdout.contains("backs the root filesystem")
            && r.stdout.contains("vfio-pci at its next probe"),
        "{}",
        r.stdout
    );
    // An override the host does not use is no threat.
    let host = topologies::disks_and_nic();
    host.write(
        "sys/bus/pci/devices/0000:02:00.0/driver_override",
        "vfio-pci\n",
    );
    let r = vfioctl(host.root(), &["check", "--json"]);
    assert!(
        !r.stdout.contains("binding.0000:02:00.0.override"),
        "{}",
        r.stdout
    );
}
