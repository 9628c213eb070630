//! What `vfioctl reset` reads of the host: each device's reset methods and
//! every function a bus reset of it also resets (everything below the bridge
//! above it), its fitness before and after the reset (config space's IDs
//! and BAR registers, the kernel's resources, power state; link and AER
//! counters through `host::health`), and the state it keeps between runs,
//! /var/lib/vfioctl/reset.json (trusted like the AER baseline beside it;
//! written by `reset` and `recover`, under the change lock they hold).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use crate::model::health::ResetMethods;
use crate::model::reset::{ConfigIds, Fitness, ResetEntry, ResetState, Resource};
use crate::model::{PciAddress, PciDevice, SriovRole};

use super::baseline::STATE_DIR;
use super::health::{read_health, Reading as HealthReading};
use super::sysfs::PCI_DEVICES;
use super::{config, HostRoot};

pub const STATE_NAME: &str = "reset.json";

/// /var/lib/vfioctl/reset.json as a path, for messages.
pub fn state_path() -> String {
    format!("{STATE_DIR}/{STATE_NAME}")
}

/// One device as read before its reset.
#[derive(Debug, Clone)]
pub struct DeviceReading {
    /// `reset_method` (or why there is none).
    pub methods: ResetMethods,
    pub fitness: Fitness,
}

/// Every function below the bridge above `address` (its siblings on the
/// bus and everything below them), which a bus reset of it resets too;
/// sorted, without `address`. A device on a root bus has no bridge: every
/// function of its host bridge is listed (a root bus cannot be reset, and
/// the gate refuses what it cannot clear). `Err`: why it cannot be read.
pub fn below_bridge(root: &HostRoot, address: PciAddress) -> Result<Vec<PciAddress>, String> {
    let link = root.path(format!("{PCI_DEVICES}/{address}"));
    let dir = fs::canonicalize(&link).map_err(|e| format!("{}: {e}", link.display()))?;
    let parent = dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", dir.display()))?;
    let mut out = Vec::new();
    walk(parent, &mut out)?;
    out.retain(|a| *a != address);
    out.sort();
    out.dedup();
    Ok(out)
}

/// The PCI functions in `dir` (directories named by address, never a link)
/// and below them.
fn walk(dir: &Path, out: &mut Vec<PciAddress>) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let Some(address) = PciAddress::from_sysfs_name(&entry.file_name().to_string_lossy())
        else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        out.push(address);
        walk(&entry.path(), out)?;
    }
    Ok(())
}

/// The first 64 bytes of `config`: the IDs and the six BAR registers.
fn read_config(dir: &Path, dev: &PciDevice) -> (ConfigIds, Option<Vec<u32>>) {
    let mut header = [0u8; 64];
    let read = fs::File::open(dir.join("config")).and_then(|mut f| f.read_exact(&mut header));
    if read.is_err() {
        return (ConfigIds::Unreadable, None);
    }
    let vf_ids =
        matches!(dev.sriov, SriovRole::Vf { .. }).then_some((dev.ids.vendor, dev.ids.device));
    let ids = ConfigIds::from_header(Some(&header), vf_ids);
    let bars = (0..6)
        .map(|i| {
            let at = 0x10 + 4 * i;
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        })
        .collect();
    (ids, Some(bars))
}

/// Reads `devices` (from `inv`) as a reset needs them: their reset methods
/// and fitness. The driver is the inventory's; `vfio_node` is left for the
/// caller to ask the kernel.
pub fn read(
    root: &HostRoot,
    inv: &crate::model::Inventory,
    devices: &[&PciDevice],
) -> BTreeMap<PciAddress, DeviceReading> {
    let health = read_health(root, inv, devices, HealthReading::default());
    let mut out = BTreeMap::new();
    for dev in devices {
        let dir = root.path(format!("{PCI_DEVICES}/{}", dev.address));
        let link_of = match dev.sriov {
            SriovRole::Vf { physfn } => physfn,
            _ => dev.address,
        };
        let (config, bar_registers) = read_config(&dir, dev);
        let fitness = Fitness {
            config,
            bar_registers,
            resources: fs::read_to_string(dir.join("resource"))
                .map(|t| Resource::parse_file(&t))
                .unwrap_or_default(),
            link_of,
            link: health.functions.get(&link_of).and_then(|f| f.link.clone()),
            aer: health
                .path(link_of)
                .into_iter()
                .filter_map(|f| Some((f.address, f.aer.as_ref()?.totals)))
                .collect(),
            power_state: fs::read_to_string(dir.join("power_state"))
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
            driver: dev.driver.clone(),
            iommu_group: dev.iommu_group,
            vfio_node: None,
        };
        let methods = health
            .functions
            .get(&dev.address)
            .and_then(|f| f.reset.clone())
            .unwrap_or(ResetMethods::Unreadable);
        out.insert(dev.address, DeviceReading { methods, fitness });
    }
    out
}

/// The reset state; empty when there is none yet. `Err` names the file and
/// why it cannot be used (untrusted, unreadable, not a reset state).
pub fn load_state(root: &HostRoot) -> Result<ResetState, String> {
    super::baseline::load_state_json(root, STATE_NAME, "a reset state")
}

/// Writes `updates` into the reset state: read again, replace those
/// entries, write atomically. The caller holds the change lock (`reset`,
/// `recover`), the only writers. A state that cannot be read is replaced.
pub fn save_state(
    root: &HostRoot,
    updates: &BTreeMap<PciAddress, ResetEntry>,
) -> Result<(), String> {
    if updates.is_empty() {
        return Ok(());
    }
    let mut state = load_state(root).unwrap_or_default();
    state
        .devices
        .extend(updates.iter().map(|(a, e)| (*a, e.clone())));
    let text = serde_json::to_string_pretty(&state).expect("a reset state serializes") + "\n";
    config::write_atomic(root, &root.path(STATE_DIR).join(STATE_NAME), &text, 0o644)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_and_keeps_other_devices() {
        use crate::model::reset::Outcome;
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        assert_eq!(load_state(&root).unwrap(), ResetState::default());
        let entry = |outcome| ResetEntry {
            outcome,
            at: 1,
            boot_id: None,
            ids: "8086:10d3".into(),
            method: None,
            findings: vec![],
        };
        let a: PciAddress = "01:00.0".parse().unwrap();
        let b: PciAddress = "02:00.0".parse().unwrap();
        save_state(&root, &BTreeMap::from([(a, entry(Outcome::Unfit))])).unwrap();
        save_state(&root, &BTreeMap::from([(b, entry(Outcome::Verified))])).unwrap();
        let state = load_state(&root).unwrap();
        assert_eq!(state.devices[&a].outcome, Outcome::Unfit);
        assert_eq!(state.devices[&b].outcome, Outcome::Verified);
        std::fs::write(dir.path().join("var/lib/vfioctl/reset.json"), "{").unwrap();
        assert!(load_state(&root)
            .unwrap_err()
            .contains("/var/lib/vfioctl/reset.json: not a reset state"));
    }
}
