//! Writing and removing declarations: each in its own file, written
//! atomically, checked to read back as written; a file is replaced or
//! removed only when vfioctl owns it, and a declaration is refused beside
//! one of the same key in a file the operator owns.
//!
//! Takes [`ConfigError`] from `error.rs`, the names and the checked
//! rendering from `format.rs`, and [`file_owned`] from `owner.rs`.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::format::{
    file_name, render_checked, render_sriov_checked, sriov_file_name, sriov_file_name_of,
    BINDINGS_DIR,
};
use super::owner::file_owned;
use crate::gate::{ClaimKey, ClearedClaims, ClearedRelease};
use crate::host::HostRoot;
use crate::model::declaration::{Declaration, Declarations, Origin, SriovDeclaration};
use crate::model::PciAddress;

/// A host path as shown in messages (`/etc/...`, whatever the root).
fn shown(root: &HostRoot, path: &Path) -> String {
    match path.strip_prefix(root.base()) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => path.display().to_string(),
    }
}

/// Writes `text` to `path` atomically (see `HostRoot::write_atomic`), naming
/// the path as the host sees it on failure.
pub fn write_atomic(
    root: &HostRoot,
    path: &Path,
    text: &str,
    mode: u32,
) -> Result<(), ConfigError> {
    root.write_atomic(path, text, mode)
        .map_err(|e| ConfigError::Io {
            action: e.action,
            path: shown(root, &e.path),
            source: e.source,
        })
}

/// Refuses a declaration of `key` that would sit beside one the operator
/// owns: every declaration of the same key in `existing` must be the one
/// in `own_file` (the file vfioctl would replace), and that file vfioctl's.
fn may_replace<'a>(
    root: &HostRoot,
    key: &str,
    own_file: &str,
    existing: impl Iterator<Item = (String, &'a Origin)>,
) -> Result<(), ConfigError> {
    for (other_key, origin) in existing {
        if other_key == key && (origin.file != own_file || !file_owned(root, &origin.file)) {
            return Err(ConfigError::DeclaredByHand {
                key: key.to_string(),
                origin: origin.to_string(),
            });
        }
    }
    Ok(())
}

/// Checks that `add` may write `decl` beside `existing`: see `may_replace`,
/// and the target file, if there, must be vfioctl's.
pub fn may_add(
    root: &HostRoot,
    existing: &Declarations,
    decl: &Declaration,
) -> Result<(), ConfigError> {
    let file = format!("{BINDINGS_DIR}/{}", file_name(decl));
    may_replace(
        root,
        &decl.key(),
        &file,
        existing.list.iter().map(|d| (d.key(), &d.origin)),
    )?;
    may_write(root, &file)
}

/// Checks that `add_sriov` may write a declaration of the PF at `pf`
/// beside `existing`.
pub fn may_add_sriov(
    root: &HostRoot,
    existing: &Declarations,
    pf: PciAddress,
) -> Result<(), ConfigError> {
    let file = format!("{BINDINGS_DIR}/{}", sriov_file_name_of(pf));
    may_replace(
        root,
        &pf.to_string(),
        &file,
        existing.sriov.iter().map(|d| (d.key(), &d.origin)),
    )?;
    may_write(root, &file)
}

/// A file vfioctl would replace must be absent or its own.
pub(super) fn may_write(root: &HostRoot, file: &str) -> Result<(), ConfigError> {
    if root.path(file).exists() && !file_owned(root, file) {
        return Err(ConfigError::HandWritten {
            file: file.to_string(),
            line: 1,
        });
    }
    Ok(())
}

/// Writes a declaration to its own file (replacing an earlier one for the
/// same key that vfioctl wrote; never one written or edited by hand). Only
/// a declaration the gate cleared (`gate::clear_claims`).
pub fn add(
    root: &HostRoot,
    claims: &ClearedClaims,
    decl: &Declaration,
) -> Result<PathBuf, ConfigError> {
    claims.check_key(&ClaimKey::Binding(decl.key()))?;
    let path = root.path(BINDINGS_DIR).join(file_name(decl));
    let text = render_checked(decl, &shown(root, &path))?;
    may_write(root, &shown(root, &path))?;
    write_atomic(root, &path, &text, 0o644)?;
    Ok(path)
}

/// Writes an `[[sriov]]` declaration to its own file (replacing an earlier
/// one for the same PF that vfioctl wrote; never one written or edited by
/// hand). Only one the gate cleared (`gate::clear_sriov_claim`).
pub fn add_sriov(
    root: &HostRoot,
    claims: &ClearedClaims,
    decl: &SriovDeclaration,
) -> Result<PathBuf, ConfigError> {
    claims.check_key(&ClaimKey::Sriov(decl.address))?;
    let path = root.path(BINDINGS_DIR).join(sriov_file_name(decl));
    let text = render_sriov_checked(decl, &shown(root, &path))?;
    may_write(root, &shown(root, &path))?;
    write_atomic(root, &path, &text, 0o644)?;
    Ok(path)
}

/// Removes the file vfioctl wrote for `decl`; refuses files written by
/// hand. Only a removal the gate cleared (`gate::clear_release_at_boot`).
pub fn remove(
    root: &HostRoot,
    release: &ClearedRelease,
    decl: &Declaration,
) -> Result<(), ConfigError> {
    release.check_key(&ClaimKey::Binding(decl.key()))?;
    remove_origin(root, &decl.origin)
}

/// Removes the file vfioctl wrote for `decl`, an `[[sriov]]` declaration;
/// refuses files written by hand. Only a removal the gate cleared.
pub fn remove_sriov(
    root: &HostRoot,
    release: &ClearedRelease,
    decl: &SriovDeclaration,
) -> Result<(), ConfigError> {
    release.check_key(&ClaimKey::Sriov(decl.address))?;
    remove_origin(root, &decl.origin)
}

/// Writes one boot file (`host-config --write`) the gate cleared
/// (`gate::clear_claims` with `ClaimKey::BootFiles`), atomically.
pub fn write_boot_file(
    root: &HostRoot,
    claims: &ClearedClaims,
    path: &Path,
    text: &str,
    mode: u32,
) -> Result<(), ConfigError> {
    claims.check_key(&ClaimKey::BootFiles)?;
    write_atomic(root, path, text, mode)
}

/// Refuses, naming it, a declaration whose file vfioctl does not own.
pub fn may_remove(root: &HostRoot, origin: &Origin) -> Result<(), ConfigError> {
    if file_owned(root, &origin.file) {
        Ok(())
    } else {
        Err(ConfigError::HandWritten {
            file: origin.file.clone(),
            line: origin.line,
        })
    }
}

/// Removes the file vfioctl wrote that declared at `origin`; refuses files
/// written or edited by hand (`owned`).
fn remove_origin(root: &HostRoot, origin: &Origin) -> Result<(), ConfigError> {
    may_remove(root, origin)?;
    fs::remove_file(root.path(&origin.file)).map_err(|source| ConfigError::Io {
        action: "cannot remove",
        path: origin.file.clone(),
        source,
    })
}
