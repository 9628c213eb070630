//! Fake hosts that cover the cases vfioctl must get right.

use super::fakehost::{Dev, FakeHost};

pub fn pci_ids() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pci.ids"
    ))
    .expect("tests/fixtures/pci.ids")
}

/// An HGX A100 node as in the OpenStack runbook: eight A100s (10de:20b0,
/// SR-IOV capable, so Nova type-PF) behind PCIe switches, six NVSwitches
/// (10de:1af1: class "Bridge" but type-0 endpoints), a boot NVMe, an I350
/// management NIC and the BMC's VGA. Two GPUs are already on vfio-pci.
pub fn hgx_a100() -> FakeHost {
    let mut host = FakeHost::new();
    host.iommu_unit("dmar0")
        .iommu_unit("dmar1")
        .pci_ids(&pci_ids());
    let mut group = 10;
    let mut next_group = || {
        group += 1;
        group
    };

    // Host-side devices on NUMA node 0.
    host.add(
        Dev::bridge("0000:00:01.0", 0x8086, 0x347a)
            .group(next_group())
            .numa(0),
    );
    host.add(
        Dev::endpoint("0000:01:00.0", 0x144d, 0xa80a, 0x010802)
            .parent("0000:00:01.0")
            .driver("nvme", Some("nvme"))
            .group(next_group())
            .numa(0),
    );
    host.add(
        Dev::bridge("0000:00:02.0", 0x8086, 0x347a)
            .group(next_group())
            .numa(0),
    );
    host.add(
        Dev::endpoint("0000:02:00.0", 0x8086, 0x1521, 0x020000)
            .revision(0x01)
            .parent("0000:00:02.0")
            .driver("igb", Some("igb"))
            .sriov(7)
            .group(next_group())
            .numa(0),
    );
    host.add(
        Dev::bridge("0000:00:03.0", 0x8086, 0x347a)
            .group(next_group())
            .numa(0),
    );
    host.add(
        Dev::bridge("0000:03:00.0", 0x1a03, 0x1150)
            .parent("0000:00:03.0")
            .unbound()
            .group(next_group())
            .numa(0),
    );
    host.add(
        Dev::endpoint("0000:04:00.0", 0x1a03, 0x2000, 0x030000)
            .revision(0x41)
            .parent("0000:03:00.0")
            .driver("ast", Some("ast"))
            .boot_vga(true)
            .group(next_group())
            .numa(0),
    );

    // GPUs, two per PCIe switch: root port -> switch upstream -> downstream -> GPU.
    let switches = [
        (
            "0000:22:01.0",
            "0000:23:00.0",
            ["0000:25:00.0", "0000:2b:00.0"],
            0,
        ),
        (
            "0000:45:01.0",
            "0000:46:00.0",
            ["0000:48:00.0", "0000:4d:00.0"],
            0,
        ),
        (
            "0000:89:01.0",
            "0000:8a:00.0",
            ["0000:8c:00.0", "0000:91:00.0"],
            1,
        ),
        (
            "0000:c2:01.0",
            "0000:c3:00.0",
            ["0000:c5:00.0", "0000:cb:00.0"],
            1,
        ),
    ];
    for (root_port, upstream, gpus, numa) in switches {
        host.add(
            Dev::bridge(root_port, 0x8086, 0x347a)
                .group(next_group())
                .numa(numa),
        );
        host.add(
            Dev::bridge(upstream, 0x1000, 0xc010)
                .parent(root_port)
                .group(next_group())
                .numa(numa),
        );
        for (i, gpu) in gpus.iter().enumerate() {
            let bus = u8::from_str_radix(&upstream[5..7], 16).unwrap() + 1;
            let downstream = format!("0000:{bus:02x}:{i:02x}.0");
            host.add(
                Dev::bridge(&downstream, 0x1000, 0xc010)
                    .parent(upstream)
                    .group(next_group())
                    .numa(numa),
            );
            let mut dev = Dev::endpoint(gpu, 0x10de, 0x20b0, 0x030200)
                .subsystem(0x10de, 0x134f)
                .parent(&downstream)
                .sriov(16)
                .group(next_group())
                .numa(numa);
            dev = if *gpu == "0000:25:00.0" || *gpu == "0000:2b:00.0" {
                dev.driver("vfio-pci", Some("vfio_pci"))
                    .driver_override("vfio-pci")
            } else {
                dev.driver("nvidia", Some("nvidia"))
            };
            host.add(dev);
        }
    }

    // NVSwitches behind one more switch on NUMA node 1.
    host.add(
        Dev::bridge("0000:b4:01.0", 0x8086, 0x347a)
            .group(next_group())
            .numa(1),
    );
    host.add(
        Dev::bridge("0000:b5:00.0", 0x1000, 0xc010)
            .parent("0000:b4:01.0")
            .group(next_group())
            .numa(1),
    );
    for (i, bus) in [0xb7u8, 0xb8, 0xb9, 0xba, 0xbb, 0xbc].iter().enumerate() {
        let downstream = format!("0000:b6:{i:02x}.0");
        host.add(
            Dev::bridge(&downstream, 0x1000, 0xc010)
                .parent("0000:b5:00.0")
                .group(next_group())
                .numa(1),
        );
        host.add(
            Dev::endpoint(&format!("0000:{bus:02x}:00.0"), 0x10de, 0x1af1, 0x068000)
                .parent(&downstream)
                .driver("nvidia-nvswitch", Some("nvidia"))
                .group(next_group())
                .numa(1),
        );
    }
    host
}

/// A workstation: a Turing GPU whose audio, USB and USB-C functions share its
/// slot and its IOMMU group with the root port above it (no ACS), and the
/// integrated GPU that drives the console.
pub fn workstation_gpu() -> FakeHost {
    let mut host = FakeHost::with_vfio();
    host.pci_ids(&pci_ids());
    host.add(
        Dev::endpoint("0000:00:02.0", 0x8086, 0x3e92, 0x030000)
            .revision(0x02)
            .driver("i915", Some("i915"))
            .boot_vga(true)
            .group(0),
    );
    host.add(
        Dev::bridge("0000:00:01.0", 0x8086, 0x1901)
            .revision(0x0d)
            .group(1),
    );
    host.add(
        Dev::endpoint("0000:01:00.0", 0x10de, 0x1e87, 0x030000)
            .parent("0000:00:01.0")
            .driver("nvidia", Some("nvidia"))
            .boot_vga(false)
            .group(1),
    );
    host.add(
        Dev::endpoint("0000:01:00.1", 0x10de, 0x10f8, 0x040300)
            .parent("0000:00:01.0")
            .driver("snd_hda_intel", Some("snd_hda_intel"))
            .supplier("0000:01:00.0")
            .group(1),
    );
    host.add(
        Dev::endpoint("0000:01:00.2", 0x10de, 0x1ad8, 0x0c0330)
            .parent("0000:00:01.0")
            .driver("xhci_hcd", None)
            .supplier("0000:01:00.0")
            .group(1),
    );
    host.add(
        Dev::endpoint("0000:01:00.3", 0x10de, 0x1ad9, 0x0c8000)
            .parent("0000:00:01.0")
            .driver("nvidia-gpu", Some("i2c_nvidia_gpu"))
            .supplier("0000:01:00.0")
            .group(1),
    );
    host
}

/// A ConnectX-5 SR-IOV PF with two VFs enabled: one on the host driver, one
/// on the mlx5 vfio variant driver; each VF in its own group.
pub fn sriov_nic() -> FakeHost {
    let mut host = FakeHost::new();
    host.iommu_unit("dmar0").pci_ids(&pci_ids());
    host.add(
        Dev::bridge("0000:3a:00.0", 0x8086, 0x347a)
            .group(20)
            .numa(0),
    );
    host.add(
        Dev::endpoint("0000:3b:00.0", 0x15b3, 0x1017, 0x020000)
            .revision(0x00)
            .parent("0000:3a:00.0")
            .driver("mlx5_core", Some("mlx5_core"))
            .sriov(8)
            .group(21)
            .numa(0),
    );
    host.add(
        Dev::endpoint("0000:3b:00.2", 0x15b3, 0x1018, 0x020000)
            .revision(0x00)
            .parent("0000:3a:00.0")
            .vf_of("0000:3b:00.0")
            .driver("mlx5_core", Some("mlx5_core"))
            .group(22)
            .numa(0),
    );
    host.add(
        Dev::endpoint("0000:3b:00.3", 0x15b3, 0x1018, 0x020000)
            .revision(0x00)
            .parent("0000:3a:00.0")
            .vf_of("0000:3b:00.0")
            .driver("mlx5_vfio_pci", Some("mlx5_vfio_pci"))
            .driver_override("mlx5_vfio_pci")
            .group(23)
            .numa(0),
    );
    host
}

/// A virtual machine without an IOMMU, like the machines vfioctl is developed on.
pub fn no_iommu() -> FakeHost {
    let mut host = FakeHost::new();
    host.pci_ids(&pci_ids());
    host.add(Dev::endpoint("0000:00:00.0", 0x8086, 0x29c0, 0x060000).revision(0x02));
    host.add(
        Dev::endpoint("0000:00:02.0", 0x1af4, 0x1042, 0x010000)
            .revision(0x01)
            .driver("virtio-pci", None),
    );
    host.add(
        Dev::endpoint("0000:00:03.0", 0x1af4, 0x1041, 0x020000)
            .revision(0x01)
            .driver("virtio-pci", None),
    );
    host
}

/// The host behind tests/fixtures/libvirt/node.xml (libvirt's test driver):
/// the ConnectX-5 of `sriov_nic` (a PF with two VFs, one on the mlx5 vfio
/// variant), an A100 on vfio-pci (SR-IOV capable with no VF enabled: type-PF)
/// behind its root port, and a boot NVMe (type-PCI).
pub fn libvirt_lab() -> FakeHost {
    let mut host = sriov_nic();
    host.add(
        Dev::bridge("0000:00:01.0", 0x8086, 0x347a)
            .group(10)
            .numa(0),
    );
    host.add(
        Dev::endpoint("0000:25:00.0", 0x10de, 0x20b0, 0x030200)
            .subsystem(0x10de, 0x134f)
            .parent("0000:00:01.0")
            .sriov(16)
            .driver("vfio-pci", Some("vfio_pci"))
            .driver_override("vfio-pci")
            .group(47)
            .numa(0),
    );
    host.add(
        Dev::endpoint("0000:01:00.0", 0x144d, 0xa80a, 0x010802)
            .driver("nvme", Some("nvme"))
            .group(12)
            .numa(0),
    );
    host
}

/// An igb-like SR-IOV PF at 01:00.0 (up to 7 VFs, none enabled) on igb
/// behind a root port, vfio-pci loaded: for VFs created by a simulated
/// kernel (`SimKernel::vf_native` decides what binds them with autoprobe 1).
pub fn igb_pf() -> FakeHost {
    let mut host = FakeHost::new();
    host.iommu_unit("dmar0").pci_ids(&pci_ids());
    host.add(Dev::bridge("0000:00:02.0", 0x8086, 0x347a).group(1));
    host.add(
        Dev::endpoint("0000:01:00.0", 0x8086, 0x10c9, 0x020000)
            .parent("0000:00:02.0")
            .driver("igb", Some("igb"))
            .sriov(7)
            .group(2),
    );
    host.register_driver("vfio-pci", Some("vfio_pci"));
    host
}

/// Where the HGX host's NVSwitches stand, which is what its NVLink fabric
/// mode is read from (`vfioctl nova` without `--fabric`, `check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvSwitches {
    /// On nvidia-nvswitch, Fabric Manager neither enabled nor running (the
    /// seed host as built by [`hgx_a100`]): the host does not say.
    HostDriver,
    /// On nvidia-nvswitch with Fabric Manager enabled at boot: shared.
    FabricManager,
    /// On vfio-pci: full.
    OnVfio,
    /// Still on nvidia-nvswitch, declared for VFIO with `persist`: full.
    Declared,
}

/// The seed HGX host with its NVSwitches in `state`. Fabric Manager is
/// enabled the way `systemctl enable` does it: a link in
/// multi-user.target.wants to the unit on the host (dangling under a root).
pub fn hgx_switches(state: NvSwitches) -> FakeHost {
    let host = hgx_a100();
    let switches = [
        "0000:b7:00.0",
        "0000:b8:00.0",
        "0000:b9:00.0",
        "0000:ba:00.0",
        "0000:bb:00.0",
        "0000:bc:00.0",
    ];
    match state {
        NvSwitches::HostDriver => {}
        NvSwitches::FabricManager => {
            let wants = host.path("etc/systemd/system/multi-user.target.wants");
            std::fs::create_dir_all(&wants).unwrap();
            std::os::unix::fs::symlink(
                "/lib/systemd/system/nvidia-fabricmanager.service",
                wants.join("nvidia-fabricmanager.service"),
            )
            .unwrap();
        }
        NvSwitches::OnVfio => {
            for addr in switches {
                host.unbind(addr).bind(addr, "vfio-pci", Some("vfio_pci"));
            }
        }
        NvSwitches::Declared => host.write(
            "etc/vfioctl/bindings.d/nvswitch.toml",
            "[[binding]]\nvendor = \"10de\"\ndevice = \"1af1\"\n",
        ),
    }
    host
}

/// An A100 (10de:20b0) as the PF of SR-IOV vGPU: on nvidia, up to 16 VFs,
/// `sriov_offset` 4 and `sriov_stride` 1, so VF 0 is 25:00.4 and VF 4 is
/// 25:01.0 (NVIDIA's vGPU guide: `41:00.0`, `virtfn0 -> 41:00.4`): the VFs
/// share the PF's slot, then spill into the next device numbers. `enabled`
/// VFs exist already, on nvidia, each in its own IOMMU group; vfio-pci is
/// loaded. A boot NVMe and the NIC with the default route stand beside it.
pub fn a100_sriov(enabled: u16) -> FakeHost {
    let mut host = FakeHost::with_vfio();
    host.pci_ids(&pci_ids());
    host.add(Dev::bridge("0000:00:03.0", 0x8086, 0x347a).group(1).numa(0));
    let pf = "0000:25:00.0";
    host.add(
        Dev::endpoint(pf, 0x10de, 0x20b0, 0x030200)
            .subsystem(0x10de, 0x134f)
            .parent("0000:00:03.0")
            .driver("nvidia", Some("nvidia"))
            .sriov(16)
            .sriov_layout(4, 1)
            .group(2)
            .numa(0),
    );
    host.nvidia_minor(pf, 0);
    for i in 0..enabled {
        // Routing ID 25:00.0 + 4 + i: functions .4 to .7, then 25:01.0 ...
        let n = 4 + i;
        let vf = format!("0000:25:{:02x}.{}", n / 8, n % 8);
        host.add(
            Dev::endpoint(&vf, 0x10de, 0x20b0, 0x030200)
                .subsystem(0x10de, 0x1530)
                .parent("0000:00:03.0")
                .vf_of(pf)
                .driver("nvidia", Some("nvidia"))
                .group(10 + u32::from(i))
                .numa(0),
        );
    }
    host.add(
        Dev::endpoint("0000:01:00.0", 0x144d, 0xa80a, 0x010802)
            .driver("nvme", Some("nvme"))
            .group(3)
            .numa(0),
    );
    host.add(
        Dev::endpoint("0000:02:00.0", 0x8086, 0x1521, 0x020000)
            .driver("igb", Some("igb"))
            .group(4)
            .numa(0),
    );
    host.netdev("0000:02:00.0", "eno1").route("eno1", true);
    host
}

/// An A100 (10de:20b0, on vfio-pci, idle) behind two levels of PCIe
/// switches, Gen4 x16 everywhere: root port 00:01.0 -> upstream 01:00.0 ->
/// downstream 02:00.0 -> upstream 03:00.0 -> downstream 04:00.0 -> GPU
/// 05:00.0; a second A100 on nvidia behind downstream 04:01.0 (06:00.0).
pub fn a100_two_switch_levels() -> FakeHost {
    let mut host = FakeHost::with_vfio();
    host.pci_ids(&pci_ids());
    host.boot_id("6a1f0e4c-8d2b-4f0e-9c3a-1b2c3d4e5f60");
    host.add(Dev::bridge("0000:00:01.0", 0x8086, 0x347a).group(1));
    let chain = [
        ("0000:01:00.0", "0000:00:01.0"),
        ("0000:02:00.0", "0000:01:00.0"),
        ("0000:03:00.0", "0000:02:00.0"),
        ("0000:04:00.0", "0000:03:00.0"),
        ("0000:04:01.0", "0000:03:00.0"),
    ];
    for (group, (port, parent)) in (2..).zip(chain) {
        host.add(
            Dev::bridge(port, 0x1000, 0xc010)
                .parent(parent)
                .group(group),
        );
    }
    host.add(
        Dev::endpoint("0000:05:00.0", 0x10de, 0x20b0, 0x030200)
            .subsystem(0x10de, 0x134f)
            .parent("0000:04:00.0")
            .sriov(16)
            .driver("vfio-pci", Some("vfio_pci"))
            .driver_override("vfio-pci")
            .group(10),
    );
    host.add(
        Dev::endpoint("0000:06:00.0", 0x10de, 0x20b0, 0x030200)
            .subsystem(0x10de, 0x134f)
            .parent("0000:04:01.0")
            .sriov(16)
            .driver("nvidia", Some("nvidia"))
            .group(11),
    );
    host
}

/// A GPU (02:00.0, on nvidia) that shares IOMMU group 8 with an unrelated
/// igb NIC (03:00.0) and their root port 00:1c.0: a board without ACS.
/// vfio-pci is loaded.
pub fn shared_group() -> FakeHost {
    let mut host = FakeHost::with_vfio();
    host.add(Dev::bridge("0000:00:1c.0", 0x8086, 0xa338).group(8));
    host.add(
        Dev::endpoint("0000:02:00.0", 0x10de, 0x20b0, 0x030200)
            .parent("0000:00:1c.0")
            .driver("nvidia", Some("nvidia"))
            .group(8),
    );
    host.add(
        Dev::endpoint("0000:03:00.0", 0x8086, 0x1533, 0x020000)
            .parent("0000:00:1c.0")
            .driver("igb", Some("igb"))
            .group(8),
    );
    host
}

/// The disks and NIC a host runs on: two NVMe disks of one model, 01:00.0
/// (nvme0n1, 259:0, the root filesystem) and 02:00.0 (nvme1n1, 259:1, not
/// mounted), and an igb NIC, 03:00.0 (eno1, no routes), each bound and
/// alone in an IOMMU group (1 to 3); vfio-pci is loaded. Tests add what
/// else the host uses them for, and more functions with
/// `add_bound_endpoints` (groups 4 on).
pub fn disks_and_nic() -> FakeHost {
    let mut host = FakeHost::with_vfio();
    host.add_bound_endpoints(&[
        ("0000:01:00.0", 0x144d, 0xa80a, 0x010802, "nvme"),
        ("0000:02:00.0", 0x144d, 0xa80a, 0x010802, "nvme"),
        ("0000:03:00.0", 0x8086, 0x1521, 0x020000, "igb"),
    ]);
    host.block_device("0000:01:00.0", "nvme0n1", "259:0")
        .block_device("0000:02:00.0", "nvme1n1", "259:1")
        .mount("259:0", "/", "/dev/nvme0n1")
        .netdev("0000:03:00.0", "eno1");
    host
}
