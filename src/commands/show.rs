//! `vfioctl show`: one function in depth, with its IOMMU group and verdict.

use std::io::Write;

use serde::Serialize;

use crate::cli::ShowArgs;
use crate::host::state::{self, ChangeEntry};
use crate::host::sysfs::{read_selected, Names};
use crate::host::HostRoot;
use crate::integrations::check::{judge_health, CheckResult, HealthInput};
use crate::model::group::MemberState;
use crate::model::health::FunctionHealth;
use crate::model::{
    CompanionReason, DriverName, Inventory, PciAddress, PciDevice, Selector, SriovRole,
};
use std::collections::BTreeSet;

use crate::host::usage::add_holders;
use crate::host::vms;
use crate::model::domain::{DomainUse, Named, VmFacts};
use crate::model::usage::{DeviceUse, UsageMap};
use crate::output::records::{DeviceRecord, GroupRecord, IommuRecord, VmRecord};

use super::LibvirtOptions;
use crate::output::table::{or_dash, Table};
use crate::output::write_json;

use crate::error::Ambiguous;
use crate::output::labels::{class_label, device_name, iommu_off_note};

/// Resolves a selector that must name exactly one function.
pub fn select_one<'a>(inv: &'a Inventory, text: &str) -> anyhow::Result<&'a PciDevice> {
    let selector: Selector = text.parse()?;
    let matched = inv.select(std::slice::from_ref(&selector))?;
    match matched.as_slice() {
        [one] => Ok(one),
        many => Err(Ambiguous {
            selector: text.to_string(),
            count: many.len(),
            first: many[0].address.to_string(),
        }
        .into()),
    }
}

#[derive(Serialize)]
struct ShowRecord<'a> {
    device: DeviceRecord<'a>,
    /// What vfioctl last changed on this device this boot (/run/vfioctl), or null.
    vfioctl_change: Option<&'a ChangeEntry>,
    iommu: IommuRecord<'a>,
    /// `null` when the device has no IOMMU group (IOMMU off).
    iommu_group: Option<GroupRecord<'a>>,
    /// A PF's VFs present, in `virtfnN` order (absent for other functions).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    vfs: Vec<VfRecord<'a>>,
    /// The libvirt domains whose XML names the device.
    vms: VmsRecord<'a>,
    /// Processes holding the device's nodes, each checked against the QEMU
    /// of the domains using it.
    holders: Vec<HolderRecord<'a>>,
    health: HealthRecord<'a>,
}

/// What `check` would judge of this device: the raw values of it (a VF:
/// then its PF, whose link and AER count for it) and of every port above
/// it, and the verdicts.
#[derive(Serialize)]
struct HealthRecord<'a> {
    functions: Vec<&'a FunctionHealth>,
    checks: &'a [CheckResult],
}

/// The device's health as `check` judges it; the baseline is read, never
/// written, and a bad check.toml is reported among the results.
fn health_of<'a>(root: &HostRoot, inv: &'a Inventory, dev: &'a PciDevice) -> HealthInput<'a> {
    use crate::host::baseline;
    use crate::model::DriverKind;
    let declared = crate::host::config::load(root)
        .ok()
        .map(|d| d.with_vfs(&inv.devices))
        .is_some_and(|d| d.governing(dev).is_some());
    let on_vfio = dev
        .driver
        .as_ref()
        .is_some_and(|d| d.kind() == DriverKind::Vfio);
    let (thresholds, thresholds_from) = match baseline::load_thresholds(root) {
        Ok((t, from)) => (t, Ok(from)),
        Err(e) => (Default::default(), Err(e.to_string())),
    };
    HealthInput {
        judged: vec![dev],
        passthrough: (declared || on_vfio)
            .then_some(dev.address)
            .into_iter()
            .collect(),
        facts: crate::host::health::read_health(
            root,
            inv,
            &[dev],
            crate::host::health::Reading {
                rootport_totals: true,
                enable: true,
            },
        ),
        thresholds,
        thresholds_from,
        baseline: baseline::load_baseline(root),
        now: state::now_unix(),
        new_baseline: false,
        saved: None,
        keeps_baseline: false,
    }
}

#[derive(Serialize)]
struct VmsRecord<'a> {
    /// Whether libvirt answered (false: `domains` is empty because unknown).
    known: bool,
    /// Why the VMs are unknown, when they are.
    note: Option<&'a str>,
    domains: Vec<VmRecord<'a>>,
}

/// A process holding one of the device's nodes.
#[derive(Serialize)]
struct HolderRecord<'a> {
    pid: u32,
    command: &'a str,
    path: &'a str,
    /// The running domain whose QEMU this process is (libvirt's pid file),
    /// or null: a process no domain using the device accounts for.
    domain: Option<&'a str>,
}

/// What the holders and the domains using the device say of each other:
/// each holder matched to the QEMU of a running domain, and each running
/// domain whose QEMU does not hold the device.
fn holder_findings<'a>(
    holders: &'a [DeviceUse],
    users: &[DomainUse<'a>],
) -> (Vec<HolderRecord<'a>>, Vec<String>) {
    let running: Vec<&DomainUse> = users
        .iter()
        .filter(|u| u.domain.active && u.named != Named::Config)
        .collect();
    let records: Vec<HolderRecord> = holders
        .iter()
        .filter_map(|h| match h {
            DeviceUse::Holder { pid, command, path } => Some(HolderRecord {
                pid: *pid,
                command,
                path,
                domain: running
                    .iter()
                    .find(|u| u.domain.qemu_pid == Some(*pid))
                    .map(|u| u.domain.name.as_str()),
            }),
            _ => None,
        })
        .collect();
    let mut findings = Vec::new();
    for u in &running {
        match u.domain.qemu_pid {
            Some(pid) if records.iter().any(|r| r.pid == pid) => {}
            Some(pid) => findings.push(format!(
                "domain {} is running but its QEMU (PID {pid}) holds none of this device's nodes",
                u.domain.name
            )),
            None => findings.push(format!(
                "domain {} is running but its QEMU process is not known (no /run/libvirt/qemu/{}.pid naming it)",
                u.domain.name, u.domain.name
            )),
        }
    }
    for r in records
        .iter()
        .filter(|r| r.domain.is_none() && !running.is_empty())
    {
        findings.push(format!(
            "PID {} ({}) holds {} and is not the QEMU of a running domain using this device",
            r.pid, r.command, r.path
        ));
    }
    (records, findings)
}

/// One VF of the PF shown.
#[derive(Serialize)]
struct VfRecord<'a> {
    index: usize,
    address: PciAddress,
    driver: Option<&'a DriverName>,
    driver_override: Option<&'a DriverName>,
    iommu_group: Option<u32>,
}

/// The VFs of `dev` (a PF) that were read, in `virtfnN` order.
fn vf_records<'a>(inv: &'a Inventory, dev: &PciDevice) -> Vec<VfRecord<'a>> {
    let SriovRole::Pf { vfs, .. } = &dev.sriov else {
        return Vec::new();
    };
    vfs.iter()
        .enumerate()
        .filter_map(|(index, a)| {
            let vf = inv.device(a)?;
            Some(VfRecord {
                index,
                address: vf.address,
                driver: vf.driver.as_ref(),
                driver_override: vf.driver_override.as_ref(),
                iommu_group: vf.iommu_group,
            })
        })
        .collect()
}

pub fn run(
    root: &HostRoot,
    libvirt: &LibvirtOptions,
    args: &ShowArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let selector = args.selector.parse()?;
    // libvirt's helper runs while sysfs is read.
    let vm_read = vms::start(&libvirt.vm_source());
    // An address reads only that function's neighbourhood, not the host.
    let inv = read_selected(root, &[selector], Names::Lookup)?;
    let dev = select_one(&inv, &args.selector)?;
    let vms = vm_read.finish(root);
    let users = vms.users_of(&dev.address);
    let mut held = UsageMap::new();
    add_holders(root, &inv, &BTreeSet::from([dev.address]), &mut held);
    let holders = held.remove(&dev.address).unwrap_or_default();
    let (holder_records, findings) = holder_findings(&holders, &users);
    if let Some(why) = super::vm_note(&vms) {
        crate::output::note(&why);
    }
    let group = inv.group_of(dev);
    // The record is informative here: an unreadable one is reported, not fatal.
    let record = state::read_record(root).unwrap_or_else(|e| {
        eprintln!("vfioctl: warning: {e}");
        Default::default()
    });
    let change = record.entry(&dev.address);
    let health = health_of(root, &inv, dev);
    let checks = judge_health(&inv, &health);
    let subject = match dev.sriov {
        SriovRole::Vf { physfn } => physfn,
        _ => dev.address,
    };

    if args.json {
        write_json(
            out,
            &ShowRecord {
                device: DeviceRecord::new(&inv, dev),
                vfioctl_change: change,
                iommu: IommuRecord::new(&inv),
                iommu_group: group.map(|g| GroupRecord::new(&inv, g)),
                vfs: vf_records(&inv, dev),
                health: HealthRecord {
                    // A VF's own facts, then its PF's path.
                    functions: health
                        .facts
                        .functions
                        .get(&dev.address)
                        .filter(|_| subject != dev.address)
                        .into_iter()
                        .chain(health.facts.path(subject))
                        .collect(),
                    checks: &checks,
                },
                vms: VmsRecord {
                    known: vms.unknown().is_none(),
                    note: vms.unknown(),
                    domains: users.iter().map(VmRecord::new).collect(),
                },
                holders: holder_records,
            },
        )?;
        return Ok(crate::cli::exit::OK);
    }

    writeln!(
        out,
        "{}  {}: {} [{}:{}] (rev {:02x})",
        dev.address,
        class_label(&inv, dev),
        device_name(&inv, dev),
        dev.ids.vendor,
        dev.ids.device,
        dev.revision
    )?;
    let mut facts = Table::default();
    let mut fact = |name: &str, value: String| facts.row(vec![name.to_string(), value]);
    fact(
        "subsystem",
        format!(
            "{}:{}{}",
            dev.ids.subsystem_vendor,
            dev.ids.subsystem_device,
            inv.names
                .subsystem(&dev.ids)
                .map(|n| format!("  {n}"))
                .unwrap_or_default()
        ),
    );
    fact(
        "class",
        format!("{}  {}", dev.class, class_label(&inv, dev)),
    );
    fact(
        "driver",
        match (&dev.driver, &dev.driver_module) {
            (Some(d), Some(m)) => format!("{d} (module {m})"),
            (Some(d), None) => format!("{d} (built in)"),
            (None, _) => "none".to_string(),
        },
    );
    fact("override", or_dash(dev.driver_override.as_ref()));
    if let Some(change) = change {
        fact(
            "changed by",
            format!(
                "vfioctl {} at {} (before: {})",
                change.command,
                state::format_utc(change.changed_at),
                change.previous_driver.as_deref().unwrap_or("no driver")
            ),
        );
        if let Some(pending) = &change.pending {
            fact("pending", pending.clone());
        }
    }
    fact(
        "iommu group",
        match group {
            Some(g) => match &g.domain_type {
                Some(t) => format!("{} ({t})", g.number),
                None => g.number.to_string(),
            },
            None => "none".to_string(),
        },
    );
    fact(
        "kind",
        match dev.header_type {
            Some(_) if dev.is_bridge() => "bridge/port (by header type)".to_string(),
            Some(_) => "endpoint (by header type)".to_string(),
            None => format!(
                "{} (config space unreadable; judged by class)",
                if dev.is_bridge() {
                    "bridge"
                } else {
                    "endpoint"
                }
            ),
        },
    );
    fact(
        "sr-iov",
        match &dev.sriov {
            SriovRole::Pf {
                total_vfs,
                num_vfs,
                vfs,
            } => format!(
                "PF, {num_vfs} of {total_vfs} VFs enabled{}",
                if vfs.is_empty() {
                    ""
                } else {
                    " (listed below)"
                }
            ),
            SriovRole::Vf { physfn } => format!("VF of {physfn}"),
            SriovRole::None => "none".to_string(),
        },
    );
    fact("nova type", dev.nova_device_type().to_string());
    fact("numa node", or_dash(dev.numa_node));
    fact(
        "boot vga",
        if dev.boot_vga { "yes" } else { "no" }.to_string(),
    );
    fact("parent", or_dash(dev.parent));
    let companions: Vec<String> = inv
        .companions(dev)
        .iter()
        .map(|c| {
            let why = match c.reason {
                CompanionReason::SameSlot => "same slot",
                CompanionReason::DeviceLink => "device link",
            };
            format!("{} ({why})", c.address)
        })
        .collect();
    fact(
        "companions",
        if companions.is_empty() {
            "none".to_string()
        } else {
            companions.join(", ")
        },
    );
    fact("power state", or_dash(dev.power_state.as_ref()));
    if dev.config_dead {
        fact(
            "config space",
            "reads all ones: device gone, in D3cold or stuck in reset".to_string(),
        );
    }
    write!(out, "{}", facts.render("  "))?;
    write_vms(out, &vms, &users, &holder_records, &findings)?;
    let vfs = vf_records(&inv, dev);
    if !vfs.is_empty() {
        writeln!(out)?;
        writeln!(out, "Virtual functions of {}:", dev.address)?;
        let mut table = Table::new(["VF", "ADDRESS", "DRIVER", "OVERRIDE", "GROUP"]);
        for vf in &vfs {
            table.row(vec![
                vf.index.to_string(),
                vf.address.to_string(),
                or_dash(vf.driver),
                or_dash(vf.driver_override),
                or_dash(vf.iommu_group),
            ]);
        }
        write!(out, "{}", table.render("  "))?;
    }
    write_health(out, dev, &health, &checks, subject)?;

    writeln!(out)?;
    let Some(group) = group else {
        if !inv.iommu.enabled() {
            writeln!(out, "{}", iommu_off_note())?;
        } else {
            writeln!(out, "No IOMMU group: this device cannot be used with VFIO.")?;
        }
        return Ok(crate::cli::exit::OK);
    };
    let verdict = inv.viability(group);
    writeln!(
        out,
        "IOMMU group {}: {}",
        group.number,
        if verdict.viable {
            "viable for VFIO (every endpoint is on vfio, pci-stub or no driver)"
        } else {
            "NOT viable for VFIO"
        }
    )?;
    let mut members = Table::new(["ADDRESS", "CLASS", "DRIVER", "STATE"]);
    for member in inv.members(group) {
        let state = match MemberState::of(member.is_bridge(), member.driver.as_ref()) {
            MemberState::Bridge => "bridge (ignored)",
            MemberState::Unbound => "no driver",
            MemberState::Vfio => "vfio",
            MemberState::Stub => "stub",
            MemberState::HostDriver => "host driver (blocks)",
        };
        members.row(vec![
            member.address.to_string(),
            class_label(&inv, member),
            or_dash(member.driver.as_ref()),
            state.to_string(),
        ]);
    }
    for other in &group.other_members {
        members.row(vec![
            other.name.clone(),
            "(not PCI)".to_string(),
            or_dash(other.driver.as_ref()),
            match other.driver {
                Some(_) => "host driver (blocks)",
                None => "no driver",
            }
            .to_string(),
        ]);
    }
    write!(out, "{}", members.render("  "))?;
    if !verdict.blockers.is_empty() {
        let blockers: Vec<String> = verdict
            .blockers
            .iter()
            .map(|b| format!("{} ({})", b.device, b.driver))
            .collect();
        writeln!(
            out,
            "  blocked by {}: every endpoint in the group must be on vfio-pci, pci-stub or no driver",
            blockers.join(", ")
        )?;
    }
    Ok(crate::cli::exit::OK)
}

/// The health section: each family's verdict, then the raw values.
fn write_health(
    out: &mut dyn Write,
    dev: &PciDevice,
    health: &HealthInput,
    checks: &[CheckResult],
    subject: PciAddress,
) -> anyhow::Result<()> {
    use crate::model::health::ResetMethods;
    writeln!(out)?;
    writeln!(out, "Health:")?;
    let mut verdicts = Table::new(["STATUS", "CHECK", "MESSAGE"]);
    let prefix = format!("{}: ", dev.address);
    for r in checks {
        let family =
            r.id.strip_prefix("health.")
                .and_then(|rest| rest.split_once('.'))
                .map_or(r.id.as_str(), |(family, _)| family);
        let mut message = r
            .message
            .strip_prefix(&prefix)
            .unwrap_or(&r.message)
            .to_string();
        if let Some(remedy) = &r.remedy {
            message.push_str(&format!(" -> {remedy}"));
        }
        verdicts.row(vec![
            r.status.label().to_string(),
            family.to_string(),
            message,
        ]);
    }
    write!(out, "{}", verdicts.render("  "))?;
    let mut facts = Table::default();
    for (who, text) in crate::output::health::facts_rows(&health.facts, dev.address, subject) {
        facts.row(vec![who, text]);
    }
    if let Some(own) = health.facts.functions.get(&dev.address) {
        let reset = match &own.reset {
            Some(ResetMethods::Listed(m)) if m.is_empty() => "(empty: all disabled)".to_string(),
            Some(ResetMethods::Listed(m)) => m.join(" "),
            Some(ResetMethods::None) => "none (no reset_method, no reset)".to_string(),
            Some(ResetMethods::Unlisted) => "not listed (kernel before 5.15)".to_string(),
            Some(ResetMethods::Unreadable) | None => "unreadable".to_string(),
        };
        facts.row(vec!["reset_method".to_string(), reset]);
        if let Some(enable) = own.enable {
            facts.row(vec![
                "enable".to_string(),
                format!("{enable} (0: no user has it open)"),
            ]);
        }
        if let Some(bar) = own.bar0 {
            facts.row(vec![
                "BAR0".to_string(),
                format!(
                    "{:#x}{}",
                    bar.address(),
                    match bar.assigned {
                        Some(true) => " (the kernel assigned it an address)",
                        Some(false) => " (unassigned)",
                        None => "",
                    }
                ),
            ]);
        }
        if let Some(serial) = &own.serial {
            facts.row(vec!["serial".to_string(), serial.clone()]);
        }
    }
    write!(out, "{}", facts.render("  "))?;
    Ok(())
}

/// The "Virtual machines" section: each domain naming the device, its Nova
/// instance, and the holders checked against the domains' QEMU.
fn write_vms(
    out: &mut dyn Write,
    vms: &VmFacts,
    users: &[DomainUse],
    holders: &[HolderRecord],
    findings: &[String],
) -> anyhow::Result<()> {
    writeln!(out)?;
    let mut table = Table::default();
    let mut fact = |name: &str, value: String| table.row(vec![name.to_string(), value]);
    match vms.unknown() {
        Some(why) => fact("unknown", why.to_string()),
        None if users.is_empty() => fact("none", "no libvirt domain names this device".to_string()),
        None => {}
    }
    for u in users {
        let d = u.domain;
        let managed = match u.device.managed {
            Some(true) => " managed='yes'",
            Some(false) => " managed='no'",
            None => "",
        };
        let mdev = u
            .device
            .mdev
            .as_deref()
            .map(|m| format!(" (mdev {m})"))
            .unwrap_or_default();
        fact(
            "domain",
            format!(
                "{} ({}{}, {}, {})",
                d.name,
                d.state_label(),
                d.id.map(|i| format!(" as id {i}")).unwrap_or_default(),
                if d.persistent {
                    "persistent"
                } else {
                    "transient"
                },
                if d.autostart {
                    "autostarts"
                } else {
                    "no autostart"
                },
            ),
        );
        fact(
            "  names it",
            format!(
                "{}{managed}{mdev} in its {}",
                u.device.kind.label(),
                u.named.label()
            ),
        );
        fact("  uuid", d.uuid.clone());
        if let Some(pid) = d.qemu_pid {
            fact("  qemu pid", pid.to_string());
        }
        if let Some(nova) = d.nova() {
            let owner = |o: &crate::model::domain::NovaOwner| match (&o.name, &o.uuid) {
                (Some(n), Some(u)) => format!("{n} ({u})"),
                (Some(n), None) => n.clone(),
                (None, Some(u)) => u.clone(),
                (None, None) => "-".to_string(),
            };
            fact(
                "  nova instance",
                format!(
                    "{} ({})",
                    nova.name.as_deref().unwrap_or("-"),
                    nova.uuid.as_deref().unwrap_or("-")
                ),
            );
            fact("  flavor", or_dash(nova.flavor.as_ref()));
            fact("  project", owner(&nova.project));
            fact("  user", owner(&nova.user));
            fact("  created", or_dash(nova.creation_time.as_ref()));
            fact("  nova metadata", format!("version {}", nova.version));
        }
    }
    for h in holders {
        fact(
            "holder",
            format!(
                "PID {} ({}) through {}{}",
                h.pid,
                h.command,
                h.path,
                h.domain
                    .map(|d| format!(": the QEMU of domain {d}"))
                    .unwrap_or_default()
            ),
        );
    }
    for f in findings {
        fact("mismatch", f.clone());
    }
    writeln!(out, "Virtual machines:")?;
    write!(out, "{}", table.render("  "))?;
    Ok(())
}
