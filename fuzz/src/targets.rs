//! The targets. Each takes any bytes; non-UTF-8 input goes to the parsers that
//! read bytes from files (they must reject it), text parsers get UTF-8 only.

use std::collections::HashSet;

use vfioctl::host::{config, hostfacts, modules, sysfs, usage};
use vfioctl::integrations::nodedev::NodeDevice;
use vfioctl::integrations::nova::Release;
use vfioctl::model::declaration::{Declaration, Declarations};
use vfioctl::model::domain::{parse_domain_xml, valid_uuid, Domain, DomainState};
use vfioctl::model::ids::{parse_sysfs_hex, NamesWanted};
use vfioctl::model::modalias::{best_match, glob_match, parse_aliases, variant_aliases};
use vfioctl::model::selector::Candidate;
use vfioctl::model::test_support::endpoint;
use vfioctl::model::{
    ClassCode, DeviceId, DeviceIds, DriverName, ModuleName, PciAddress, PciDevice, PciNames,
    Selector, VendorId,
};

use crate::fakeroot::{valid_name, Unrepresentable};
use crate::{fields, FakeRoot};

/// The fake root holds every fixed path the targets write.
const FIXED: &str = "a fixed path fits the fake root";

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// `0000:25:00.0`, `25:00.0`: parse, and every parsed address prints in the
/// long form that parses back to itself and is a valid sysfs name.
pub fn address(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let parsed = s.parse::<PciAddress>();
    if let Ok(addr) = parsed {
        let long = addr.to_string();
        assert_eq!(
            long.parse::<PciAddress>().ok(),
            Some(addr),
            "{s:?} -> {long}"
        );
        assert_eq!(PciAddress::from_sysfs_name(&long), Some(addr), "{long}");
    }
    if let Some(addr) = PciAddress::from_sysfs_name(s) {
        assert_eq!(parsed.ok(), Some(addr), "sysfs name {s:?}");
    }
}

/// Vendor/device IDs as operators type them (4 hex digits) and sysfs hex
/// attributes (`0x10de\n`); class codes print as 6 digits.
pub fn ids(data: &[u8]) {
    let Some(s) = text(data) else { return };
    if let Some(v) = VendorId::parse_hex4(s) {
        assert_eq!(v.to_string(), s.to_ascii_lowercase());
        assert_eq!(DeviceId::parse_hex4(s).map(|d| d.0), Some(v.0));
    }
    if let Some(n) = parse_sysfs_hex(s) {
        let class = ClassCode(n);
        assert_eq!(parse_sysfs_hex(&format!("0x{class}")), Some(n & 0xff_ffff));
        assert_eq!(parse_sysfs_hex(&format!("{n:#x}\n")), Some(n));
    }
}

/// A few candidates every selector is matched against.
fn candidates(driver: &DriverName) -> [Candidate<'_>; 3] {
    let gpu = Candidate {
        address: PciAddress::new(0, 0x25, 0, 0),
        vendor: VendorId(0x10de),
        device: DeviceId(0x20b0),
        subsystem: Some((VendorId(0x10de), DeviceId(0x134f))),
        class: Some(ClassCode(0x030200)),
        driver: Some(driver),
        iommu_group: Some(21),
    };
    let xml_only = Candidate {
        subsystem: None,
        class: None,
        driver: None,
        iommu_group: None,
        ..gpu
    };
    let other = Candidate {
        address: PciAddress::new(0xffff_ffff, 0xff, 0x1f, 7),
        vendor: VendorId(0xffff),
        device: DeviceId(0),
        class: Some(ClassCode(0xff_ffff)),
        ..xml_only
    };
    [gpu, xml_only, other]
}

/// Selectors (and the Nova release names `nova --release` takes): parse;
/// a parsed selector's text parses back to the same matcher.
pub fn selector(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let _ = Release::parse(s).map(|r| (r.name(), r.series(), r.to_string()));
    let Ok(sel) = s.parse::<Selector>() else {
        return;
    };
    let again: Selector = sel.to_string().parse().expect("a selector's text parses");
    assert_eq!(again.matcher, sel.matcher);
    let driver = DriverName::new("nvidia");
    for c in candidates(&driver) {
        let _ = sel.matcher.matches(&c);
    }
}

/// The fields a declaration is made of, without where it was read.
fn essence(d: &Declaration) -> impl PartialEq + std::fmt::Debug + '_ {
    (d.vendor, d.device, d.subsystem, d.address, &d.driver)
}

/// One bindings.d file's TOML: parse, and every declaration read writes
/// (`persist add`'s render) to a file that reads back as the same declaration,
/// under a file name that is one plain `.toml` name.
pub fn bindings_toml(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let Ok((decls, pfs)) = config::parse_all("/etc/vfioctl/bindings.d/fuzz.toml", s) else {
        return;
    };
    for pf in &pfs {
        let written = config::render_sriov(pf);
        let (bindings, back) = config::parse_all("written.toml", &written)
            .unwrap_or_else(|e| panic!("vfioctl cannot read what it wrote: {e}\n{written}"));
        assert!(bindings.is_empty() && back.len() == 1, "{written}");
        assert_eq!(
            (
                back[0].address,
                back[0].vendor,
                back[0].device,
                back[0].numvfs,
                &back[0].vf_driver
            ),
            (pf.address, pf.vendor, pf.device, pf.numvfs, &pf.vf_driver),
            "{written}"
        );
        assert!(config::valid_file_name(&config::sriov_file_name(pf)));
    }
    for decl in &decls {
        let written = config::render(decl);
        let back = config::parse("written.toml", &written)
            .unwrap_or_else(|e| panic!("vfioctl cannot read what it wrote: {e}\n{written}"));
        assert_eq!(back.len(), 1, "{written}");
        assert_eq!(essence(&back[0]), essence(decl), "{written}");
        let name = config::file_name(decl);
        assert!(
            name.ends_with(".toml") && !name.contains('/') && !name.starts_with('.'),
            "{name:?}"
        );
        let _ = (decl.key(), decl.ids_text());
    }
    let decls = Declarations::with_sriov(decls, pfs);
    let _ = vfioctl::integrations::udev::render_rules(&decls);
}

/// A bindings.d file as found on disk: the input up to the first NUL is its
/// file name (newlines and all), the rest its contents. Loaded, listed,
/// turned into udev rules and boot files (previews only), and checked.
pub fn bindings_file(data: &[u8]) {
    let (name, contents) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Some(name) = text(name) else { return };
    let root = FakeRoot::new();
    root.dir("/etc/vfioctl/bindings.d").expect(FIXED);
    if root
        .write(&format!("/etc/vfioctl/bindings.d/{name}"), contents)
        .is_err()
    {
        return;
    }
    let _ = config::load(&root.host_root());
    root.run(&["persist", "list"]);
    root.run(&["persist", "list", "--json"]);
    root.run(&["persist", "rules"]);
    root.run(&["host-config"]);
    root.run(&["check", "--json"]);
}

/// The environment udev gives `vfioctl udev-hook`: ACTION, PCI_SLOT_NAME,
/// SEQNUM, DEVPATH (NUL-separated). Run on a root whose one declaration names
/// a device that is not there.
pub fn udev_env(data: &[u8]) {
    // Environment values end at a NUL (the kernel's uevent buffer separates
    // variables with NULs), so a value never holds one.
    let mut f: Vec<&[u8]> = data.split(|&b| b == 0).take(4).collect();
    f.resize(4, &[]);
    let vars = ["ACTION", "PCI_SLOT_NAME", "SEQNUM", "DEVPATH"];
    let root = FakeRoot::new();
    root.write(
        "/etc/vfioctl/bindings.d/id-10de_20b0.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\n",
    )
    .expect(FIXED);
    for (var, value) in vars.iter().zip(&f) {
        // The kernel's uevent values are bytes; std keeps them as OsStr.
        use std::os::unix::ffi::OsStrExt;
        std::env::set_var(var, std::ffi::OsStr::from_bytes(value));
    }
    root.run(&["udev-hook", "--timeout", "1"]);
    for var in vars {
        std::env::remove_var(var);
    }
}

/// libvirt's node-device XML (`virsh nodedev-dumpxml`): parse, then every
/// derived view Nova and `nodedev` use.
pub fn nodedev_xml(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let Ok(dev) = NodeDevice::parse("pci_0000_25_00_0", s) else {
        return;
    };
    let _ = (
        dev.nova_device_type(),
        dev.nova_parent(),
        dev.virt_functions(),
        dev.capability_kinds(),
    );
    for sel in [
        "25:00.0",
        "10de:20b0",
        "10de:",
        "class=gpu",
        "driver=none",
        "group=21",
    ] {
        let _ = dev.matched_by(&sel.parse().expect("valid selector"));
    }
}

/// libvirt's domain XML (`virsh dumpxml`): parse, then what `list`, `show`
/// and the gate derive from it. Every host address read prints and parses
/// back, every mdev UUID is one, and a domain's description escaped for a
/// terminal holds no control character.
pub fn domain_xml(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let Ok(def) = parse_domain_xml("fuzz", s) else {
        return;
    };
    for dev in &def.devices {
        if let Some(uuid) = &dev.mdev {
            assert!(valid_uuid(uuid), "{uuid:?}");
        }
        if let Some(addr) = dev.address {
            assert_eq!(addr.to_string().parse::<PciAddress>().ok(), Some(addr));
        }
    }
    let domain = Domain {
        name: def.name.clone(),
        uuid: def.uuid.clone().unwrap_or_default(),
        id: Some(1),
        active: true,
        state: DomainState::Running,
        persistent: true,
        autostart: true,
        live: Some(def.clone()),
        config: Some(def),
        qemu_pid: None,
    };
    for found in domain.all_devices() {
        let addr = found.device.address.expect("all_devices has addresses");
        assert!(domain.uses(&addr).is_some());
    }
    let shown = vfioctl::output::escape_controls(&domain.describe()).into_owned();
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\t'),
        "{shown:?}"
    );
}

/// A device with the given IDs and class, for lookups and alias matching.
fn device(ids: DeviceIds, class: u32) -> PciDevice {
    let mut dev = endpoint("0000:25:00.0", class);
    dev.ids = ids;
    dev.header_type = None;
    dev.iommu_group = Some(21);
    dev
}

fn sample_devices() -> Vec<PciDevice> {
    let ids = |v, d, sv, sd| DeviceIds {
        vendor: VendorId(v),
        device: DeviceId(d),
        subsystem_vendor: VendorId(sv),
        subsystem_device: DeviceId(sd),
    };
    vec![
        device(ids(0x10de, 0x20b0, 0x10de, 0x134f), 0x030200),
        device(ids(0x10de, 0x1af1, 0x10de, 0x1af1), 0x068000),
        device(ids(0x15b3, 0x101e, 0x15b3, 0x0001), 0x020000),
        device(ids(0x0000, 0x0000, 0x0000, 0x0000), 0x000000),
        device(ids(0xffff, 0xffff, 0xffff, 0xffff), 0xffffff),
    ]
}

/// The pci.ids database: parse for a few devices and classes, then look up
/// every name a table would show.
pub fn pci_ids(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let devices = sample_devices();
    let mut wanted = NamesWanted::default();
    for d in &devices {
        wanted.add(d.ids, d.class);
    }
    let names = PciNames::parse(s, &wanted);
    for d in &devices {
        let _ = (
            names.vendor(d.ids.vendor),
            names.device(d.ids.vendor, d.ids.device),
            names.subsystem(&d.ids),
            names.class(d.class),
        );
    }
    let seen: HashSet<_> = wanted.ids.iter().collect();
    assert_eq!(seen.len(), wanted.ids.len());
}

/// /proc/cmdline as `check`, `host-config` and module loading read it.
pub fn cmdline(data: &[u8]) {
    let root = FakeRoot::new();
    root.write("/proc/cmdline", data).expect(FIXED);
    root.write(
        "/proc/cpuinfo",
        "vendor_id\t: GenuineIntel\nflags\t\t: fpu vmx\n",
    )
    .expect(FIXED);
    root.write("/proc/sys/kernel/osrelease", "6.1.0-fuzz\n")
        .expect(FIXED);
    root.write("/etc/os-release", "ID=debian\n").expect(FIXED);
    root.write(
        "/etc/vfioctl/bindings.d/id-10de_20b0.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\n",
    )
    .expect(FIXED);
    let host = root.host_root();
    for module in ["vfio_pci", "vfio-pci", "nouveau"] {
        let _ = modules::hard_block(&host, &ModuleName::new(module));
    }
    root.run(&["check", "--json"]);
    root.run(&["host-config"]);
}

/// /proc/self/mountinfo (and the swaps and mounts next to it) as the usage
/// checks read them: which PCI device holds a mounted filesystem.
pub fn mountinfo(data: &[u8]) {
    let root = FakeRoot::new();
    root.write("/proc/self/mountinfo", data).expect(FIXED);
    root.write("/proc/mounts", data).expect(FIXED);
    root.write("/proc/swaps", data).expect(FIXED);
    let _ = usage::read_usage(&root.host_root());
}

/// modules.alias: the native drivers' `pci:` aliases and the VFIO variants'
/// `vfio_pci:` aliases, matched against a few devices, directly and as
/// `host-config` reads them under /lib/modules/RELEASE.
pub fn modules_alias(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let devices = sample_devices();
    let native = parse_aliases(s, "pci");
    let variants = variant_aliases(s);
    for d in &devices {
        let modalias = format!("pci:{}", d.modalias_body());
        for alias in native.iter().take(64) {
            let _ = glob_match(&alias.pattern, &modalias);
        }
        if let Some(choice) = best_match(&variants, "vfio_pci", d) {
            assert!(variants.iter().any(|a| a.pattern == choice.pattern));
        }
    }
    let root = FakeRoot::new();
    root.write("/proc/sys/kernel/osrelease", "6.1.0-fuzz\n")
        .expect(FIXED);
    root.write("/lib/modules/6.1.0-fuzz/modules.alias", data)
        .expect(FIXED);
    let _ = modules::vfio_variant_aliases(&root.host_root(), Some("6.1.0-fuzz"));
}

/// The attributes and links of one function's sysfs directory, NUL-separated
/// in this order (config space last, as it holds NULs); then `list`, `list --json`, `show` and `check` read them.
const SYSFS_FIELDS: &[&str] = &[
    "vendor",
    "device",
    "class",
    "subsystem_vendor",
    "subsystem_device",
    "revision",
    "driver_override",
    "numa_node",
    "sriov_totalvfs",
    "sriov_numvfs",
    "boot_vga",
    "power_state",
    // Link targets and names below: only their last component is read.
    "@driver",
    "@virtfn0",
    "@iommu_group",
    "#group_member",
    "#group_type",
    // Last: binary, NULs included.
    "config",
];

pub fn sysfs_attrs(data: &[u8]) {
    let root = FakeRoot::new();
    // An input naming what no file system holds (a group name over
    // NAME_MAX, a link leading out of the root) is skipped.
    if sysfs_tree(&root, data).is_err() {
        return;
    }
    let _ = sysfs::read_one(&root.host_root(), PciAddress::new(0, 0x25, 0, 0));
    let _ = hostfacts::read_cpu(&root.host_root());
    root.run(&["list"]);
    root.run(&["list", "--json"]);
    root.run(&["show", "25:00.0"]);
    root.run(&["show", "25:00.0", "--json"]);
}

/// Writes `sysfs_attrs`'s fields into the fake root.
fn sysfs_tree(root: &FakeRoot, data: &[u8]) -> Result<(), Unrepresentable> {
    use std::os::unix::ffi::OsStrExt;
    let f = fields(data, SYSFS_FIELDS.len());
    let dev = "/sys/bus/pci/devices/0000:25:00.0";
    root.dir(dev)?;
    let mut group = Some("21".to_string());
    for (name, value) in SYSFS_FIELDS.iter().zip(&f) {
        if let Some(link) = name.strip_prefix('@') {
            // A link target is any path; empty means no link.
            if value.is_empty() {
                continue;
            }
            let target = std::ffi::OsStr::from_bytes(value);
            root.link(&format!("{dev}/{link}"), target)?;
            if link == "iommu_group" {
                // The group vfioctl reads is the target's last component
                // (none for `..`: no group directory then).
                group = std::path::Path::new(target)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned());
            }
        } else if *name == "#group_member" {
            if let (Some(group), false) = (&group, value.is_empty()) {
                // One directory entry, a device's name.
                if !valid_name(value) {
                    return Err(Unrepresentable(format!("group member {value:?}")));
                }
                let member = String::from_utf8_lossy(value);
                root.dir(&format!(
                    "/sys/kernel/iommu_groups/{group}/devices/{member}"
                ))?;
            }
        } else if *name == "#group_type" {
            if let Some(group) = &group {
                root.write(&format!("/sys/kernel/iommu_groups/{group}/type"), value)?;
            }
        } else if !value.is_empty() {
            root.write(&format!("{dev}/{name}"), value)?;
        }
    }
    Ok(())
}

/// The attributes and files the health checks read (NUL-separated): the
/// GPU's link, AER counters, reset method, `enable`, `resource`, power
/// state; its root port's link and root-port totals; `check.toml`; the AER
/// baseline; last, the GPU's config space (binary).
const HEALTH_FIELDS: &[&str] = &[
    "current_link_speed",
    "max_link_speed",
    "current_link_width",
    "max_link_width",
    "aer_dev_correctable",
    "aer_dev_nonfatal",
    "aer_dev_fatal",
    "reset_method",
    "enable",
    "resource",
    "power_state",
    "port:current_link_speed",
    "port:max_link_speed",
    "port:current_link_width",
    "port:max_link_width",
    "port:aer_dev_fatal",
    "port:aer_rootport_total_err_cor",
    "port:aer_rootport_total_err_fatal",
    "#check.toml",
    "#aer-baseline.json",
    "config",
];

/// The GPU 25:00.0 on vfio-pci (so judged) below root port 00:01.0, whose
/// AER service is the OS's: everything `check` and `show` read for health
/// comes from the input.
pub fn health_attrs(data: &[u8]) {
    let root = FakeRoot::new();
    if health_tree(&root, data).is_err() {
        return;
    }
    root.run(&["check", "--json"]);
    root.run(&["check", "--all", "--json"]);
    root.run(&["check"]);
    root.run(&["show", "25:00.0", "--json"]);
    root.run(&["show", "25:00.0"]);
}

fn health_tree(root: &FakeRoot, data: &[u8]) -> Result<(), Unrepresentable> {
    use std::ffi::OsStr;
    let f = fields(data, HEALTH_FIELDS.len());
    let port = "/sys/devices/pci0000:00/0000:00:01.0";
    let gpu = format!("{port}/0000:25:00.0");
    for (dir, address, ids, class, header, group) in [
        (
            port,
            "0000:00:01.0",
            ("0x8086", "0x347a"),
            "0x060400",
            0x01u8,
            "1",
        ),
        (
            gpu.as_str(),
            "0000:25:00.0",
            ("0x10de", "0x20b0"),
            "0x030200",
            0x00,
            "2",
        ),
    ] {
        root.dir(dir)?;
        root.write(&format!("{dir}/vendor"), format!("{}\n", ids.0))?;
        root.write(&format!("{dir}/device"), format!("{}\n", ids.1))?;
        root.write(&format!("{dir}/class"), format!("{class}\n"))?;
        let mut config = vec![0u8; 64];
        config[0x0e] = header;
        root.write(&format!("{dir}/config"), config)?;
        let bus_link = format!("/sys/bus/pci/devices/{address}");
        let up = "../../..";
        root.link(
            &bus_link,
            OsStr::new(&format!("{up}{}", dir.trim_start_matches("/sys"))),
        )?;
        root.dir(&format!(
            "/sys/kernel/iommu_groups/{group}/devices/{address}"
        ))?;
        root.link(
            &format!("{dir}/iommu_group"),
            OsStr::new(&format!("../../../kernel/iommu_groups/{group}")),
        )?;
    }
    root.link(
        &format!("{gpu}/driver"),
        OsStr::new("../../../../bus/pci/drivers/vfio-pci"),
    )?;
    root.dir("/sys/bus/pci/drivers/vfio-pci")?;
    root.dir("/sys/class/iommu/dmar0")?;
    root.dir("/sys/bus/pci_express/devices/0000:00:01.0:pcie002")?;
    for (name, value) in HEALTH_FIELDS.iter().zip(&f) {
        match *name {
            "#check.toml" if !value.is_empty() => {
                root.write("/etc/vfioctl/check.toml", value)?;
            }
            "#aer-baseline.json" if !value.is_empty() => {
                root.write("/var/lib/vfioctl/aer-baseline.json", value)?;
            }
            "config" if !value.is_empty() => {
                root.write(&format!("{gpu}/config"), value)?;
            }
            _ if value.is_empty() || name.starts_with('#') || *name == "config" => {}
            _ => match name.strip_prefix("port:") {
                Some(attr) => root.write(&format!("{port}/{attr}"), value).map(drop)?,
                None => root.write(&format!("{gpu}/{name}"), value).map(drop)?,
            },
        }
    }
    Ok(())
}

/// `check`'s survey of every function (issue #32): up to the first NUL, a
/// function's `modalias`; then the name of the driver whose directory lists
/// it. The parsed IDs and class print back as the modalias they came from;
/// then `check --json` surveys a fake host holding that function and reads
/// in depth what it chooses.
pub fn survey(data: &[u8]) {
    use vfioctl::model::survey::parse_pci_modalias;
    let f = fields(data, 2);
    if let Some((ids, class)) = text(f[0]).and_then(parse_pci_modalias) {
        let mut dev = endpoint("0000:25:00.0", class.0);
        dev.ids = ids;
        let again = format!("pci:{}", dev.modalias_body());
        assert_eq!(
            parse_pci_modalias(&again),
            Some((ids, class)),
            "{:?} -> {again}",
            f[0]
        );
    }
    let root = FakeRoot::new();
    let dev = "/sys/bus/pci/devices/0000:25:00.0";
    if root.write(&format!("{dev}/modalias"), f[0]).is_err() {
        return;
    }
    if !f[1].is_empty() {
        if !valid_name(f[1]) {
            return;
        }
        let driver = String::from_utf8_lossy(f[1]);
        if root
            .dir(&format!("/sys/bus/pci/drivers/{driver}/0000:25:00.0"))
            .is_err()
        {
            return;
        }
    }
    let _ = vfioctl::host::survey::survey(&root.host_root());
    root.run(&["check", "--json"]);
    root.run(&["check", "--npd"]);
}
