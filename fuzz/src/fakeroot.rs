//! A throwaway host root for targets whose parser reads files: the input is
//! written where the host keeps that file, and vfioctl runs with `--root`.
//!
//! Not every input names something a file system can hold: a file name over
//! NAME_MAX, a path over PATH_MAX, a NUL, `.` or `..` as a name, a link whose
//! target leads out of the root (vfioctl would then read this machine's own
//! tree, and a run would depend on the machine). Such an input gets
//! [`Unrepresentable`] and the target skips it; a target never panics
//! because the fake root could not be built. Any other failure to build it
//! (a full disk) is the machine's and still panics.

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::Parser;
use vfioctl::cli::Cli;
use vfioctl::host::HostRoot;

/// Linux's NAME_MAX: the longest name of one directory entry (ext4, XFS,
/// Btrfs, tmpfs).
pub const NAME_MAX: usize = 255;
/// Linux's PATH_MAX, its terminating NUL included: the longest path a system
/// call takes, and the longest symlink target `symlink(2)` stores.
pub const PATH_MAX: usize = 4096;

/// An input the fake root cannot hold, and why: the target skips it.
#[derive(Debug, PartialEq, Eq)]
pub struct Unrepresentable(pub String);

impl fmt::Display for Unrepresentable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn skip<T>(why: String) -> Result<T, Unrepresentable> {
    Err(Unrepresentable(why))
}

/// A name one directory entry can have: 1 to NAME_MAX bytes, no `/` or NUL,
/// not `.` or `..`.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
}

pub struct FakeRoot {
    dir: tempfile::TempDir,
}

impl Default for FakeRoot {
    fn default() -> Self {
        FakeRoot::new()
    }
}

impl FakeRoot {
    /// An empty root with an (empty) PCI sysfs, so that inventories read.
    pub fn new() -> FakeRoot {
        let root = FakeRoot {
            dir: tempfile::Builder::new()
                .prefix("vfioctl-fuzz-")
                .tempdir()
                .expect("temp dir"),
        };
        for dir in [
            "/sys/bus/pci/devices",
            "/sys/kernel/iommu_groups",
            "/sys/class/iommu",
        ] {
            root.dir(dir).expect("a fixed path fits the fake root");
        }
        root
    }

    pub fn base(&self) -> &Path {
        self.dir.path()
    }

    pub fn host_root(&self) -> HostRoot {
        HostRoot::new(self.base())
    }

    /// The path of a host path (`/proc/cmdline`) under this root, when the
    /// root can hold it: absolute, every component a valid name, the whole
    /// path under PATH_MAX.
    pub fn path(&self, host_path: &str) -> Result<PathBuf, Unrepresentable> {
        let Some(rest) = host_path.strip_prefix('/') else {
            return skip(format!("{host_path:?} is not an absolute host path"));
        };
        for name in rest.split('/') {
            if !valid_name(name.as_bytes()) {
                return skip(format!(
                    "{:?} (in {host_path:?}) is no file name: {} bytes, NAME_MAX is {NAME_MAX}",
                    name,
                    name.len()
                ));
            }
        }
        let path = self.base().join(rest);
        if path.as_os_str().len() >= PATH_MAX {
            return skip(format!(
                "{host_path:?} is {} bytes under the root, PATH_MAX is {PATH_MAX}",
                path.as_os_str().len()
            ));
        }
        Ok(path)
    }

    /// Creates a directory (and its parents), mode 0755 as the trust check wants.
    pub fn dir(&self, host_path: &str) -> Result<PathBuf, Unrepresentable> {
        let path = self.path(host_path)?;
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create {} in the fake root: {e}", path.display()));
        let mut p = path.as_path();
        while p != self.base() {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
            p = p.parent().expect("under the root");
        }
        Ok(path)
    }

    /// Writes a file (mode 0644), creating its directory.
    pub fn write(
        &self,
        host_path: &str,
        contents: impl AsRef<[u8]>,
    ) -> Result<PathBuf, Unrepresentable> {
        let path = self.path(host_path)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("create {} in the fake root: {e}", parent.display()));
        }
        fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("write {} in the fake root: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        Ok(path)
    }

    /// Makes `host_path` a symlink to `target`: any text the kernel could
    /// put there that stays in the root. A target is relative, at most
    /// PATH_MAX - 1 bytes without NUL, and made of `..` components first,
    /// then names (as the kernel writes its links), with no more `..` than
    /// the link is deep: then no link, nor a chain of them, resolves to a
    /// path outside the root.
    pub fn link(&self, host_path: &str, target: &OsStr) -> Result<(), Unrepresentable> {
        let path = self.path(host_path)?;
        let bytes = target.as_bytes();
        if bytes.is_empty() || bytes.len() >= PATH_MAX || bytes.contains(&0) {
            return skip(format!(
                "a link target of {} bytes (PATH_MAX is {PATH_MAX}) or with a NUL",
                bytes.len()
            ));
        }
        if bytes.starts_with(b"/") {
            return skip(format!("{target:?} is absolute: it leaves the fake root"));
        }
        // The link's directory, in components below the root.
        let depth = host_path.trim_start_matches('/').split('/').count() - 1;
        let mut ups = 0;
        let mut named = false;
        for part in bytes.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." if named => {
                    return skip(format!("{target:?} climbs after a name"));
                }
                b".." => ups += 1,
                _ if part.len() > NAME_MAX => {
                    return skip(format!("{target:?} holds a name over NAME_MAX"));
                }
                _ => named = true,
            }
        }
        if ups > depth {
            return skip(format!(
                "{target:?} climbs {ups} levels from {host_path:?}, {depth} deep: it leaves the fake root"
            ));
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("create {} in the fake root: {e}", parent.display()));
        }
        symlink(target, &path)
            .unwrap_or_else(|e| panic!("symlink {} in the fake root: {e}", path.display()));
        Ok(())
    }

    /// Runs `vfioctl --root THIS ARGS...` in-process; its output is dropped.
    /// Errors are fine (that is how bad input should end); panics are not.
    pub fn run(&self, args: &[&str]) {
        let mut argv: Vec<std::ffi::OsString> = vec!["vfioctl".into(), "--root".into()];
        argv.push(self.base().as_os_str().to_owned());
        argv.extend(args.iter().map(Into::into));
        let cli = Cli::try_parse_from(argv).expect("the targets pass valid command lines");
        let mut out = Vec::new();
        let status = vfioctl::run(&cli, &mut out);
        // VFIOCTL_FUZZ_SHOW=1: what an input does (see docs/fuzzing.md).
        if std::env::var_os("VFIOCTL_FUZZ_SHOW").is_some() {
            eprintln!("$ vfioctl {} -> {status:?}", args.join(" "));
            eprintln!("{}", String::from_utf8_lossy(&out));
        }
        if args.contains(&"--json") && !out.is_empty() {
            serde_json::from_slice::<serde_json::Value>(&out)
                .expect("--json output is one JSON document");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_over_name_max_are_skipped_at_name_max_kept() {
        let root = FakeRoot::new();
        let kept = format!("/sys/kernel/iommu_groups/{}", "g".repeat(NAME_MAX));
        assert!(root.dir(&kept).unwrap().is_dir());
        let long = format!("/sys/kernel/iommu_groups/{}", "g".repeat(NAME_MAX + 1));
        assert!(root.dir(&long).is_err());
        assert!(root.write(&format!("{long}/type"), "DMA").is_err());
    }

    #[test]
    fn paths_over_path_max_nuls_and_dot_names_are_skipped() {
        let root = FakeRoot::new();
        let deep = format!("/{}", vec!["d".repeat(200); 21].join("/"));
        assert!(root.dir(&deep).is_err(), "{} bytes", deep.len());
        for bad in ["/etc/a\0b", "/etc/..", "/etc/.", "/etc//x", "etc/x", "/"] {
            assert!(root.write(bad, "x").is_err(), "{bad:?}");
        }
        assert!(!root.base().join("etc").exists(), "nothing written");
    }

    #[test]
    fn link_targets_that_leave_the_root_are_skipped() {
        let root = FakeRoot::new();
        let dev = "/sys/bus/pci/devices/0000:25:00.0";
        root.dir(dev).unwrap();
        let link = |target: &[u8]| root.link(&format!("{dev}/l"), OsStr::from_bytes(target));
        for bad in [
            &b"/etc"[..],
            b"../../../../../../etc",
            b"iommu_group/../../../../../..",
            b"",
            &[b'x'; PATH_MAX],
        ] {
            assert!(link(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // The kernel's own forms, up to the root itself.
        for (i, good) in [
            "../../../bus/pci/drivers/nvidia",
            "../../../../../",
            "./x//y",
        ]
        .iter()
        .enumerate()
        {
            root.link(&format!("{dev}/l{i}"), OsStr::new(good))
                .unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }
}
