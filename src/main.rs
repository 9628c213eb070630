use std::io::Write;

use clap::Parser;

use vfioctl::cli::Cli;
use vfioctl::error::{exit_status, one_line};

fn main() {
    // Die quietly on a closed pipe (`vfioctl list | head`), like other tools.
    // SAFETY: setting a signal disposition to the default before any threads exist.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let status = match vfioctl::run(&cli, &mut out) {
        Ok(status) => status,
        Err(err) => {
            let _ = out.flush();
            eprintln!("vfioctl: {}", one_line(&err));
            exit_status(&err).code()
        }
    };
    let _ = out.flush();
    std::process::exit(status);
}
