//! `vfioctl show`: one function in depth, with its IOMMU group and verdict.

use std::io::Write;

use serde::Serialize;

use crate::cli::ShowArgs;
use crate::host::state::{self, ChangeEntry};
use crate::host::sysfs::{read_selected, Names};
use crate::host::HostRoot;
use crate::model::group::MemberState;
use crate::model::{
    CompanionReason, DriverName, Inventory, PciAddress, PciDevice, Selector, SriovRole,
};
use crate::output::records::{DeviceRecord, GroupRecord, IommuRecord};
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

pub fn run(root: &HostRoot, args: &ShowArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    // An address reads only that function's neighbourhood, not the host.
    let inv = read_selected(root, &[args.selector.parse()?], Names::Lookup)?;
    let dev = select_one(&inv, &args.selector)?;
    let group = inv.group_of(dev);
    // The record is informative here: an unreadable one is reported, not fatal.
    let record = state::read_record(root).unwrap_or_else(|e| {
        eprintln!("vfioctl: warning: {e}");
        Default::default()
    });
    let change = record.entry(&dev.address);

    if args.json {
        write_json(
            out,
            &ShowRecord {
                device: DeviceRecord::new(&inv, dev),
                vfioctl_change: change,
                iommu: IommuRecord::new(&inv),
                iommu_group: group.map(|g| GroupRecord::new(&inv, g)),
                vfs: vf_records(&inv, dev),
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
