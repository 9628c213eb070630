//! `check`'s text for monitoring systems and people. The monitoring-plugins
//! form (Nagios, Icinga, NRPE, Sensu): the first line is the status the
//! monitoring system shows and alerts with, `VFIOCTL STATUS - summary |
//! perfdata`; the table of every check follows as long output; the last
//! line counts each verdict. Node Problem Detector's custom plugin form: one
//! line of at most 80 bytes naming the worst check.

use std::collections::BTreeMap;
use std::io::Write;

use crate::integrations::check::{CheckResult, Counts, Verdict};
use crate::model::health::NotJudged;

use super::escape_controls;
use super::table::Table;

/// How many check ids the first line names before "and N more".
const NAMED: usize = 6;

/// Node Problem Detector's default `max_output_length`: it keeps that many
/// bytes of the plugin's output as the condition's message.
pub const NPD_MAX_OUTPUT: usize = 80;

/// "not judged: firmware-first AER on 14, no PCIe link on 2" (empty when
/// every family is judged).
fn not_judged_note(not_judged: &BTreeMap<NotJudged, usize>) -> String {
    if not_judged.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = not_judged
        .iter()
        .map(|(why, n)| format!("{} on {n}", why.words()))
        .collect();
    format!("not judged: {}", parts.join(", "))
}

/// The first line: `VFIOCTL CRITICAL - 2 critical, 1 warning:
/// iommu.active, binding.0000:25:00.0, health.link.0000:33:00.0 |
/// critical=2 warning=1 unknown=0 ok=23 not_judged=0`. The checks named are
/// the ones not OK, most severe first, in the order they ran.
pub fn summary(results: &[CheckResult], status: Verdict) -> String {
    let counts = Counts::of(results);
    let mut text = format!("VFIOCTL {} - ", status.label());
    let problems: Vec<&CheckResult> = Verdict::BY_SEVERITY
        .iter()
        .filter(|v| **v != Verdict::Ok)
        .flat_map(|v| results.iter().filter(move |r| r.status == *v))
        .collect();
    if problems.is_empty() {
        text.push_str(&format!("{} checks OK", results.len()));
    } else {
        let tally: Vec<String> = counts
            .by_verdict
            .iter()
            .filter(|(v, n)| *v != Verdict::Ok && *n > 0)
            .map(|(v, n)| format!("{n} {}", v.label().to_lowercase()))
            .collect();
        let mut named: Vec<&str> = problems.iter().take(NAMED).map(|r| r.id.as_str()).collect();
        let more = problems.len().saturating_sub(NAMED);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        named.dedup();
        text.push_str(&format!("{}: {}{more}", tally.join(", "), named.join(", ")));
    }
    let note = not_judged_note(&counts.not_judged);
    if !note.is_empty() {
        text.push_str(&format!("; {note}"));
    }
    // Perfdata: one number per verdict, for graphs of the node over time.
    text.push_str(&format!(
        " | critical={} warning={} unknown={} ok={} not_judged={}",
        counts.of_verdict(Verdict::Critical),
        counts.of_verdict(Verdict::Warning),
        counts.of_verdict(Verdict::Unknown),
        counts.of_verdict(Verdict::Ok),
        counts.not_judged.values().sum::<usize>()
    ));
    text
}

/// The last line: `CRITICAL: 26 checks: 2 critical, 1 warning, 0 unknown,
/// 23 ok; not judged: firmware-first AER on 14`.
pub fn closing(results: &[CheckResult], status: Verdict) -> String {
    let counts = Counts::of(results);
    let tally: Vec<String> = counts
        .by_verdict
        .iter()
        .map(|(v, n)| format!("{n} {}", v.label().to_lowercase()))
        .collect();
    let note = not_judged_note(&counts.not_judged);
    format!(
        "{}: {} checks: {}{}",
        status.label(),
        results.len(),
        tally.join(", "),
        if note.is_empty() {
            String::new()
        } else {
            format!("; {note}")
        }
    )
}

/// The summary, the table of every check (its remedy after `->`), and the
/// closing line. A `|` in the long output would start performance data
/// for Nagios and Icinga: none is left in it (`/` instead).
pub fn write_human(
    out: &mut dyn Write,
    results: &[CheckResult],
    status: Verdict,
) -> std::io::Result<()> {
    writeln!(out, "{}", summary(results, status))?;
    let mut table = Table::new(["STATUS", "CHECK", "MESSAGE"]);
    for r in results {
        let mut message = r.message.clone();
        if let Some(remedy) = &r.remedy {
            message.push_str(&format!(" -> {remedy}"));
        }
        table.row(vec![
            r.status.label().to_string(),
            r.id.clone(),
            message.replace('|', "/"),
        ]);
    }
    write!(out, "{}", table.render(""))?;
    writeln!(out, "{}", closing(results, status))
}

/// `text` cut to at most `max` bytes on a character boundary, ending in
/// `...` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Node Problem Detector's line: `CRITICAL health.aer.0000:25:00.0 and 2
/// more: 3 new fatal error(s) at 0000:24:00.0...` (the first check of the
/// worst verdict, its message without the address its id names), or `OK:
/// 26 checks; not judged: ...`; control characters escaped, at most
/// `NPD_MAX_OUTPUT` bytes.
pub fn npd_line(results: &[CheckResult], status: Verdict) -> String {
    let counts = Counts::of(results);
    let line = match results
        .iter()
        .find(|r| r.status == status && status != Verdict::Ok)
    {
        None => {
            let note = not_judged_note(&counts.not_judged);
            format!(
                "{}: {} checks{}",
                status.label(),
                results.len(),
                if note.is_empty() {
                    String::new()
                } else {
                    format!("; {note}")
                }
            )
        }
        Some(worst) => {
            let problems = results.iter().filter(|r| r.status != Verdict::Ok).count();
            let message = match worst.device {
                Some(address) => worst
                    .message
                    .strip_prefix(&format!("{address}: "))
                    .unwrap_or(&worst.message),
                None => &worst.message,
            };
            format!(
                "{} {}{}: {message}",
                status.label(),
                worst.id,
                if problems > 1 {
                    format!(" and {} more", problems - 1)
                } else {
                    String::new()
                }
            )
        }
    };
    cut(&escape_controls(&line), NPD_MAX_OUTPUT)
}

/// Node Problem Detector's line when the check could not run: `UNKNOWN:
/// WHY`, escaped and cut like `npd_line`'s.
pub fn npd_unknown(why: &str) -> String {
    cut(&escape_controls(&format!("UNKNOWN: {why}")), NPD_MAX_OUTPUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, status: Verdict, message: &str) -> CheckResult {
        CheckResult {
            id: id.into(),
            status,
            message: message.into(),
            evidence: vec![],
            remedy: None,
            device: id.find("0000:").and_then(|at| id[at..].parse().ok()),
            not_judged: None,
        }
    }

    #[test]
    fn npd_lines_fit_and_name_the_worst_check() {
        let results = vec![
            r("iommu.active", Verdict::Ok, "IOMMU active"),
            r(
                "health.aer.0000:25:00.0",
                Verdict::Critical,
                "0000:25:00.0: 3 new fatal error(s) at 0000:24:00.0 since its counters restarted (after a reboot; the baseline held 0 fatal, 0 nonfatal, 0 correctable)",
            ),
            r("binding.0000:2b:00.0", Verdict::Warning, "0000:2b:00.0: x"),
        ];
        let line = npd_line(&results, Verdict::Critical);
        assert_eq!(
            line,
            "CRITICAL health.aer.0000:25:00.0 and 1 more: 3 new fatal error(s) at 0000:24:..."
        );
        assert_eq!(line.len(), NPD_MAX_OUTPUT);
        // A control character or a multi-byte one where the cut falls.
        let hostile = vec![r(
            "vm.not_held",
            Verdict::Unknown,
            &format!("{}\n\u{1b}[2J{}", "é".repeat(30), "x".repeat(40)),
        )];
        let line = npd_line(&hostile, Verdict::Unknown);
        assert!(line.len() <= NPD_MAX_OUTPUT && !line.contains('\n') && !line.contains('\u{1b}'));
        assert_eq!(npd_line(&results[..1], Verdict::Ok), "OK: 1 checks");
    }

    #[test]
    fn no_pipe_reaches_the_long_output() {
        let results = vec![r(
            "vm.not_held",
            Verdict::Warning,
            "domain x | critical=0 is not held",
        )];
        let mut out = Vec::new();
        write_human(&mut out, &results, Verdict::Warning).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap().matches('|').count(), 1, "{text}");
        assert!(lines.all(|l| !l.contains('|')), "{text}");
        assert!(text.contains("domain x / critical=0 is not held"), "{text}");
    }

    #[test]
    fn the_first_line_names_the_problems_worst_first() {
        let mut results: Vec<CheckResult> = (0..9)
            .map(|i| r(&format!("binding.0000:0{i}:00.0"), Verdict::Critical, "x"))
            .collect();
        results.insert(0, r("iommu.active", Verdict::Warning, "x"));
        results.push(r("ok", Verdict::Ok, "x"));
        let line = summary(&results, Verdict::Critical);
        assert_eq!(
            line,
            "VFIOCTL CRITICAL - 9 critical, 1 warning: binding.0000:00:00.0, binding.0000:01:00.0, binding.0000:02:00.0, binding.0000:03:00.0, binding.0000:04:00.0, binding.0000:05:00.0 and 4 more | critical=9 warning=1 unknown=0 ok=1 not_judged=0"
        );
        assert_eq!(
            closing(&results, Verdict::Critical),
            "CRITICAL: 11 checks: 9 critical, 1 warning, 0 unknown, 1 ok"
        );
    }
}
