//! The result ([`NovaConfig`]) and the steps that build it: the request
//! checked, the devices selected, aliases, counts and device specs made,
//! and the notes that explain them (what libvirt will do with each binding,
//! the scheduler list, Placement, what was left out and why).
//!
//! Takes every step from its siblings: `request.rs` (checks), `select.rs`
//! (which devices are offered), `aliases.rs` (aliases, counts, device
//! specs), `tenants.rs` (one-time-use devices' resource providers),
//! `release.rs` (the scheduler filters), `facts.rs` (the `managed` tag and
//! the zone filter's name), and the error from `error.rs`. The text
//! made from a [`NovaConfig`] is `render.rs`.

use std::collections::BTreeMap;

use super::aliases::{make_aliases, make_specs, set_counts, Alias, DeviceSpec};
use super::error::NovaError;
use super::facts::{AZ_FILTER_NAME, MANAGED_TAG};
use super::release::{Release, SchedulerFilters};
use super::request::{check_request, Binding, NovaDevice, Request};
use super::select::{apply_fabric, keep_nova_domains, list, whole_groups, LeftOut};
use super::tenants::OneTimeUse;
use crate::model::address::PciAddress;
use crate::model::device::NovaDeviceType;
use crate::model::inventory::Inventory;

/// Everything to print: configuration, commands and the notes explaining them.
#[derive(Debug, Clone)]
pub struct NovaConfig {
    pub release: Release,
    pub aliases: Vec<Alias>,
    pub specs: Vec<DeviceSpec>,
    pub filters: SchedulerFilters,
    pub placement: bool,
    /// `--one-time-use`: the devices' resource providers and the commands
    /// that return them to service between tenants.
    pub one_time_use: Option<OneTimeUse>,
    /// The devices offered.
    pub devices: Vec<NovaDevice>,
    pub left_out: Vec<LeftOut>,
    /// Alias name of each device, by address.
    pub alias_of: BTreeMap<PciAddress, String>,
    pub notes: Vec<String>,
}

impl NovaConfig {
    /// Decides aliases, device specs, counts and notes. `inv` tells which
    /// other functions share a selected device's IDs (a spec by IDs would
    /// offer them too) and IOMMU group.
    pub fn build(inv: &Inventory, request: Request) -> Result<NovaConfig, NovaError> {
        let release = request.release;
        let checked = check_request(&request)?;
        let placement = checked.placement;
        let mut notes = Vec::new();
        let mut left_out = Vec::new();
        let devices = keep_nova_domains(request.devices.clone(), &mut left_out);
        let devices = apply_fabric(request.fabric, devices, &mut left_out)?;
        let devices = whole_groups(inv, devices, &mut left_out);
        if request.live_migratable {
            if let Some(gpu) = devices.iter().find(|d| d.is_gpu_like()) {
                return Err(NovaError::LiveMigratableGpu(gpu.address));
            }
        }
        if request.one_time_use.is_some() {
            if let Some(vf) = devices.iter().find(|d| d.device_type == NovaDeviceType::Vf) {
                return Err(NovaError::OneTimeUseVf(vf.address));
            }
        }
        let (mut aliases, alias_of) =
            make_aliases(&devices, &request, placement.as_ref(), &mut notes)?;
        set_counts(
            &mut aliases,
            &devices,
            &alias_of,
            request.fabric,
            &mut notes,
        );
        let specs = make_specs(inv, &devices, &request, placement.as_ref());
        binding_notes(release, &devices, &specs, &mut notes);
        let filters = SchedulerFilters::for_release(release, request.az_prefilter);
        scheduler_notes(release, &filters, &request, &mut notes);
        let one_time_use = checked
            .hypervisor
            .map(|hypervisor| OneTimeUse::build(hypervisor, &specs));
        notes.extend(one_time_use.iter().flat_map(OneTimeUse::notes));
        let mut by_reason: BTreeMap<&str, Vec<PciAddress>> = BTreeMap::new();
        for l in &left_out {
            by_reason.entry(&l.reason).or_default().push(l.address);
        }
        let mut left_notes: Vec<String> = by_reason
            .iter()
            .map(|(reason, addrs)| format!("left out {}: {reason}", list(addrs)))
            .collect();
        left_notes.append(&mut notes);
        Ok(NovaConfig {
            release,
            aliases,
            specs,
            filters,
            placement: placement.is_some(),
            one_time_use,
            devices,
            left_out,
            alias_of,
            notes: left_notes,
        })
    }
}

/// What libvirt will do with each device, by its binding.
pub(super) fn binding_notes(
    release: Release,
    devices: &[NovaDevice],
    specs: &[DeviceSpec],
    notes: &mut Vec<String>,
) {
    let on_vfio_only: Vec<PciAddress> = devices
        .iter()
        .filter(|d| d.binding == Binding::VfioNow)
        .map(|d| d.address)
        .collect();
    if !on_vfio_only.is_empty() {
        let why = if release.knows(MANAGED_TAG) {
            "their specs leave \"managed\" at its default (yes), so libvirt may hand them back to the host driver when a VM stops"
        } else {
            "libvirt leaves them alone while they stay there, but nothing rebinds them after a reboot"
        };
        notes.push(format!(
            "{} on a VFIO driver but not declared: {why}; declare them: vfioctl persist add {}",
            list(&on_vfio_only),
            on_vfio_only
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    let on_host: Vec<(PciAddress, String)> = devices
        .iter()
        .filter_map(|d| match &d.binding {
            Binding::Host(driver) => Some((
                d.address,
                driver
                    .as_ref()
                    .map_or_else(|| "no driver".to_string(), ToString::to_string),
            )),
            _ => None,
        })
        .collect();
    if !on_host.is_empty() {
        let shown: Vec<String> = on_host.iter().map(|(a, d)| format!("{a} ({d})")).collect();
        let addrs: Vec<String> = on_host.iter().map(|(a, _)| a.to_string()).collect();
        notes.push(format!(
            "{} not on a VFIO driver: libvirt would have to detach them when a VM starts, which hangs while the host uses them (a GPU held by nvidia-persistenced); bind them first: vfioctl bind {} --persist",
            shown.join(", "),
            addrs.join(" ")
        ));
    }
    if specs.iter().any(|s| s.managed.is_some()) {
        notes.push("\"managed\": \"no\" marks devices vfioctl keeps on vfio-pci: libvirt uses them as they are and never rebinds them".to_string());
    }
}

/// The step Placement's availability zone filtering needs first: host
/// aggregates mirrored into Placement.
pub const SYNC_AGGREGATES: &str = "nova-manage placement sync_aggregates";

/// Notes on the scheduler list and on Placement.
pub(super) fn scheduler_notes(
    release: Release,
    filters: &SchedulerFilters,
    request: &Request,
    notes: &mut Vec<String>,
) {
    if filters.names_az_filter() {
        notes.push(format!(
            "{AZ_FILTER_NAME} stays, as in Nova {}'s default list: it keeps requests for an availability zone (a GPU zone) on that zone's hosts. Drop it before upgrading to 2023.2, which removed it (a scheduler naming it does not start); from Xena on Placement filters zones by default. --az-prefilter moves that work to Placement now",
            release.short()
        ));
    }
    if filters.az_prefilter {
        notes.push(format!(
            "--az-prefilter: {AZ_FILTER_NAME} is left out of Nova {}'s default list and [scheduler] query_placement_for_availability_zone = True has Placement filter hosts by availability zone, as Xena does by default, so the list survives the upgrade to 2023.2. Placement sees only host aggregates mirrored into it: run {SYNC_AGGREGATES} on a controller before restarting nova-scheduler, or requests for a zone find no host. A request for a zone no aggregate carries (the default zone) is then not kept off other zones' hosts",
            release.short()
        ));
    } else if request.az_prefilter {
        notes.push(format!(
            "--az-prefilter: Nova {} filters hosts by availability zone in Placement already (the default from Xena, the only way from 2023.2), so nothing is added",
            release.short()
        ));
    }
    if request.placement.is_some() {
        notes.push("Placement: set [pci] report_in_placement = True on every compute node first, then [filter_scheduler] pci_in_placement = True on nova-api, nova-scheduler and nova-conductor; report_in_placement cannot be switched off again once on (nova-compute refuses to start)".to_string());
    }
}
