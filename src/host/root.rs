//! The host root: every host path vfioctl touches hangs under one directory,
//! `/` in production and a fake tree in tests.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct HostRoot {
    base: PathBuf,
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
    pub fn new(base: impl Into<PathBuf>) -> HostRoot {
        HostRoot { base: base.into() }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Resolves an absolute host path (`/sys/bus/pci`) under the root.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let rel = host_path.as_ref();
        self.base.join(rel.strip_prefix("/").unwrap_or(rel))
    }

    /// Replaces the file at `path` (already under the root) with `text`:
    /// a temporary file in the same directory, written, given `mode` and
    /// fsynced, renamed over `path`, then the directory fsynced so the rename
    /// survives a crash. The one atomic write every host file goes through.
    pub fn write_atomic(&self, path: &Path, text: &str, mode: u32) -> Result<(), HostIoError> {
        use std::fs::{self, File};
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
        fs::create_dir_all(dir).map_err(err("cannot create", dir))?;
        let tmp = dir.join(format!(
            ".{}.vfioctl-{}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let mut file = File::create(&tmp).map_err(err("cannot create", &tmp))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.set_permissions(fs::Permissions::from_mode(mode)))
            .and_then(|_| file.sync_all())
            .map_err(err("cannot write", &tmp))?;
        fs::rename(&tmp, path).map_err(err("cannot replace", path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err("cannot sync", dir))
    }

    /// The running kernel's release, read inside the root so that a fake
    /// root's `lib/modules/<release>` is found in the same tree.
    pub fn kernel_release(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.path("/proc/sys/kernel/osrelease")).ok()?;
        let release = text.trim();
        (!release.is_empty()).then(|| release.to_string())
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
}
