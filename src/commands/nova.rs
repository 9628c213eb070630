//! `vfioctl nova`: nova.conf settings and openstack commands for the
//! selected devices, for one OpenStack release.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use crate::cli::{FabricArg, NovaArgs, NovaPart, NumaPolicyArg};
use crate::host::config;
use crate::host::hostfacts;
use crate::host::libvirt::Target;
use crate::host::sysfs::{read_inventory, Names};
use crate::host::HostRoot;
use crate::integrations::nova::{
    decide_fabric, derive_alias_name, list_command, Alias, Binding, DeviceSpec, FabricSource,
    FactRecord, HostnameSource, LeftOut, NovaConfig, NovaDevice, NumaPolicy, OneTimeUse,
    OneTimeUseRequest, PlacementRequest, Provider, Release, Request, SchedulerFilters, TypeSource,
    ONE_TIME_USE_TRAIT, RP_UUID,
};
use crate::model::declaration::Declarations;
use crate::model::fabric::{full_fabric, is_nvswitch, Fabric, FabricReading};
use crate::model::{
    DeviceId, DriverKind, DriverName, NovaDeviceType, PciAddress, PciDevice, VendorId,
};
use crate::output::write_json;

use super::{node_devices, parse_selectors, LibvirtOptions};
use crate::error::NothingToConfigure;

/// The device_type of each device, and where it came from.
struct DeviceTypes {
    /// libvirt's derivation by address, when libvirt answered.
    libvirt: Option<BTreeMap<PciAddress, NovaDeviceType>>,
    uri: Option<String>,
    /// Why libvirt was not used, when it was not.
    not_used: Option<String>,
}

impl DeviceTypes {
    fn gather(options: &LibvirtOptions) -> anyhow::Result<DeviceTypes> {
        let uri = match &options.target {
            Target::Uri(uri) => uri.clone(),
            other => {
                return Ok(DeviceTypes {
                    libvirt: None,
                    uri: None,
                    not_used: other.why_not(),
                })
            }
        };
        match node_devices(&uri, options.timeout) {
            Ok(nodedevs) => Ok(DeviceTypes {
                libvirt: Some(
                    nodedevs
                        .iter()
                        .map(|n| (n.address, n.nova_device_type()))
                        .collect(),
                ),
                uri: Some(uri),
                not_used: None,
            }),
            // Unreachable is expected on a machine that only writes the config;
            // malformed XML is not: Nova would choke on it too.
            Err(err) if err.is::<crate::host::libvirt::LibvirtError>() => Ok(DeviceTypes {
                libvirt: None,
                uri: Some(uri),
                not_used: Some(format!("{err:#}")),
            }),
            Err(err) => Err(err),
        }
    }
}

fn is_declared(decls: &Declarations, dev: &PciDevice) -> bool {
    decls.declares_vfio(dev)
}

fn on_vfio(dev: &PciDevice) -> bool {
    dev.driver
        .as_ref()
        .is_some_and(|d| d.kind() == DriverKind::Vfio)
}

#[derive(Serialize)]
struct ReleaseRecord {
    series: Option<String>,
    name: Option<&'static str>,
    nova_version: u16,
    /// What the release knows, from Nova's source at its tag.
    facts: Vec<FactRecord>,
}

#[derive(Serialize)]
struct LibvirtRecord<'a> {
    uri: Option<&'a str>,
    used: bool,
    /// Why libvirt was not used.
    reason: Option<&'a str>,
}

#[derive(Serialize)]
struct DeviceRecord<'a> {
    address: PciAddress,
    vendor_id: VendorId,
    product_id: DeviceId,
    device_type: NovaDeviceType,
    device_type_source: TypeSource,
    binding: &'a Binding,
    iommu_group: Option<u32>,
    alias: &'a str,
}

#[derive(Serialize)]
struct ProviderRecord<'a> {
    #[serde(flatten)]
    provider: &'a Provider,
    find_command: String,
    unreserve_command: String,
}

#[derive(Serialize)]
struct OneTimeUseRecord<'a> {
    hypervisor_hostname: &'a str,
    hypervisor_hostname_source: HostnameSource,
    #[serde(rename = "trait")]
    trait_name: &'static str,
    list_command: String,
    /// Stands for a provider's UUID in the commands.
    uuid_placeholder: &'static str,
    providers: Vec<ProviderRecord<'a>>,
    /// The lines the commands part adds, comments included.
    commands: Vec<String>,
}

impl<'a> OneTimeUseRecord<'a> {
    fn new(otu: &'a OneTimeUse) -> OneTimeUseRecord<'a> {
        OneTimeUseRecord {
            hypervisor_hostname: &otu.hypervisor_hostname,
            hypervisor_hostname_source: otu.hostname_source,
            trait_name: ONE_TIME_USE_TRAIT,
            list_command: list_command(),
            uuid_placeholder: RP_UUID,
            providers: otu
                .providers
                .iter()
                .map(|provider| ProviderRecord {
                    provider,
                    find_command: provider.find_command(),
                    unreserve_command: provider.unreserve_command(),
                })
                .collect(),
            commands: otu.lines(),
        }
    }
}

#[derive(Serialize)]
struct NovaRecord<'a> {
    release: ReleaseRecord,
    libvirt: LibvirtRecord<'a>,
    /// The mode the output follows.
    fabric: Option<Fabric>,
    /// "option" (--fabric) or "host" (read from it); null without a mode.
    fabric_source: Option<FabricSource>,
    /// What the host shows; null on a host without NVSwitches.
    host_fabric: Option<&'a FabricReading>,
    placement: bool,
    /// With --one-time-use; null otherwise.
    one_time_use: Option<OneTimeUseRecord<'a>>,
    devices: Vec<DeviceRecord<'a>>,
    left_out: &'a [LeftOut],
    aliases: &'a [Alias],
    spec_option: &'static str,
    device_specs: &'a [DeviceSpec],
    enabled_filters: &'a [&'static str],
    scheduler_filters: &'a SchedulerFilters,
    flavor_property: String,
    controller_conf: String,
    compute_conf: String,
    commands: Vec<String>,
    notes: &'a [String],
}

fn numa_policy(arg: NumaPolicyArg) -> NumaPolicy {
    match arg {
        NumaPolicyArg::Legacy => NumaPolicy::Legacy,
        NumaPolicyArg::Preferred => NumaPolicy::Preferred,
        NumaPolicyArg::Required => NumaPolicy::Required,
        NumaPolicyArg::Socket => NumaPolicy::Socket,
    }
}

pub fn run(
    root: &HostRoot,
    libvirt: &LibvirtOptions,
    args: &NovaArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let release = match &args.release {
        Some(text) => Release::parse(text)?,
        None => Release::LATEST,
    };
    let selectors = parse_selectors(&args.selectors)?;
    let inv = read_inventory(root, Names::Lookup)?;
    let decls = config::load(root)?.with_vfs(&inv.devices);

    // The default selection: what vfioctl declared, and what is on VFIO now.
    let chosen: Vec<&PciDevice> = if selectors.is_empty() {
        inv.devices
            .iter()
            .filter(|d| is_declared(&decls, d) || on_vfio(d))
            .collect()
    } else {
        inv.select(&selectors)?
    };
    let given = args.fabric.map(|f| match f {
        FabricArg::Shared => Fabric::Shared,
        FabricArg::Full => Fabric::Full,
    });
    let host_fabric = hostfacts::fabric(root, &inv, &decls);
    let board = full_fabric(&inv.devices);
    let board_device = chosen
        .iter()
        .find(|c| board.iter().any(|b| b.address == c.address))
        .map(|d| (d.address, is_nvswitch(d.ids.vendor, d.ids.device)));
    let decision = decide_fabric(given, host_fabric.as_ref(), board_device)?;
    // On an HGX host, which mode was read and from what (or how --fabric
    // contradicts it) goes to stderr too, whatever part is printed.
    if host_fabric.is_some() {
        for note in &decision.notes {
            crate::output::note(note);
        }
    }
    let fabric = decision.mode;
    // Full passthrough hands the whole board to one VM.
    let mut chosen = chosen;
    if fabric == Some(Fabric::Full) {
        for dev in full_fabric(&inv.devices) {
            if !chosen.iter().any(|c| c.address == dev.address) {
                chosen.push(dev);
            }
        }
        chosen.sort_by_key(|d| d.address);
    }
    let (bridges, chosen): (Vec<&PciDevice>, Vec<&PciDevice>) =
        chosen.into_iter().partition(|d| d.is_bridge());
    if chosen.is_empty() {
        return Err(NothingToConfigure(if selectors.is_empty() {
            "no device to configure: none is declared with vfioctl persist or bound to a VFIO driver; name the devices (vfioctl nova 10de:20b0) or bind them first (vfioctl bind SELECTOR --persist)".to_string()
        } else {
            "the selectors match only bridges and ports, which cannot be passed through; name the endpoints behind them".to_string()
        })
        .into());
    }

    let types = DeviceTypes::gather(libvirt)?;
    let mut notes = Vec::new();
    match (&types.libvirt, &types.uri, &types.not_used) {
        (Some(_), Some(uri), _) => notes.push(format!(
            "device_type comes from libvirt at {uri}, from the node device XML Nova reads"
        )),
        (_, _, why) => notes.push(format!(
            "device_type comes from sysfs, by libvirt's rules (VF with a physfn link, PF when sriov_totalvfs > 0, else PCI), because libvirt was not used: {}; confirm with vfioctl nodedev on the compute node",
            why.as_deref().unwrap_or("unknown")
        )),
    }
    notes.extend(decision.notes.iter().cloned());
    if !bridges.is_empty() {
        let addrs: Vec<String> = bridges.iter().map(|d| d.address.to_string()).collect();
        notes.push(format!(
            "left out {}: bridges and ports cannot be passed through",
            addrs.join(", ")
        ));
    }

    let mut devices = Vec::new();
    for dev in &chosen {
        let sysfs_type = dev.nova_device_type();
        let (device_type, type_source) = match &types.libvirt {
            Some(by_address) => match by_address.get(&dev.address) {
                Some(t) => {
                    if *t != sysfs_type {
                        notes.push(format!(
                            "{}: libvirt makes it {t}, sysfs says {sysfs_type}; the alias follows libvirt, which Nova reads (see vfioctl nodedev)",
                            dev.address
                        ));
                    }
                    (*t, TypeSource::Libvirt)
                }
                None => {
                    notes.push(format!(
                        "{} is not a libvirt node device (Nova cannot see it until libvirt does); its device_type comes from sysfs",
                        dev.address
                    ));
                    (sysfs_type, TypeSource::Sysfs)
                }
            },
            None => (sysfs_type, TypeSource::Sysfs),
        };
        let declared = is_declared(&decls, dev);
        if declared && !on_vfio(dev) {
            notes.push(format!(
                "{} is declared but on {} now: run vfioctl persist apply",
                dev.address,
                dev.driver
                    .as_ref()
                    .map_or_else(|| "no driver".to_string(), DriverName::to_string)
            ));
        }
        let binding = if declared {
            Binding::Declared
        } else if on_vfio(dev) {
            Binding::VfioNow
        } else {
            Binding::Host(dev.driver.clone())
        };
        devices.push(NovaDevice {
            address: dev.address,
            vendor: dev.ids.vendor,
            product: dev.ids.device,
            class: dev.class,
            device_type,
            type_source,
            binding,
            iommu_group: dev.iommu_group,
            derived_name: derive_alias_name(
                dev.ids.vendor,
                dev.ids.device,
                inv.names.vendor(dev.ids.vendor),
                inv.names.device(dev.ids.vendor, dev.ids.device),
            ),
        });
    }

    let cfg = NovaConfig::build(
        &inv,
        Request {
            release,
            alias: args.alias.clone(),
            numa_policy: args.numa_policy.map(numa_policy),
            fabric,
            placement: args.placement.then(|| PlacementRequest {
                resource_class: args.resource_class.clone(),
                traits: args.traits.clone(),
            }),
            live_migratable: args.live_migratable,
            one_time_use: args.one_time_use.then(|| match &args.hypervisor_hostname {
                Some(name) => OneTimeUseRequest {
                    hostname: Some(name.clone()),
                    source: HostnameSource::Option,
                },
                None => OneTimeUseRequest {
                    hostname: root.hostname(),
                    source: HostnameSource::Host,
                },
            }),
            vf_parent: args.vf_parent,
            az_prefilter: args.az_prefilter,
            devices,
        },
    )?;
    notes.extend(cfg.notes.iter().cloned());
    if cfg.devices.is_empty() {
        return Err(NothingToConfigure(format!(
            "no device left to offer: {}",
            cfg.left_out
                .iter()
                .map(|l| format!("{} left out: {}", l.address, l.reason))
                .collect::<Vec<_>>()
                .join("; ")
        ))
        .into());
    }

    if args.json {
        write_json(
            out,
            &NovaRecord {
                release: ReleaseRecord {
                    series: release.series(),
                    name: release.name(),
                    nova_version: release.nova_version(),
                    facts: release.facts(),
                },
                libvirt: LibvirtRecord {
                    uri: types.uri.as_deref(),
                    used: types.libvirt.is_some(),
                    reason: types.not_used.as_deref(),
                },
                fabric,
                fabric_source: decision.source,
                host_fabric: host_fabric.as_ref(),
                placement: cfg.placement,
                one_time_use: cfg.one_time_use.as_ref().map(OneTimeUseRecord::new),
                devices: cfg
                    .devices
                    .iter()
                    .map(|d| DeviceRecord {
                        address: d.address,
                        vendor_id: d.vendor,
                        product_id: d.product,
                        device_type: d.device_type,
                        device_type_source: d.type_source,
                        binding: &d.binding,
                        iommu_group: d.iommu_group,
                        alias: &cfg.alias_of[&d.address],
                    })
                    .collect(),
                left_out: &cfg.left_out,
                aliases: &cfg.aliases,
                spec_option: release.spec_option(),
                device_specs: &cfg.specs,
                enabled_filters: &cfg.filters.enabled,
                scheduler_filters: &cfg.filters,
                flavor_property: cfg.flavor_property(),
                controller_conf: cfg.controller_ini(),
                compute_conf: cfg.compute_ini(),
                commands: cfg.commands(),
                notes: &notes,
            },
        )?;
        return Ok(crate::cli::exit::OK);
    }

    match args.part {
        Some(NovaPart::Controller) => write!(out, "{}", cfg.controller_ini())?,
        Some(NovaPart::Compute) => write!(out, "{}", cfg.compute_ini())?,
        Some(NovaPart::Commands) => {
            for line in cfg.commands_part() {
                writeln!(out, "{line}")?;
            }
        }
        None => {
            writeln!(
                out,
                "# OpenStack {release}: {} device(s), {} alias(es)",
                cfg.devices.len(),
                cfg.aliases.len()
            )?;
            writeln!(
                out,
                "\n# Controller nodes (nova-api, nova-scheduler, nova-conductor): nova.conf"
            )?;
            write!(out, "{}", cfg.controller_ini())?;
            writeln!(out, "\n# Compute nodes (nova-compute): nova.conf")?;
            write!(out, "{}", cfg.compute_ini())?;
            writeln!(
                out,
                "\n# Then, {}with the openstack client (FLAVOR and IMAGE are yours; the counts are devices per VM):",
                if cfg.filters.az_prefilter {
                    "nova-manage on a controller node, then "
                } else {
                    ""
                }
            )?;
            for command in cfg.commands() {
                writeln!(out, "{command}")?;
            }
            if let Some(otu) = &cfg.one_time_use {
                writeln!(out)?;
                for line in otu.lines() {
                    writeln!(out, "{line}")?;
                }
            }
            writeln!(out, "\n# Notes:")?;
            for note in &notes {
                writeln!(out, "# - {note}")?;
            }
        }
    }
    Ok(crate::cli::exit::OK)
}
