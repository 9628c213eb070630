//! /run/vfioctl: the lock that serialises changers, and the record of what
//! vfioctl changed (so `restore`, `show` and `check` can report it).
//! /run is a tmpfs: the record describes this boot only, as do the bindings.
//!
//! Every change writes its intent to the record (atomically, under the
//! lock) before its first kernel write, and clears it once it has verified
//! its result or put everything back: an intent found later belongs to a
//! change that was killed (kill -9, OOM, power cut without a reboot of
//! /run) or whose rollback failed. It names the command, each device's
//! binding before and the plan's target, and for SR-IOV the VF count and
//! `sriov_drivers_autoprobe` before. An intent from another boot (its
//! `boot_id` differs) describes kernel state that is gone and is ignored.
//!
//! State is trusted like the declarations (`host::config`): /run/vfioctl,
//! /var/lib/vfioctl and every file in them must be owned by root (the
//! `--root` directory's owner under a fake root), writable by no one else,
//! directories and regular files, checked on descriptors opened without
//! following a link and without blocking (a FIFO or a device at a state
//! path is refused, never waited on). Anything else is `StateError::Untrusted`,
//! naming the path and the fix; a change, `recover` and `check` act on no
//! such record.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, Flock, FlockArg, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use serde::{Deserialize, Serialize};

use crate::model::driver::Binding;
use crate::model::{DriverName, PciAddress};

use super::config::{self, ConfigError};
use super::root::HostRoot;

pub const STATE_DIR: &str = "/run/vfioctl";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("another vfioctl holds {path} (waited {seconds}s); retry when it has finished")]
    Busy { path: PathBuf, seconds: u64 },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid change record ({detail}); move it aside to continue")]
    Corrupt { path: PathBuf, detail: String },
    /// A change was interrupted (or its rollback failed): nothing else may
    /// change bindings until `recover` has put it back.
    #[error("an interrupted change is recorded in /run/vfioctl/changes.json: {summary}; nothing was written: run `vfioctl recover` first (`vfioctl recover --dry-run` shows how it puts the devices back)")]
    Interrupted { summary: String },
    /// A state directory or file vfioctl does not trust (see the module
    /// docs): nothing is read from it, locked in it or acted on.
    #[error("{path} is not trusted: {why}; vfioctl keeps its state only in root's own directories and regular files, writable by no one else and never reached through a link: {remedy}")]
    Untrusted {
        /// As the host sees it (`/run/vfioctl/lock`).
        path: String,
        why: String,
        remedy: String,
    },
}

/// `root`, or `uid N`.
fn owner_name(uid: u32) -> String {
    if uid == 0 {
        "root".to_string()
    } else {
        format!("uid {uid}")
    }
}

/// What is at host path `shown` (not followed), for a refusal: "a FIFO",
/// "a symlink"...; `None` when it cannot be told.
fn what_is_there(root: &HostRoot, shown: &str) -> Option<(&'static str, bool)> {
    use std::os::unix::fs::FileTypeExt;
    let kind = fs::symlink_metadata(root.path(shown)).ok()?.file_type();
    Some(if kind.is_symlink() {
        ("a symlink", false)
    } else if kind.is_fifo() {
        ("a FIFO", false)
    } else if kind.is_char_device() {
        ("a character device", false)
    } else if kind.is_block_device() {
        ("a block device", false)
    } else if kind.is_socket() {
        ("a socket", false)
    } else if kind.is_dir() {
        ("a directory", true)
    } else {
        ("a regular file", false)
    })
}

/// The trust rule's refusal (`config::check_trust`, `open_trusted_dir`) as
/// a state error: what is wrong with the path, and what to do.
fn untrusted(root: &HostRoot, err: ConfigError) -> StateError {
    let remove = |path: &str| {
        let dir = what_is_there(root, path).is_some_and(|(_, dir)| dir);
        format!(
            "find out who made it, then remove it ({} {path}): vfioctl recreates it",
            if dir { "rm -r" } else { "rm" }
        )
    };
    let chmod = |path: &str| format!("check what it holds, then chmod go-w {path}");
    let (path, why, remedy) = match err {
        ConfigError::NotRootOwned {
            path,
            uid,
            expected,
        } => (
            path.clone(),
            format!("owned by uid {uid}, not {}", owner_name(expected)),
            remove(&path),
        ),
        ConfigError::WorldWritable { path, mode } => (
            path.clone(),
            format!("writable by everyone (mode {mode:o})"),
            chmod(&path),
        ),
        ConfigError::GroupWritable { path, gid, mode } => (
            path.clone(),
            format!("writable by group {gid} (mode {mode:o})"),
            chmod(&path),
        ),
        ConfigError::NotPlain { path, kind } => {
            let why = match what_is_there(root, &path) {
                Some(("a symlink", _)) => "a symlink, which vfioctl never follows".to_string(),
                Some((what, _)) => format!("{what}, not a {kind}"),
                None => format!("a symlink or not a {kind}"),
            };
            (path.clone(), why, remove(&path))
        }
        ConfigError::Io {
            action,
            path,
            source,
        } => {
            return StateError::Io {
                action,
                path: PathBuf::from(path),
                source,
            }
        }
        other => {
            return StateError::Io {
                action: "cannot read",
                path: PathBuf::from(STATE_DIR),
                source: io::Error::other(other.to_string()),
            }
        }
    };
    StateError::Untrusted { path, why, remedy }
}

fn io_err<'p>(
    action: &'static str,
    path: &'p std::path::Path,
) -> impl FnOnce(io::Error) -> StateError + 'p {
    move |source| StateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Held while a change is planned and applied; released on drop.
pub struct ChangeLock {
    _lock: Flock<File>,
    /// Its entry in `lock_history`.
    span: usize,
}

impl Drop for ChangeLock {
    fn drop(&mut self) {
        if let Some(span) = lock_spans().get_mut(self.span) {
            span.released = Some(since_boot());
        }
    }
}

/// When this process asked for, got and released the lock, in seconds since
/// boot (`CLOCK_BOOTTIME`, the clock of /proc/uptime), for `VFIOCTL_TRACE`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LockSpan {
    pub asked: f64,
    pub got: Option<f64>,
    pub released: Option<f64>,
}

static LOCK_SPANS: std::sync::Mutex<Vec<LockSpan>> = std::sync::Mutex::new(Vec::new());

fn lock_spans() -> std::sync::MutexGuard<'static, Vec<LockSpan>> {
    LOCK_SPANS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every lock this process asked for, in order.
pub fn lock_history() -> Vec<LockSpan> {
    lock_spans().clone()
}

/// Seconds since boot, `CLOCK_BOOTTIME` (0 where the clock cannot be read).
pub fn since_boot() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

/// How long commands without a `--timeout` (persist add/remove/rules,
/// host-config) wait for the lock.
pub const CONFIG_LOCK_WAIT: Duration = Duration::from_secs(60);

/// How often a waiting changer retries the lock.
const LOCK_POLL: Duration = Duration::from_millis(10);

/// Takes the exclusive lock, waiting up to `wait`. The one lock every
/// command that writes bindings, declarations, rules or boot files holds.
pub fn lock(root: &HostRoot, wait: Duration) -> Result<ChangeLock, StateError> {
    let dir = root.path(STATE_DIR);
    root.create_dirs(&dir, super::root::DIR_MODE)
        .map_err(|e| io_err(e.action, &e.path)(e.source))?;
    let path = dir.join("lock");
    let span = {
        let mut spans = lock_spans();
        spans.push(LockSpan {
            asked: since_boot(),
            got: None,
            released: None,
        });
        spans.len() - 1
    };
    match flock(root, STATE_DIR, "lock", wait) {
        Ok(lock) => {
            if let Some(entry) = lock_spans().get_mut(span) {
                entry.got = Some(since_boot());
            }
            Ok(ChangeLock { _lock: lock, span })
        }
        Err(LockFailure::Busy) => Err(StateError::Busy {
            path,
            seconds: wait.as_secs(),
        }),
        Err(LockFailure::Open(source)) => Err(io_err("cannot open", &path)(source)),
        Err(LockFailure::Lock(errno)) => Err(StateError::Io {
            action: "cannot lock",
            path,
            source: errno.into(),
        }),
        Err(LockFailure::Untrusted(error)) => Err(error),
    }
}

/// Why [`flock`] did not lock its file.
#[derive(Debug)]
pub enum LockFailure {
    /// Another process held it for the whole wait.
    Busy,
    Open(io::Error),
    Lock(nix::errno::Errno),
    /// The directory or the file is not trusted (a FIFO, a device, a
    /// symlink, another owner, writable by others): `StateError::Untrusted`.
    Untrusted(StateError),
}

/// Opens (creating it 0600) the lock file `name` in the state directory
/// `host_dir` (already created) and takes its exclusive `flock`, polling
/// every `LOCK_POLL` for up to `wait`: the one lock primitive (the change
/// lock, the AER baseline's lock). The directory is opened by the trust
/// rule (`config::open_trusted_dir`), the file judged before it is opened
/// (what is not a regular file is refused unopened: opening a FIFO could
/// wait forever, opening a device runs its driver), then opened relative to
/// the directory with `O_NOFOLLOW|O_NONBLOCK` and judged again on its
/// descriptor: nothing here blocks but the wait, which ends at `wait`.
pub fn flock(
    root: &HostRoot,
    host_dir: &str,
    name: &str,
    wait: Duration,
) -> Result<Flock<File>, LockFailure> {
    let start = Instant::now();
    let mut file = open_lock(root, host_dir, name)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((returned, Errno::EWOULDBLOCK)) => {
                if start.elapsed() >= wait {
                    return Err(LockFailure::Busy);
                }
                file = returned;
                // Short: in a boot storm each hand-over to the next queued
                // hook costs half of this on average (the wait is a poll).
                std::thread::sleep(LOCK_POLL);
            }
            Err((_, errno)) => return Err(LockFailure::Lock(errno)),
        }
    }
}

/// The lock file, opened as `flock` says.
fn open_lock(root: &HostRoot, host_dir: &str, name: &str) -> Result<File, LockFailure> {
    let shown = format!("{}/{name}", host_dir.trim_end_matches('/'));
    let refused = |e: ConfigError| LockFailure::Untrusted(untrusted(root, e));
    let not_plain = || {
        refused(ConfigError::NotPlain {
            path: shown.clone(),
            kind: "regular file",
        })
    };
    let Some((dir, owner)) = config::open_trusted_dir(root, host_dir).map_err(refused)? else {
        return Err(LockFailure::Open(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host_dir} does not exist"),
        )));
    };
    match fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG => {
            return Err(not_plain())
        }
        Ok(_) | Err(Errno::ENOENT) => {}
        Err(errno) => return Err(LockFailure::Open(errno.into())),
    }
    let flags =
        OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = match openat(&dir, name, flags, Mode::from_bits_truncate(0o600)) {
        Ok(fd) => File::from(fd),
        Err(Errno::ELOOP | Errno::ENXIO) => return Err(not_plain()),
        Err(errno) => return Err(LockFailure::Open(errno.into())),
    };
    let meta = file.metadata().map_err(LockFailure::Open)?;
    if !meta.is_file() {
        return Err(not_plain());
    }
    config::check_trust(&shown, &meta, owner).map_err(refused)?;
    Ok(file)
}

/// What vfioctl did to one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEntry {
    /// The driver vfioctl left it on (null: none).
    pub driver: Option<String>,
    /// The driver it had before vfioctl first changed it.
    pub previous_driver: Option<String>,
    pub previous_override: Option<String>,
    /// Seconds since the epoch, UTC.
    pub changed_at: u64,
    pub command: String,
    /// A blocking unbind vfioctl stopped waiting for, still pending in the
    /// kernel when recorded ("unbind from snd_hda_intel, held by PID 42 (aplay)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// Keyed by address (written as `0000:25:00.0`, as before).
    pub devices: BTreeMap<PciAddress, ChangeEntry>,
    /// The change under way, or left unfinished (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
}

/// A change about to be made: written before its first kernel write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// What started it: `bind`, `restore`, `unbind`, `sriov`, `persist apply`, `udev-hook`.
    pub command: String,
    pub pid: u32,
    /// The process's start time (`/proc/PID/stat`, clock ticks since boot):
    /// with the PID, tells the live changer from a PID reused since.
    pub process_start: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id` when written.
    pub boot_id: Option<String>,
    /// Seconds since the epoch, UTC.
    pub started_at: u64,
    /// Every device the plan changes: its binding before and the plan's target.
    pub devices: Vec<IntentDevice>,
    /// An SR-IOV change's VF count and autoprobe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sriov: Option<IntentSriov>,
    /// A reset's devices (`vfioctl reset`: `devices` is empty, no binding
    /// changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<IntentReset>,
}

/// The devices a reset resets, in order, with what `recover` puts back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentReset {
    pub devices: Vec<IntentResetDevice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentResetDevice {
    pub address: PciAddress,
    /// The method written to `reset_method` for the reset (`--method`);
    /// null: the kernel's order, nothing written there.
    pub method: Option<String>,
    /// `reset_method` before, which `recover` writes back.
    pub methods_before: Option<String>,
    /// The reset did not return by the deadline: vfioctl stopped waiting
    /// for it, and it may still be pending in the kernel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentDevice {
    pub address: PciAddress,
    pub before: Binding,
    pub target: Binding,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentSriov {
    pub pf: PciAddress,
    pub numvfs_before: u16,
    pub numvfs: u16,
    /// `null`: the PF has no `sriov_drivers_autoprobe`.
    pub autoprobe_before: Option<bool>,
    /// The VFs before, with their bindings (destroyed when the count changes).
    pub vfs_before: Vec<IntentVf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentVf {
    pub address: PciAddress,
    #[serde(flatten)]
    pub binding: Binding,
}

/// Where a recorded intent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentState {
    /// Its process is gone (or left it behind): the change was interrupted.
    Interrupted,
    /// Its process still runs: a change is in progress.
    InProgress,
    /// Written in another boot: the kernel state it describes is gone.
    OtherBoot,
}

impl Intent {
    /// An intent of this process, now.
    pub fn new(
        root: &HostRoot,
        command: &str,
        devices: Vec<IntentDevice>,
        sriov: Option<IntentSriov>,
    ) -> Intent {
        Intent {
            command: command.to_string(),
            pid: std::process::id(),
            process_start: process_start(root, "self"),
            boot_id: boot_id(root),
            started_at: now_unix(),
            devices,
            sriov,
            reset: None,
        }
    }

    /// Every address the change touches (its devices, the PF and its VFs before).
    pub fn addresses(&self) -> Vec<PciAddress> {
        let mut out: Vec<PciAddress> = self.devices.iter().map(|d| d.address).collect();
        if let Some(s) = &self.sriov {
            out.push(s.pf);
            out.extend(s.vfs_before.iter().map(|v| v.address));
        }
        if let Some(r) = &self.reset {
            out.extend(r.devices.iter().map(|d| d.address));
        }
        out.sort();
        out.dedup();
        out
    }

    /// `vfioctl bind (PID 42, started 2026-11-24T16:28:21Z) of 0000:25:00.0, 0000:25:00.1`.
    pub fn summary(&self) -> String {
        let listed = |addresses: Vec<PciAddress>| {
            addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let what = match (&self.sriov, &self.reset) {
            (Some(s), _) => format!(
                "of SR-IOV PF {} (sriov_numvfs {} -> {})",
                s.pf, s.numvfs_before, s.numvfs
            ),
            (None, Some(r)) => format!(
                "of {}",
                listed(r.devices.iter().map(|d| d.address).collect())
            ),
            (None, None) => format!(
                "of {}",
                listed(self.devices.iter().map(|d| d.address).collect())
            ),
        };
        format!(
            "vfioctl {} (PID {}, started {}) {what}",
            self.command,
            self.pid,
            format_utc(self.started_at)
        )
    }

    /// Whether its process still runs, or it comes from another boot.
    pub fn state(&self, root: &HostRoot) -> IntentState {
        if let (Some(then), Some(now)) = (&self.boot_id, boot_id(root)) {
            if *then != now {
                return IntentState::OtherBoot;
            }
        }
        match (
            self.process_start,
            process_start(root, &self.pid.to_string()),
        ) {
            (Some(then), Some(now)) if then == now => IntentState::InProgress,
            _ => IntentState::Interrupted,
        }
    }
}

/// The running kernel's boot id (`None` where it cannot be read).
pub fn boot_id(root: &HostRoot) -> Option<String> {
    let text = fs::read_to_string(root.path("/proc/sys/kernel/random/boot_id")).ok()?;
    let id = text.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// The start time in `/proc/PID/stat` (`self` or a number; clock ticks
/// since boot), read by the procfs crate, which copes with a command name
/// holding spaces and parentheses.
fn process_start(root: &HostRoot, pid: &str) -> Option<u64> {
    let process =
        procfs::process::Process::new_with_root(root.path(format!("/proc/{pid}"))).ok()?;
    process.stat().ok().map(|stat| stat.starttime)
}

/// Refuses a change while an interrupted one is recorded. `locked`: the
/// caller holds the change lock, so any intent of this boot is unfinished
/// (a dry run without the lock lets a change in progress be).
pub fn refuse_interrupted(
    root: &HostRoot,
    record: &ChangeRecord,
    locked: bool,
) -> Result<(), StateError> {
    let Some(intent) = &record.intent else {
        return Ok(());
    };
    match intent.state(root) {
        IntentState::OtherBoot => Ok(()),
        IntentState::InProgress if !locked => Ok(()),
        _ => Err(StateError::Interrupted {
            summary: intent.summary(),
        }),
    }
}

impl ChangeRecord {
    pub fn entry(&self, address: &PciAddress) -> Option<&ChangeEntry> {
        self.devices.get(address)
    }

    /// The devices whose unbind was last seen pending.
    pub fn pending_devices(&self) -> std::collections::BTreeSet<PciAddress> {
        self.devices
            .iter()
            .filter(|(_, e)| e.pending.is_some())
            .map(|(addr, _)| *addr)
            .collect()
    }

    /// For each device in the record, the note a plan touching it carries.
    pub fn history_notes(&self) -> BTreeMap<PciAddress, String> {
        self.devices
            .iter()
            .map(|(&addr, entry)| {
                (
                    addr,
                    format!(
                        "{addr} was last changed by vfioctl {} at {} (before: {})",
                        entry.command,
                        format_utc(entry.changed_at),
                        entry.previous_driver.as_deref().unwrap_or("no driver")
                    ),
                )
            })
            .collect()
    }

    /// The driver each recorded device was last known on: where vfioctl
    /// left it, else where it found it.
    pub fn last_drivers(&self) -> BTreeMap<PciAddress, String> {
        self.devices
            .iter()
            .filter_map(|(addr, e)| {
                Some((
                    *addr,
                    e.driver.clone().or_else(|| e.previous_driver.clone())?,
                ))
            })
            .collect()
    }

    /// The drivers devices had before vfioctl changed them.
    pub fn previous_drivers(&self) -> BTreeMap<PciAddress, DriverName> {
        self.devices
            .iter()
            .filter_map(|(addr, e)| Some((*addr, DriverName::new(e.previous_driver.clone()?))))
            .collect()
    }

    /// Notes a change; the first `previous_*` seen for a device is kept, so a
    /// second bind still restores to the original host driver.
    pub fn changed(
        &mut self,
        address: PciAddress,
        driver: Option<&DriverName>,
        previous_driver: Option<&DriverName>,
        previous_override: Option<&DriverName>,
        command: &str,
    ) {
        let now = now_unix();
        let fresh = ChangeEntry {
            driver: driver.map(ToString::to_string),
            previous_driver: previous_driver.map(ToString::to_string),
            previous_override: previous_override.map(ToString::to_string),
            changed_at: now,
            command: command.to_string(),
            pending: None,
        };
        self.devices
            .entry(address)
            .and_modify(|e| {
                e.driver = fresh.driver.clone();
                e.changed_at = now;
                e.command = command.to_string();
                e.pending = None;
            })
            .or_insert(fresh);
    }

    /// Notes an unbind still pending in the kernel on a device left on
    /// `driver` (until its holder lets go).
    pub fn pending(
        &mut self,
        address: PciAddress,
        driver: Option<&DriverName>,
        previous_override: Option<&DriverName>,
        command: &str,
        what: String,
    ) {
        let now = now_unix();
        let entry = self.devices.entry(address).or_insert_with(|| ChangeEntry {
            driver: driver.map(ToString::to_string),
            previous_driver: driver.map(ToString::to_string),
            previous_override: previous_override.map(ToString::to_string),
            changed_at: now,
            command: command.to_string(),
            pending: None,
        });
        entry.changed_at = now;
        entry.command = command.to_string();
        entry.pending = Some(what);
    }

    pub fn forget(&mut self, address: PciAddress) {
        self.devices.remove(&address);
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

const RECORD_NAME: &str = "changes.json";

fn record_path(root: &HostRoot) -> PathBuf {
    root.path(STATE_DIR).join(RECORD_NAME)
}

/// The record, read by the trust rule (`config::read_trusted`: every
/// directory from the root and the file opened without following a link
/// and without blocking, each judged on its descriptor). Empty when there
/// is none; `StateError::Untrusted` naming the path and the fix when it or
/// a directory above it is not root's own, or is not a regular file.
pub fn read_record(root: &HostRoot) -> Result<ChangeRecord, StateError> {
    let path = record_path(root);
    match config::read_trusted(root, STATE_DIR, RECORD_NAME) {
        Ok(Some(text)) => serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
            path,
            detail: e.to_string(),
        }),
        Ok(None) => Ok(ChangeRecord::default()),
        Err(e) => Err(untrusted(root, e)),
    }
}

/// Replaces the record atomically (`HostRoot::write_atomic_in_run`: a
/// rename, no fsync: the record must survive a killed process, and /run
/// does not survive a power loss).
pub fn write_record(root: &HostRoot, record: &ChangeRecord) -> Result<(), StateError> {
    let text = serde_json::to_string_pretty(record).expect("the record serialises");
    root.write_atomic_in_run(&record_path(root), &text, 0o644)
        .map_err(|e| StateError::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        })
}

/// `2026-11-24T16:28:21Z` for seconds since the epoch.
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a proleptic Gregorian date (era-based method).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_795_537_701), "2026-11-24T16:28:21Z");
    }

    #[test]
    fn record_keeps_the_first_previous_driver() {
        let addr: PciAddress = "25:00.0".parse().unwrap();
        let mut record = ChangeRecord::default();
        let nvidia = DriverName::new("nvidia");
        let vfio = DriverName::vfio_pci();
        record.changed(addr, Some(&vfio), Some(&nvidia), None, "bind");
        record.changed(addr, None, Some(&vfio), Some(&vfio), "unbind");
        let entry = record.entry(&addr).unwrap();
        assert_eq!(entry.previous_driver.as_deref(), Some("nvidia"));
        assert_eq!(entry.driver, None);
        assert_eq!(record.previous_drivers()[&addr], nvidia);
        record.forget(addr);
        assert!(record.entry(&addr).is_none());
    }

    #[test]
    fn lock_is_exclusive_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        let held = lock(&root, Duration::from_secs(1)).unwrap();
        let err = lock(&root, Duration::from_millis(100)).err().expect("busy");
        assert!(matches!(err, StateError::Busy { .. }));
        drop(held);
        assert!(lock(&root, Duration::from_millis(100)).is_ok());
        // Each span is recorded in order: asked, got, released.
        let spans = lock_history();
        assert!(spans.iter().any(|s| s.got.is_none()), "the busy attempt");
        assert!(spans
            .iter()
            .filter_map(|s| Some((s.asked, s.got?, s.released?)))
            .all(|(asked, got, released)| asked <= got && got <= released));
    }

    /// #31: a FIFO at the lock would have made the open wait for a reader
    /// forever; it is refused unopened, as is a symlink, and a lock file
    /// others may write.
    #[test]
    fn the_lock_is_refused_in_what_is_not_roots_own_regular_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        let lock_path = dir.path().join("run/vfioctl/lock");
        fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
        nix::unistd::mkfifo(&lock_path, Mode::from_bits_truncate(0o600)).unwrap();
        let why = |root: &HostRoot| match lock(root, Duration::from_secs(2)) {
            Err(StateError::Untrusted { path, why, remedy }) => {
                assert_eq!(path, "/run/vfioctl/lock");
                assert!(remedy.contains(" /run/vfioctl/lock"), "{remedy}");
                why
            }
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        };
        assert_eq!(why(&root), "a FIFO, not a regular file");
        fs::remove_file(&lock_path).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &lock_path).unwrap();
        assert_eq!(why(&root), "a symlink, which vfioctl never follows");
        assert!(
            !dir.path().join("elsewhere").exists(),
            "not created through the link"
        );
        fs::remove_file(&lock_path).unwrap();
        fs::write(&lock_path, "").unwrap();
        fs::set_permissions(&lock_path, fs::Permissions::from_mode(0o606)).unwrap();
        assert_eq!(why(&root), "writable by everyone (mode 606)");
        fs::set_permissions(&lock_path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(lock(&root, Duration::from_secs(2)).is_ok());
    }

    #[test]
    fn record_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        assert_eq!(read_record(&root).unwrap(), ChangeRecord::default());
        let mut record = ChangeRecord::default();
        record.changed(
            "01:00.0".parse().unwrap(),
            Some(&DriverName::vfio_pci()),
            None,
            None,
            "bind",
        );
        write_record(&root, &record).unwrap();
        assert_eq!(read_record(&root).unwrap(), record);
        // The on-disk format is unchanged: keys are full addresses as text.
        let text = std::fs::read_to_string(dir.path().join("run/vfioctl/changes.json")).unwrap();
        assert!(text.contains("\"0000:01:00.0\": {"), "{text}");
        std::fs::write(dir.path().join("run/vfioctl/changes.json"), "{").unwrap();
        assert!(matches!(
            read_record(&root),
            Err(StateError::Corrupt { .. })
        ));
    }
}
