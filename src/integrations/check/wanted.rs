//! Which functions `check` reads in depth, chosen from the survey of every
//! function (`model::survey`: IDs, class, driver). Every function some check
//! looks at is among them: those a declaration may govern (by address, or by
//! vendor and device: a superset of the ones it does), those judged for
//! health (on a VFIO driver; with `--all` every GPU and NVSwitch: the rule
//! `judged` applies), every NVSwitch (the fabric), those with an expected
//! count's IDs, the addresses the caller adds (named by VMs, by the change
//! record), and every function the survey could not read. The in-depth read
//! (`host::sysfs::read_devices`) adds their IOMMU groups' members, their
//! companions, a VF's PF and a PF's VFs: each check then sees what it would
//! see in the inventory of the whole host.

use super::health::judged_as;
use super::*;
use crate::model::fabric::is_nvswitch;
use crate::model::survey::Surveyed;

/// The functions to read in depth, and whether a declaration may govern
/// one of them (libvirt's node devices are asked for only then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub addresses: Vec<PciAddress>,
    pub maybe_declared: bool,
}

pub fn wanted(
    survey: &[Surveyed],
    unread: &[PciAddress],
    decls: Option<&Declarations>,
    expectations: &[Expectation],
    all: bool,
    extra: impl IntoIterator<Item = PciAddress>,
) -> Wanted {
    let mut declared_at: BTreeSet<PciAddress> = BTreeSet::new();
    let mut declared_ids: BTreeSet<(VendorId, DeviceId)> = BTreeSet::new();
    if let Some(decls) = decls {
        for decl in &decls.list {
            match decl.address {
                Some(address) => {
                    declared_at.insert(address);
                }
                None => {
                    declared_ids.insert((decl.vendor, decl.device));
                }
            }
        }
        declared_at.extend(decls.sriov.iter().map(|s| s.address));
    }
    let expected_ids: BTreeSet<(VendorId, DeviceId)> = expectations
        .iter()
        .filter_map(Expectation::vendor_device)
        .collect();
    let mut maybe_declared = !unread.is_empty();
    let mut out: BTreeSet<PciAddress> = survey
        .iter()
        .filter(|f| {
            let ids = (f.ids.vendor, f.ids.device);
            let declared = declared_at.contains(&f.address) || declared_ids.contains(&ids);
            maybe_declared |= declared;
            declared
                || expected_ids.contains(&ids)
                || judged_as(f.driver.as_ref(), f.class, f.ids, false, all).is_some()
                || is_nvswitch(f.ids.vendor, f.ids.device)
        })
        .map(|f| f.address)
        .collect();
    out.extend(unread);
    out.extend(extra);
    Wanted {
        addresses: out.into_iter().collect(),
        maybe_declared,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::declaration::Declaration;
    use crate::model::{ClassCode, DeviceIds};

    fn f(address: &str, vendor: u16, device: u16, class: u32, driver: &str) -> Surveyed {
        Surveyed {
            address: address.parse().unwrap(),
            ids: DeviceIds {
                vendor: VendorId(vendor),
                device: DeviceId(device),
                subsystem_vendor: VendorId(0),
                subsystem_device: DeviceId(0),
            },
            class: ClassCode(class),
            driver: (!driver.is_empty()).then(|| DriverName::new(driver)),
        }
    }

    #[test]
    fn the_functions_some_check_looks_at() {
        let survey = [
            f("01:00.0", 0x10de, 0x20b0, 0x030200, "nvidia"),
            f("02:00.0", 0x10de, 0x20b0, 0x030200, "vfio-pci"),
            f("03:00.0", 0x15b3, 0x101e, 0x020000, "vfio-pci"),
            f("04:00.0", 0x15b3, 0x101e, 0x020000, "mlx5_core"),
            f("05:00.0", 0x10de, 0x1af1, 0x068000, "nvidia-nvswitch"),
            f("06:00.0", 0x8086, 0x10d3, 0x020000, "e1000e"),
            f("07:00.0", 0x144d, 0xa80a, 0x010802, "nvme"),
        ];
        let at = |s: &[&str]| -> Vec<PciAddress> { s.iter().map(|a| a.parse().unwrap()).collect() };
        // Nothing declared: VFIO functions and the NVSwitch.
        assert_eq!(
            wanted(&survey, &[], None, &[], false, []).addresses,
            at(&["02:00.0", "03:00.0", "05:00.0"])
        );
        // --all adds every GPU; an unread function and the caller's extra come too.
        assert_eq!(
            wanted(
                &survey,
                &at(&["09:00.0"]),
                None,
                &[],
                true,
                at(&["07:00.0"])
            )
            .addresses,
            at(&["01:00.0", "02:00.0", "03:00.0", "05:00.0", "07:00.0", "09:00.0"])
        );
        // Declared by IDs, and by address; an expected count's IDs.
        let decls = Declarations::new(vec![
            Declaration::of_ids(VendorId(0x15b3), DeviceId(0x101e), "/etc/a.toml", 1),
            Declaration {
                address: Some("06:00.0".parse().unwrap()),
                ..Declaration::of_ids(VendorId(0x8086), DeviceId(0x10d3), "/etc/b.toml", 1)
            },
        ]);
        let expect = [Expectation {
            ids: "144d:a80a".into(),
            driver: None,
            count: 1,
        }];
        let w = wanted(&survey, &[], Some(&decls), &expect, false, []);
        assert_eq!(
            w.addresses,
            at(&["02:00.0", "03:00.0", "04:00.0", "05:00.0", "06:00.0", "07:00.0"])
        );
        assert!(w.maybe_declared);
        assert!(!wanted(&survey, &[], None, &expect, false, []).maybe_declared);
    }
}
