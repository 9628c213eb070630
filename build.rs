//! Generates the man page and shell completions from the clap definitions in
//! src/cli.rs, so that documentation cannot drift from the real options.
//! Output goes to OUT_DIR; `man/vfioctl.8` is the committed copy, kept fresh
//! by a test (`UPDATE_GOLDEN=1 cargo test --test man_page` rewrites it).
//! Set VFIOCTL_GEN_DIR to also copy the files there (used by `make install`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

#[path = "src/cli.rs"]
#[allow(dead_code)]
mod cli;

// The gate's table of paths: how each path that changes bindings is judged,
// and where one differs (it imports nothing, so it builds here too).
#[path = "src/gate/policy.rs"]
#[allow(dead_code)]
mod policy;

/// Escapes text for roff: backslashes, hyphens, and control characters at line start.
fn roff(text: &str) -> String {
    text.lines()
        .map(|line| {
            let escaped = line.replace('\\', "\\e").replace('-', "\\-");
            if escaped.starts_with('.') || escaped.starts_with('\'') {
                format!("\\&{escaped}")
            } else {
                escaped
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn render_arg(out: &mut String, arg: &clap::Arg) {
    let name = match (arg.get_long(), arg.get_short()) {
        (Some(long), Some(short)) => format!("\\fB\\-{short}\\fR, \\fB\\-\\-{}\\fR", roff(long)),
        (Some(long), None) => format!("\\fB\\-\\-{}\\fR", roff(long)),
        _ => {
            let value = arg
                .get_value_names()
                .and_then(|v| v.first().map(|s| s.to_string()))
                .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
            format!("\\fI{value}\\fR")
        }
    };
    let value = if arg.get_long().is_some() && arg.get_num_args().is_some_and(|n| n.takes_values())
    {
        arg.get_value_names()
            .and_then(|v| v.first())
            .map(|v| format!(" \\fI{v}\\fR"))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    out.push_str(&format!(
        ".TP\n{name}{value}\n{}\n",
        roff(&help).replace("\n\n", "\n.br\n")
    ));
}

/// The COMMANDS section: each subcommand's usage, description and options.
fn render_commands(cmd: &mut clap::Command) -> String {
    let mut out = String::from(".SH COMMANDS\n");
    cmd.build();
    for sub in cmd.get_subcommands_mut() {
        let usage = sub.render_usage().to_string();
        let usage = usage.trim_start_matches("Usage: ").trim();
        out.push_str(&format!(".SS \"{}\"\n", roff(usage)));
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|s| s.to_string())
            .unwrap_or_default();
        out.push_str(&roff(&about).replace("\n\n", "\n.PP\n"));
        out.push('\n');
        for arg in sub.get_arguments() {
            if arg.is_global_set() || matches!(arg.get_id().as_str(), "help" | "version") {
                continue;
            }
            render_arg(&mut out, arg);
        }
    }
    out
}

fn render_exit_status() -> String {
    let mut out = String::from(".SH \"EXIT STATUS\"\n");
    for (status, meaning) in cli::exit::TABLE {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            status.code(),
            roff(meaning)
        ));
    }
    out
}

fn render_safety_rules() -> String {
    let mut out = String::from(
        ".SH \"SAFETY RULES\"\nEvery path that changes bindings now or at a later boot goes through one gate, by construction: each kernel write (driver_override, unbind, drivers_probe, sriov_numvfs, sriov_drivers_autoprobe, reset, a module load) and each file that claims devices at a later boot (a declaration, the boot files) takes a permit only the gate makes, after judging the change against the host's facts. The rules, whether \\fB\\-\\-force\\fR overrides each and the exit status when one refuses:\n",
    );
    for (rule, force, status) in cli::SAFETY {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR, exit {}\n{}\n",
            if *force {
                "\\-\\-force overrides"
            } else {
                "never overridden"
            },
            status.code(),
            roff(rule)
        ));
    }
    out.push_str(".SS \"Paths\"\nEach path, what the gate judges on it, whether it asks libvirt and has \\fB\\-\\-force\\fR, and where it differs from the others:\n");
    for p in policy::PATHS {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR (libvirt: {}; \\-\\-force: {})\n{}.{}\n",
            roff(p.command),
            if p.asks_libvirt {
                "asked"
            } else {
                "never asked"
            },
            if p.force { "yes" } else { "no" },
            roff(p.judged),
            if p.differs.is_empty() {
                String::new()
            } else {
                format!(" Differs: {}.", roff(p.differs))
            }
        ));
    }
    out.push_str(&format!(
        ".TP\n\\fBrollback\\fR\n{}\n",
        roff(policy::ROLLBACK)
    ));
    out
}

fn man_page(manual_sections: &str) -> std::io::Result<Vec<u8>> {
    let mut cmd = cli::Cli::command();
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Administration");
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    man.render_options_section(&mut buf)?;
    buf.write_all(render_commands(&mut cmd).as_bytes())?;
    buf.write_all(render_exit_status().as_bytes())?;
    buf.write_all(render_safety_rules().as_bytes())?;
    buf.write_all(manual_sections.as_bytes())?;
    man.render_version_section(&mut buf)?;
    Ok(buf)
}

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-changed=src/gate/policy.rs");
    println!("cargo:rerun-if-changed=man/sections.roff");
    println!("cargo:rerun-if-env-changed=VFIOCTL_GEN_DIR");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let sections = fs::read_to_string("man/sections.roff")?;
    fs::write(out_dir.join("vfioctl.8"), man_page(&sections)?)?;

    let mut cmd = cli::Cli::command();
    let mut generated = vec![out_dir.join("vfioctl.8")];
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        generated.push(clap_complete::generate_to(
            shell, &mut cmd, "vfioctl", &out_dir,
        )?);
    }
    if let Some(dir) = std::env::var_os("VFIOCTL_GEN_DIR") {
        let dir = Path::new(&dir);
        fs::create_dir_all(dir)?;
        for file in generated {
            fs::copy(
                &file,
                dir.join(file.file_name().expect("generated files have names")),
            )?;
        }
    }
    Ok(())
}
