//! The walk over every process for holders of device nodes: who has one of
//! a set of nodes open, or mapped.
//!
//! One pass over `/proc`, each process's `fd` directory read once. A
//! descriptor is judged by `fstatat` through its magic link (the open
//! file's own inode: its device number, whatever path or mount namespace it
//! was opened by), not by reading the link and stat'ing the path it names:
//! one syscall per descriptor, and no path walk for the regular files,
//! sockets and pipes that make up most of them. Only when a node to find
//! does not exist under the host root (a fake root's tests) are links read
//! and compared by path. Kernel threads (no `exe`) are skipped with one
//! readlink. Every other process's `maps` is read too: a device mapped and
//! then closed is still held. Mappings are matched by the node's filesystem
//! device and inode as `maps` prints them, then by path.

use std::fs;
use std::io::Read;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use rustix::fs::{openat, readlinkat, statat, AtFlags, FileType, Mode, OFlags, RawDir};

use super::root::HostRoot;

/// One node to find: its path, and what a descriptor or mapping of it stats to.
#[derive(Debug, Clone)]
pub(super) struct Wanted {
    /// `/dev/...`, as a descriptor link or a `maps` line names it.
    pub path: String,
    /// The device number, and whether it is a block device.
    pub rdev: Option<(u64, bool)>,
    /// The node's own filesystem device and inode (`maps` prints them).
    pub inode: Option<(u64, u64)>,
}

impl Wanted {
    /// `path`, with its identity read from the node under `root` (and its
    /// number from sysfs when known).
    pub fn new(root: &HostRoot, path: &str, number: Option<(u64, bool)>) -> Wanted {
        let meta = fs::metadata(root.path(path)).ok();
        let from_node = meta.as_ref().and_then(device_number);
        Wanted {
            path: path.to_string(),
            rdev: number.or(from_node),
            inode: meta.map(|m| (m.dev(), m.ino())),
        }
    }
}

const LISTING: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

/// Calls `each` with every entry name of a directory opened for listing.
fn for_each_entry(dir: BorrowedFd, mut each: impl FnMut(&std::ffi::CStr)) {
    let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
    let mut listing = RawDir::new(dir, &mut buf);
    while let Some(Ok(entry)) = listing.next() {
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            each(name);
        }
    }
}

/// The device number of the node at `path` under the root, if it is one.
fn node_number(root: &HostRoot, path: &[u8]) -> Option<(u64, bool)> {
    use std::os::unix::ffi::OsStrExt;
    device_number(&fs::metadata(root.path(std::ffi::OsStr::from_bytes(path))).ok()?)
}

/// A node's device number, and whether it is a block device (`None`: not
/// a device node).
fn device_number(meta: &fs::Metadata) -> Option<(u64, bool)> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_block_device() {
        Some((meta.rdev(), true))
    } else if t.is_char_device() {
        Some((meta.rdev(), false))
    } else {
        None
    }
}

/// The indexes into `wanted` a descriptor is. Through its magic link first
/// (one `fstatat`); the link is read only when that cannot decide: the
/// stat failed (a fake root's links name paths under the root, not this
/// machine's), or a node to find has no device number to compare.
fn descriptor_matches(
    root: &HostRoot,
    fd_dir: BorrowedFd,
    name: &std::ffi::CStr,
    wanted: &[Wanted],
    out: &mut Vec<usize>,
) {
    let by_path_only = wanted.iter().any(|w| w.rdev.is_none());
    let stat = statat(fd_dir, name, AtFlags::empty());
    // Denied (another user namespace's process): its link cannot be read either.
    if stat
        .as_ref()
        .is_err_and(|e| *e == rustix::io::Errno::ACCESS)
    {
        return;
    }
    if let Ok(st) = stat {
        let block = match FileType::from_raw_mode(st.st_mode) {
            FileType::BlockDevice => Some(true),
            FileType::CharacterDevice => Some(false),
            _ => None,
        };
        let before = out.len();
        if let Some(block) = block {
            let rdev = (st.st_rdev, block);
            out.extend(
                wanted
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.rdev == Some(rdev))
                    .map(|(i, _)| i),
            );
        }
        if out.len() > before || !by_path_only {
            return;
        }
    }
    let Ok(target) = readlinkat(fd_dir, name, Vec::new()) else {
        return;
    };
    let target = target.to_bytes();
    let before = out.len();
    out.extend(
        wanted
            .iter()
            .enumerate()
            .filter(|(_, w)| w.path.as_bytes() == target)
            .map(|(i, _)| i),
    );
    if out.len() == before && target.starts_with(b"/") {
        if let Some(rdev) = node_number(root, target) {
            out.extend(
                wanted
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.rdev == Some(rdev))
                    .map(|(i, _)| i),
            );
        }
    }
}

/// `major:minor` in hex as `maps` prints a mapping's device.
fn maps_dev(text: &str) -> Option<u64> {
    let (major, minor) = text.split_once(':')?;
    Some(libc::makedev(
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
    ))
}

/// The indexes into `wanted` a process maps (from its `maps` text).
fn mapping_matches(root: &HostRoot, maps: &str, wanted: &[Wanted], out: &mut Vec<usize>) {
    // Only lines naming a path under /dev matter: jump from one to the next.
    let mut from = 0;
    while let Some(hit) = maps[from..].find(" /dev/").map(|i| from + i) {
        let start = maps[..hit].rfind('\n').map_or(0, |i| i + 1);
        let end = maps[hit..].find('\n').map_or(maps.len(), |i| hit + i);
        from = end;
        // address perms offset dev inode pathname
        let line = &maps[start..end];
        let at = hit - start;
        let path = line[at + 1..].trim_end();
        let mut fields = line.split_whitespace();
        let dev = fields.nth(3).and_then(maps_dev);
        let inode = fields.next().and_then(|i| i.parse::<u64>().ok());
        let mut found = false;
        for (i, w) in wanted.iter().enumerate() {
            let same_inode =
                matches!((w.inode, dev, inode), (Some(n), Some(d), Some(i)) if n == (d, i));
            if same_inode || w.path == path {
                out.push(i);
                found = true;
            }
        }
        if found {
            continue;
        }
        // Another name for a node (a symlink, a copy made with mknod): by number.
        let Some(rdev) = node_number(root, path.as_bytes()) else {
            continue;
        };
        out.extend(
            wanted
                .iter()
                .enumerate()
                .filter(|(_, w)| w.rdev == Some(rdev))
                .map(|(i, _)| i),
        );
    }
}

/// The indexes into `wanted` process `pid` holds or maps (`None`: its
/// descriptors cannot be read: it is gone, or this is not root).
/// Reads all of `fd` into `buf` with large reads (a seq_file such as `maps`
/// fills as much of the buffer as it can per read), without the size probe
/// of `read_to_end` (an fstat and lseeks per file). `buf` is reused across
/// files: it only grows, and is zeroed only when it does. Returns the bytes
/// read, `None` on an error.
fn read_all(fd: OwnedFd, buf: &mut Vec<u8>) -> Option<usize> {
    let mut file = fs::File::from(fd);
    let mut len = 0;
    loop {
        if buf.len() - len < 64 * 1024 {
            buf.resize(buf.len() + 256 * 1024, 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => return Some(len),
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

fn scan_process(
    root: &HostRoot,
    proc_dir: BorrowedFd,
    pid: &str,
    wanted: &[Wanted],
    buf: &mut Vec<u8>,
) -> Option<Vec<usize>> {
    let mut found = Vec::new();
    // A kernel thread (or a zombie) has no executable, and no descriptors
    // or memory map either: one readlink tells, where listing its fd
    // directory and reading its maps would take five calls.
    if readlinkat(proc_dir, format!("{pid}/exe"), Vec::new())
        .is_err_and(|e| e == rustix::io::Errno::NOENT)
    {
        return Some(found);
    }
    let fd_dir: OwnedFd = openat(proc_dir, format!("{pid}/fd"), LISTING, Mode::empty()).ok()?;
    for_each_entry(fd_dir.as_fd(), |name| {
        descriptor_matches(root, fd_dir.as_fd(), name, wanted, &mut found);
    });
    drop(fd_dir);
    if let Ok(maps) = openat(
        proc_dir,
        format!("{pid}/maps"),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        if let Some(len) = read_all(maps, buf) {
            mapping_matches(
                root,
                &String::from_utf8_lossy(&buf[..len]),
                wanted,
                &mut found,
            );
        }
    }
    found.sort_unstable();
    found.dedup();
    Some(found)
}

/// Every process holding or mapping one of `wanted`: (index into `wanted`, pid).
pub(super) fn holders(root: &HostRoot, wanted: &[Wanted]) -> Vec<(usize, u32)> {
    let mut out = Vec::new();
    if wanted.is_empty() {
        return out;
    }
    let Ok(proc_dir) = rustix::fs::open(root.path("/proc"), LISTING, Mode::empty()) else {
        return out;
    };
    // One buffer for every process's maps.
    let mut buf = Vec::new();
    let mut pids: Vec<u32> = Vec::new();
    for_each_entry(proc_dir.as_fd(), |name| {
        if let Some(pid) = name.to_str().ok().and_then(|n| n.parse::<u32>().ok()) {
            pids.push(pid);
        }
    });
    for pid in pids {
        if let Some(found) =
            scan_process(root, proc_dir.as_fd(), &pid.to_string(), wanted, &mut buf)
        {
            out.extend(found.into_iter().map(|i| (i, pid)));
        }
    }
    out
}

/// Whether process `pid` holds or maps one of `wanted` (`None`: cannot tell).
pub(super) fn pid_holds(root: &HostRoot, pid: u32, wanted: &[Wanted]) -> Option<bool> {
    let proc_dir = rustix::fs::open(root.path("/proc"), LISTING, Mode::empty()).ok()?;
    scan_process(
        root,
        proc_dir.as_fd(),
        &pid.to_string(),
        wanted,
        &mut Vec::new(),
    )
    .map(|f| !f.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// This machine's real /proc (read only): the walk finds this test
    /// process holding a real node through its descriptor's magic link, and
    /// mapping one after closing its descriptor.
    #[test]
    fn finds_this_process_by_descriptor_and_by_mapping_on_the_real_proc() {
        let root = HostRoot::new("/");
        let me = std::process::id();
        let null = fs::File::open("/dev/null").unwrap();
        let wanted = [Wanted::new(&root, "/dev/null", None)];
        assert!(wanted[0].rdev.is_some(), "/dev/null is a character device");
        assert!(holders(&root, &wanted).contains(&(0, me)));
        assert_eq!(pid_holds(&root, me, &wanted), Some(true));
        drop(null);

        let zero = fs::File::open("/dev/zero").unwrap();
        // SAFETY: a private read-only mapping of one page of /dev/zero,
        // unmapped below; no Rust reference points into it.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                zero.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        drop(zero);
        let wanted = [Wanted::new(&root, "/dev/zero", None)];
        let found = pid_holds(&root, me, &wanted);
        // SAFETY: the mapping made above, of that length.
        unsafe { libc::munmap(map, 4096) };
        assert_eq!(
            found,
            Some(true),
            "a mapping of a closed node is still held"
        );
    }

    #[test]
    fn maps_lines_match_by_device_and_inode_or_path() {
        let root = HostRoot::new("/nonexistent-root");
        let wanted = [Wanted {
            path: "/dev/vfio/12".into(),
            rdev: None,
            inode: Some((libc::makedev(0, 5), 1234)),
        }];
        let mut out = Vec::new();
        mapping_matches(
            &root,
            "7f00-7f01 rw-s 00000000 00:05 1234 /dev/renamed\n7f01-7f02 r--p 00000000 fd:01 99 /usr/lib/libc.so.6\n",
            &wanted,
            &mut out,
        );
        assert_eq!(out, vec![0]);
        out.clear();
        mapping_matches(
            &root,
            "7f00-7f01 rw-s 00000000 00:06 1 /dev/vfio/12\n",
            &wanted,
            &mut out,
        );
        assert_eq!(out, vec![0], "by path");
        out.clear();
        mapping_matches(
            &root,
            "7f00-7f01 rw-s 00000000 00:06 1 /dev/vfio/120\n",
            &wanted,
            &mut out,
        );
        assert!(out.is_empty());
    }
}
