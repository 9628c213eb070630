//! `vfioctl host-config`: preview, write or remove the boot-time files.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use serde::Serialize;

use crate::cli::HostConfigArgs;
use crate::engine::run::{privileged, NotPrivileged};
use crate::error::NotOwned;
use crate::gate::{self, BootRefused, ClaimKey, Path};
use crate::host::config::{self, ConfigError};
use crate::host::hostfacts::{read_cpu, read_facts};
use crate::host::sysfs::{read_inventory, Names};
use crate::host::usage::read_usage;
use crate::host::HostRoot;
use crate::integrations::boot_files::{generate, HostConfig, OWNED_HEADER};
use crate::model::ModuleName;
use crate::output::write_json;

/// What happened (or would happen) to one file.
#[derive(Debug, Serialize)]
struct FileStatus {
    path: &'static str,
    /// new, changed, unchanged, removed, absent
    status: &'static str,
    mode: String,
    content: String,
}

pub fn run(root: &HostRoot, args: &HostConfigArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    // A dry run of --write/--remove checks and refuses as they do, and
    // changes nothing (no privilege or lock needed, as bind --dry-run).
    let changing = (args.write || args.remove) && !args.dry_run;
    if changing && !privileged() {
        return Err(NotPrivileged {
            command: "host-config",
        }
        .into());
    }
    let _lock = if changing {
        Some(crate::host::state::lock(
            root,
            crate::host::state::CONFIG_LOCK_WAIT,
        )?)
    } else {
        None
    };
    let inv = read_inventory(root, Names::Skip)?;
    let facts = read_facts(
        root,
        &inv,
        config::load(root)?,
        args.blacklist,
        args.ids,
        read_cpu(root).vendor,
    );
    let blacklisted: BTreeSet<ModuleName> = if facts.blacklist {
        facts.softdeps.keys().cloned().collect()
    } else {
        BTreeSet::new()
    };
    // The rules `persist apply` follows, without --force: the files claim
    // at every boot, where nobody is asked.
    let affected = gate::boot_affected(&inv, &facts.declarations, &blacklisted, facts.ids_option);
    let verdict = gate::clear_claims(
        &inv,
        &read_usage(root),
        crate::host::hostfacts::fabric_of_host(root, &inv).as_ref(),
        vec![ClaimKey::BootFiles],
        &affected,
        Path::HostConfig,
        false,
    );
    // Declarations that conflict are left out of the files; --write
    // refuses until the operator settles them (nothing written).
    let conflicts = facts.declarations.conflicts();
    if let (Some(conflict), true) = (conflicts.first(), args.write) {
        return Err(conflict.clone().into());
    }
    let (claims, refused) = match verdict {
        Ok(claims) => (Some(claims), None),
        Err(refusals) => (
            None,
            Some(BootRefused {
                what: "the boot files",
                hint: if facts.blacklist || facts.ids_option {
                    ", or drop --blacklist/--ids"
                } else {
                    ""
                },
                refusals,
            }),
        ),
    };
    if let (Some(refused), false) = (&refused, args.remove) {
        if args.write {
            return Err(refused.clone().into());
        }
    }
    let mut plan: HostConfig = generate(&facts);
    if let (Some(refused), false) = (&refused, args.remove) {
        plan.notes.push(format!("--write would refuse: {refused}"));
    }
    if !args.remove {
        for conflict in &conflicts {
            plan.notes.push(format!("--write would refuse: {conflict}"));
        }
    }
    let mut statuses = Vec::new();
    for file in &plan.files {
        let path = root.path(file.path);
        let existing = fs::read_to_string(&path).ok();
        if let Some(text) = &existing {
            if !config::written_by_vfioctl(text, OWNED_HEADER) && (args.write || args.remove) {
                return Err(NotOwned(file.path.to_string()).into());
            }
        }
        let status = if args.remove {
            match existing {
                Some(_) => {
                    if changing {
                        fs::remove_file(&path).map_err(|source| ConfigError::Io {
                            action: "cannot remove",
                            path: file.path.to_string(),
                            source,
                        })?;
                    }
                    "removed"
                }
                None => "absent",
            }
        } else {
            let status = match &existing {
                None => "new",
                Some(text) if *text == file.content => "unchanged",
                Some(_) => "changed",
            };
            let mode_differs =
                fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o777 != file.mode);
            if let (true, true, true, Some(claims)) = (
                args.write,
                changing,
                status != "unchanged" || mode_differs,
                &claims,
            ) {
                config::write_boot_file(root, claims, &path, &file.content, file.mode)?;
            }
            status
        };
        statuses.push(FileStatus {
            path: file.path,
            status,
            mode: format!("{:o}", file.mode),
            content: file.content.clone(),
        });
    }

    if args.json {
        #[derive(Serialize)]
        struct Record<'a> {
            written: bool,
            removed: bool,
            dry_run: bool,
            files: &'a [FileStatus],
            kernel_cmdline: &'a crate::integrations::boot_files::CmdlineAdvice,
            initramfs_command: &'a Option<String>,
            notes: &'a [String],
        }
        write_json(
            out,
            &Record {
                written: args.write && changing,
                removed: args.remove && changing,
                dry_run: args.dry_run,
                files: &statuses,
                kernel_cmdline: &plan.cmdline,
                initramfs_command: &plan.initramfs_command,
                notes: &plan.notes,
            },
        )?;
        return Ok(crate::cli::exit::OK);
    }

    for file in &statuses {
        if args.remove {
            let status = match (file.status, changing) {
                ("removed", false) => "would be removed",
                (status, _) => status,
            };
            writeln!(out, "{}: {status}", file.path)?;
            continue;
        }
        let verb = match (args.write && file.status != "unchanged", changing) {
            (true, true) => "written",
            (true, false) => "would be written",
            (false, _) => file.status,
        };
        writeln!(out, "== {} ({verb}, mode {}) ==", file.path, file.mode)?;
        write!(out, "{}", file.content)?;
    }
    if !args.remove {
        writeln!(out, "== kernel command line ==")?;
        if !plan.cmdline.conflicting.is_empty() {
            writeln!(out, "conflicting: {}", plan.cmdline.conflicting.join(" "))?;
        }
        if !plan.cmdline.missing.is_empty() {
            writeln!(out, "missing: {}", plan.cmdline.missing.join(" "))?;
        }
        writeln!(out, "{}", plan.cmdline.how)?;
    }
    let changed = statuses
        .iter()
        .any(|s| matches!(s.status, "new" | "changed" | "removed"));
    if let (Some(command), true) = (&plan.initramfs_command, changed) {
        let when = if changing { "now" } else { "after --write" };
        writeln!(out, "rebuild the initramfs {when}: {command}")?;
    }
    for text in &plan.notes {
        crate::output::note(text);
    }
    if args.dry_run && (args.write || args.remove) {
        writeln!(out, "dry run: nothing written")?;
    } else if !args.write && !args.remove {
        writeln!(out, "preview only: run with --write to write these files")?;
    }
    Ok(crate::cli::exit::OK)
}
