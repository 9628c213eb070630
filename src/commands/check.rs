//! `vfioctl check`: gather the facts, run the checks, print, exit with the verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::cli::CheckArgs;
use crate::host::config;
use crate::host::hostfacts::{fabric, read_cpu, read_facts};
use crate::host::libvirt::{self, Target};
use crate::host::modules;
use crate::host::sysfs::{read_devices, Names};
use crate::host::vms;
use crate::host::HostRoot;
use crate::integrations::boot_files::{generate, OWNED_HEADER};
use crate::integrations::check::VmHold;
use crate::integrations::check::{
    aer_plan, aer_updates, judged, overall, run_checks, wanted, CheckResult, Counts, Expectation,
    Facts, FileState, HealthInput, LibvirtView, ModuleState, Verdict,
};
use crate::integrations::nodedev::NodeDevice;
use crate::integrations::udev;
use crate::model::declaration::Declarations;
use crate::model::domain::VmFacts;
use crate::model::{Inventory, ModuleName, PciDevice};
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

/// `check --json`: the verdict, its first line, the counts, every check.
#[derive(Serialize)]
struct Report<'a> {
    status: Verdict,
    exit_code: i32,
    /// The monitoring-plugins first line, as printed without `--json`.
    summary: String,
    /// How many checks have each verdict.
    counts: BTreeMap<&'static str, usize>,
    /// How many device families are not judged, by reason.
    not_judged: BTreeMap<&'static str, usize>,
    checks: &'a [CheckResult],
}

impl Report<'_> {
    fn new(results: &[CheckResult], status: Verdict) -> Report<'_> {
        let counts = Counts::of(results);
        Report {
            status,
            exit_code: status.exit_code(),
            summary: crate::output::check::summary(results, status),
            counts: counts
                .by_verdict
                .iter()
                .map(|(v, n)| (v.label(), *n))
                .collect(),
            not_judged: counts
                .not_judged
                .iter()
                .map(|(why, n)| (why.key(), *n))
                .collect(),
            checks: results,
        }
    }
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

/// libvirt asked once for node devices and domains, started before the
/// host is read.
enum LibvirtRead {
    NotAsked(String),
    Asked {
        uri: String,
        /// Node devices and domains, in one helper run.
        both: Option<libvirt::Query>,
        /// Why the domains are not asked (no libvirt socket, --no-libvirt).
        vms_skipped: Option<VmFacts>,
    },
}

fn start_libvirt(options: &LibvirtOptions) -> Result<LibvirtRead, String> {
    let uri = match &options.target {
        Target::Uri(uri) => uri.clone(),
        other => return Ok(LibvirtRead::NotAsked(other.why_not().unwrap_or_default())),
    };
    let vms_skipped = if options.no_libvirt {
        Some(VmFacts::NotAsked(vms::SKIPPED.to_string()))
    } else {
        libvirt::absent(&uri).map(VmFacts::Absent)
    };
    let both = match vms_skipped {
        None => Some(libvirt::start(&uri, libvirt::Want::Both).map_err(|e| e.to_string())?),
        Some(_) => None,
    };
    Ok(LibvirtRead::Asked {
        uri,
        both,
        vms_skipped,
    })
}

/// The node devices (asked only when `needed`) and the domains.
fn finish_libvirt(
    root: &HostRoot,
    read: Result<LibvirtRead, String>,
    timeout: std::time::Duration,
    needed: bool,
) -> (Result<Vec<NodeDevice>, String>, VmFacts) {
    let (uri, both, vms_skipped) = match read {
        Err(e) => return (Err(e.clone()), VmFacts::Failed(e)),
        Ok(LibvirtRead::NotAsked(why)) => return (Err(why.clone()), VmFacts::NotAsked(why)),
        Ok(LibvirtRead::Asked {
            uri,
            both,
            vms_skipped,
        }) => (uri, both, vms_skipped),
    };
    match (both, vms_skipped) {
        (Some(query), _) => match query.finish(timeout) {
            Ok(snapshot) => {
                let nodedevs = snapshot
                    .node_devices
                    .iter()
                    .flatten()
                    .map(|listed| NodeDevice::parse(&listed.name, &listed.xml))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string());
                (nodedevs, vms::from_snapshot(root, &uri, &snapshot))
            }
            Err(e) => (Err(e.to_string()), VmFacts::Failed(e.to_string())),
        },
        (None, vms_skipped) => {
            let vms = vms_skipped.unwrap_or_else(|| VmFacts::NotAsked(String::new()));
            if !needed {
                return (Ok(Vec::new()), vms);
            }
            (
                node_devices(&uri, timeout).map_err(|e| format!("{e:#}")),
                vms,
            )
        }
    }
}

/// For each running domain, each function its live XML names: whether its
/// QEMU holds it.
fn vm_holds(root: &HostRoot, inv: &Inventory, vms: &VmFacts) -> Vec<VmHold> {
    let mut out = Vec::new();
    for d in vms.domains().iter().filter(|d| d.active) {
        let Some(live) = &d.live else { continue };
        for dev in &live.devices {
            let Some(address) = dev.address else { continue };
            if inv.device(&address).is_none() {
                continue;
            }
            out.push(VmHold {
                domain: d.name.clone(),
                address,
                pid: d.qemu_pid,
                held: d.qemu_pid.and_then(|pid| {
                    crate::host::usage::pid_holds(root, inv, pid, &address, dev.mdev.as_deref())
                }),
            });
        }
    }
    out
}

/// What libvirt reports for each declared device, or why it was not asked.
fn libvirt_views(
    target: &Target,
    nodedevs: Result<Vec<NodeDevice>, String>,
    inv: &Inventory,
    declarations: &Result<Declarations, String>,
) -> Result<Vec<LibvirtView>, String> {
    if let Some(why) = target.why_not() {
        return Err(why);
    }
    let Ok(decls) = declarations else {
        return Err("the declarations cannot be read".to_string());
    };
    let declared: Vec<&PciDevice> = decls.declared(&inv.devices).collect();
    if declared.is_empty() {
        return Ok(Vec::new());
    }
    let nodedevs = nodedevs?;
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
    let to_stdout = args
        .prometheus
        .as_deref()
        .is_some_and(|p| p.as_os_str() == "-");
    if args.json && to_stdout {
        return Err(StdoutConflict("--json and --prometheus -").into());
    }
    if args.npd && to_stdout {
        return Err(StdoutConflict("--npd and --prometheus -").into());
    }
    match judge(root, libvirt, args, out) {
        Ok(status) => Ok(status),
        Err(e) => {
            // The first line monitoring shows says why (the error's line
            // goes to stderr as for every command).
            let why = crate::error::one_line(&e);
            if args.npd {
                writeln!(
                    out,
                    "{}",
                    crate::output::check::npd_unknown(&format!("vfioctl check failed: {why}"))
                )?;
            } else if !args.json && !to_stdout {
                writeln!(out, "VFIOCTL UNKNOWN - vfioctl check failed: {why}")?;
            }
            Err(e)
        }
    }
}

fn judge(
    root: &HostRoot,
    libvirt: &LibvirtOptions,
    args: &CheckArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    // libvirt's helper runs while the host is read.
    let libvirt_read = start_libvirt(libvirt);
    let declarations = config::load(root).map_err(|e| e.to_string());
    let expected = args.expect.as_deref().map(expectations);
    let record = crate::host::state::read_record(root).map_err(|e| e.to_string());
    // What the record names is read in depth: its devices' state is checked.
    let mut extra: Vec<crate::model::PciAddress> = Vec::new();
    if let Ok(r) = &record {
        extra.extend(r.pending_devices());
        extra.extend(r.intent.iter().flat_map(|i| i.addresses()));
    }
    // Every device a reset left an outcome for is judged (`reset.ADDRESS`),
    // on a VFIO driver or on none.
    let resets = crate::host::reset::load_state(root);
    if let Ok(state) = &resets {
        extra.extend(state.devices.keys().copied());
    }
    let expected_list: &[Expectation] = match &expected {
        Some(Ok(list)) => list,
        _ => &[],
    };
    // A monitoring check never fails with another status: no inventory is
    // UNKNOWN (with --json, the error document says so).
    let unreadable = |e: crate::host::sysfs::InventoryError, out: &mut dyn Write| {
        let why = format!("cannot read the PCI inventory: {e}");
        if args.json {
            return Err(e.into());
        }
        if args.npd {
            writeln!(out, "{}", crate::output::check::npd_unknown(&why))?;
            return Ok(Verdict::Unknown.npd_exit_code());
        }
        writeln!(out, "VFIOCTL UNKNOWN - {why}")?;
        Ok(Verdict::Unknown.exit_code())
    };
    // Every function is surveyed (IDs, class, driver); the ones some check
    // looks at are read in depth, with every function a domain names.
    let survey = match crate::host::survey::survey(root) {
        Ok(survey) => survey,
        Err(e) => return unreadable(e, out),
    };
    let want = wanted(
        &survey.functions,
        &survey.unread,
        declarations.as_ref().ok(),
        expected_list,
        args.all,
        extra,
    );
    let (nodedevs, vms) = finish_libvirt(root, libvirt_read, libvirt.timeout, want.maybe_declared);
    let mut seeds = want.addresses;
    // The devices the host uses (mounts, swap, routes, the console): read in
    // depth, so an override the next probe would turn against the host is
    // seen on them (`gate::override_threats`).
    let host_uses = crate::host::usage::read_host_wide(root);
    seeds.extend(host_uses.keys().copied());
    for d in vms.domains() {
        seeds.extend(d.all_devices().iter().filter_map(|u| u.device.address));
    }
    seeds.sort();
    seeds.dedup();
    let inv = match read_devices(root, &seeds, Names::Skip) {
        Ok(inv) => inv,
        Err(e) => return unreadable(e, out),
    };
    let release = inv.kernel_release.as_deref();
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
    let libvirt = libvirt_views(&libvirt.target, nodedevs, &inv, &declarations);
    let vm_holds = vm_holds(root, &inv, &vms);
    let declarations_for_marks = declarations.as_ref().ok().cloned();
    let fabric = fabric(
        root,
        &inv,
        declarations_for_marks
            .as_ref()
            .unwrap_or(&Declarations::default()),
    );
    let health = health_input(root, &inv, declarations.as_ref().ok(), args);
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
        expectations: expected,
        override_threats: crate::gate::override_threats(&inv, &host_uses),
        pending: record
            .as_ref()
            .ok()
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
            .ok()
            .map(|r| r.last_drivers())
            .unwrap_or_default(),
        libvirt,
        fabric,
        interrupted: record.as_ref().ok().and_then(|r| {
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
        record: record
            .as_ref()
            .map(|r| r.devices.len())
            .map_err(Clone::clone),
        state_dir: config::trusted_dir(root, "/var/lib/vfioctl").map_err(|e| e.to_string()),
        health,
        vms,
        vm_holds,
        resets,
    };
    let results = run_checks(&facts);
    let status = overall(&results);

    if let Some(path) = &args.prometheus {
        let text = crate::output::prometheus::render(&results, status, &facts.health, &facts.vms);
        if path.as_os_str() == "-" {
            write!(out, "{text}")?;
        } else {
            config::write_atomic(root, &std::path::absolute(path)?, &text, 0o644)?;
        }
    }
    if args.json {
        write_json(out, &Report::new(&results, status))?;
    } else if args.npd {
        writeln!(out, "{}", crate::output::check::npd_line(&results, status))?;
        return Ok(status.npd_exit_code());
    } else if args
        .prometheus
        .as_deref()
        .is_none_or(|p| p.as_os_str() != "-")
    {
        crate::output::check::write_human(out, &results, status)?;
    }
    Ok(status.exit_code())
}
