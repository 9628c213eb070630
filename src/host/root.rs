//! The host root: every host path vfioctl touches hangs under one directory,
//! `/` in production and a fake tree in tests.

use std::io;
use std::path::{Path, PathBuf};

/// The mode of every directory vfioctl creates (`/etc/vfioctl`,
/// `bindings.d`, `/run/vfioctl`, boot file directories): root writes,
/// everyone reads (`check` runs unprivileged).
pub const DIR_MODE: u32 = 0o755;

#[derive(Debug, Clone)]
pub struct HostRoot {
    /// `/` whenever the root given resolves to this machine's own root
    /// (`names_this_host`), whatever its spelling.
    base: PathBuf,
}

/// What a replaced file must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// A power loss: the file and the rename are fsynced (/etc, /var/lib).
    PowerLoss,
    /// A process killed between two writes (/run, a tmpfs).
    ProcessKill,
}

/// Whether `path` resolves to this machine's own `/`: the same directory
/// (device and inode, following links) as `/`, however it is spelled
/// (`/proc/..`, `/proc/1/root` outside a container, `//`, a symlink to `/`).
/// The one test of "is this the real host": a root spelled otherwise is not
/// taken for another host's tree (whose libvirt, udev and modprobe would not
/// be this machine's). A path that cannot be stat'ed is not the host.
pub fn names_this_host(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if path == Path::new("/") {
        return true;
    }
    match (std::fs::metadata(path), std::fs::metadata("/")) {
        (Ok(dir), Ok(top)) => dir.is_dir() && dir.dev() == top.dev() && dir.ino() == top.ino(),
        _ => false,
    }
}

/// An I/O failure on a host path. Names the path and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct HostIoError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl HostRoot {
    /// The host tree at `base`; `/` when `base` resolves to this machine's
    /// own root (`names_this_host`), so every path and every "is this the
    /// host" decision sees one spelling.
    pub fn new(base: impl Into<PathBuf>) -> HostRoot {
        let base = base.into();
        if names_this_host(&base) {
            return HostRoot {
                base: PathBuf::from("/"),
            };
        }
        HostRoot { base }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Whether the root is this machine's own `/`: its kernel, libvirt,
    /// udev and modprobe are the ones to ask. False for a fake or copied-off
    /// tree under `--root`.
    pub fn is_host(&self) -> bool {
        self.base == Path::new("/")
    }

    /// Resolves an absolute host path (`/sys/bus/pci`) under the root.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let rel = host_path.as_ref();
        self.base.join(rel.strip_prefix("/").unwrap_or(rel))
    }

    /// Replaces the file at `path` (already under the root) with `text`,
    /// safely as root in a directory others may write (a Prometheus textfile
    /// directory): the text goes into an exclusively created, randomly named
    /// temporary file in the same directory (`O_CREAT|O_EXCL`, so no planted
    /// file or symlink is ever opened), gets `mode` through its descriptor
    /// (fchmod, never through a path), is fsynced, renamed over `path`, and the
    /// directory is fsynced so the rename survives a crash. A `path` that is a
    /// symlink is refused rather than replaced or followed. The one atomic write
    /// every host file goes through.
    pub fn write_atomic(&self, path: &Path, text: &str, mode: u32) -> Result<(), HostIoError> {
        self.replace(path, text, mode, Durability::PowerLoss)
    }

    /// `write_atomic` for a file under `/run` (the change record): the same
    /// exclusive temporary file and rename, without the two fsyncs. The
    /// rename alone is atomic against the crash that matters there, a
    /// process killed between two writes (kill -9, the OOM killer): the
    /// record is the old one or the new one, never half. `/run` is a tmpfs,
    /// gone with a power loss, so an fsync would buy nothing for it.
    pub fn write_atomic_in_run(
        &self,
        path: &Path,
        text: &str,
        mode: u32,
    ) -> Result<(), HostIoError> {
        self.replace(path, text, mode, Durability::ProcessKill)
    }

    fn replace(
        &self,
        path: &Path,
        text: &str,
        mode: u32,
        durability: Durability,
    ) -> Result<(), HostIoError> {
        use std::fs::{self, File, Permissions};
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let err = |action, p: &Path| {
            let path = p.to_path_buf();
            move |source| HostIoError {
                action,
                path,
                source,
            }
        };
        let dir = path.parent().expect("host files live in a directory");
        self.create_dirs(dir, DIR_MODE)?;
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(err("refusing to write through the symlink", path)(
                    io::Error::other("a symlink is never replaced or followed; remove it"),
                ))
            }
            Ok(meta) if !meta.is_file() => {
                return Err(err("refusing to replace", path)(io::Error::other(
                    "not a regular file",
                )))
            }
            _ => {}
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".vfioctl-tmp")
            .tempfile_in(dir)
            .map_err(err("cannot create a temporary file in", dir))?;
        let tmp_path = tmp.path().to_path_buf();
        let durable = durability == Durability::PowerLoss;
        tmp.write_all(text.as_bytes())
            .and_then(|_| tmp.as_file().set_permissions(Permissions::from_mode(mode)))
            .and_then(|_| match durable {
                true => tmp.as_file().sync_all(),
                false => Ok(()),
            })
            .map_err(err("cannot write", &tmp_path))?;
        // On failure the temporary file is removed when `tmp` drops.
        tmp.persist(path)
            .map_err(|e| err("cannot replace", path)(e.error))?;
        if !durable {
            return Ok(());
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err("cannot sync", dir))
    }

    /// Creates `dir` and its missing parents, each with exactly `mode`
    /// whatever the umask (root's `umask 000` would leave them 0777, a
    /// restrictive one unreadable for `check`): made with `mode` (the umask
    /// can only take bits away), then set to `mode` through a descriptor
    /// opened without following links. Directories that exist are left as
    /// they are.
    pub fn create_dirs(&self, dir: &Path, mode: u32) -> Result<(), HostIoError> {
        use std::fs::{DirBuilder, OpenOptions, Permissions};
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|d| std::fs::symlink_metadata(d).is_err())
            .collect();
        for created in missing.into_iter().rev() {
            let err = |action| {
                let path = created.to_path_buf();
                move |source| HostIoError {
                    action,
                    path,
                    source,
                }
            };
            match DirBuilder::new().mode(mode).create(created) {
                Ok(()) => {}
                // Made by someone else meanwhile: theirs, left as it is.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(err("cannot create")(e)),
            }
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(created)
                .and_then(|d| d.set_permissions(Permissions::from_mode(mode)))
                .map_err(err("cannot set the mode of"))?;
        }
        Ok(())
    }

    /// The running kernel's release, read inside the root so that a fake
    /// root's `lib/modules/<release>` is found in the same tree.
    pub fn kernel_release(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.path("/proc/sys/kernel/osrelease")).ok()?;
        let release = text.trim();
        (!release.is_empty()).then(|| release.to_string())
    }

    /// This host's name as the kernel holds it (`gethostname`), read inside
    /// the root so that a fake root names itself; unchecked.
    pub fn hostname(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.path("/proc/sys/kernel/hostname")).ok()?;
        let name = text.strip_suffix('\n').unwrap_or(&text);
        (!name.is_empty()).then(|| name.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_absolute_paths_under_the_base() {
        let root = HostRoot::new("/tmp/fake");
        assert_eq!(
            root.path("/sys/bus/pci"),
            PathBuf::from("/tmp/fake/sys/bus/pci")
        );
        assert_eq!(
            root.path("proc/mounts"),
            PathBuf::from("/tmp/fake/proc/mounts")
        );
        assert_eq!(HostRoot::new("/").path("/sys"), PathBuf::from("/sys"));
    }

    /// #31: the real root spelled otherwise is still the host; another
    /// tree, or a path that does not exist, is not.
    #[test]
    fn the_real_root_is_recognised_however_it_is_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("slash");
        std::os::unix::fs::symlink("/", &link).unwrap();
        for spelled in [
            PathBuf::from("/"),
            PathBuf::from("/proc/.."),
            PathBuf::from("//"),
            PathBuf::from("/proc/self/root"),
            link,
        ] {
            assert!(names_this_host(&spelled), "{}", spelled.display());
            let root = HostRoot::new(&spelled);
            assert!(root.is_host(), "{}", spelled.display());
            assert_eq!(root.base(), Path::new("/"));
            assert_eq!(root.path("/sys"), PathBuf::from("/sys"));
        }
        for other in [
            dir.path().to_path_buf(),
            PathBuf::from("/nonexistent-vfioctl-root"),
        ] {
            assert!(!names_this_host(&other), "{}", other.display());
            assert!(!HostRoot::new(&other).is_host());
        }
        // A file is never a root, even one on the root's device.
        assert!(!names_this_host(Path::new("/proc/self/exe")));
    }

    #[test]
    fn atomic_writes_replace_files_and_refuse_planted_symlinks() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        let target = dir.path().join("textfile/vfioctl.prom");
        root.write_atomic(&target, "a 1\n", 0o644).unwrap();
        root.write_atomic(&target, "a 2\n", 0o640).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "a 2\n");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o640);

        // Someone who can write the directory plants a symlink to a file root
        // owns, and the temporary names the old code used: neither is followed.
        let victim = dir.path().join("shadow");
        std::fs::write(&victim, "secret").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let planted = dir.path().join("textfile/planted.prom");
        symlink(&victim, &planted).unwrap();
        for pid in 0..5 {
            let guess = format!(".planted.prom.vfioctl-{pid}");
            symlink(&victim, dir.path().join("textfile").join(guess)).unwrap();
        }
        let err = root.write_atomic(&planted, "x 1\n", 0o644).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "secret");
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o600, "the victim's mode is untouched");
        assert!(std::fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink());

        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("textfile"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".vfioctl-tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
