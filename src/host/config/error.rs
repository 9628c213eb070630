//! Why declarations were not read or written ([`ConfigError`]): one line
//! each, naming the file (and line) and the fix. Takes nothing from its
//! siblings.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A declaration in a file vfioctl did not write (or that was edited
    /// since): refused, never removed or replaced.
    #[error("{file}:{line}: declared in a file vfioctl did not write, or that was edited by hand since (its sha256 header no longer matches); vfioctl neither replaces nor removes it: edit or delete it by hand")]
    HandWritten { file: String, line: usize },
    /// A key (device or PF) declared in a file vfioctl does not own: a
    /// declaration of its own would make a second one.
    #[error("{key} is already declared at {origin}, in a file vfioctl did not write (or that was edited by hand): nothing was written; change that declaration by hand, or delete it and run again")]
    DeclaredByHand { key: String, origin: String },
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{path} is owned by uid {uid}, not {owner}: vfioctl only trusts configuration its owner wrote (chown {owner} {path})", owner = owner_name(*.expected))]
    NotRootOwned {
        path: String,
        uid: u32,
        expected: u32,
    },
    #[error(
        "{path} is writable by everyone (mode {mode:o}): vfioctl refuses it (chmod o-w {path})"
    )]
    WorldWritable { path: String, mode: u32 },
    #[error("{path} is writable by group {gid} (mode {mode:o}): only root's group may write it (chmod g-w {path})")]
    GroupWritable { path: String, gid: u32, mode: u32 },
    #[error(
        "{path} is a symlink or not a {kind}: vfioctl does not follow links in its configuration"
    )]
    NotPlain { path: String, kind: &'static str },
    #[error("{path}: a bindings.d file name is letters, digits, '.', '_' and '-' ending in .toml; rename it")]
    BadFileName { path: String },
    /// A write the gate did not clear (a bug): refused.
    #[error(transparent)]
    NotCleared(#[from] crate::gate::NotClearedKey),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

fn owner_name(uid: u32) -> String {
    if uid == 0 {
        "root".to_string()
    } else {
        format!("uid {uid}")
    }
}
