use std::io::Write;

use clap::Parser;

use vfioctl::cli::exit::{ExitStatus, CHECK_UNKNOWN};
use vfioctl::cli::{Cli, Command};
use vfioctl::error::{error_document, exit_status, one_line};

/// Global options that take a value (so their value is not the subcommand).
const VALUED_GLOBALS: &[&str] = &["--root", "--connect", "--connect-timeout"];

/// The subcommand named on a command line clap rejected, if any.
fn subcommand(args: &[String]) -> Option<&str> {
    let mut skip = false;
    for arg in args.iter().skip(1) {
        if std::mem::take(&mut skip) {
            continue;
        }
        if VALUED_GLOBALS.contains(&arg.as_str()) {
            skip = true;
        } else if !arg.starts_with('-') {
            return Some(arg);
        }
    }
    None
}

/// Counts what a command wrote, so that an error after a JSON document does
/// not print a second one.
struct Counting<W> {
    inner: W,
    written: usize,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reports an error once: the line on stderr and, with `--json` and nothing
/// printed yet, the error document on stdout. Returns the exit status.
fn fail(
    out: &mut Counting<impl Write>,
    json: bool,
    status: i32,
    kind: ExitStatus,
    line: &str,
) -> i32 {
    if json && out.written == 0 {
        let _ = writeln!(out, "{}", error_document(status, kind, line));
    }
    let _ = out.flush();
    eprintln!("vfioctl: {line}");
    status
}

fn main() {
    // Die quietly on a closed pipe (`vfioctl list | head`), like other tools.
    // SAFETY: setting a signal disposition to the default before any threads exist.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let json = args.iter().any(|a| a == "--json");
    let stdout = std::io::stdout();
    let mut out = Counting {
        inner: stdout.lock(),
        written: 0,
    };
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => err.exit(), // --help, --version
        Err(err) => {
            let check = subcommand(&args) == Some("check");
            let status = if check {
                CHECK_UNKNOWN
            } else {
                ExitStatus::Usage.code()
            };
            let text = err.to_string();
            if json {
                let line = text.lines().next().unwrap_or_default();
                let line = line.strip_prefix("error: ").unwrap_or(line);
                std::process::exit(fail(&mut out, true, status, ExitStatus::Usage, line));
            }
            eprint!("{text}");
            std::process::exit(status);
        }
    };
    // `--json` as parsed: after `--` it is a selector, not the option.
    let json = vfioctl::prints_json(&cli);
    let check = matches!(cli.command, Command::Check(_));
    let status = match vfioctl::run(&cli, &mut out) {
        Ok(status) => status,
        Err(err) => {
            let kind = exit_status(&err);
            let status = if check { CHECK_UNKNOWN } else { kind.code() };
            fail(&mut out, json, status, kind, &one_line(&err))
        }
    };
    let _ = out.flush();
    std::process::exit(status);
}
