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
