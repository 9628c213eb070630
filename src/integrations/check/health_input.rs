//! What the health families share: their input (`HealthInput`), the shape
//! of one device's result, and the function a device is judged by. Below
//! `health.rs` (the families and their order) and `health_aer.rs`.

use super::*;
use crate::model::health::{AerBaseline, HealthFacts, Level, NotJudged, Thresholds};

/// What the health checks look at.
#[derive(Debug)]
pub struct HealthInput<'a> {
    /// The devices judged, in address order.
    pub judged: Vec<&'a PciDevice>,
    /// Declared, or on a VFIO driver: handed from tenant to tenant.
    pub passthrough: BTreeSet<PciAddress>,
    pub facts: HealthFacts,
    pub thresholds: Thresholds,
    /// Where the thresholds came from: `Ok(None)` the defaults (no
    /// check.toml), `Err` the file's one-line error (the defaults are used).
    pub thresholds_from: Result<Option<String>, String>,
    /// The AER baseline, or why it cannot be used (then judged as empty).
    pub baseline: Result<AerBaseline, String>,
    /// Seconds since the epoch.
    pub now: u64,
    /// `check --new-aer-baseline`: take the counts read now as the baseline.
    pub new_baseline: bool,
    /// Whether the baseline entries taken this run were saved (`None`: none to save).
    pub saved: Option<Result<(), String>>,
    /// Whether this run keeps a baseline (`check`), or only reads one (`show`).
    pub keeps_baseline: bool,
}

impl Default for HealthInput<'_> {
    /// Nothing judged, default thresholds, an empty baseline.
    fn default() -> Self {
        HealthInput {
            judged: Vec::new(),
            passthrough: BTreeSet::new(),
            facts: HealthFacts::default(),
            thresholds: Thresholds::default(),
            thresholds_from: Ok(None),
            baseline: Ok(AerBaseline::default()),
            now: 0,
            new_baseline: false,
            saved: None,
            keeps_baseline: false,
        }
    }
}

pub(super) fn verdict_of(level: Level) -> Verdict {
    match level {
        Level::Ok => Verdict::Ok,
        Level::Warning => Verdict::Warning,
        Level::Critical => Verdict::Critical,
    }
}

/// One result about `dev`: the worst of `problems`, else OK with `ok`.
pub(super) fn device_result(
    id: String,
    dev: PciAddress,
    problems: Vec<(Verdict, String, &str)>,
    ok: String,
    evidence: Vec<String>,
) -> CheckResult {
    let mut r = match problems.iter().map(|p| p.0).max() {
        None => result(&id, Verdict::Ok, format!("{dev}: {ok}"), evidence, None),
        Some(worst) => {
            let messages: Vec<&str> = problems.iter().map(|p| p.1.as_str()).collect();
            // Remedies name the device as ADDRESS.
            let remedy = problems
                .iter()
                .find(|p| p.0 == worst && !p.2.is_empty())
                .map(|p| p.2.replace("ADDRESS", &dev.to_string()));
            result(
                &id,
                worst,
                format!("{dev}: {}", messages.join("; ")),
                evidence,
                remedy.as_deref(),
            )
        }
    };
    r.device = Some(dev);
    r
}

/// The function a device's link and AER counters are read from: its PF for
/// a VF. Returns it and the prefix its messages carry.
pub(super) fn subject(dev: &PciDevice) -> (PciAddress, String) {
    match dev.sriov {
        SriovRole::Vf { physfn } => (physfn, format!("judged by its PF {physfn}: ")),
        _ => (dev.address, String::new()),
    }
}

/// A family the host cannot report for `dev` by design: the verdict
/// check.toml's `[not_judged]` gives `why` (OK by default), the message
/// saying it is not judged and why; the remedy only when it is not OK.
pub(super) fn not_judged(
    h: &HealthInput,
    id: String,
    dev: PciAddress,
    why: NotJudged,
    message: String,
    remedy: &str,
) -> CheckResult {
    let verdict = Verdict::from(h.thresholds.not_judged.severity(why));
    let mut r = result(
        &id,
        verdict,
        format!("{dev}: not judged: {message}"),
        vec![],
        (verdict != Verdict::Ok && !remedy.is_empty()).then_some(remedy),
    );
    r.device = Some(dev);
    r.not_judged = Some(why);
    r
}
