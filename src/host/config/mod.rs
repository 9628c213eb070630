//! /etc/vfioctl: declared bindings, one TOML drop-in file or more under
//! bindings.d. A file is trusted only when it and every directory up to `/`
//! are root-owned and writable by nobody else (group write only for group
//! root), checked on the open descriptors (no symlinks followed, nothing
//! reopened by path); under a fake `--root`, the owner trusted is the root
//! directory's. A malformed file stops everything with its file and line.
//!
//! The files, each read on its own, lowest first (each imports only the
//! ones above it):
//! - `error.rs`: [`ConfigError`], one variant per refusal;
//! - `owner.rs`: the header and digest that make a file vfioctl's;
//! - `format.rs`: the file grammar: where the files are, their names, the
//!   TOML read and written;
//! - `read.rs`: the trusted read of bindings.d ([`load`]);
//! - `write.rs`: writing and removing declarations, and what vfioctl may
//!   replace or remove.

mod error;
mod format;
mod owner;
mod read;
mod write;

pub use error::ConfigError;
pub use format::{
    file_name, line_of, parse, parse_all, render, render_sriov, sriov_file_name, valid_file_name,
    BINDINGS_DIR,
};
pub use owner::{file_owned, owned, seal, written_by_vfioctl, WRITTEN_HEADER};
pub(crate) use read::{check_trust, open_trusted_dir};
pub use read::{load, read_trusted, trusted_dir};
pub use write::{
    add, add_sriov, may_add, may_add_sriov, may_remove, remove, remove_sriov, write_atomic,
    write_boot_file,
};
