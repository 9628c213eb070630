//! A throwaway host root for targets whose parser reads files: the input is
//! written where the host keeps that file, and vfioctl runs with `--root`.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::Parser;
use vfioctl::cli::Cli;
use vfioctl::host::HostRoot;

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
        root.dir("/sys/bus/pci/devices");
        root.dir("/sys/kernel/iommu_groups");
        root.dir("/sys/class/iommu");
        root
    }

    pub fn base(&self) -> &Path {
        self.dir.path()
    }

    pub fn host_root(&self) -> HostRoot {
        HostRoot::new(self.base())
    }

    /// The path of a host path (`/proc/cmdline`) under this root.
    pub fn path(&self, host_path: &str) -> PathBuf {
        self.base().join(host_path.trim_start_matches('/'))
    }

    /// Creates a directory (and its parents), mode 0755 as the trust check wants.
    pub fn dir(&self, host_path: &str) -> PathBuf {
        let path = self.path(host_path);
        fs::create_dir_all(&path).expect("create dir in fake root");
        let mut p = path.as_path();
        while p != self.base() {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
            p = p.parent().expect("under the root");
        }
        path
    }

    /// Writes a file (mode 0644), creating its directory.
    pub fn write(&self, host_path: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(host_path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create dir in fake root");
        }
        fs::write(&path, contents).expect("write file in fake root");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        path
    }

    /// Makes `host_path` a symlink to `target` (any text the kernel could put there).
    pub fn link(&self, host_path: &str, target: impl AsRef<Path>) {
        let path = self.path(host_path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create dir in fake root");
        }
        symlink(target, path).expect("symlink in fake root");
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
        // VFIOCTL_FUZZ_SHOW=1: what an input does (`fuzz/show TARGET FILE`).
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
