//! `vfioctl list`: one line per PCI function.

use std::io::Write;

use crate::cli::ListArgs;
use crate::host::sysfs::{read_inventory, Names};
use crate::host::HostRoot;
use crate::output::records::DeviceRecord;
use crate::output::table::{or_dash, Table};
use crate::output::{note, write_json};

use super::parse_selectors;
use crate::output::labels::{
    class_label, device_name, iommu_off_note, sriov_brief, vfs_under_their_pf,
};

pub fn run(root: &HostRoot, args: &ListArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let selectors = parse_selectors(&args.selectors)?;
    let inv = read_inventory(root, Names::Lookup)?;
    let devices = vfs_under_their_pf(&inv.select(&selectors)?);

    if !inv.iommu.enabled() {
        note(&iommu_off_note());
    }
    if args.json {
        let records: Vec<DeviceRecord> =
            devices.iter().map(|d| DeviceRecord::new(&inv, d)).collect();
        write_json(out, &records)?;
        return Ok(crate::cli::exit::OK);
    }

    let mut table = Table::new([
        "ADDRESS", "CLASS", "ROLE", "IDS", "DRIVER", "OVERRIDE", "GROUP", "SRIOV", "NOVA", "NUMA",
        "NAME",
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
            device_name(&inv, dev),
        ]);
    }
    write!(out, "{}", table.render(""))?;
    Ok(crate::cli::exit::OK)
}
