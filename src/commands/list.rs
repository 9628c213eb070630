//! `vfioctl list`: one line per PCI function.

use std::io::Write;

use crate::cli::ListArgs;
use crate::host::sysfs::{read_inventory, Names};
use crate::host::HostRoot;
use serde::Serialize;

use crate::host::vms;
use crate::output::records::{vm_cell, DeviceRecord, VmRecord};
use crate::output::table::{or_dash, Table};
use crate::output::{note, write_json};

use super::{parse_selectors, LibvirtOptions};
use crate::output::labels::{
    class_label, device_name, iommu_off_note, sriov_brief, vfs_under_their_pf,
};

/// One element of `list --json`: the device, and the VM that names it.
#[derive(Serialize)]
struct ListRecord<'a> {
    #[serde(flatten)]
    device: DeviceRecord<'a>,
    /// The libvirt domain naming the device (a running one first); null when
    /// none does, or when the VMs are unknown (`vms_known` false).
    vm: Option<VmRecord<'a>>,
    /// Other domains whose XML names the device too.
    other_vms: Vec<&'a str>,
    /// Whether libvirt answered, so that a null `vm` means no VM.
    vms_known: bool,
}

pub fn run(
    root: &HostRoot,
    libvirt: &LibvirtOptions,
    args: &ListArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let selectors = parse_selectors(&args.selectors)?;
    // libvirt's helper starts first and runs while sysfs is read.
    let vm_read = vms::start(&libvirt.vm_source());
    let inv = read_inventory(root, Names::Lookup)?;
    let devices = vfs_under_their_pf(&inv.select(&selectors)?);
    let vms = vm_read.finish(root);

    if !inv.iommu.enabled() {
        note(&iommu_off_note());
    }
    if let Some(why) = super::vm_note(&vms) {
        note(&why);
    }
    if args.json {
        let records: Vec<ListRecord> = devices
            .iter()
            .map(|d| {
                let users = vms.users_of(&d.address);
                ListRecord {
                    device: DeviceRecord::new(&inv, d),
                    vm: users.first().map(VmRecord::new),
                    other_vms: users
                        .iter()
                        .skip(1)
                        .map(|u| u.domain.name.as_str())
                        .collect(),
                    vms_known: vms.unknown().is_none(),
                }
            })
            .collect();
        write_json(out, &records)?;
        return Ok(crate::cli::exit::OK);
    }

    let mut table = Table::new([
        "ADDRESS", "CLASS", "ROLE", "IDS", "DRIVER", "OVERRIDE", "GROUP", "SRIOV", "NOVA", "NUMA",
        "VM", "NAME",
    ]);
    for dev in devices {
        table.row(vec![
            dev.address.to_string(),
            class_label(&inv, dev),
            if dev.is_bridge() {
                "bridge"
            } else {
                "endpoint"
            }
            .to_string(),
            format!("{}:{}", dev.ids.vendor, dev.ids.device),
            or_dash(dev.driver.as_ref()),
            or_dash(dev.driver_override.as_ref()),
            or_dash(dev.iommu_group),
            sriov_brief(dev),
            dev.nova_device_type().to_string(),
            or_dash(dev.numa_node),
            vm_cell(&vms, &dev.address),
            device_name(&inv, dev),
        ]);
    }
    write!(out, "{}", table.render(""))?;
    Ok(crate::cli::exit::OK)
}
