//! `vfioctl nodedev`: libvirt's PCI node devices, the device_type Nova
//! derives from each, and where libvirt and sysfs disagree.

use std::io::Write;

use serde::Serialize;

use crate::cli::NodedevArgs;
use crate::host::libvirt::Target;
use crate::host::sysfs::{read_inventory, Names};
use crate::host::HostRoot;
use crate::integrations::nodedev::{
    cross_check, select, Comparison, Disagreement, FunctionCapability,
};
use crate::model::{
    ClassCode, DeviceId, DriverName, NovaDeviceType, PciAddress, PciDevice, VendorId,
};
use crate::output::table::{or_dash, Table};
use crate::output::write_json;

use super::{node_devices, parse_selectors, LibvirtOptions};
use crate::error::NeedsConnect;

#[derive(Serialize)]
struct LibvirtRecord<'a> {
    vendor_id: VendorId,
    product_id: DeviceId,
    vendor_name: Option<&'a str>,
    product_name: Option<&'a str>,
    class: Option<ClassCode>,
    nova_device_type: NovaDeviceType,
    nova_parent: Option<PciAddress>,
    iommu_group: Option<u32>,
    numa_node: Option<u32>,
    driver: Option<&'a DriverName>,
    parent: Option<&'a str>,
    capabilities: &'a [FunctionCapability],
}

#[derive(Serialize)]
struct SysfsRecord<'a> {
    vendor_id: VendorId,
    device_id: DeviceId,
    driver: Option<&'a DriverName>,
    iommu_group: Option<u32>,
    nova_device_type: NovaDeviceType,
}

#[derive(Serialize)]
struct DisagreementRecord<'a> {
    #[serde(flatten)]
    disagreement: &'a Disagreement,
    message: String,
}

#[derive(Serialize)]
struct EntryRecord<'a> {
    address: PciAddress,
    name: Option<&'a str>,
    libvirt: Option<LibvirtRecord<'a>>,
    sysfs: Option<SysfsRecord<'a>>,
    disagreements: Vec<DisagreementRecord<'a>>,
}

#[derive(Serialize)]
struct NodedevRecord<'a> {
    uri: &'a str,
    node_devices: usize,
    sysfs_functions: usize,
    /// No disagreement among the selected devices.
    agree: bool,
    devices: Vec<EntryRecord<'a>>,
}

fn sysfs_record(dev: &PciDevice) -> SysfsRecord<'_> {
    SysfsRecord {
        vendor_id: dev.ids.vendor,
        device_id: dev.ids.device,
        driver: dev.driver.as_ref(),
        iommu_group: dev.iommu_group,
        nova_device_type: dev.nova_device_type(),
    }
}

fn entry_record<'a>(c: &'a Comparison<'a>) -> EntryRecord<'a> {
    EntryRecord {
        address: c.address,
        name: c.libvirt.map(|n| n.name.as_str()),
        libvirt: c.libvirt.map(|n| LibvirtRecord {
            vendor_id: n.vendor,
            product_id: n.product,
            vendor_name: n.vendor_name.as_deref(),
            product_name: n.product_name.as_deref(),
            class: n.class,
            nova_device_type: n.nova_device_type(),
            nova_parent: n.nova_parent(),
            iommu_group: n.iommu_group,
            numa_node: n.numa_node,
            driver: n.driver.as_ref(),
            parent: n.parent.as_deref(),
            capabilities: &n.functions,
        }),
        sysfs: c.sysfs.map(sysfs_record),
        disagreements: c
            .disagreements
            .iter()
            .map(|d| DisagreementRecord {
                disagreement: d,
                message: d.to_string(),
            })
            .collect(),
    }
}

/// `virt_functions(maxCount=16, 0 enabled)`, `phys_function(0000:3b:00.0)`, `vpd`.
fn capability_cell(caps: &[FunctionCapability]) -> String {
    if caps.is_empty() {
        return "-".to_string();
    }
    caps.iter()
        .map(|c| match c.kind.as_str() {
            "virt_functions" => match c.max_count {
                Some(max) => format!(
                    "virt_functions(maxCount={max}, {} enabled)",
                    c.addresses.len()
                ),
                None => format!("virt_functions({} enabled)", c.addresses.len()),
            },
            "phys_function" => format!("phys_function({})", or_dash(c.addresses.first())),
            _ => c.kind.clone(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(
    root: &HostRoot,
    libvirt: &LibvirtOptions,
    args: &NodedevArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let selectors = parse_selectors(&args.selectors)?;
    let uri = match &libvirt.target {
        Target::Uri(uri) => uri,
        other => return Err(NeedsConnect(other.why_not().unwrap_or_default()).into()),
    };
    let inv = read_inventory(root, Names::Skip)?;
    let nodedevs = node_devices(uri, libvirt.timeout)?;
    let comparisons = cross_check(&inv, &nodedevs);
    let selected = select(&comparisons, &selectors)?;
    let agree = selected.iter().all(|c| c.disagreements.is_empty());

    if args.json {
        write_json(
            out,
            &NodedevRecord {
                uri,
                node_devices: nodedevs.len(),
                sysfs_functions: inv.devices.len(),
                agree,
                devices: selected.iter().map(|c| entry_record(c)).collect(),
            },
        )?;
        return Ok(crate::cli::exit::OK);
    }

    writeln!(
        out,
        "libvirt {uri}: {} PCI node devices; sysfs: {} PCI functions",
        nodedevs.len(),
        inv.devices.len()
    )?;
    let mut table = Table::new([
        "NAME",
        "ADDRESS",
        "IDS",
        "NOVA",
        "GROUP",
        "DRIVER",
        "CAPABILITIES",
    ]);
    for c in &selected {
        let ids = match (c.libvirt, c.sysfs) {
            (Some(n), _) => format!("{}:{}", n.vendor, n.product),
            (None, Some(d)) => format!("{}:{}", d.ids.vendor, d.ids.device),
            (None, None) => "-".to_string(),
        };
        table.row(vec![
            or_dash(c.libvirt.map(|n| &n.name)),
            c.address.to_string(),
            ids,
            or_dash(c.libvirt.map(|n| n.nova_device_type())),
            or_dash(c.libvirt.and_then(|n| n.iommu_group)),
            or_dash(c.sysfs.and_then(|d| d.driver.as_ref())),
            c.libvirt
                .map_or_else(|| "-".to_string(), |n| capability_cell(&n.functions)),
        ]);
    }
    write!(out, "{}", table.render(""))?;
    if agree {
        writeln!(
            out,
            "libvirt and sysfs agree on all {} devices shown.",
            selected.len()
        )?;
    } else {
        let mut lines = Table::default();
        for c in &selected {
            for d in &c.disagreements {
                lines.row(vec![
                    c.address.to_string(),
                    or_dash(c.libvirt.map(|n| &n.name)),
                    d.to_string(),
                ]);
            }
        }
        let count: usize = selected.iter().map(|c| c.disagreements.len()).sum();
        writeln!(out, "Disagreements ({count}):")?;
        write!(out, "{}", lines.render("  "))?;
    }
    Ok(crate::cli::exit::OK)
}
