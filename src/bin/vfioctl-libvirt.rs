//! vfioctl-libvirt URI: the only program of vfioctl that links libvirt.
//!
//! It opens a read-only connection, lists the PCI node devices and prints
//! `[{"name": ..., "xml": ...}]` on stdout, sorted by name. On failure it
//! prints one line on stderr and exits 2 (cannot connect) or 3 (a query
//! failed). vfioctl runs it with a deadline (see src/host/libvirt.rs), so
//! that vfioctl itself and its udev hook never pay libvirt's start-up cost.

use std::io::Write;

use vfioctl::host::libvirt::{NodeDeviceXml, HELPER_UNREACHABLE};
use virt::connect::Connect;

const QUERY_FAILED: i32 = 3;

/// libvirt's message on one line.
fn message(err: &virt::error::Error) -> String {
    err.message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn fail(status: i32, text: String) -> ! {
    eprintln!("{text}");
    std::process::exit(status);
}

fn main() {
    let Some(uri) = std::env::args().nth(1) else {
        fail(QUERY_FAILED, "usage: vfioctl-libvirt URI".to_string());
    };
    // Without this, libvirt prints every error to stderr itself.
    virt::error::clear_error_callback();
    let conn = Connect::open_read_only(Some(&uri))
        .unwrap_or_else(|e| fail(HELPER_UNREACHABLE, message(&e)));
    let devices = conn
        .list_all_node_devices(virt::sys::VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)
        .unwrap_or_else(|e| {
            fail(
                QUERY_FAILED,
                format!("listing PCI node devices: {}", message(&e)),
            )
        });
    let mut out = Vec::with_capacity(devices.len());
    for dev in &devices {
        let name = dev.name().unwrap_or_else(|e| {
            fail(
                QUERY_FAILED,
                format!("reading a node device name: {}", message(&e)),
            )
        });
        let xml = dev.xml_desc(0).unwrap_or_else(|e| {
            fail(
                QUERY_FAILED,
                format!("reading the XML of {name}: {}", message(&e)),
            )
        });
        out.push(NodeDeviceXml { name, xml });
    }
    // libvirt lists in hash order; callers get a stable one.
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let text = serde_json::to_string(&out).expect("node devices serialise");
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
        .is_err()
    {
        std::process::exit(QUERY_FAILED);
    }
}
