//! The trusted read of bindings.d ([`load`]): every directory from `/` and
//! every file opened without following a link and checked on its open
//! descriptor before it is read (root-owned, writable by nobody else; the
//! `--root` directory's owner under a fake root).
//!
//! Takes [`ConfigError`] from `error.rs`, and the directory, the file-name
//! grammar and the parser from `format.rs`.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use super::error::ConfigError;
use super::format::{parse_all, valid_file_name, BINDINGS_DIR};
use crate::host::HostRoot;
use crate::model::declaration::Declarations;

/// The trust rule, applied to what `fstat` says about an open descriptor:
/// owned by `owner`, not writable by others, writable by the group only when
/// the group is root's. Also the rule of vfioctl's state files
/// (`host::state`).
pub(crate) fn check_trust(path: &str, meta: &fs::Metadata, owner: u32) -> Result<(), ConfigError> {
    let mode = meta.mode() & 0o7777;
    if meta.uid() != owner {
        return Err(ConfigError::NotRootOwned {
            path: path.to_string(),
            uid: meta.uid(),
            expected: owner,
        });
    }
    if mode & 0o002 != 0 {
        return Err(ConfigError::WorldWritable {
            path: path.to_string(),
            mode,
        });
    }
    if mode & 0o020 != 0 && meta.gid() != 0 {
        return Err(ConfigError::GroupWritable {
            path: path.to_string(),
            gid: meta.gid(),
            mode,
        });
    }
    Ok(())
}

/// Opens `name` under `dir` without following a symlink, as a directory or
/// a regular file. `Ok(None)`: it does not exist.
fn open_at(
    dir: &OwnedFd,
    name: &str,
    shown_path: &str,
    directory: bool,
) -> Result<Option<File>, ConfigError> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    if directory {
        flags |= OFlag::O_DIRECTORY;
    }
    let kind = if directory {
        "directory"
    } else {
        "regular file"
    };
    match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => {
            let file = File::from(fd);
            let meta = file.metadata().map_err(|source| ConfigError::Io {
                action: "cannot stat",
                path: shown_path.to_string(),
                source,
            })?;
            if meta.is_dir() != directory || (!directory && !meta.is_file()) {
                return Err(ConfigError::NotPlain {
                    path: shown_path.to_string(),
                    kind,
                });
            }
            Ok(Some(file))
        }
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::ELOOP | Errno::ENOTDIR) => Err(ConfigError::NotPlain {
            path: shown_path.to_string(),
            kind,
        }),
        Err(errno) => Err(ConfigError::Io {
            action: "cannot open",
            path: shown_path.to_string(),
            source: io::Error::from(errno),
        }),
    }
}

/// Opens a configuration directory (`/etc/vfioctl/bindings.d`) one
/// component at a time from the top, each with `O_NOFOLLOW`, checking each
/// on its descriptor (`check_trust`), so nothing can be swapped between the
/// check and the read. `Ok(None)`: it does not exist.
///
/// The owner trusted is root. Under a `--root` other than `/` (a fake host,
/// a copied-off snapshot), it is the owner of the `--root` directory itself,
/// and the check starts there: so tests can build fake hosts as any user,
/// and the directories above the snapshot are not the host's. Returns the
/// directory and the owner trusted. Also how vfioctl's state directories
/// are opened (`host::state`).
pub(crate) fn open_trusted_dir(
    root: &HostRoot,
    host_dir: &str,
) -> Result<Option<(OwnedFd, u32)>, ConfigError> {
    let base = root.base();
    let top = File::open(base).map_err(|source| ConfigError::Io {
        action: "cannot open",
        path: base.display().to_string(),
        source,
    })?;
    let top_meta = top.metadata().map_err(|source| ConfigError::Io {
        action: "cannot stat",
        path: base.display().to_string(),
        source,
    })?;
    let owner = if root.is_host() { 0 } else { top_meta.uid() };
    check_trust("/", &top_meta, owner)?;
    let mut dir = OwnedFd::from(top);
    let mut shown_path = String::new();
    for component in host_dir.split('/').filter(|c| !c.is_empty()) {
        shown_path.push('/');
        shown_path.push_str(component);
        let Some(next) = open_at(&dir, component, &shown_path, true)? else {
            return Ok(None);
        };
        let meta = next.metadata().map_err(|source| ConfigError::Io {
            action: "cannot stat",
            path: shown_path.clone(),
            source,
        })?;
        check_trust(&shown_path, &meta, owner)?;
        dir = OwnedFd::from(next);
    }
    Ok(Some((dir, owner)))
}

/// Whether `host_dir` (a state directory: /var/lib/vfioctl) and every
/// directory above it are trusted as declarations are (`open_trusted_dir`);
/// `Ok(false)`: it does not exist.
pub fn trusted_dir(root: &HostRoot, host_dir: &str) -> Result<bool, ConfigError> {
    open_trusted_dir(root, host_dir).map(|dir| dir.is_some())
}

/// The `*.toml` names in the open bindings.d, sorted; a `.toml` file whose
/// name is not `valid_file_name` is refused, naming it (escaped).
fn binding_files(dir: &OwnedFd) -> Result<Vec<String>, ConfigError> {
    let listing_error = |errno: Errno| ConfigError::Io {
        action: "cannot list",
        path: BINDINGS_DIR.to_string(),
        source: io::Error::from(errno),
    };
    let fd = dir
        .try_clone()
        .map_err(|e| listing_error(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    let mut listing = Dir::from_fd(fd).map_err(listing_error)?;
    let mut files = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(listing_error)?;
        let name = String::from_utf8_lossy(entry.file_name().to_bytes()).into_owned();
        if !name.ends_with(".toml") {
            continue;
        }
        if !valid_file_name(&name) {
            return Err(ConfigError::BadFileName {
                path: format!("{}/{}", BINDINGS_DIR, name.escape_debug()),
            });
        }
        files.push(name);
    }
    files.sort();
    Ok(files)
}

/// Reads every declaration; any bad file fails the whole read. Every file
/// and directory is opened without following links and checked on its
/// descriptor before it is read (`open_trusted_dir`).
pub fn load(root: &HostRoot) -> Result<Declarations, ConfigError> {
    let Some((dir, owner)) = open_trusted_dir(root, BINDINGS_DIR)? else {
        return Ok(Declarations::default());
    };
    let (mut list, mut sriov) = (Vec::new(), Vec::new());
    for name in binding_files(&dir)? {
        let shown_path = format!("{BINDINGS_DIR}/{name}");
        let Some(text) = read_at(&dir, owner, &name, &shown_path)? else {
            continue; // removed since the listing
        };
        let (bindings, pfs) = parse_all(&shown_path, &text)?;
        list.extend(bindings);
        sriov.extend(pfs);
    }
    Ok(Declarations::with_sriov(list, sriov))
}

/// Reads one file vfioctl trusts (`/etc/vfioctl/check.toml`, a state file
/// under /var/lib/vfioctl) by the rules `load` applies to bindings.d: every
/// directory from `/` and the file itself owned by root (the `--root`
/// owner under a fake root), writable by no one else, no symlink followed,
/// each checked on its open descriptor. `Ok(None)`: it does not exist.
pub fn read_trusted(
    root: &HostRoot,
    host_dir: &str,
    name: &str,
) -> Result<Option<String>, ConfigError> {
    let Some((dir, owner)) = open_trusted_dir(root, host_dir)? else {
        return Ok(None);
    };
    let shown_path = format!("{}/{name}", host_dir.trim_end_matches('/'));
    read_at(&dir, owner, name, &shown_path)
}

/// The text of `name` in the trusted directory `dir`, opened without
/// following a link and checked on its descriptor (`check_trust`) before it
/// is read. `Ok(None)`: it does not exist.
fn read_at(
    dir: &OwnedFd,
    owner: u32,
    name: &str,
    shown_path: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(mut file) = open_at(dir, name, shown_path, false)? else {
        return Ok(None);
    };
    let io_error = |action, source| ConfigError::Io {
        action,
        path: shown_path.to_string(),
        source,
    };
    let meta = file.metadata().map_err(|e| io_error("cannot stat", e))?;
    check_trust(shown_path, &meta, owner)?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| io_error("cannot read", e))?;
    Ok(Some(text))
}
