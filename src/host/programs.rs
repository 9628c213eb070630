//! The system programs vfioctl runs as root (modprobe, udevadm), found at
//! fixed paths only: nothing in the environment (PATH, a variable) chooses
//! them. The libvirt helper is found beside vfioctl (`libvirt::start`).

use std::os::unix::fs::MetadataExt;

/// Where modprobe is: `/usr/sbin` (RHEL 9, Debian 12 with merged /usr, as
/// installed by default), then `/sbin` (Debian 12's kmod package ships
/// `/sbin/modprobe`; without merged /usr only that exists).
pub const MODPROBE: &[&str] = &["/usr/sbin/modprobe", "/sbin/modprobe"];

/// Where udevadm is: `/usr/bin` (RHEL 9, merged /usr), then `/bin` (Debian
/// 12's udev package ships `/bin/udevadm`).
pub const UDEVADM: &[&str] = &["/usr/bin/udevadm", "/bin/udevadm"];

/// The `PATH` the programs vfioctl runs get (modprobe's `install` commands
/// run through a shell): the system directories, never the caller's.
pub const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The first of `candidates` that exists, resolved through links as
/// installed (`/sbin/modprobe` is a link to `/bin/kmod`) to a regular file
/// owned by root and writable by no one else. `Err`: why none can be run.
pub fn find(candidates: &[&'static str]) -> Result<&'static str, String> {
    for &path in candidates {
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let mode = meta.mode() & 0o7777;
        if !meta.is_file() || meta.uid() != 0 || mode & 0o022 != 0 {
            return Err(format!(
                "refusing to run {path}: not a regular file owned by root and writable by no one else (owner uid {}, mode {mode:o})",
                meta.uid()
            ));
        }
        return Ok(path);
    }
    Err(format!("not found at {}", candidates.join(" or ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// This machine's own programs (read only): found at their fixed paths.
    #[test]
    fn system_programs_are_found_at_fixed_paths_only() {
        if MODPROBE.iter().any(|p| Path::new(p).exists()) {
            assert!(MODPROBE.contains(&find(MODPROBE).unwrap()));
        }
        let err = find(&["/nonexistent/vfioctl/modprobe"]).unwrap_err();
        assert_eq!(err, "not found at /nonexistent/vfioctl/modprobe");
        // A program someone else could replace is refused.
        let dir = tempfile::tempdir().unwrap();
        let planted = dir.path().join("modprobe");
        std::fs::write(&planted, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
        let leaked: &'static str = Box::leak(planted.display().to_string().into_boxed_str());
        let err = find(&[leaked]).unwrap_err();
        assert!(err.starts_with("refusing to run"), "{err}");
    }
}
