//! The binding engine against fake hosts and a simulated kernel: planning,
//! every refusal, apply, verification, rollback, the change record.

mod support;

use std::time::Duration;

use support::fakehost::{Dev, FakeHost};
use support::simkernel::SimKernel;
use support::topologies;
use vfioctl::engine::apply::Status;
use vfioctl::engine::plan::{Goal, PlanError, Step};
use vfioctl::engine::run::{self, ChangeReport, ChangeSpec};
use vfioctl::host::state;
use vfioctl::host::sysfs::{read_inventory, Names};
use vfioctl::host::HostRoot;
use vfioctl::model::{DriverName, Inventory, PciAddress, Selector};

fn spec(goal: Goal, selectors: &[&str]) -> ChangeSpec {
    ChangeSpec {
        path: vfioctl::gate::path_of(&goal),
        goal,
        selectors: selectors
            .iter()
            .map(|s| s.parse::<Selector>().unwrap())
            .collect(),
        with_group: false,
        force: false,
        dry_run: false,
        timeout: Duration::from_millis(300),
        vms: vfioctl::host::vms::VmSource::Skipped,
    }
}

fn run(host: &FakeHost, kernel: &SimKernel, spec: &ChangeSpec) -> anyhow::Result<ChangeReport> {
    run::run(&HostRoot::new(host.root()), spec, kernel)
}

fn inventory(host: &FakeHost) -> Inventory {
    read_inventory(&HostRoot::new(host.root()), Names::Skip).unwrap()
}

fn driver_of(host: &FakeHost, addr: &str) -> Option<String> {
    let inv = inventory(host);
    inv.device(&addr.parse().unwrap())
        .unwrap()
        .driver
        .as_ref()
        .map(|d| d.to_string())
}

fn override_of(host: &FakeHost, addr: &str) -> Option<String> {
    let inv = inventory(host);
    inv.device(&addr.parse().unwrap())
        .unwrap()
        .driver_override
        .as_ref()
        .map(|d| d.to_string())
}

fn refusal(result: anyhow::Result<ChangeReport>) -> String {
    let err = result.expect_err("refused");
    match err.downcast_ref::<PlanError>() {
        Some(PlanError::Refused(reasons)) => vfioctl::gate::joined(reasons),
        other => panic!("expected a refusal, got {other:?}: {err:#}"),
    }
}

fn addr(text: &str) -> PciAddress {
    text.parse().unwrap()
}

#[test]
fn bind_and_restore_a_gpu() {
    let host = topologies::hgx_a100();
    let kernel = SimKernel::new(&host);
    let report = run(&host, &kernel, &spec(Goal::BindVfio, &["48:00.0"])).unwrap();
    let action = &report.plan.actions[0];
    assert_eq!(
        action.steps,
        vec![
            Step::SetOverride {
                driver: Some(DriverName::vfio_pci())
            },
            Step::Unbind {
                driver: DriverName::new("nvidia")
            },
            Step::Probe,
            Step::Verify {
                expect: vfioctl::engine::plan::Expect::Driver(DriverName::vfio_pci()),
                vfio_group: Some(27)
            },
        ]
    );
    let result = report.result.unwrap();
    assert!(result.succeeded());
    assert_eq!(result.devices[0].status, Status::Done);
    assert_eq!(
        driver_of(&host, "0000:48:00.0").as_deref(),
        Some("vfio-pci")
    );
    assert_eq!(
        override_of(&host, "0000:48:00.0").as_deref(),
        Some("vfio-pci")
    );
    assert!(host.path("dev/vfio/27").exists());

    let record = state::read_record(&HostRoot::new(host.root())).unwrap();
    let entry = record.entry(&addr("48:00.0")).unwrap();
    assert_eq!(entry.previous_driver.as_deref(), Some("nvidia"));
    assert_eq!(entry.driver.as_deref(), Some("vfio-pci"));
    assert_eq!(entry.command, "bind");
    let show = std::process::Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .args(["--root", host.root().to_str().unwrap(), "show", "48:00.0"])
        .output()
        .unwrap();
    let show = String::from_utf8(show.stdout).unwrap();
    assert!(show.contains("changed by   vfioctl bind at 20"), "{show}");
    assert!(show.contains("(before: nvidia)"), "{show}");

    let report = run(&host, &kernel, &spec(Goal::Restore, &["48:00.0"])).unwrap();
    assert!(report.result.unwrap().succeeded());
    assert_eq!(driver_of(&host, "0000:48:00.0").as_deref(), Some("nvidia"));
    assert_eq!(override_of(&host, "0000:48:00.0"), None);
    assert!(!host.path("dev/vfio/27").exists());
    let record = state::read_record(&HostRoot::new(host.root())).unwrap();
    assert!(record.entry(&addr("48:00.0")).is_none());
}

#[test]
fn a_device_already_bound_is_left_untouched() {
    let host = topologies::hgx_a100();
    let kernel = SimKernel::new(&host);
    let report = run(&host, &kernel, &spec(Goal::BindVfio, &["25:00.0"])).unwrap();
    assert!(!report.plan.changes());
    assert!(report.result.is_none());
    assert!(kernel.writes().is_empty(), "{:?}", kernel.writes());
    assert!(report.plan.notes[0].contains("already as wanted"));
}

#[test]
fn bound_without_override_is_pinned_without_unbinding() {
    let mut host = FakeHost::new();
    host.iommu_unit("dmar0");
    host.add(
        Dev::endpoint("0000:05:00.0", 0x8086, 0x10d3, 0x020000)
            .driver("vfio-pci", Some("vfio_pci"))
            .group(3),
    );
    let kernel = SimKernel::new(&host);
    let report = run(&host, &kernel, &spec(Goal::BindVfio, &["05:00.0"])).unwrap();
    assert_eq!(report.plan.actions[0].steps.len(), 1);
    assert_eq!(kernel.writes(), ["override 0000:05:00.0 vfio-pci"]);
}

#[test]
fn gpu_companions_come_along_and_the_root_port_is_ignored() {
    let host = topologies::workstation_gpu();
    let kernel = SimKernel::new(&host);
    let report = run(&host, &kernel, &spec(Goal::BindVfio, &["01:00.0"])).unwrap();
    let planned: Vec<String> = report
        .plan
        .actions
        .iter()
        .map(|a| a.address.to_string())
        .collect();
    assert_eq!(
        planned,
        [
            "0000:01:00.0",
            "0000:01:00.1",
            "0000:01:00.2",
            "0000:01:00.3"
        ]
    );
    assert!(report
        .plan
        .notes
        .iter()
        .any(|n| n.contains("0000:01:00.1 added: companion of 0000:01:00.0")));
    assert!(report
        .plan
        .checks
        .iter()
        .any(|c| c == "IOMMU group 1 will be viable"));
    assert!(report.result.unwrap().succeeded());
    for f in [
        "0000:01:00.0",
        "0000:01:00.1",
        "0000:01:00.2",
        "0000:01:00.3",
    ] {
        assert_eq!(driver_of(&host, f).as_deref(), Some("vfio-pci"), "{f}");
    }
    assert_eq!(
        driver_of(&host, "0000:00:01.0").as_deref(),
        Some("pcieport")
    );

    // Restore brings the companions back with the GPU.
    let report = run(&host, &kernel, &spec(Goal::Restore, &["01:00.0"])).unwrap();
    assert!(report.result.unwrap().succeeded());
    assert_eq!(
        driver_of(&host, "0000:01:00.1").as_deref(),
        Some("snd_hda_intel")
    );
    assert_eq!(
        driver_of(&host, "0000:01:00.3").as_deref(),
        Some("nvidia-gpu")
    );
}

#[test]
fn a_group_left_non_viable_is_refused_unless_with_group() {
    let host = topologies::shared_group();
    let kernel = SimKernel::new(&host);
    let reason = refusal(run(&host, &kernel, &spec(Goal::BindVfio, &["02:00.0"])));
    assert_eq!(
        reason,
        "IOMMU group 8 would not be viable: 0000:03:00.0 on igb would stay on a host driver; add --with-group to bind every endpoint of the group"
    );
    assert!(kernel.writes().is_empty());

    let mut with_group = spec(Goal::BindVfio, &["02:00.0"]);
    with_group.with_group = true;
    let report = run(&host, &kernel, &with_group).unwrap();
    assert!(report.result.unwrap().succeeded());
    assert_eq!(
        driver_of(&host, "0000:03:00.0").as_deref(),
        Some("vfio-pci")
    );
    assert_eq!(
        driver_of(&host, "0000:00:1c.0").as_deref(),
        Some("pcieport"),
        "bridges are never touched"
    );
    assert!(!kernel.writes().iter().any(|w| w.contains("0000:00:1c.0")));
}

#[test]
fn bridges_are_refused() {
    let host = topologies::shared_group();
    let kernel = SimKernel::new(&host);
    let reason = refusal(run(&host, &kernel, &spec(Goal::Unbind, &["00:1c.0"])));
    assert!(
        reason.contains("0000:00:1c.0 is a bridge or port"),
        "{reason}"
    );
}

/// A host whose NVMe disks and NIC serve the host: root on nvme0n1, a
/// volume on nvme1n1, swap on a third NVMe, the default route through a
/// bridge over eno1, addresses on eno2, the console on a BMC's VGA.
fn busy_host() -> FakeHost {
    let mut host = topologies::disks_and_nic();
    host.add_bound_endpoints(&[
        ("0000:04:00.0", 0x8086, 0x1521, 0x020000, "igb"),
        ("0000:05:00.0", 0x1a03, 0x2000, 0x030000, "ast"),
        ("0000:06:00.0", 0x144d, 0xa80a, 0x010802, "nvme"),
    ]);
    host.block_device("0000:06:00.0", "nvme2n1", "259:2")
        .virtual_block_device("dm-0", "253:0", &["nvme1n1"])
        .mount("253:0", "/srv/data", "/dev/mapper/vg-data")
        .swap("/dev/nvme2n1")
        .netdev("0000:04:00.0", "eno2")
        .virtual_netdev("br0", &["eno1"])
        .route("br0", false)
        .route("br0", true)
        .route("eno2", false)
        .fb_console("0000:05:00.0");
    host
}

#[test]
fn host_devices_are_refused_and_force_overrides_all_but_root() {
    let host = busy_host();
    let kernel = SimKernel::new(&host);
    let cases = [
        (
            "01:00.0",
            "0000:01:00.0 backs the root filesystem (/dev/nvme0n1); refused even with --force",
        ),
        (
            "02:00.0",
            "0000:02:00.0 backs /srv/data (/dev/mapper/vg-data); use --force to release it anyway",
        ),
        (
            "06:00.0",
            "0000:06:00.0 backs swap on /dev/nvme2n1; refused even with --force",
        ),
        (
            "03:00.0",
            "0000:03:00.0 carries the default route (br0); use --force",
        ),
        (
            "04:00.0",
            "0000:04:00.0 carries addresses on eno2; use --force",
        ),
        (
            "05:00.0",
            "0000:05:00.0 is the framebuffer console (fb0); use --force",
        ),
    ];
    for (device, expected) in cases {
        let reason = refusal(run(&host, &kernel, &spec(Goal::BindVfio, &[device])));
        assert!(reason.contains(expected), "{device}: {reason}");
        let reason = refusal(run(&host, &kernel, &spec(Goal::Unbind, &[device])));
        assert!(reason.contains(expected), "unbind {device}: {reason}");
    }
    assert!(kernel.writes().is_empty());

    let mut forced = spec(Goal::BindVfio, &["02:00.0", "03:00.0"]);
    forced.force = true;
    let report = run(&host, &kernel, &forced).unwrap();
    assert!(report
        .plan
        .notes
        .iter()
        .any(|n| n.contains("released anyway (--force)")));
    assert!(report.result.unwrap().succeeded());

    let mut root = spec(Goal::BindVfio, &["01:00.0"]);
    root.force = true;
    let reason = refusal(run(&host, &kernel, &root));
    assert!(reason.contains("refused even with --force"), "{reason}");
    assert_eq!(driver_of(&host, "0000:01:00.0").as_deref(), Some("nvme"));
}

#[test]
fn virtio_9p_shares_and_overlay_roots_are_traced_to_their_device() {
    let mut host = topologies::no_iommu();
    host.iommu_unit("dmar0");
    host.virtio_9p("0000:00:02.0", "virtio1", "hostroot");
    host.mountinfo_line("21 1 0:25 / /host ro,relatime - 9p hostroot ro,trans=virtio,version=9p2000.L")
        .mountinfo_line("22 1 0:30 / / rw,relatime - overlay overlay rw,lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work");
    let kernel = SimKernel::new(&host);
    let reason = refusal(run(&host, &kernel, &spec(Goal::Unbind, &["00:02.0"])));
    assert!(
        reason.contains(
            "0000:00:02.0 backs the root filesystem (overlay); refused even with --force"
        ),
        "{reason}"
    );
    assert!(
        reason.contains("0000:00:02.0 backs /host (hostroot)"),
        "{reason}"
    );
    // The other virtio function carries nothing the host uses.
    let report = run(&host, &kernel, &spec(Goal::Unbind, &["00:03.0"])).unwrap();
    assert!(report.result.unwrap().succeeded());
}

#[test]
fn nvme_multipath_namespaces_are_traced_to_their_controller() {
    let host = busy_host();
    host.nvme_multipath("0000:06:00.0", "nvme5n1", "nvme5", "259:7")
        .mount("259:7", "/var/lib/nova", "/dev/nvme5n1");
    let kernel = SimKernel::new(&host);
    let reason = refusal(run(&host, &kernel, &spec(Goal::BindVfio, &["06:00.0"])));
    assert!(
        reason.contains("0000:06:00.0 backs /var/lib/nova (/dev/nvme5n1)"),
        "{reason}"
    );
}

#[test]
fn a_process_holding_an_nvme_multipath_namespace_holds_its_controller() {
    // Native multipath (Debian's and RHEL's kernels): /dev/nvme5n1 is a head
    // under nvme-subsystem, not under the PCI function. A process with it
    // open (a database on the raw namespace) holds the controller.
    let host = busy_host();
    host.nvme_multipath("0000:06:00.0", "nvme5n1", "nvme5", "259:7");
    host.write("dev/nvme5n1", "");
    host.process(4242, "postgres", &["/dev/nvme5n1"]);
    let kernel = SimKernel::new(&host);
    let mut forced = spec(Goal::BindVfio, &["06:00.0"]);
    forced.force = true;
    let reason = refusal(run(&host, &kernel, &forced));
    assert!(
        reason.contains("0000:06:00.0 is held open by PID 4242 (postgres) through /dev/nvme5n1"),
        "{reason}"
    );
}

#[test]
fn boot_vga_is_refused_without_force() {
    let host = topologies::workstation_gpu();
    let kernel = SimKernel::new(&host);
    let reason = refusal(run(&host, &kernel, &spec(Goal::BindVfio, &["00:02.0"])));
    assert!(
        reason.contains("0000:00:02.0 is the boot display (boot_vga)"),
        "{reason}"
    );
}

#[test]
fn holders_block_and_are_named() {
    // A VM holds the GPU's VFIO group: restore and unbind are refused, even forced.
    let host = topologies::hgx_a100();
    host.process(
        4242,
        "qemu-system-x86",
        &["/dev/null", "/dev/vfio/21", "/dev/vfio/vfio"],
    );
    let kernel = SimKernel::new(&host);
    let mut forced = spec(Goal::Restore, &["25:00.0"]);
    forced.force = true;
    let reason = refusal(run(&host, &kernel, &forced));
    assert_eq!(
        reason,
        "0000:25:00.0 is held open by PID 4242 (qemu-system-x86) through /dev/vfio/21; refused even with --force"
    );
    // Binding it again is a no-op and is not disturbed by the VM.
    assert!(run(&host, &kernel, &spec(Goal::BindVfio, &["25:00.0"])).is_ok());

    // nvidia-persistenced holds the GPU's /dev/nvidiaN: bind is refused.
    host.nvidia_minor("0000:48:00.0", 2).process(
        777,
        "nvidia-persiste",
        &["/dev/nvidiactl", "/dev/nvidia2"],
    );
    let reason = refusal(run(&host, &kernel, &spec(Goal::BindVfio, &["48:00.0"])));
    assert!(
        reason.contains("held open by PID 777 (nvidia-persiste) through /dev/nvidia2"),
        "{reason}"
    );
    // Another GPU's minor is not confused with this one.
    host.nvidia_minor("0000:4d:00.0", 3);
    assert!(run(&host, &kernel, &spec(Goal::BindVfio, &["4d:00.0"]))
        .unwrap()
        .result
        .unwrap()
        .succeeded());
    assert!(kernel
        .writes()
        .iter()
        .all(|w| !w.contains("0000:25:00.0") && !w.contains("0000:48:00.0")));
}

#[test]
fn iommu_off_is_an_environment_error() {
    let host = topologies::no_iommu();
    let kernel = SimKernel::new(&host);
    let err = run(&host, &kernel, &spec(Goal::BindVfio, &["00:03.0"]))
        .err()
        .unwrap();
    assert!(matches!(
        err.downcast_ref::<PlanError>(),
        Some(PlanError::IommuOff(_))
    ));
    assert!(format!("{err}").contains("intel_iommu=on"));
    // pci-stub needs no IOMMU: planned, with its module to load first.
    host.modules("kernel/drivers/pci/pci-stub.ko:\n", "");
    let mut dry = spec(Goal::Bind(DriverName::new("pci-stub")), &["00:03.0"]);
    dry.dry_run = true;
    let report = run(&host, &kernel, &dry).unwrap();
    assert_eq!(
        report.plan.load_modules,
        [vfioctl::model::ModuleName::new("pci_stub")]
    );
}

#[test]
fn variant_driver_is_chosen_by_modules_alias() {
    let host = topologies::sriov_nic();
    host.modules(
        "kernel/drivers/vfio/pci/mlx5/mlx5-vfio-pci.ko.xz: kernel/drivers/vfio/pci/vfio-pci-core.ko.xz\n",
        "alias vfio_pci:v000015B3d00001018sv*sd*bc*sc*i* mlx5_vfio_pci\nalias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\nalias pci:v000015B3d00001018sv*sd*bc*sc*i* mlx5_core\n",
    );
    let kernel = SimKernel::new(&host);
    let mut dry = spec(Goal::BindVfio, &["3b:00.2"]);
    dry.dry_run = true;
    let report = run(&host, &kernel, &dry).unwrap();
    assert_eq!(
        report.plan.actions[0].after.driver,
        Some(DriverName::new("mlx5_vfio_pci"))
    );
    assert!(
        report
            .plan
            .notes
            .iter()
            .any(|n| n.contains("mlx5_vfio_pci chosen")
                && n.contains("vfio_pci:v000015B3d00001018sv*sd*bc*sc*i*")),
        "{:?}",
        report.plan.notes
    );
    // The PF has two VFs enabled: it never changes driver (vfio-pci would
    // refuse it, and unbinding mlx5_core destroys the VFs).
    let mut pf = spec(Goal::BindVfio, &["3b:00.0"]);
    pf.dry_run = true;
    let err = run(&host, &kernel, &pf).err().unwrap();
    assert!(
        format!("{err}").contains("is an SR-IOV PF with 2 VF(s) enabled"),
        "{err}"
    );
    // Without VFs it has no variant: plain vfio-pci, loaded first since it
    // is not registered. (The VFs go through the engine: no kernel write is
    // made without the gate's permit.)
    let no_vfs = vfioctl::engine::sriov::SriovSpec {
        selector: "3b:00.0".parse().unwrap(),
        numvfs: 0,
        vf_driver: vfioctl::model::declaration::DeclaredDriver::Auto,
        force: false,
        dry_run: false,
        timeout: Duration::from_secs(1),
        vms: vfioctl::host::vms::VmSource::Skipped,
    };
    vfioctl::engine::sriov::run(&HostRoot::new(host.root()), &no_vfs, &kernel).unwrap();
    let err = run(&host, &kernel, &pf).err().unwrap();
    assert!(
        format!("{err}").contains("module vfio_pci is not installed for kernel 6.1.0-fake"),
        "{err}"
    );
}

#[test]
fn modules_are_loaded_first_and_blocks_are_reported() {
    let mut host = FakeHost::new();
    host.iommu_unit("dmar0");
    host.add(
        Dev::endpoint("0000:05:00.0", 0x8086, 0x10d3, 0x020000)
            .driver("e1000e", Some("e1000e"))
            .group(3),
    );
    host.modules(
        "kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/vfio.ko.xz\n",
        "",
    );
    let mut kernel = SimKernel::new(&host);
    kernel.faults.loadable.insert("vfio-pci".into());
    let report = run(&host, &kernel, &spec(Goal::BindVfio, &["05:00.0"])).unwrap();
    assert!(report.result.unwrap().succeeded());
    assert_eq!(kernel.writes()[0], "load vfio_pci");
    assert_eq!(
        driver_of(&host, "0000:05:00.0").as_deref(),
        Some("vfio-pci")
    );

    let mut host = FakeHost::new();
    host.iommu_unit("dmar0");
    host.add(
        Dev::endpoint("0000:05:00.0", 0x8086, 0x10d3, 0x020000)
            .driver("e1000e", Some("e1000e"))
            .group(3),
    );
    host.modules("kernel/drivers/vfio/pci/vfio-pci.ko.xz:\n", "");
    host.write(
        "etc/modprobe.d/no-vfio.conf",
        "# site policy\ninstall vfio_pci /bin/false\n",
    );
    let kernel = SimKernel::new(&host);
    let err = run(&host, &kernel, &spec(Goal::BindVfio, &["05:00.0"]))
        .err()
        .unwrap();
    assert_eq!(
        format!("{err}"),
        "module vfio_pci is blocked by /etc/modprobe.d/no-vfio.conf:2 (install vfio_pci /bin/false); remove that line (and rebuild the initramfs) to allow loading it"
    );
    assert!(kernel.writes().is_empty());
}

#[test]
fn a_failure_rolls_every_device_back() {
    let host = topologies::shared_group();
    let mut kernel = SimKernel::new(&host);
    // vfio-pci refuses the NIC: the GPU, bound first, must go back to nvidia.
    kernel
        .faults
        .rejects
        .insert(("0000:03:00.0".into(), "vfio-pci".into()));
    host.bind("0000:02:00.0", "nvidia", Some("nvidia"));
    host.write("sys/bus/pci/drivers/vfio-pci/bind", "");
    let mut with_group = spec(Goal::BindVfio, &["02:00.0"]);
    with_group.with_group = true;
    let report = run(&host, &kernel, &with_group).unwrap();
    let result = report.result.as_ref().unwrap();
    assert!(!result.succeeded());
    assert!(
        result
            .error
            .as_ref()
            .unwrap()
            .to_string()
            .contains("0000:03:00.0: expected driver vfio-pci"),
        "{:?}",
        result.error
    );
    let statuses: Vec<(String, Status)> = result
        .devices
        .iter()
        .map(|d| (d.address.to_string(), d.status.clone()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("0000:02:00.0".to_string(), Status::RolledBack),
            ("0000:03:00.0".to_string(), Status::Failed)
        ]
    );
    assert_eq!(driver_of(&host, "0000:02:00.0").as_deref(), Some("nvidia"));
    assert_eq!(driver_of(&host, "0000:03:00.0").as_deref(), Some("igb"));
    assert_eq!(override_of(&host, "0000:02:00.0"), None);
    assert_eq!(override_of(&host, "0000:03:00.0"), None);
    let failed = run::failure(&report).unwrap();
    assert!(!failed.rollback_failed);
    assert!(failed
        .message
        .ends_with("every device changed was put back (verified on each)"));
    // Nothing is recorded for a change that did not happen.
    assert!(state::read_record(&HostRoot::new(host.root()))
        .unwrap()
        .devices
        .is_empty());
}

#[test]
fn a_failed_rollback_is_reported_as_inconsistent() {
    let host = topologies::shared_group();
    let mut kernel = SimKernel::new(&host);
    kernel
        .faults
        .rejects
        .insert(("0000:03:00.0".into(), "vfio-pci".into()));
    // ... and nvidia will not take the GPU back.
    kernel
        .faults
        .rejects
        .insert(("0000:02:00.0".into(), "nvidia".into()));
    let mut with_group = spec(Goal::BindVfio, &["02:00.0"]);
    with_group.with_group = true;
    let report = run(&host, &kernel, &with_group).unwrap();
    let failed = run::failure(&report).unwrap();
    assert!(failed.rollback_failed);
    assert!(
        failed.message.contains("rollback of 0000:02:00.0 failed"),
        "{}",
        failed.message
    );
}

#[test]
fn a_hung_unbind_is_abandoned_at_the_deadline() {
    let host = topologies::hgx_a100();
    let mut kernel = SimKernel::new(&host);
    kernel.faults.hung_unbind.insert("0000:48:00.0".into());
    let report = run(&host, &kernel, &spec(Goal::BindVfio, &["48:00.0"])).unwrap();
    let result = report.result.unwrap();
    assert_eq!(
        result.devices[0].status,
        Status::Pending,
        "never claimed put back"
    );
    let error = result.error.unwrap().to_string();
    assert!(
        error.contains("0000:48:00.0: unbind from nvidia did not finish within 0s"),
        "{error}"
    );
    assert_eq!(
        override_of(&host, "0000:48:00.0"),
        None,
        "the override is put back"
    );
}

#[test]
fn a_device_vanishing_midway_is_named() {
    let host = topologies::workstation_gpu();
    let mut kernel = SimKernel::new(&host);
    kernel.faults.vanish_on_probe.insert("0000:01:00.2".into());
    let report = run(&host, &kernel, &spec(Goal::BindVfio, &["01:00.0"])).unwrap();
    let result = report.result.as_ref().unwrap();
    assert_eq!(
        result.error.as_ref().map(|e| e.to_string()).as_deref(),
        Some("0000:01:00.2 vanished from /sys/bus/pci/devices")
    );
    // The man page's status for a device that vanished: 3 (not found).
    let failed = vfioctl::engine::run::failure(&report).expect("the apply failed");
    assert_eq!(vfioctl::error::exit_status(&failed.into()).code(), 3);
    assert_eq!(driver_of(&host, "0000:01:00.0").as_deref(), Some("nvidia"));
    assert_eq!(
        driver_of(&host, "0000:01:00.1").as_deref(),
        Some("snd_hda_intel")
    );
}

#[test]
fn unbind_leaves_no_driver_and_keeps_the_override() {
    let host = topologies::hgx_a100();
    let kernel = SimKernel::new(&host);
    let report = run(&host, &kernel, &spec(Goal::Unbind, &["2b:00.0"])).unwrap();
    assert!(report.result.unwrap().succeeded());
    assert_eq!(driver_of(&host, "0000:2b:00.0"), None);
    assert_eq!(
        override_of(&host, "0000:2b:00.0").as_deref(),
        Some("vfio-pci")
    );
    let record = state::read_record(&HostRoot::new(host.root())).unwrap();
    assert_eq!(record.entry(&addr("2b:00.0")).unwrap().driver, None);
}

#[test]
fn dry_run_writes_nothing_and_prints_the_plan() {
    let host = topologies::workstation_gpu();
    let kernel = SimKernel::new(&host);
    let mut dry = spec(Goal::BindVfio, &["01:00.0"]);
    dry.dry_run = true;
    let report = run(&host, &kernel, &dry).unwrap();
    assert!(report.result.is_none());
    assert!(kernel.writes().is_empty());
    assert!(
        !host.path("run/vfioctl").exists(),
        "a dry run takes no lock and records nothing"
    );
    support::golden::check(
        "bind_dry_run_workstation.txt",
        &vfioctl::output::report::render(&report),
    );
    support::golden::check(
        "bind_dry_run_workstation.json",
        &format!("{}\n", serde_json::to_string_pretty(&report).unwrap()),
    );
}

#[test]
fn concurrent_changes_serialise_and_end_correct() {
    let host = topologies::hgx_a100();
    let kernel = SimKernel::new(&host);
    // The timeout is also how long the second waits for the first's lock:
    // a hang guard far beyond the first's few milliseconds (on a loaded
    // machine a short one would decide the test by chance).
    let mut slow = spec(Goal::BindVfio, &["10de:20b0"]);
    slow.timeout = Duration::from_secs(60);
    std::thread::scope(|s| {
        let a = s.spawn(|| run(&host, &kernel, &slow).map(|r| r.result.map(|x| x.succeeded())));
        let b = s.spawn(|| run(&host, &kernel, &slow).map(|r| r.result.map(|x| x.succeeded())));
        let (a, b) = (a.join().unwrap().unwrap(), b.join().unwrap().unwrap());
        // One did the work; the other found it done (no result) or did nothing new.
        assert!(
            matches!((a, b), (Some(true), None) | (None, Some(true))),
            "{a:?} {b:?}"
        );
    });
    let inv = inventory(&host);
    for gpu in inv.devices.iter().filter(|d| d.ids.device.0 == 0x20b0) {
        assert_eq!(gpu.driver, Some(DriverName::vfio_pci()), "{}", gpu.address);
    }
    let unbinds = kernel
        .writes()
        .iter()
        .filter(|w| w.starts_with("unbind"))
        .count();
    assert_eq!(unbinds, 6, "each nvidia GPU unbound exactly once");
}
