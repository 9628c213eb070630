//! Declaration checks: every declared device present, on its driver, its group
//! viable; declarations by IDs that lost functions; duplicates; expectations.

use super::sriov::{sriov_count, sriov_duplicates};
use super::*;

pub(super) fn bindings(f: &Facts) -> Vec<CheckResult> {
    let decls = match &f.declarations {
        Err(e) => {
            return vec![result(
                "config.declarations",
                Verdict::Critical,
                format!("the declared bindings cannot be read: {e}"),
                vec![],
                Some("fix the file named above; nothing declared is enforced until then"),
            )]
        }
        Ok(d) => d,
    };
    let mut out = vec![result(
        "config.declarations",
        Verdict::Ok,
        format!(
            "{} declaration(s) in /etc/vfioctl/bindings.d",
            decls.list.len() + decls.sriov.len()
        ),
        vec![],
        None,
    )];
    for (decl, found) in decls.mismatches(&f.inv.devices) {
        let mut r = result(
            &format!("binding.{}", decl.key()),
            Verdict::Critical,
            format!("{} declares {} at {}, but the slot holds {found}", decl.origin, decl.ids_text(), decl.key()),
            vec![],
            Some("the card moved or was replaced: update the declaration (vfioctl persist remove/add)"),
        );
        r.device = decl.address;
        out.push(r);
    }
    let coverage = decls.coverage(&f.inv.devices);
    let present: std::collections::HashSet<_> = f.inv.devices.iter().map(|d| d.address).collect();
    for (decl, covered) in decls.list.iter().zip(coverage) {
        let covered = covered.as_slice();
        if covered.is_empty() && decl.address.is_none() {
            out.push(result(
                &format!("binding.{}", decl.key()),
                Verdict::Warning,
                format!(
                    "{} declares {} but no such device is present",
                    decl.origin,
                    decl.key()
                ),
                vec![],
                Some("check the hardware, or remove the declaration"),
            ));
        }
        if covered.is_empty() && decl.address.is_some_and(|a| !present.contains(&a)) {
            let mut r = result(
                &format!("binding.{}", decl.key()),
                Verdict::Critical,
                format!("declared device {} is not present", decl.key()),
                vec![],
                Some("check the hardware (a failed card, or a slot that no longer enumerates)"),
            );
            r.device = decl.address;
            out.push(r);
        }
        out.extend(missing_count(f, decl, covered));
        for dev in covered {
            out.push(declared_device(f, decl, dev));
        }
    }
    out.extend(duplicates(decls));
    for decl in &decls.sriov {
        out.push(sriov_count(f, decl));
    }
    for (decl, vf) in decls.vf_coverage(&f.inv.devices) {
        out.push(declared_device(f, decl, vf));
    }
    out.extend(sriov_duplicates(decls));
    out
}

/// One declared device present: on its driver, override set, /dev/vfio
/// node, group viable.
pub(super) fn declared_device(f: &Facts, decl: &Declaration, dev: &PciDevice) -> CheckResult {
    debug_assert_eq!(decl.fit(dev), Fit::Applies);
    let mut problems: Vec<(Verdict, String, &str)> = Vec::new();
    let wanted = decl
        .driver
        .named()
        .map_or("vfio-pci (or a variant)".to_string(), ToString::to_string);
    if !decl.driver.satisfied_by(dev.driver.as_ref()) {
        let msg = match &dev.driver {
            Some(d) if d.kind() == DriverKind::Host => {
                format!("{d} grabbed it (declared {wanted})")
            }
            Some(d) => format!("on {d}, declared {wanted}"),
            None => format!("no driver (declared {wanted})"),
        };
        problems.push((Verdict::Critical, msg, "vfioctl persist apply"));
    }
    let expected_override = decl
        .driver
        .named()
        .cloned()
        .or_else(|| dev.driver.clone().filter(|d| d.kind() == DriverKind::Vfio));
    if dev.driver_override.is_none()
        || (expected_override.is_some() && dev.driver_override != expected_override)
    {
        problems.push((
            Verdict::Warning,
            format!(
                "driver_override is {}: a reprobe would hand it to another driver",
                dev.driver_override
                    .as_ref()
                    .map_or("unset".to_string(), ToString::to_string)
            ),
            "vfioctl persist apply",
        ));
    }
    if dev
        .driver
        .as_ref()
        .is_some_and(|d| d.kind() == DriverKind::Vfio)
    {
        match dev.iommu_group {
            Some(g) if !f.vfio_nodes.contains(&g) => problems.push((
                Verdict::Critical,
                format!("/dev/vfio/{g} is missing"),
                "check that devtmpfs is mounted and vfio is loaded; vfioctl restore then bind",
            )),
            None => problems.push((
                Verdict::Critical,
                "no IOMMU group".to_string(),
                "enable the IOMMU",
            )),
            _ => {}
        }
    }
    if let Some(group) = f.inv.group_of(dev) {
        // The device's own driver is reported above; name the others.
        let own = crate::model::group::GroupMember::Pci(dev.address);
        let v = f.inv.viability(group);
        let names: Vec<String> = v
            .blockers
            .iter()
            .filter(|b| b.device != own)
            .map(|b| format!("{} on {}", b.device, b.driver))
            .collect();
        if !names.is_empty() {
            problems.push((
                Verdict::Critical,
                format!(
                    "IOMMU group {} is not viable: {}",
                    group.number,
                    names.join(", ")
                ),
                "declare the other endpoints of the group too (or bind with --with-group)",
            ));
        }
    }
    if let Err(stays) = device_may_leave_host(f.fabric.as_ref(), dev) {
        problems.push((
            Verdict::Critical,
            stays.to_string(),
            "remove the declaration (vfioctl persist remove), or disable Fabric Manager for full passthrough",
        ));
    }
    // Config space, power state and reset are the health checks' (health.rs).
    let id = format!("binding.{}", dev.address);
    let mut r = if problems.is_empty() {
        result(
            &id,
            Verdict::Ok,
            format!(
                "{} on {}{}",
                dev.address,
                dev.driver
                    .as_ref()
                    .map_or("-".to_string(), ToString::to_string),
                dev.iommu_group
                    .map(|g| format!(", group {g} viable, /dev/vfio/{g} present"))
                    .unwrap_or_default()
            ),
            vec![format!("declared by {}", decl.origin)],
            None,
        )
    } else {
        let worst = problems.iter().map(|p| p.0).max().expect("non-empty");
        let messages: Vec<String> = problems.iter().map(|p| p.1.clone()).collect();
        let remedy = problems.iter().find(|p| p.0 == worst).map(|p| p.2);
        result(
            &id,
            worst,
            format!("{}: {}", dev.address, messages.join("; ")),
            vec![format!("declared by {}", decl.origin)],
            remedy,
        )
    };
    r.device = Some(dev.address);
    r
}

/// A declaration by IDs covering fewer functions than it did when declared
/// (or than `expect`): CRITICAL, naming each missing address, its IDs and the
/// last driver the change record knows (a GPU fell off the bus).
pub(super) fn missing_count(
    f: &Facts,
    decl: &Declaration,
    covered: &[&PciDevice],
) -> Option<CheckResult> {
    let expect = decl.expect?;
    if covered.len() >= expect {
        return None;
    }
    let missing: Vec<String> = decl
        .seen
        .iter()
        .filter(|a| !covered.iter().any(|d| d.address == **a))
        .map(|a| {
            let last = f
                .last_drivers
                .get(a)
                .map_or("no driver known".to_string(), |d| format!("last on {d}"));
            format!("{a} ({}, {last})", decl.ids_text())
        })
        .collect();
    Some(result(
        &format!("binding.{}.count", decl.key()),
        Verdict::Critical,
        format!(
            "{} declares {} on {expect} function(s), {} present{}",
            decl.origin,
            decl.ids_text(),
            covered.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!("; missing: {}", missing.join(", "))
            }
        ),
        vec![],
        Some("a device fell off the bus or was removed: check dmesg and the hardware, then reseat or reset it"),
    ))
}

/// The same key declared twice: identical (WARNING) or with different
/// drivers (CRITICAL: which one udev applies depends on file order).
pub(super) fn duplicates(decls: &Declarations) -> Vec<CheckResult> {
    // The one rule of what conflicts (and is then not applied): the model's.
    let conflicts = decls.conflicts();
    decls
        .duplicates()
        .into_iter()
        .map(|(first, again)| {
            let conflict = conflicts
                .iter()
                .find(|c| !c.sriov && c.again == again.origin);
            let conflicting = conflict.is_some();
            result(
                &format!("binding.{}.duplicate", again.key()),
                if conflicting {
                    Verdict::Critical
                } else {
                    Verdict::Warning
                },
                if let Some(conflict) = conflict {
                    conflict.to_string()
                } else {
                    format!(
                        "{} declares {} again (identical to {})",
                        again.origin,
                        again.key(),
                        first.origin
                    )
                },
                vec![],
                Some("keep one declaration per device (vfioctl persist remove, or edit by hand)"),
            )
        })
        .collect()
}

pub(super) fn expectations(f: &Facts) -> Vec<CheckResult> {
    let Some(expect) = &f.expectations else {
        return vec![];
    };
    let list = match expect {
        Err(e) => {
            return vec![result(
                "expect",
                Verdict::Unknown,
                format!("cannot read the expectations: {e}"),
                vec![],
                None,
            )]
        }
        Ok(list) => list,
    };
    list.iter()
        .map(|e| {
            let id = format!("expect.{}", e.ids);
            let Some((vendor, device)) = e.vendor_device() else {
                return result(
                    &id,
                    Verdict::Unknown,
                    format!("ids = \"{}\" is not VENDOR:DEVICE", e.ids),
                    vec![],
                    None,
                );
            };
            let want = DeclaredDriver::parse(e.driver.as_deref());
            let found: Vec<&crate::model::PciDevice> = f
                .inv
                .devices
                .iter()
                .filter(|d| d.ids.vendor == vendor && d.ids.device == device)
                .filter(|d| want.satisfied_by(d.driver.as_ref()))
                .collect();
            let on = e
                .driver
                .clone()
                .unwrap_or_else(|| "a VFIO driver".to_string());
            if found.len() == e.count {
                result(
                    &id,
                    Verdict::Ok,
                    format!("{} x {} on {on}, as expected", found.len(), e.ids),
                    vec![],
                    None,
                )
            } else {
                result(
                    &id,
                    Verdict::Critical,
                    format!(
                        "expected {} x {} on {on}, found {}",
                        e.count,
                        e.ids,
                        found.len()
                    ),
                    found.iter().map(|d| d.address.to_string()).collect(),
                    Some("vfioctl list shows where the others are (driver, presence)"),
                )
            }
        })
        .collect()
}
