//! `vfioctl check`: gather the facts, run the checks, print, exit with the verdict.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::cli::CheckArgs;
use crate::host::config;
use crate::host::hostfacts::{fabric, read_cpu, read_facts};
use crate::host::libvirt::Target;
use crate::host::modules;
use crate::host::sysfs::{read_inventory, Names};
use crate::host::HostRoot;
use crate::integrations::boot_files::{generate, OWNED_HEADER};
use crate::integrations::check::{
    aer_plan, aer_updates, judged, overall, run_checks, CheckResult, Expectation, Facts, FileState,
    HealthInput, LibvirtView, ModuleState, Verdict,
};
use crate::integrations::udev;
use crate::model::declaration::Declarations;
use crate::model::{Inventory, ModuleName, PciDevice};
use crate::output::table::Table;
use crate::output::write_json;

use super::{node_devices, LibvirtOptions};
use crate::error::StdoutConflict;

fn read(root: &HostRoot, path: &str) -> Option<String> {
    fs::read_to_string(root.path(path)).ok()
}

fn module_state(root: &HostRoot, release: Option<&str>, module: &ModuleName) -> ModuleState {
    if modules::is_loaded(root, module) {
        return ModuleState::Loaded;
    }
    if !modules::have_modules_dep(root, release) {
        return ModuleState::Unknown;
    }
    match modules::preflight(root, release, module) {
        Ok(()) | Err(modules::ModuleError::Blocked { .. }) => ModuleState::Installed,
        Err(modules::ModuleError::NotInstalled { .. }) => ModuleState::Missing,
        Err(_) => ModuleState::Unknown,
    }
}

fn file_state(root: &HostRoot, path: &str, expected: &str, owned_header: &str) -> FileState {
    match read(root, path) {
        None => FileState::Missing,
        Some(text) if text == expected => FileState::Current,
        Some(text) if config::written_by_vfioctl(&text, owned_header) => FileState::Stale,
        Some(_) => FileState::NotOwned,
    }
}

fn vfio_nodes(root: &HostRoot) -> BTreeSet<u32> {
    fs::read_dir(root.path("/dev/vfio"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

fn expectations(path: &Path) -> Result<Vec<Expectation>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        expect: Vec<Expectation>,
    }
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str::<File>(&text)
        .map(|f| f.expect)
        .map_err(|e| format!("{}: {}", path.display(), e.message()))
}

#[derive(Serialize)]
struct Report<'a> {
    status: Verdict,
    exit_code: i32,
    checks: &'a [CheckResult],
}

fn prometheus(results: &[CheckResult], status: Verdict) -> String {
    let escape = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', " ")
    };
    let mut text = String::from(
        "# HELP vfioctl_check_status Verdict of one vfioctl check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.\n# TYPE vfioctl_check_status gauge\n",
    );
    for r in results.iter().filter(|r| r.device.is_none()) {
        text.push_str(&format!(
            "vfioctl_check_status{{check=\"{}\"}} {}\n",
            escape(&r.id),
            r.status.exit_code()
        ));
    }
    text.push_str("# HELP vfioctl_device_status Verdict for one declared device: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.\n# TYPE vfioctl_device_status gauge\n");
    for r in results.iter().filter(|r| r.device.is_some()) {
        text.push_str(&format!(
            "vfioctl_device_status{{check=\"{}\",address=\"{}\"}} {}\n",
            escape(&r.id),
            r.device.expect("filtered"),
            r.status.exit_code()
        ));
    }
    text.push_str(&format!(
        "# HELP vfioctl_node_status Overall verdict of vfioctl check.\n# TYPE vfioctl_node_status gauge\nvfioctl_node_status {}\n",
        status.exit_code()
    ));
    text
}

/// The health checks' input: the devices judged and what was read of them
/// and their ports, the thresholds, and the AER baseline, with the entries
/// this run takes or renews saved (see host::baseline).
fn health_input<'a>(
    root: &HostRoot,
    inv: &'a Inventory,
    declarations: Option<&Declarations>,
    args: &CheckArgs,
) -> HealthInput<'a> {
    use crate::host::baseline;
    let (judged, passthrough) = judged(inv, declarations, args.all);
    let (thresholds, thresholds_from) = match baseline::load_thresholds(root) {
        Ok((t, from)) => (t, Ok(from)),
        Err(e) => (Default::default(), Err(e.to_string())),
    };
    let reading = crate::host::health::Reading {
        rootport_totals: args.prometheus.is_some(),
        enable: false,
    };
    let facts = crate::host::health::read_health(root, inv, &judged, reading);
    let mut input = HealthInput {
        judged,
        passthrough,
        facts,
        thresholds,
        thresholds_from,
        baseline: baseline::load_baseline(root),
        now: crate::host::state::now_unix(),
        new_baseline: args.new_aer_baseline,
        saved: None,
        keeps_baseline: true,
    };
    let updates = aer_updates(&aer_plan(&input));
    if !updates.is_empty() {
        input.saved = Some(baseline::save_baseline(root, &updates));
    }
    input
}

/// What libvirt reports for each declared device, or why it was not asked.
fn libvirt_views(
    options: &LibvirtOptions,
    inv: &Inventory,
    declarations: &Result<Declarations, String>,
) -> Result<Vec<LibvirtView>, String> {
    let uri = match &options.target {
        Target::Uri(uri) => uri,
        other => return Err(other.why_not().unwrap_or_default()),
    };
    let Ok(decls) = declarations else {
        return Err("the declarations cannot be read".to_string());
    };
    let declared: Vec<&PciDevice> = decls.declared(&inv.devices).collect();
    if declared.is_empty() {
        return Ok(Vec::new());
    }
    let nodedevs = node_devices(uri, options.timeout).map_err(|e| format!("{e:#}"))?;
    Ok(declared
        .iter()
        .map(|dev| {
            let nd = nodedevs.iter().find(|n| n.address == dev.address);
            LibvirtView {
                address: dev.address,
                seen: nd.is_some(),
                driver: nd.and_then(|n| n.driver.as_ref()).map(ToString::to_string),
                device_type: nd.map(|n| n.nova_device_type().to_string()),
            }
        })
        .collect())
}

pub fn run(
    root: &HostRoot,
    libvirt: &LibvirtOptions,
    args: &CheckArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    if args.json
        && args
            .prometheus
            .as_deref()
            .is_some_and(|p| p.as_os_str() == "-")
    {
        return Err(StdoutConflict("--json and --prometheus -").into());
    }
    // A monitoring check never fails with another status: no inventory is UNKNOWN
    // (with --json, the error document says so).
    let inv = match read_inventory(root, Names::Skip) {
        Ok(inv) => inv,
        Err(e) if args.json => return Err(e.into()),
        Err(e) => {
            writeln!(out, "UNKNOWN: cannot read the PCI inventory: {e}")?;
            return Ok(Verdict::Unknown.exit_code());
        }
    };
    let release = inv.kernel_release.as_deref();
    let declarations = config::load(root).map_err(|e| e.to_string());
    let cpu = read_cpu(root);

    // The boot files and rules as host-config and persist would write them now.
    let mut boot_files = Vec::new();
    let mut udev_rules = None;
    if let Ok(decls) = &declarations {
        let facts = read_facts(root, &inv, decls.clone(), false, false, cpu.vendor);
        for file in generate(&facts).files {
            boot_files.push((
                file.path.to_string(),
                file_state(root, file.path, &file.content, OWNED_HEADER),
            ));
        }
        udev_rules = Some(file_state(
            root,
            crate::host::udev::GENERATED_RULES,
            &udev::render_rules(decls),
            udev::RULES_HEADER,
        ));
    }
    // Boot files and rules above leave VFs out (they exist only once their
    // PF's hook creates them); the checks of declared devices cover them.
    let declarations = declarations.map(|d| d.with_vfs(&inv.devices));
    let libvirt = libvirt_views(libvirt, &inv, &declarations);
    let declarations_for_marks = declarations.as_ref().ok().cloned();
    let fabric = fabric(
        root,
        &inv,
        declarations_for_marks
            .as_ref()
            .unwrap_or(&Declarations::default()),
    );
    let health = health_input(root, &inv, declarations.as_ref().ok(), args);
    let record = crate::host::state::read_record(root).ok();
    let facts = Facts {
        inv: &inv,
        cpu: cpu.vendor,
        cpu_flags: cpu.flags,
        cmdline: read(root, "/proc/cmdline")
            .map(|c| c.split_whitespace().map(str::to_string).collect()),
        acpi_tables: fs::read_dir(root.path("/sys/firmware/acpi/tables"))
            .ok()
            .map(|_| {
                (
                    root.path("/sys/firmware/acpi/tables/DMAR").exists(),
                    root.path("/sys/firmware/acpi/tables/IVRS").exists(),
                )
            }),
        irq_remapping: read(root, "/proc/interrupts").map(|t| t.contains("IR-")),
        unsafe_interrupts: read(
            root,
            "/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
        )
        .map(|v| v.trim() == "Y" || v.trim() == "1"),
        modules: ["vfio", "vfio_pci", "vfio_iommu_type1"]
            .iter()
            .map(|m| {
                let m = ModuleName::new(*m);
                let state = module_state(root, release, &m);
                (m, state)
            })
            .collect(),
        declarations,
        vfio_nodes: vfio_nodes(root),
        boot_files,
        udev_rules,
        udev_static_installed: crate::host::udev::RULES_DIRS.iter().any(|d| {
            root.path(d)
                .join(crate::host::udev::STATIC_RULES_NAME)
                .exists()
        }),
        udev_marks: match &declarations_for_marks {
            // A declared PF carries its count; its VFs, created and bound by
            // its hook, carry no mark.
            Some(decls) => {
                let mark = |address: &crate::model::PciAddress, property: &str| {
                    let found = crate::host::udev::udev_property(root, address, property);
                    (*address, found.map(|v| v.is_some()))
                };
                inv.devices
                    .iter()
                    .filter_map(|d| decls.governing(d).map(|g| (d, g.declaration)))
                    .filter(|(_, decl)| decls.vf_source(decl).is_none())
                    .map(|(d, _)| mark(&d.address, udev::DRIVER_PROPERTY))
                    .chain(
                        decls
                            .sriov
                            .iter()
                            .filter(|s| inv.device(&s.address).is_some())
                            .map(|s| mark(&s.address, udev::NUMVFS_PROPERTY)),
                    )
                    .collect()
            }
            None => Vec::new(),
        },
        expectations: args.expect.as_deref().map(expectations),
        pending: record
            .as_ref()
            .map(|r| {
                r.devices
                    .iter()
                    .filter_map(|(a, e)| Some((*a, e.pending.clone()?)))
                    .collect()
            })
            .unwrap_or_default(),
        // An unreadable record only loses the "last on" detail.
        last_drivers: record
            .as_ref()
            .map(|r| r.last_drivers())
            .unwrap_or_default(),
        libvirt,
        fabric,
        interrupted: record.as_ref().and_then(|r| {
            let intent = r.intent.clone()?;
            let autoprobe_now = intent
                .sriov
                .as_ref()
                .and_then(|s| crate::host::sysfs::read_sriov_autoprobe(root, s.pf));
            Some(crate::integrations::check::InterruptedFact {
                state: intent.state(root),
                intent,
                autoprobe_now,
            })
        }),
        health,
    };
    let results = run_checks(&facts);
    let status = overall(&results);

    if let Some(path) = &args.prometheus {
        let mut text = prometheus(&results, status);
        text.push_str(&crate::output::health::prometheus(&facts.health));
        if path.as_os_str() == "-" {
            write!(out, "{text}")?;
        } else {
            config::write_atomic(root, &std::path::absolute(path)?, &text, 0o644)?;
        }
    }
    if args.json {
        write_json(
            out,
            &Report {
                status,
                exit_code: status.exit_code(),
                checks: &results,
            },
        )?;
    } else if args
        .prometheus
        .as_deref()
        .is_none_or(|p| p.as_os_str() != "-")
    {
        let mut table = Table::new(["STATUS", "CHECK", "MESSAGE"]);
        for r in &results {
            let mut message = r.message.clone();
            if let Some(remedy) = &r.remedy {
                message.push_str(&format!(" -> {remedy}"));
            }
            table.row(vec![r.status.label().to_string(), r.id.clone(), message]);
        }
        write!(out, "{}", table.render(""))?;
        writeln!(out, "{}: {} checks", status.label(), results.len())?;
    }
    Ok(status.exit_code())
}
