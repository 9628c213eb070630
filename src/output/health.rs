//! The health facts for people (`show`'s health section): the raw values
//! beside the verdicts. Their Prometheus series are `output::prometheus`'s.

use crate::model::health::HealthFacts;
use crate::model::PciAddress;

/// The rows of `show`'s health section: (name, raw value) for the device
/// at `at` (a VF's PF: `device` is the VF) and each port above it.
pub fn facts_rows(
    facts: &HealthFacts,
    device: PciAddress,
    at: PciAddress,
) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for f in facts.path(at) {
        let who = if f.address == device {
            "device".to_string()
        } else if f.address == at {
            format!("PF {}", f.address)
        } else {
            format!("port {}", f.address)
        };
        let link = match f.link.as_ref().filter(|l| l.has_link()) {
            Some(l) if l.unreadable => "unreadable".to_string(),
            Some(l) => format!(
                "x{} of x{}, {} of {}",
                l.current_width.map_or("?".into(), |w| w.to_string()),
                l.max_width.map_or("?".into(), |w| w.to_string()),
                l.current_speed.as_deref().unwrap_or("?"),
                l.max_speed.as_deref().unwrap_or("?")
            ),
            None => "no PCIe link".to_string(),
        };
        let aer = match &f.aer {
            Some(a) => {
                let mut text = format!(
                    "{} fatal, {} nonfatal, {} correctable",
                    a.totals.fatal, a.totals.nonfatal, a.totals.correctable
                );
                if !a.nonzero.is_empty() {
                    text.push_str(&format!(" ({})", a.nonzero.join(", ")));
                }
                text
            }
            None => "no AER counters".to_string(),
        };
        rows.push((
            who,
            format!(
                "link {link}; AER {aer}; {}",
                f.power_state.as_deref().unwrap_or("power state ?")
            ),
        ));
    }
    rows
}
