//! The sysfs reader against fake hosts: every fact of the model.

mod support;

use support::fakehost::{Dev, FakeHost};
use support::topologies;
use vfioctl::host::sysfs::{read_devices, read_inventory, read_selected, InventoryError, Names};
use vfioctl::host::HostRoot;
use vfioctl::model::{
    CompanionReason, DriverName, HeaderType, Inventory, ModuleName, NovaDeviceType, PciAddress,
    Selector, SriovRole,
};

fn read(host: &FakeHost) -> Inventory {
    read_inventory(&HostRoot::new(host.root()), Names::Lookup).expect("inventory")
}

fn addr(text: &str) -> PciAddress {
    text.parse().unwrap()
}

#[test]
fn hgx_gpus_switches_and_bridges() {
    let host = topologies::hgx_a100();
    let inv = read(&host);
    assert!(inv.iommu.enabled());
    assert_eq!(inv.iommu.units, ["dmar0", "dmar1"]);
    assert_eq!(inv.kernel_release.as_deref(), Some("6.1.0-fake"));

    let gpu = inv.device(&addr("25:00.0")).unwrap();
    assert_eq!(gpu.ids.vendor.to_string(), "10de");
    assert_eq!(gpu.ids.device.to_string(), "20b0");
    assert_eq!(gpu.ids.subsystem_device.to_string(), "134f");
    assert_eq!(gpu.class.to_string(), "030200");
    assert_eq!(gpu.revision, 0xa1);
    assert_eq!(gpu.driver, Some(DriverName::new("vfio-pci")));
    assert_eq!(gpu.driver_module, Some(ModuleName::new("vfio_pci")));
    assert_eq!(gpu.driver_override, Some(DriverName::vfio_pci()));
    assert_eq!(gpu.header_type, Some(HeaderType::Endpoint));
    assert_eq!(gpu.numa_node, Some(0));
    assert_eq!(gpu.parent, Some(addr("24:00.0")));
    assert_eq!(gpu.nova_device_type(), NovaDeviceType::Pf);
    assert_eq!(
        gpu.sriov,
        SriovRole::Pf {
            total_vfs: 16,
            num_vfs: 0,
            vfs: vec![]
        }
    );
    assert!(inv.viability(inv.group_of(gpu).unwrap()).viable);

    let nvidia_gpu = inv.device(&addr("48:00.0")).unwrap();
    assert_eq!(
        nvidia_gpu.driver_override, None,
        "(null) reads as no override"
    );
    assert!(!inv.viability(inv.group_of(nvidia_gpu).unwrap()).viable);

    // NVSwitch: class "Bridge" (0680) but a type-0 header: an endpoint.
    let nvswitch = inv.device(&addr("b7:00.0")).unwrap();
    assert_eq!(nvswitch.class.base(), 0x06);
    assert!(!nvswitch.is_bridge());
    let switch_port = inv.device(&addr("b6:00.0")).unwrap();
    assert!(switch_port.is_bridge());
    assert_eq!(switch_port.driver, Some(DriverName::new("pcieport")));
    assert_eq!(switch_port.driver_module, None, "pcieport is built in");

    let bmc_vga = inv.device(&addr("04:00.0")).unwrap();
    assert!(bmc_vga.boot_vga);
    assert!(!gpu.boot_vga);
    assert_eq!(inv.names.vendor(gpu.ids.vendor), Some("NVIDIA Corporation"));
    assert_eq!(inv.names.class(gpu.class), Some("3D controller"));
    assert_eq!(inv.devices.len(), 8 + 6 + 4 * 4 + 2 + 6 + 7);
}

#[test]
fn gpu_functions_share_a_group_and_are_companions() {
    let host = topologies::workstation_gpu();
    let inv = read(&host);
    let gpu = inv.device(&addr("01:00.0")).unwrap();
    let group = inv.group_of(gpu).unwrap();
    assert_eq!(
        group.pci_members,
        ["00:01.0", "01:00.0", "01:00.1", "01:00.2", "01:00.3"].map(addr)
    );
    assert_eq!(
        gpu.consumers,
        ["01:00.1", "01:00.2", "01:00.3"].map(addr),
        "consumer:pci links"
    );
    let audio = inv.device(&addr("01:00.1")).unwrap();
    assert_eq!(audio.suppliers, [addr("01:00.0")]);
    let companions = inv.companions(gpu);
    assert_eq!(companions.len(), 3);
    assert!(companions
        .iter()
        .all(|c| c.reason == CompanionReason::DeviceLink));
    assert_eq!(inv.companions(audio)[0].address, addr("01:00.0"));

    let verdict = inv.viability(group);
    assert!(!verdict.viable);
    let blockers: Vec<String> = verdict
        .blockers
        .iter()
        .map(|b| b.device.to_string())
        .collect();
    assert_eq!(
        blockers,
        [
            "0000:01:00.0",
            "0000:01:00.1",
            "0000:01:00.2",
            "0000:01:00.3"
        ],
        "the root port in the group does not block"
    );
}

#[test]
fn sriov_pf_and_vfs() {
    let host = topologies::sriov_nic();
    let inv = read(&host);
    let pf = inv.device(&addr("3b:00.0")).unwrap();
    assert_eq!(
        pf.sriov,
        SriovRole::Pf {
            total_vfs: 8,
            num_vfs: 2,
            vfs: vec![addr("3b:00.2"), addr("3b:00.3")]
        }
    );
    assert_eq!(pf.nova_device_type(), NovaDeviceType::Pf);
    let vf = inv.device(&addr("3b:00.3")).unwrap();
    assert_eq!(
        vf.sriov,
        SriovRole::Vf {
            physfn: addr("3b:00.0")
        }
    );
    assert_eq!(vf.nova_device_type(), NovaDeviceType::Vf);
    assert_eq!(vf.iommu_group, Some(23));
    // The mlx5 variant driver counts as VFIO for the group's viability.
    assert!(inv.viability(inv.group_of(vf).unwrap()).viable);
    assert!(!inv.viability(inv.group_of(pf).unwrap()).viable);
}

#[test]
fn iommu_off_means_no_groups() {
    let host = topologies::no_iommu();
    let inv = read(&host);
    assert!(!inv.iommu.enabled());
    assert!(inv.groups.is_empty());
    assert!(inv.devices.iter().all(|d| d.iommu_group.is_none()));
    assert_eq!(inv.devices.len(), 3);
}

#[test]
fn unreadable_config_and_dead_devices() {
    let mut host = FakeHost::new();
    host.add(Dev::endpoint("0000:00:04.0", 0x10de, 0x20b0, 0x030200).dead_config());
    host.add(Dev::endpoint("0000:00:05.0", 0x8086, 0x1521, 0x020000));
    std::fs::remove_file(host.device_dir("0000:00:05.0").join("config")).unwrap();
    let inv = read(&host);
    let dead = inv.device(&addr("00:04.0")).unwrap();
    assert!(dead.config_dead);
    assert_eq!(dead.power_state.as_deref(), Some("D3cold"));
    let no_config = inv.device(&addr("00:05.0")).unwrap();
    assert_eq!(no_config.header_type, None);
    assert!(!no_config.is_bridge());
}

/// A VF's Vendor and Device ID registers read all ones (SR-IOV spec; the
/// kernel takes its IDs from the PF): alive while its class register is not
/// all ones too.
#[test]
fn a_vf_with_all_ones_ids_in_config_space_is_alive() {
    let host = topologies::sriov_nic();
    let config = host.device_dir("0000:3b:00.3").join("config");
    let mut bytes = std::fs::read(&config).unwrap();
    bytes[..4].fill(0xff);
    std::fs::write(&config, &bytes).unwrap();
    let vf = read(&host).device(&addr("3b:00.3")).unwrap().clone();
    assert!(!vf.config_dead);
    assert_eq!(vf.ids.vendor.0, 0x15b3, "IDs come from sysfs");
    bytes[..12].fill(0xff);
    std::fs::write(&config, &bytes).unwrap();
    assert!(read(&host).device(&addr("3b:00.3")).unwrap().config_dead);
}

#[test]
fn missing_pci_sysfs_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_inventory(&HostRoot::new(dir.path()), Names::Skip).unwrap_err();
    assert!(matches!(err, InventoryError::NoPciSysfs(_)));
    assert!(err
        .to_string()
        .contains("is sysfs mounted, and is --root right?"));
}

#[test]
fn names_are_optional() {
    let host = topologies::no_iommu();
    std::fs::remove_file(host.path("usr/share/misc/pci.ids")).unwrap();
    let inv = read(&host);
    let dev = &inv.devices[1];
    assert_eq!(inv.names.vendor(dev.ids.vendor), None);
}

#[test]
fn device_links_without_a_devlink_directory() {
    // Kernels list device links under /sys/class/devlink; without it each
    // device's own consumer:/supplier: links are read, with the same result.
    let host = topologies::workstation_gpu();
    let with = format!("{:?}", read(&host).devices);
    std::fs::remove_dir_all(host.path("sys/class/devlink")).unwrap();
    std::fs::remove_dir_all(host.path("sys/devices/virtual/devlink")).unwrap();
    let without = read(&host);
    assert_eq!(
        without.device(&addr("01:00.0")).unwrap().consumers,
        ["01:00.1", "01:00.2", "01:00.3"].map(addr)
    );
    assert_eq!(format!("{:?}", without.devices), with);
}

#[test]
fn a_large_host_reads_the_same_as_one_device_at_a_time() {
    // Over a few hundred functions the read is spread over threads.
    let mut host = FakeHost::new();
    host.iommu_unit("dmar0");
    host.add(Dev::bridge("0000:00:01.0", 0x8086, 0x347a).group(1));
    host.add(
        Dev::endpoint("0000:01:00.0", 0x15b3, 0x101d, 0x020000)
            .parent("0000:00:01.0")
            .driver("mlx5_core", Some("mlx5_core"))
            .sriov(400)
            .group(2),
    );
    for i in 1..400u32 {
        let vf = format!("0000:{:02x}:{:02x}.{}", 1 + i / 256, (i % 256) / 8, i % 8);
        let dev = Dev::endpoint(&vf, 0x15b3, 0x101e, 0x020000)
            .parent("0000:00:01.0")
            .vf_of("0000:01:00.0")
            .group(2 + i);
        host.add(if i % 3 == 0 {
            dev.driver("vfio-pci", Some("vfio_pci"))
        } else {
            dev
        });
    }
    let inv = read(&host);
    assert_eq!(inv.devices.len(), 401);
    assert_eq!(inv.groups.len(), 401);
    assert!(inv.devices.windows(2).all(|w| w[0].address < w[1].address));
    let SriovRole::Pf { vfs, .. } = &inv.device(&addr("01:00.0")).unwrap().sriov else {
        panic!("the PF is a PF");
    };
    assert_eq!(vfs.len(), 399);
    let root = HostRoot::new(host.root());
    for dev in &inv.devices {
        let alone = vfioctl::host::sysfs::read_one(&root, dev.address).unwrap();
        assert_eq!(format!("{alone:?}"), format!("{dev:?}"));
        assert_eq!(
            inv.group_of(dev).unwrap().pci_members,
            [dev.address],
            "{}",
            dev.address
        );
    }
}

#[test]
fn one_device_reads_what_the_whole_host_says_about_it() {
    // For every function of every topology, reading only its neighbourhood
    // gives the same device, group, members, companions, verdict and IOMMU
    // state as reading the whole host.
    for host in [
        topologies::hgx_a100(),
        topologies::workstation_gpu(),
        topologies::sriov_nic(),
        topologies::no_iommu(),
        topologies::libvirt_lab(),
    ] {
        let root = HostRoot::new(host.root());
        let whole = read(&host);
        for dev in &whole.devices {
            let part = read_devices(&root, &[dev.address], Names::Lookup).unwrap();
            let mine = part.device(&dev.address).unwrap();
            assert_eq!(format!("{mine:?}"), format!("{dev:?}"));
            assert_eq!(part.iommu, whole.iommu);
            assert_eq!(part.drivers, whole.drivers);
            assert_eq!(part.companions(mine), whole.companions(dev));
            assert_eq!(part.group_of(mine), whole.group_of(dev));
            if let Some(group) = whole.group_of(dev) {
                assert_eq!(part.viability(group), whole.viability(group));
                let members: Vec<_> = part.members(group).map(|d| d.address).collect();
                assert_eq!(members, group.pci_members, "{}", dev.address);
            }
            if let SriovRole::Pf { vfs, .. } = &dev.sriov {
                assert!(vfs.iter().all(|vf| part.device(vf).is_some()));
            }
            if let SriovRole::Vf { physfn } = &dev.sriov {
                assert!(part.device(physfn).is_some());
            }
            assert!(
                part.devices.len() < whole.devices.len() || whole.devices.len() < 8,
                "{} read the whole host",
                dev.address
            );
        }
        let missing = read_devices(&root, &[addr("7f:1f.7")], Names::Skip).unwrap();
        assert!(missing.devices.is_empty());
    }
}

#[test]
fn addresses_do_not_walk_the_host() {
    // An unrelated group that cannot be listed stops a whole-host read, not
    // a read of devices named by address (show, udev-hook, bind 25:00.0).
    let host = topologies::hgx_a100();
    let root = HostRoot::new(host.root());
    let nvswitch_group = read(&host).device(&addr("b7:00.0")).unwrap().iommu_group;
    let members = host.path(&format!(
        "sys/kernel/iommu_groups/{}/devices",
        nvswitch_group.unwrap()
    ));
    std::fs::remove_dir_all(&members).unwrap();
    std::fs::write(&members, "").unwrap();
    assert!(read_inventory(&root, Names::Skip).is_err());

    let by_address: Vec<Selector> = vec!["25:00.0".parse().unwrap()];
    let inv = read_selected(&root, &by_address, Names::Skip).unwrap();
    assert_eq!(inv.select(&by_address).unwrap()[0].address, addr("25:00.0"));
    assert!(inv.device(&addr("b7:00.0")).is_none());
    let by_ids: Vec<Selector> = vec!["10de:20b0".parse().unwrap()];
    assert!(read_selected(&root, &by_ids, Names::Skip).is_err());
}
