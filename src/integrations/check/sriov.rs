//! SR-IOV checks: a declared PF's VF count, and PFs declared twice.

use super::*;

/// `sriov.<PF>.numvfs`: the declared PF is present, is the declared card,
/// and carries the declared number of VFs.
pub(super) fn sriov_count(f: &Facts, decl: &SriovDeclaration) -> CheckResult {
    let id = format!("sriov.{}.numvfs", decl.key());
    let critical = |message: String, remedy: &str| {
        result(&id, Verdict::Critical, message, vec![], Some(remedy))
    };
    let mut r = match f.inv.device(&decl.address) {
        None => critical(
            format!("{}: declared SR-IOV PF {} is not present", decl.origin, decl.key()),
            "check the hardware (a failed card, or a slot that no longer enumerates)",
        ),
        Some(pf) => match (decl.fit(pf), &pf.sriov) {
            (Fit::Mismatch { found }, _) => critical(
                format!(
                    "{} declares {} VF(s) on {} at {}, but the slot holds {found}; not configured",
                    decl.origin,
                    decl.numvfs,
                    decl.ids_text(),
                    decl.key()
                ),
                "the card moved or was replaced: update the declaration (vfioctl persist remove, then sriov --persist)",
            ),
            (_, SriovRole::Pf { total_vfs, .. }) if u32::from(decl.numvfs) > *total_vfs => critical(
                format!(
                    "{} declares {} VF(s) on {}, but its sriov_totalvfs is {total_vfs}",
                    decl.origin,
                    decl.numvfs,
                    decl.key()
                ),
                "declare at most sriov_totalvfs VFs (vfioctl sriov --numvfs N --persist)",
            ),
            (_, SriovRole::Pf { num_vfs, .. }) if *num_vfs != u32::from(decl.numvfs) => critical(
                format!(
                    "{}: declared {} VF(s) on {}, {num_vfs} present",
                    decl.origin,
                    decl.numvfs,
                    decl.key()
                ),
                "vfioctl persist apply",
            ),
            (_, SriovRole::Pf { .. }) => result(
                &id,
                Verdict::Ok,
                format!("{} carries {} VF(s) as declared", decl.key(), decl.numvfs),
                vec![format!("declared by {}", decl.origin)],
                None,
            ),
            (_, _) => critical(
                format!(
                    "{} declares VFs on {}, which is not an SR-IOV physical function",
                    decl.origin,
                    decl.key()
                ),
                "remove the declaration (vfioctl persist remove)",
            ),
        },
    };
    r.device = Some(decl.address);
    r
}

/// The same PF declared twice: identical (WARNING) or different (CRITICAL).
pub(super) fn sriov_duplicates(decls: &Declarations) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for (i, again) in decls.sriov.iter().enumerate() {
        let Some(first) = decls.sriov[..i].iter().find(|d| d.address == again.address) else {
            continue;
        };
        let conflicting = decls.sriov_conflicted(again.address)
            && (first.vendor, first.device, first.numvfs, &first.vf_driver)
                != (again.vendor, again.device, again.numvfs, &again.vf_driver);
        out.push(result(
            &format!("sriov.{}.duplicate", again.key()),
            if conflicting {
                Verdict::Critical
            } else {
                Verdict::Warning
            },
            if conflicting {
                format!(
                    "{} declares SR-IOV PF {} again, conflicting with {}: neither is applied until one of them goes",
                    again.origin,
                    again.key(),
                    first.origin
                )
            } else {
                format!(
                    "{} declares SR-IOV PF {} again (identical to {})",
                    again.origin,
                    again.key(),
                    first.origin
                )
            },
            vec![],
            Some("keep one [[sriov]] declaration per PF (vfioctl persist remove, or edit by hand)"),
        ));
    }
    out
}
