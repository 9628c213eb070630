//! The system programs vfioctl runs as root (modprobe, udevadm), found at
//! fixed paths only: nothing in the environment (PATH, a variable) chooses
//! them. The libvirt helper is found beside vfioctl (`libvirt::start`).

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

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

/// Whether `child`, started in a process group of its own, has exited,
/// without reaping it (`WNOWAIT`): until it is reaped its number stays its
/// group's, so [`kill_group`] cannot reach another process's group.
pub fn exited_unreaped(child: &Child) -> Result<bool, Errno> {
    match waitid(
        Id::Pid(Pid::from_raw(child.id() as i32)),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
    ) {
        Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Kills the process group `child` leads (it and whatever it started),
/// before `child` is reaped. ESRCH (every member gone) is not an error.
pub fn kill_group(child: &Child) {
    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
}

/// How a program run by [`run_within`] ended.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    /// What it had written to stderr when it exited.
    pub stderr: String,
}

/// Runs `program` (from [`find`]) with `args`, with no environment but
/// [`SYSTEM_PATH`] (so no `MODPROBE_OPTIONS` or the like reaches it), stdin
/// and stdout null, in its own process group, and returns by `deadline`
/// whatever it does. Once it exits, or at the deadline, the whole group is
/// killed: what it started (modprobe's `install` commands) ends with it.
/// Past the deadline it is reaped in a thread of its own: a process stuck
/// in the kernel (a module's init that never returns) cannot be waited
/// for. Its stderr is read as far as it was written when it exited (a
/// process it left running may still hold the pipe open).
pub fn run_within(program: &str, args: &[&str], deadline: Duration) -> Result<Ran, String> {
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let start = Instant::now();
    loop {
        if exited_unreaped(&child).map_err(|e| format!("cannot wait for {program}: {e}"))? {
            break;
        }
        if start.elapsed() >= deadline {
            kill_group(&child);
            std::thread::spawn(move || child.wait());
            return Err(format!(
                "{program} did not finish within {}s; it and what it started were killed",
                deadline.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kill_group(&child);
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for {program}: {e}"))?;
    let mut stderr = Vec::new();
    if let Some(mut pipe) = child.stderr.take() {
        if fcntl(&pipe, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_ok() {
            // Stops at the end of what is there (EAGAIN): what was read is kept.
            let _ = (&mut pipe).take(64 * 1024).read_to_end(&mut stderr);
        }
    }
    Ok(Ran {
        status,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn gone(pid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            // Killed and reparented: gone, or a zombie of its new parent.
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat)
                    if stat
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z') =>
                {
                    return true
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        false
    }

    fn started(file: &Path) -> i32 {
        std::fs::read_to_string(file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn a_program_ends_with_its_status_stderr_and_no_environment() {
        // The test process has HOME and cargo's CARGO_* variables: none
        // reaches the program (nor would MODPROBE_OPTIONS).
        assert!(std::env::var_os("HOME").is_some());
        let ran = run_within(
            "/bin/sh",
            &[
                "-c",
                "echo \"${HOME:-none} $PATH\" >&2; env | grep -c CARGO >&2; exit 3",
            ],
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(ran.status.code(), Some(3));
        assert_eq!(ran.stderr, format!("none {SYSTEM_PATH}\n0\n"));
    }

    #[test]
    fn past_the_deadline_the_program_and_what_it_started_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
        let start = Instant::now();
        let err = run_within("/bin/sh", &["-c", &script], Duration::from_millis(300)).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(err.contains("did not finish within 0.3s"), "{err}");
        assert!(
            gone(started(&pid_file)),
            "the install command outlived vfioctl"
        );
    }

    #[test]
    fn a_process_left_holding_stderr_neither_delays_nor_outlives_it() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!(
            "sleep 60 & echo $! > {}; echo loaded >&2",
            pid_file.display()
        );
        let start = Instant::now();
        let ran = run_within("/bin/sh", &["-c", &script], Duration::from_secs(20)).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert!(ran.status.success());
        assert_eq!(ran.stderr, "loaded\n");
        assert!(gone(started(&pid_file)));
    }

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
