//! The whole of [`NovaConfig::build`] and its text, on fake hosts: one
//! case per rule, with the fixtures they share.

use super::*;
use crate::model::device::tests::endpoint;
use crate::model::device::NovaDeviceType;
use crate::model::driver::DriverName;
use crate::model::fabric::Fabric;
use crate::model::ids::{ClassCode, DeviceId, VendorId};
use crate::model::inventory::Inventory;
use crate::model::IommuGroup;

fn dev(addr: &str, product: u16, t: NovaDeviceType, binding: Binding) -> NovaDevice {
    NovaDevice {
        address: addr.parse().unwrap(),
        vendor: VendorId(0x10de),
        product: DeviceId(product),
        class: ClassCode(if product == 0x1af1 {
            0x068000
        } else {
            0x030200
        }),
        device_type: t,
        type_source: TypeSource::Libvirt,
        binding,
        iommu_group: None,
        derived_name: derive_alias_name(
            VendorId(0x10de),
            DeviceId(product),
            Some("NVIDIA Corporation"),
            Some(if product == 0x20b0 {
                "GA100 [A100 SXM4 40GB]"
            } else {
                "GA100 [A100 NVSwitch]"
            }),
        ),
    }
}

/// A host with `n` A100s at 25:00.0, 26:00.0...
fn host(n: u8) -> Inventory {
    let devices = (0..n)
        .map(|i| endpoint(&format!("{:02x}:00.0", 0x25 + i), 0x030200))
        .collect();
    Inventory {
        devices,
        ..Default::default()
    }
}

fn request(release: &str, devices: Vec<NovaDevice>) -> Request {
    Request {
        release: Release::parse(release).unwrap(),
        alias: None,
        numa_policy: None,
        fabric: None,
        placement: None,
        live_migratable: false,
        one_time_use: None,
        vf_parent: false,
        az_prefilter: false,
        devices,
    }
}

#[test]
fn the_runbook_a100_on_train() {
    let devices = (0..8u8)
        .map(|i| {
            dev(
                &format!("{:02x}:00.0", 0x25 + i),
                0x20b0,
                NovaDeviceType::Pf,
                Binding::VfioNow,
            )
        })
        .collect();
    let mut req = request("train", devices);
    req.alias = Some("nvidia-a100".into());
    let cfg = NovaConfig::build(&host(8), req).unwrap();
    assert_eq!(
        cfg.controller_ini(),
        "[pci]\n\
         alias = {\"name\": \"nvidia-a100\", \"vendor_id\": \"10de\", \"product_id\": \"20b0\", \"device_type\": \"type-PF\"}\n\
         \n\
         [filter_scheduler]\n\
         # Nova Train's default filters plus PciPassthroughFilter; if you changed the list, add PciPassthroughFilter to yours\n\
         # Before upgrading to 2023.2, which removed AvailabilityZoneFilter, drop it from this list: from Xena on Placement filters hosts by availability zone (nova-manage placement sync_aggregates first)\n\
         enabled_filters = AvailabilityZoneFilter,ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter,ServerGroupAntiAffinityFilter,ServerGroupAffinityFilter,PciPassthroughFilter\n"
    );
    assert_eq!(
        cfg.compute_ini().lines().nth(1).unwrap(),
        "passthrough_whitelist = {\"vendor_id\": \"10de\", \"product_id\": \"20b0\"}",
        "every A100 selected: one spec by IDs"
    );
    assert_eq!(
        cfg.commands()[0],
        "openstack flavor set FLAVOR --property pci_passthrough:alias=nvidia-a100:1"
    );
    assert!(cfg.notes[0].contains("not declared"), "{:?}", cfg.notes);
}

#[test]
fn partial_selection_is_spelled_by_address_and_managed_follows_declarations() {
    let devices = vec![
        dev("25:00.0", 0x20b0, NovaDeviceType::Pf, Binding::Declared),
        dev("26:00.0", 0x20b0, NovaDeviceType::Pf, Binding::Declared),
    ];
    let cfg = NovaConfig::build(&host(3), request("2025.1", devices.clone())).unwrap();
    assert_eq!(
        cfg.compute_ini(),
        "[pci]\n\
         device_spec = {\"vendor_id\": \"10de\", \"product_id\": \"20b0\", \"address\": \"0000:25:00.0\", \"managed\": \"no\"}\n\
         device_spec = {\"vendor_id\": \"10de\", \"product_id\": \"20b0\", \"address\": \"0000:26:00.0\", \"managed\": \"no\"}\n\
         alias = {\"name\": \"nvidia-a100-sxm4-40gb\", \"vendor_id\": \"10de\", \"product_id\": \"20b0\", \"device_type\": \"type-PF\"}\n"
    );
    // Before 2025.1 there is no managed tag.
    let cfg = NovaConfig::build(&host(3), request("2024.2", devices.clone())).unwrap();
    assert!(!cfg.compute_ini().contains("managed"));
    // Every A100 selected, one declared and one only bound: per address, one managed.
    let mut mixed = devices;
    mixed[1].binding = Binding::VfioNow;
    let cfg = NovaConfig::build(&host(2), request("2025.2", mixed)).unwrap();
    assert_eq!(cfg.specs.len(), 2);
    assert_eq!(cfg.specs[0].managed, Some("no"));
    assert_eq!(cfg.specs[1].managed, None);
}

#[test]
fn different_ids_and_mixed_types_get_their_own_aliases() {
    let mut inv = host(3);
    inv.devices.push(endpoint("b7:00.0", 0x068000));
    let devices = vec![
        dev("25:00.0", 0x20b0, NovaDeviceType::Pf, Binding::Declared),
        dev("26:00.0", 0x20b0, NovaDeviceType::Pci, Binding::Declared),
        dev("27:00.0", 0x20b0, NovaDeviceType::Pf, Binding::Declared),
        dev("b7:00.0", 0x1af1, NovaDeviceType::Pci, Binding::Declared),
    ];
    let err = NovaConfig::build(&inv, request("zed", devices.clone())).unwrap_err();
    assert_eq!(
        err,
        NovaError::FabricNeeded {
            address: "b7:00.0".parse().unwrap(),
            switch: true,
            host: None
        }
    );
    let mut req = request("zed", devices.clone());
    req.fabric = Some(Fabric::Full);
    let cfg = NovaConfig::build(&inv, req).unwrap();
    let names: Vec<(&str, NovaDeviceType)> = cfg
        .aliases
        .iter()
        .map(|a| (a.name.as_str(), a.device_type))
        .collect();
    assert_eq!(
        names,
        [
            ("nvidia-a100-sxm4-40gb-pf", NovaDeviceType::Pf),
            ("nvidia-a100-sxm4-40gb-pci", NovaDeviceType::Pci),
            ("nvidia-a100-nvswitch", NovaDeviceType::Pci),
        ]
    );
    assert_eq!(cfg.aliases[0].devices.len(), 2);
    assert!(cfg
        .notes
        .iter()
        .any(|n| n.starts_with("10de:20b0 comes as more than one device_type")));
    // Full fabric: one flavor requests every device.
    assert_eq!(
        cfg.flavor_property(),
        "pci_passthrough:alias=nvidia-a100-sxm4-40gb-pf:2,nvidia-a100-sxm4-40gb-pci:1,nvidia-a100-nvswitch:1"
    );
    let mut req = request("zed", devices);
    req.alias = Some("gpu".into());
    req.fabric = Some(Fabric::Full);
    let err = NovaConfig::build(&inv, req).unwrap_err();
    assert!(
        err.to_string()
            .contains("need 3: 10de:1af1 type-PCI, 10de:20b0 type-PF, 10de:20b0 type-PCI"),
        "{err}"
    );
}

#[test]
fn same_derived_name_for_two_ids_is_made_unique() {
    let mut a = dev("25:00.0", 0x20b0, NovaDeviceType::Pf, Binding::Declared);
    let mut b = dev("26:00.0", 0x20b2, NovaDeviceType::Pf, Binding::Declared);
    a.derived_name = "nvidia-a100".into();
    b.derived_name = "nvidia-a100".into();
    let cfg = NovaConfig::build(&host(2), request("zed", vec![a, b])).unwrap();
    let names: Vec<&str> = cfg.aliases.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["nvidia-a100-20b0", "nvidia-a100-20b2"]);
}

#[test]
fn numa_policy_and_its_release() {
    let devices = vec![dev(
        "25:00.0",
        0x20b0,
        NovaDeviceType::Pf,
        Binding::Declared,
    )];
    let mut req = request("victoria", devices.clone());
    req.numa_policy = Some(NumaPolicy::Socket);
    assert!(matches!(
        NovaConfig::build(&host(1), req),
        Err(NovaError::SocketPolicyTooOld(_))
    ));
    let mut req = request("wallaby", devices);
    req.numa_policy = Some(NumaPolicy::Socket);
    let cfg = NovaConfig::build(&host(1), req).unwrap();
    assert!(cfg.aliases[0]
        .json()
        .ends_with("\"numa_policy\": \"socket\"}"));
}

#[test]
fn notes_explain_groups_host_drivers_and_wide_domains() {
    let mut inv = host(1);
    inv.devices.push(endpoint("25:00.1", 0x040300));
    inv.groups.insert(
        5,
        IommuGroup {
            number: 5,
            domain_type: None,
            pci_members: vec!["25:00.0".parse().unwrap(), "25:00.1".parse().unwrap()],
            other_members: vec![],
        },
    );
    let mut gpu = dev(
        "25:00.0",
        0x20b0,
        NovaDeviceType::Pf,
        Binding::Host(Some(DriverName::new("nvidia"))),
    );
    gpu.iommu_group = Some(5);
    let vmd = dev(
        "10000:01:00.0",
        0x20b0,
        NovaDeviceType::Pf,
        Binding::Declared,
    );
    let cfg = NovaConfig::build(&inv, request("2025.1", vec![gpu.clone(), vmd.clone()])).unwrap();
    // The GPU's group holds its audio function, which is not offered: left out.
    assert!(cfg.devices.is_empty());
    let notes = cfg.notes.join("\n");
    assert!(notes.contains("left out 10000:01:00.0"), "{notes}");
    assert!(
        notes.contains("left out 0000:25:00.0: IOMMU group 5 also holds 0000:25:00.1"),
        "{notes}"
    );
    // The whole group offered: both, in one request.
    let mut audio = dev("25:00.1", 0x1aef, NovaDeviceType::Pci, Binding::Declared);
    audio.class = ClassCode(0x040300);
    audio.derived_name = "nvidia-audio".into();
    audio.iommu_group = Some(5);
    let cfg = NovaConfig::build(&inv, request("2025.1", vec![gpu, audio, vmd])).unwrap();
    assert_eq!(cfg.devices.len(), 2);
    assert_eq!(
        cfg.flavor_property(),
        "pci_passthrough:alias=nvidia-a100-sxm4-40gb:1,nvidia-audio:1"
    );
    let notes = cfg.notes.join("\n");
    assert!(
        notes.contains("0000:25:00.0 (nvidia) not on a VFIO driver"),
        "{notes}"
    );
    assert!(
        notes.contains("0000:25:00.0, 0000:25:00.1 share IOMMU group 5"),
        "{notes}"
    );
}

/// Six NVSwitches in pairs of IOMMU groups next to eight A100s, each alone.
fn hgx_paired() -> (Inventory, Vec<NovaDevice>) {
    let mut inv = host(8);
    let mut devices: Vec<NovaDevice> = (0..8u8)
        .map(|i| {
            let mut d = dev(
                &format!("{:02x}:00.0", 0x25 + i),
                0x20b0,
                NovaDeviceType::Pf,
                Binding::Declared,
            );
            d.iommu_group = Some(u32::from(i));
            d
        })
        .collect();
    for i in 0..6u8 {
        let addr = format!("{:02x}:00.0", 0xb7 + i);
        let group = 20 + u32::from(i / 2);
        inv.devices.push(endpoint(&addr, 0x068000));
        let last = inv.devices.last_mut().unwrap();
        last.ids.device = DeviceId(0x1af1);
        inv.groups
            .entry(group)
            .or_insert_with(|| IommuGroup {
                number: group,
                domain_type: None,
                pci_members: vec![],
                other_members: vec![],
            })
            .pci_members
            .push(addr.parse().unwrap());
        let mut d = dev(&addr, 0x1af1, NovaDeviceType::Pci, Binding::Declared);
        d.iommu_group = Some(group);
        devices.push(d);
    }
    (inv, devices)
}

#[test]
fn paired_nvswitch_groups_follow_the_fabric() {
    let (inv, devices) = hgx_paired();
    // No choice: selecting an NVSwitch is refused.
    assert!(matches!(
        NovaConfig::build(&inv, request("2025.1", devices.clone())),
        Err(NovaError::FabricNeeded { .. })
    ));
    // Shared: NVSwitches left out, GPUs one per request.
    let mut req = request("2025.1", devices.clone());
    req.fabric = Some(Fabric::Shared);
    let cfg = NovaConfig::build(&inv, req).unwrap();
    assert_eq!(cfg.devices.len(), 8);
    assert_eq!(
        cfg.flavor_property(),
        "pci_passthrough:alias=nvidia-a100-sxm4-40gb:1"
    );
    assert!(cfg.notes[0].starts_with("left out 0000:b7:00.0, 0000:b8:00.0, 0000:b9:00.0, 0000:ba:00.0, 0000:bb:00.0, 0000:bc:00.0: NVSwitches stay"), "{:?}", cfg.notes);
    assert!(!cfg.compute_ini().contains("1af1"));
    // Full: everything in one request.
    let mut req = request("2025.1", devices.clone());
    req.fabric = Some(Fabric::Full);
    let cfg = NovaConfig::build(&inv, req).unwrap();
    assert_eq!(
        cfg.flavor_property(),
        "pci_passthrough:alias=nvidia-a100-sxm4-40gb:8,nvidia-a100-nvswitch:6"
    );
    // Only one switch of a pair selected (shared groups without a fabric
    // rule would let two VMs split them): left out with the reason.
    let mut req = request("2025.1", vec![devices[0].clone(), devices[8].clone()]);
    req.fabric = Some(Fabric::Full);
    let cfg = NovaConfig::build(&inv, req).unwrap();
    assert_eq!(cfg.devices.len(), 1);
    assert!(
        cfg.notes
            .iter()
            .any(|n| n.contains("left out 0000:b7:00.0: IOMMU group 20 also holds 0000:b8:00.0")),
        "{:?}",
        cfg.notes
    );
}

#[test]
fn shared_groups_are_requested_whole_through_linked_aliases() {
    // Switch pairs without the fabric rule in play (another vendor's
    // bridge-like endpoints): every alias touching a shared group is
    // requested whole.
    let (inv, mut devices) = hgx_paired();
    for d in devices.iter_mut().skip(8) {
        d.vendor = VendorId(0x1234);
        d.derived_name = "acme-switch".into();
    }
    let mut inv = inv;
    for d in inv
        .devices
        .iter_mut()
        .filter(|d| d.ids.device == DeviceId(0x1af1))
    {
        d.ids.vendor = VendorId(0x1234);
    }
    let cfg = NovaConfig::build(&inv, request("2025.1", devices)).unwrap();
    assert_eq!(
        cfg.flavor_property(),
        "pci_passthrough:alias=nvidia-a100-sxm4-40gb:1,acme-switch:6"
    );
    assert!(cfg
        .notes
        .iter()
        .any(|n| n.contains("share IOMMU group 20, which VFIO opens in one VM only")));
}

#[test]
fn placement_tags_and_their_releases() {
    let devices = vec![dev(
        "25:00.0",
        0x20b0,
        NovaDeviceType::Pf,
        Binding::Declared,
    )];
    for (release, why) in [
        ("yoga", "has neither"),
        ("zed", "cannot schedule them there"),
    ] {
        let mut req = request(release, devices.clone());
        req.placement = Some(PlacementRequest::default());
        let err = NovaConfig::build(&host(1), req).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
    let mut req = request("2023.1", devices.clone());
    req.placement = Some(PlacementRequest::default());
    let cfg = NovaConfig::build(&host(1), req).unwrap();
    assert!(cfg.compute_ini().contains("report_in_placement = True\n"));
    assert!(cfg.controller_ini().contains("pci_in_placement = True\n"));
    assert!(cfg.specs[0]
        .json()
        .contains("\"resource_class\": \"CUSTOM_PCI_10DE_20B0\""));
    assert!(cfg.aliases[0]
        .json()
        .contains("\"resource_class\": \"CUSTOM_PCI_10DE_20B0\""));
    assert!(cfg
        .notes
        .iter()
        .any(|n| n.contains("cannot be switched off")));
    let mut req = request("2024.1", devices.clone());
    req.placement = Some(PlacementRequest {
        resource_class: Some("a100_gpu".into()),
        traits: vec!["nvlink".into(), "CUSTOM_FAST".into()],
    });
    let cfg = NovaConfig::build(&host(1), req).unwrap();
    assert!(cfg.aliases[0].json().ends_with(
        "\"resource_class\": \"CUSTOM_A100_GPU\", \"traits\": \"CUSTOM_NVLINK,CUSTOM_FAST\"}"
    ));
    for bad in ["", "a-b", "CUSTOM_", &"x".repeat(250)] {
        assert!(custom_name("trait", bad).is_err(), "{bad}");
    }
}

#[test]
fn live_migratable_is_never_for_gpus() {
    let gpu = dev("25:00.0", 0x20b0, NovaDeviceType::Pf, Binding::Declared);
    let mut nic = dev("3b:00.3", 0x1018, NovaDeviceType::Vf, Binding::Declared);
    nic.vendor = VendorId(0x15b3);
    nic.class = ClassCode(0x020000);
    let mut req = request("2024.2", vec![nic.clone()]);
    req.live_migratable = true;
    assert!(matches!(
        NovaConfig::build(&host(1), req),
        Err(NovaError::LiveMigratableTooOld(_))
    ));
    let mut req = request("2025.1", vec![gpu]);
    req.live_migratable = true;
    assert!(matches!(
        NovaConfig::build(&host(1), req),
        Err(NovaError::LiveMigratableGpu(_))
    ));
    let mut req = request("2025.1", vec![nic]);
    req.live_migratable = true;
    let cfg = NovaConfig::build(&host(1), req).unwrap();
    assert!(cfg.specs[0]
        .json()
        .ends_with("\"live_migratable\": \"yes\"}"));
    assert!(cfg.aliases[0]
        .json()
        .ends_with("\"live_migratable\": \"yes\"}"));
}

#[test]
fn train_keeps_its_zone_filter_unless_placement_takes_over() {
    let gpus = || {
        vec![dev(
            "25:00.0",
            0x20b0,
            NovaDeviceType::Pf,
            Binding::Declared,
        )]
    };
    let cfg = NovaConfig::build(&host(1), request("train", gpus())).unwrap();
    let ini = cfg.controller_ini();
    assert!(ini.contains("\nenabled_filters = AvailabilityZoneFilter,ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter,ServerGroupAntiAffinityFilter,ServerGroupAffinityFilter,PciPassthroughFilter\n"), "{ini}");
    assert!(ini.contains("# Before upgrading to 2023.2, which removed AvailabilityZoneFilter, drop it from this list"), "{ini}");
    assert!(!ini.contains("[scheduler]"), "{ini}");
    assert!(!cfg.commands()[0].starts_with("nova-manage"));

    let mut req = request("train", gpus());
    req.az_prefilter = true;
    let cfg = NovaConfig::build(&host(1), req).unwrap();
    let ini = cfg.controller_ini();
    assert!(ini.contains("\nenabled_filters = ComputeFilter,"), "{ini}");
    assert!(ini.contains("[scheduler]\n# Placement filters hosts by availability zone, in place of AvailabilityZoneFilter; run nova-manage placement sync_aggregates first\nquery_placement_for_availability_zone = True\n"), "{ini}");
    assert_eq!(cfg.commands()[0], "nova-manage placement sync_aggregates");
    assert!(cfg
        .notes
        .iter()
        .any(|n| n.starts_with("--az-prefilter: AvailabilityZoneFilter is left out")));

    // Xena on: as before, and --az-prefilter adds nothing but a note.
    let mut req = request("xena", gpus());
    req.az_prefilter = true;
    let cfg = NovaConfig::build(&host(1), req).unwrap();
    assert!(!cfg.controller_ini().contains("AvailabilityZoneFilter"));
    assert!(!cfg.controller_ini().contains("[scheduler]"));
    assert_eq!(cfg.commands().len(), 2);
    assert!(cfg
        .notes
        .iter()
        .any(|n| n.contains("filters hosts by availability zone in Placement already")));
}

/// An A100 (type-PF) declared with vfioctl persist.
fn declared_a100(addr: &str) -> NovaDevice {
    dev(addr, 0x20b0, NovaDeviceType::Pf, Binding::Declared)
}

fn one_time_use(hostname: Option<&str>, source: HostnameSource) -> Option<OneTimeUseRequest> {
    Some(OneTimeUseRequest {
        hostname: hostname.map(str::to_string),
        source,
    })
}

#[test]
fn one_time_use_marks_the_specs_and_names_each_provider() {
    let devices = vec![
        declared_a100("25:00.0"),
        dev("8c:00.0", 0x20b0, NovaDeviceType::Pci, Binding::Declared),
    ];
    let inv = Inventory {
        devices: vec![
            endpoint("25:00.0", 0x030200),
            endpoint("8c:00.0", 0x030200),
            endpoint("8d:00.0", 0x030200),
        ],
        ..Default::default()
    };
    let mut req = request("2025.2", devices);
    req.placement = Some(PlacementRequest::default());
    req.one_time_use = one_time_use(Some("compute-7"), HostnameSource::Option);
    let cfg = NovaConfig::build(&inv, req).unwrap();
    let compute = cfg.compute_ini();
    assert!(compute.contains(
        "device_spec = {\"vendor_id\": \"10de\", \"product_id\": \"20b0\", \"address\": \"0000:25:00.0\", \"managed\": \"no\", \"resource_class\": \"CUSTOM_PCI_10DE_20B0\", \"one_time_use\": \"true\"}\n"
    ), "{compute}");
    assert_eq!(
        compute.matches("\"one_time_use\": \"true\"").count(),
        2,
        "{compute}"
    );
    // Aliases have no such key.
    assert!(!cfg.controller_ini().contains("one_time_use"));
    let otu = cfg.one_time_use.as_ref().unwrap();
    let names: Vec<&str> = otu.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["compute-7_0000:25:00.0", "compute-7_0000:8C:00.0"]);
    let part = cfg.commands_part();
    assert_eq!(part[..2], cfg.commands()[..]);
    assert!(part.contains(&"openstack --os-placement-api-version 1.18 resource provider list --required HW_PCI_ONE_TIME_USE".to_string()));
    assert!(part
        .contains(&"openstack resource provider list --name compute-7_0000:8C:00.0".to_string()));
    assert!(part.contains(&"openstack resource provider inventory set --amend --resource CUSTOM_PCI_10DE_20B0:reserved=0 RP_UUID".to_string()));
    assert!(part.contains(&"# 0000:8c:00.0: provider compute-7_0000:8C:00.0 (CUSTOM_PCI_10DE_20B0); after vfioctl reset 0000:8c:00.0 verified the device:".to_string()), "{part:?}");
    assert!(cfg
        .notes
        .iter()
        .any(|n| n.starts_with("one-time-use: after a VM used")));
    // Given with the option: no note about where the name came from.
    assert!(!cfg.notes.iter().any(|n| n.contains("this host's name")));
    // Without --one-time-use nothing changes.
    let mut plain = request("2025.2", vec![declared_a100("25:00.0")]);
    plain.placement = Some(PlacementRequest::default());
    let cfg = NovaConfig::build(&inv, plain).unwrap();
    assert!(cfg.one_time_use.is_none());
    assert!(!cfg.compute_ini().contains("one_time_use"));
    assert_eq!(cfg.commands_part(), cfg.commands());
}

#[test]
fn one_time_use_refusals() {
    let gpu = || vec![declared_a100("25:00.0")];
    let with = |release: &str,
                devices: Vec<NovaDevice>,
                placement: bool,
                hostname: Option<&str>,
                source: HostnameSource| {
        let mut req = request(release, devices);
        req.placement = placement.then(PlacementRequest::default);
        req.one_time_use = one_time_use(hostname, source);
        NovaConfig::build(&host(3), req).map(|_| ())
    };
    let opt = HostnameSource::Option;
    // Before 2025.2 (Nova 32), whatever else is given.
    for release in ["train", "2023.1", "2025.1"] {
        let err = with(release, gpu(), true, Some("c1"), opt).unwrap_err();
        assert!(
            matches!(err, NovaError::OneTimeUseTooOld(_)),
            "{release}: {err}"
        );
        assert!(
            err.to_string()
                .starts_with("--one-time-use needs 2025.2 or later: "),
            "{err}"
        );
    }
    with("2025.2", gpu(), true, Some("c1"), opt).unwrap();
    with("2026.2", gpu(), true, Some("c1"), opt).unwrap();
    // Without --placement.
    assert_eq!(
        with("2025.2", gpu(), false, Some("c1"), opt).unwrap_err(),
        NovaError::OneTimeUseNeedsPlacement
    );
    // A VF, by the device_type Nova sees.
    let vf = vec![dev(
        "25:00.4",
        0x20b0,
        NovaDeviceType::Vf,
        Binding::Declared,
    )];
    let err = with("2025.2", vf, true, Some("c1"), opt).unwrap_err();
    assert_eq!(err, NovaError::OneTimeUseVf("25:00.4".parse().unwrap()));
    assert!(err
        .to_string()
        .contains("Nova takes one_time_use only on type-PCI and type-PF devices"));
    // This host's name unreadable, or not usable.
    let err = with("2025.2", gpu(), true, None, HostnameSource::Host).unwrap_err();
    assert_eq!(err, NovaError::HostnameUnknown("/proc/sys/kernel/hostname"));
    assert!(
        err.to_string().contains("pass --hypervisor-hostname NAME"),
        "{err}"
    );
    let err = with(
        "2025.2",
        gpu(),
        true,
        Some("a;reboot"),
        HostnameSource::Host,
    )
    .unwrap_err();
    assert!(
        matches!(err, NovaError::BadHypervisorHostname { .. }),
        "{err}"
    );
}

#[test]
fn a_short_host_name_comes_with_the_fqdn_warning() {
    let notes = |name: &str| {
        let mut req = request("2025.2", vec![declared_a100("25:00.0")]);
        req.placement = Some(PlacementRequest::default());
        req.one_time_use = one_time_use(Some(name), HostnameSource::Host);
        NovaConfig::build(&host(1), req).unwrap().notes
    };
    let short = notes("compute-7");
    assert!(
        short.iter().any(|n| n
            .contains("the resource provider names use compute-7, this host's name")
            && n.contains("libvirt reports a name without a dot as the resolver's canonical name")),
        "{short:?}"
    );
    let fqdn = notes("compute-7.example.org");
    assert!(
        fqdn.iter()
            .any(|n| n.contains("libvirt reports it as it is")),
        "{fqdn:?}"
    );
}
