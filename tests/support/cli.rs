//! Running the built `vfioctl` binary against a fake root.

use std::path::Path;
use std::process::Command;

pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `vfioctl --root ROOT ARGS...` with extra environment, and without
/// the variables that would change its behaviour.
pub fn vfioctl_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("VFIOCTL_ROOT")
        .env_remove("VFIOCTL_CONNECT")
        .env_remove("ACTION")
        .envs(env.iter().copied())
        .output()
        .expect("run vfioctl");
    Run {
        status: output.status.code().expect("exit status"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 output"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 errors"),
    }
}

pub fn vfioctl(root: &Path, args: &[&str]) -> Run {
    vfioctl_env(root, args, &[])
}

/// Runs and asserts success; returns stdout.
pub fn ok(root: &Path, args: &[&str]) -> String {
    let run = vfioctl(root, args);
    assert_eq!(
        run.status, 0,
        "vfioctl {args:?}: {}{}",
        run.stdout, run.stderr
    );
    run.stdout
}

/// Runs `vfioctl --root ROOT ARGS...` as nobody (uid and gid 65534, no
/// groups, no capabilities) through util-linux's setpriv. Every directory
/// from `/` down to ROOT must be searchable by others.
pub fn vfioctl_as_nobody(root: &Path, args: &[&str]) -> Run {
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_vfioctl"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("VFIOCTL_ROOT")
        .env_remove("VFIOCTL_CONNECT")
        .env_remove("ACTION")
        .output()
        .expect("run setpriv");
    Run {
        status: output.status.code().expect("exit status"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 output"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 errors"),
    }
}

/// `$ vfioctl ARGS`, the exit status, stdout and stderr (each line marked)
/// of each case `run` runs, as a golden file shows them.
pub fn transcript(cases: &[&[&str]], mut run: impl FnMut(&[&str]) -> Run) -> String {
    let mut out = String::new();
    for args in cases {
        let r = run(args);
        out.push_str(&format!(
            "$ vfioctl {}\nexit {}\n",
            args.join(" "),
            r.status
        ));
        out.push_str(&r.stdout);
        for line in r.stderr.lines() {
            out.push_str(&format!("stderr: {line}\n"));
        }
        out.push('\n');
    }
    out
}
