//! The health checks' files: their thresholds (/etc/vfioctl/check.toml,
//! trusted like the declarations) and the AER baseline they keep
//! (/var/lib/vfioctl/aer-baseline.json).
//!
//! `check` (run by monitoring as root) reads the baseline and writes the
//! entries it took or renewed: a function seen for the first time, after a
//! reboot (boot id), after re-enumeration (a counter went down) or with
//! another identity (IDs, revision, serial), and a correctable-rate
//! reference older than its window. A rise stays reported on every run
//! until `check --new-aer-baseline` takes the counts as they are. Writers
//! take a lock beside the file, read it again under the lock and replace only
//! their own entries (atomically: `write_atomic`), so two checks at once
//! keep both their updates; readers never wait.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::health::{AerBaseline, BaselineEntry, Thresholds};
use crate::model::PciAddress;

use super::config::{self, ConfigError};
use super::state::LockFailure;
use super::HostRoot;

pub const CONFIG_DIR: &str = "/etc/vfioctl";
pub const CHECK_CONFIG_NAME: &str = "check.toml";
pub const STATE_DIR: &str = "/var/lib/vfioctl";
pub const BASELINE_NAME: &str = "aer-baseline.json";
const LOCK_NAME: &str = "aer-baseline.lock";
/// How long a writer waits for another; after that it leaves its updates to
/// the next run (what it judged is unaffected).
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// /etc/vfioctl/check.toml as a path, for messages.
pub fn check_config_path() -> String {
    format!("{CONFIG_DIR}/{CHECK_CONFIG_NAME}")
}

/// /var/lib/vfioctl/aer-baseline.json as a path, for messages.
pub fn baseline_path() -> String {
    format!("{STATE_DIR}/{BASELINE_NAME}")
}

/// Parses check.toml's text; errors name the file and line.
pub fn parse_thresholds(file: &str, text: &str) -> Result<Thresholds, ConfigError> {
    let invalid = |line, message: String| ConfigError::Invalid {
        file: file.to_string(),
        line,
        message,
    };
    let thresholds: Thresholds = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| config::line_of(text, s.start));
        invalid(line, e.message().trim().to_string())
    })?;
    thresholds.validate().map_err(|(key, message)| {
        // The line that sets the key (the value is what is wrong).
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with(key))
            .map_or(1, |i| i + 1);
        invalid(line, message)
    })?;
    Ok(thresholds)
}

/// The thresholds: the defaults when check.toml does not exist; `Some(path)`
/// when it was read.
pub fn load_thresholds(root: &HostRoot) -> Result<(Thresholds, Option<String>), ConfigError> {
    match config::read_trusted(root, CONFIG_DIR, CHECK_CONFIG_NAME)? {
        None => Ok((Thresholds::default(), None)),
        Some(text) => {
            let path = check_config_path();
            Ok((parse_thresholds(&path, &text)?, Some(path)))
        }
    }
}

/// The baseline; empty when there is none yet. `Err` names the file and why
/// it cannot be used (untrusted, unreadable, not a baseline).
pub fn load_baseline(root: &HostRoot) -> Result<AerBaseline, String> {
    load_state_json(root, BASELINE_NAME, "an AER baseline")
}

/// A JSON state file `name` in [`STATE_DIR`], read as trusted state (the
/// AER baseline, the reset outcomes); the default when there is none yet.
/// `Err` names the file and why it cannot be used (untrusted, unreadable,
/// not `what`).
pub fn load_state_json<T: serde::de::DeserializeOwned + Default>(
    root: &HostRoot,
    name: &str,
    what: &str,
) -> Result<T, String> {
    match config::read_trusted(root, STATE_DIR, name).map_err(|e| e.to_string())? {
        None => Ok(T::default()),
        Some(text) => {
            serde_json::from_str(&text).map_err(|e| format!("{STATE_DIR}/{name}: not {what} ({e})"))
        }
    }
}

/// Writes `updates` into the baseline under its lock: read again, replace
/// those entries, write atomically. `Err`: why it could not be saved.
pub fn save_baseline(
    root: &HostRoot,
    updates: &BTreeMap<PciAddress, BaselineEntry>,
) -> Result<(), String> {
    if updates.is_empty() {
        return Ok(());
    }
    let dir = root.path(STATE_DIR);
    root.create_dirs(&dir, super::root::DIR_MODE)
        .map_err(|e| format!("cannot create {STATE_DIR}: {}", e.source))?;
    let _lock = super::state::flock(root, STATE_DIR, LOCK_NAME, LOCK_WAIT).map_err(|failure| {
        let why = match failure {
            LockFailure::Busy => format!("held by another run for {LOCK_WAIT:?}"),
            LockFailure::Open(e) => e.to_string(),
            LockFailure::Lock(errno) => errno.to_string(),
            LockFailure::Untrusted(e) => return e.to_string(),
        };
        format!("cannot lock {STATE_DIR}/{LOCK_NAME}: {why}")
    })?;
    // A baseline another run left unreadable is replaced, not merged.
    let mut baseline = load_baseline(root).unwrap_or_default();
    for (address, entry) in updates {
        baseline.functions.insert(*address, entry.clone());
    }
    let text = serde_json::to_string_pretty(&baseline).expect("a baseline serializes") + "\n";
    config::write_atomic(root, &dir.join(BASELINE_NAME), &text, 0o644).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_and_name_the_line() {
        let t = parse_thresholds(
            "/etc/vfioctl/check.toml",
            "[aer]\ncorrectable_per_hour = 10\n\n[link]\nspeed = \"always\"\n",
        )
        .unwrap();
        assert_eq!(t.aer.correctable_per_hour, 10.0);
        assert_eq!(t.aer.fatal_rise, 1, "defaults for keys not given");
        assert_eq!(t.link.speed, crate::model::health::SpeedPolicy::Always);
        let err = parse_thresholds("/etc/vfioctl/check.toml", "[aer]\nfatal = 1\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/etc/vfioctl/check.toml:2: unknown field `fatal`"),
            "{err}"
        );
        let err = parse_thresholds("f", "[link]\nspeed = \"sometimes\"\n").unwrap_err();
        assert!(err.to_string().starts_with("f:2: unknown variant"), "{err}");
        let err = parse_thresholds("f", "[aer]\n\ncorrectable_window_hours = 0.1\n").unwrap_err();
        assert!(err.to_string().starts_with("f:3: "), "{err}");
    }
}
