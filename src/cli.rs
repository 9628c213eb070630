//! Command-line definitions, and nothing else.
//!
//! `build.rs` includes this file to generate the man page and shell
//! completions, so it may only depend on `clap` and `std`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Safe, repeatable and checkable PCI passthrough (VFIO) for KVM hosts.
///
/// vfioctl reads the host's PCI devices and IOMMU groups straight from sysfs
/// and shows what can be handed to a virtual machine, and how.
#[derive(Debug, Parser)]
#[command(
    name = "vfioctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Resolve every host path (/sys, /proc, /dev, /etc, /run, /lib/modules) under DIR.
    ///
    /// Used by tests and for inspecting a copied-off snapshot of a host. A
    /// DIR that resolves to this machine's / (by device and inode: /proc/..,
    /// a link to /) is this host, with its libvirt, udev and modprobe.
    #[arg(
        long,
        global = true,
        env = "VFIOCTL_ROOT",
        value_name = "DIR",
        default_value = "/"
    )]
    pub root: PathBuf,

    /// libvirt URI for the commands that ask libvirt (nodedev, nova, check, list, show, and changes that give devices away), like `virsh -c`.
    ///
    /// Default: qemu:///system, but only with --root /: a host tree under
    /// another --root has no libvirt of its own unless a URI names one (e.g.
    /// test:///abs/path/node.xml or qemu+ssh://host/system). The connection is
    /// read-only.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "VFIOCTL_CONNECT",
        value_name = "URI"
    )]
    pub connect: Option<String>,

    /// Seconds to wait for libvirt before giving up on it.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10)]
    pub connect_timeout: u64,

    /// Do not ask libvirt which VMs use the devices (see VIRTUAL MACHINES).
    ///
    /// restore, unbind, bind --driver to a non-VFIO driver, persist remove
    /// and an sriov change that destroys VFs ask libvirt for every domain
    /// first, and refuse while libvirt is there but does not answer within
    /// --connect-timeout. With --no-libvirt they proceed without the VM rules
    /// (the holder search still runs); list, show and check report the VMs
    /// as unknown. nodedev, nova and check's libvirt view are not affected.
    #[arg(long, global = true)]
    pub no_libvirt: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List PCI functions with driver, IOMMU group, SR-IOV role and Nova device_type.
    ///
    /// With no SELECTOR every function is listed. Several selectors list the
    /// union; each one must match at least one function.
    List(ListArgs),
    /// Show one PCI function in depth, with its IOMMU group and the group's viability.
    Show(ShowArgs),
    /// Bind devices to vfio-pci (or another driver) now, without a reboot.
    ///
    /// The default driver is vfio-pci, or the most specific VFIO variant driver
    /// that modules.alias offers for the device. Companion functions (a GPU's
    /// audio and USB functions) are included automatically; SR-IOV functions
    /// never are (a VF has no companions and is never one, so binding a VF
    /// never takes its PF or a sibling VF, even where they share a slot as on
    /// an A100), and a PF with VFs enabled is refused. The change is
    /// planned first and refused, with nothing written, when an IOMMU group
    /// would be left non-viable, when the host uses a device (mounted
    /// filesystem, swap, network addresses or routes, console) or when a
    /// process holds it. Each device is verified after the change; on any
    /// failure every device already changed is put back.
    Bind(BindArgs),
    /// Set an SR-IOV physical function's VF count and bind the VFs, in one verified step.
    ///
    /// SELECTOR must match one SR-IOV PF. When the VFs go to vfio-pci (the
    /// default: vfio-pci or each VF's best VFIO variant) or pci-stub,
    /// sriov_drivers_autoprobe is set to 0 first, so no native VF driver
    /// ever probes them, and put back afterwards. A non-zero count is changed
    /// through 0 (the kernel refuses N -> M). The VFs' virtfn links are waited
    /// for (--timeout), then each VF is bound through the same plan, safety
    /// gate, verification and rollback as bind. On any failure the VFs bound
    /// are put back, the VF count goes back to what it was and autoprobe is
    /// restored; the report says what was verified. Only the new VFs are
    /// bound, never the PF: the plan lists their addresses from sriov_offset
    /// and sriov_stride. Refused, with nothing written: a device that is not a
    /// PF, a count above sriov_totalvfs, a PF without a driver, destroying VFs
    /// (a lower count, or any change of a non-zero count) while a process
    /// holds one (a VM's /dev/vfio/N): the holder is named and --force does not
    /// override it; and without --force a count change on a PF the host uses
    /// (addresses, routes, mounts, the root filesystem, the console), which
    /// some drivers reset when SR-IOV is enabled or disabled: the plan and its
    /// JSON name each use. Already at the count with the VFs on the driver:
    /// nothing to do.
    Sriov(SriovArgs),
    /// Return devices to the driver the kernel picks without an override (the host driver).
    ///
    /// Clears the override, unbinds from vfio-pci and reprobes; companions bound
    /// with the device come back too. Refused while a process (a VM) holds the
    /// device's VFIO group or a running libvirt domain uses it, and unless
    /// --force while a defined domain's config names it (see VIRTUAL MACHINES).
    Restore(ChangeArgs),
    /// Put back a change that was interrupted (killed, out of memory) or whose rollback failed.
    ///
    /// Every change records its intent in /run/vfioctl/changes.json before its
    /// first kernel write: the command, each device's driver and override before
    /// and the plan's target, and for sriov the VF count and
    /// sriov_drivers_autoprobe before. It is cleared once the change is verified
    /// or put back. While one is recorded this boot, check is CRITICAL naming
    /// its devices, and bind, restore, unbind, sriov, reset, persist apply and
    /// the udev hook refuse (status 4) until recover has run. recover does what the
    /// interrupted change's own rollback would have done, never completes it:
    /// each device it touched back to its driver and override before, and for
    /// SR-IOV the VF count (through 0), the VFs' VFIO or pci-stub drivers and
    /// autoprobe as recorded before it. It is planned from the record and the
    /// devices as they are now, through the same safety gate (a process holding
    /// a device refuses it), applied with verification and rollback, and clears
    /// the record only once verified. Run the command again afterwards if the
    /// change is still wanted. An interrupted reset is not reset again:
    /// recover writes back the reset_method it narrowed (--method) and
    /// records its devices unverified (see BETWEEN TENANTS). An intent from an earlier boot describes kernel
    /// state that is gone: it is ignored, and recover clears it.
    Recover(RecoverArgs),
    /// Reset passthrough devices between tenants, and verify each is fit for the next.
    ///
    /// Only devices on a VFIO driver or on none are reset, each with the
    /// kernel's own reset (its reset_method order: device_specific, acpi,
    /// flr, af_flr, pm, bus, cxl_bus), or with the one --method names, after
    /// which reset_method is put back as it was. Refused, never forced, with
    /// nothing written: a device on a host driver (named), with no reset
    /// method (reset_method absent or empty) or without the method asked
    /// for; and when the device, or any function the reset may also reset (a
    /// bus reset resets every function below the bridge above the device:
    /// with no --method the worst listed method counts), is on a host driver,
    /// held by a process, used by a running libvirt domain or used by the
    /// host (see SAFETY RULES). A reset that does not return within --timeout
    /// is left pending in the kernel (exit 8). Each device is then read
    /// again and compared with before: config space answers with the same
    /// IDs, the BARs and the kernel's resources are as before, the link is
    /// back at its width and speed (or its maximum), no new fatal or nonfatal
    /// AER error on it or a port above it, power state D0, the same driver,
    /// and /dev/vfio/N for a device on a VFIO driver. A device that fails is
    /// reported, exit 1, and check reports it CRITICAL until a later reset
    /// verifies it (see BETWEEN TENANTS). Recorded like every change: an
    /// interrupted reset is found by check and put back by recover.
    Reset(ResetArgs),
    /// Leave devices with no driver at all (e.g. before a reset or removal).
    ///
    /// The override is kept, so a later probe binds the overridden driver again.
    Unbind(ChangeArgs),
    /// Declare bindings that survive reboots and device re-adds (/etc/vfioctl/bindings.d).
    ///
    /// Declarations are enforced by udev when a device is added (hot-plug,
    /// boot) and by `persist apply` now, without a reboot.
    Persist {
        #[command(subcommand)]
        action: PersistAction,
    },
    /// Preview (default) or write the boot-time files for declared bindings.
    ///
    /// modprobe.d softdeps so vfio-pci loads before native drivers,
    /// modules-load.d, initramfs-tools or dracut inclusion (whichever the host
    /// uses), and the kernel command line the IOMMU needs with the
    /// distribution's command to set it. Never edits the boot loader.
    HostConfig(HostConfigArgs),
    /// Node health check: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    ///
    /// Checks CPU virtualization, the kernel command line, the IOMMU (firmware
    /// table, units and groups, interrupt remapping), the vfio modules, every
    /// declared binding (present, on its driver, override set, /dev/vfio node,
    /// group viable), the boot files and udev rules, the change record,
    /// libvirt's view when reachable, and optional expected counts. Then
    /// whether each device is fit for the next VM (every declared device and
    /// every device on a VFIO driver; --all adds every GPU and NVSwitch): PCIe
    /// link width and speed to the root port, AER errors since a baseline,
    /// reset method, power state, BAR0 and config space, and SR-IOV PFs (see
    /// DEVICE HEALTH). Runs without privileges; what it cannot read is
    /// UNKNOWN, never OK; what the host cannot report by design (firmware-first
    /// AER) is OK with the reason unless check.toml says otherwise. The first
    /// line is the monitoring-plugins summary, the table follows (see
    /// MONITORING).
    Check(CheckArgs),
    /// Show libvirt's PCI node devices with the device_type Nova derives, cross-checked with sysfs.
    ///
    /// Nova reads libvirt's node device XML: the first `virt_functions`
    /// capability makes a device type-PF (even with no VF enabled), the first
    /// `phys_function` with an address type-VF, anything else type-PCI; the
    /// address comes from the XML, not the name. Each device is compared with
    /// the sysfs inventory and every disagreement is listed (missing on one
    /// side, IOMMU group, IDs, device_type, driver). DRIVER is the sysfs
    /// driver. Exits 0 when the comparison ran, disagreements or not.
    Nodedev(NodedevArgs),
    /// Print nova.conf settings and openstack commands for passing devices through.
    ///
    /// For the controller (nova-api, nova-scheduler, nova-conductor): `[pci]
    /// alias` entries with vendor, product and device_type, and
    /// `[filter_scheduler] enabled_filters`: the release's default filters
    /// plus PciPassthroughFilter (up to Wallaby that default holds
    /// AvailabilityZoneFilter, which 2023.2 removed: a comment says to drop
    /// it before that upgrade, and --az-prefilter has Placement filter zones
    /// instead). For compute nodes: `[pci] passthrough_whitelist`
    /// (before Zed) or `device_spec` (Zed on), with `"managed": "no"` (2025.1 on)
    /// for devices declared with vfioctl persist, and the aliases again. Then
    /// one flavor property requesting every alias (`pci_passthrough:alias=a:1,b:2`)
    /// and the image command. Devices sharing an IOMMU group are offered only
    /// whole: the flavor requests every device of their aliases, and a device
    /// whose group holds endpoints not offered is left out with the reason. On
    /// HGX hosts NVSwitches follow the fabric mode, read from the host or
    /// given with --fabric. The device_type comes from libvirt
    /// when it can be asked (what Nova reads), else from sysfs by the same
    /// rules; a note says which. Nothing is written.
    Nova(NovaArgs),
    /// Enforce the declared binding of one device; run by udev when it is added.
    ///
    /// Acts on ACTION=add, and on ACTION=bind only for a PF declared in an
    /// [[sriov]] table (its VFs need its driver); other bind, unbind and
    /// change events are ignored. Logs to syslog or the kernel log, since
    /// udev discards output.
    UdevHook(UdevHookArgs),
}

#[derive(Debug, Subcommand)]
pub enum PersistAction {
    /// Declare devices: an address declares that function (its IDs are recorded
    /// and checked), VENDOR:DEVICE declares every such function; companions follow.
    Add(PersistAddArgs),
    /// Remove declarations (devices stay bound until `vfioctl restore`).
    Remove(PersistRemoveArgs),
    /// List declarations, the devices they cover and whether those are bound.
    List(PersistListArgs),
    /// Enforce every declaration now, without a reboot (same plan and refusals as bind).
    Apply(PersistApplyArgs),
    /// Print the udev rules generated from the declarations (--write installs them).
    ///
    /// add and remove keep the rules current; run this after editing
    /// /etc/vfioctl/bindings.d by hand.
    Rules(PersistRulesArgs),
}

#[derive(Debug, Args)]
pub struct PersistRulesArgs {
    /// Write /etc/udev/rules.d/69-vfioctl-bindings.rules and reload udev.
    #[arg(long)]
    pub write: bool,
}

#[derive(Debug, Args)]
pub struct PersistAddArgs {
    /// Devices to declare (see SELECTORS).
    #[arg(value_name = "SELECTOR", required = true)]
    pub selectors: Vec<String>,

    /// Driver to declare instead of vfio-pci or its best variant
    /// (letters, digits, - and _).
    #[arg(long, value_name = "NAME")]
    pub driver: Option<String>,

    /// Declare even devices the host uses in ways --force may override
    /// (addresses, routes, mounts, the console); never the root filesystem,
    /// swap or a network root's transport (see SAFETY).
    #[arg(long)]
    pub force: bool,

    /// For declarations by IDs: how many functions they must cover (default:
    /// the number present now); fewer present makes `check` CRITICAL.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub expect: Option<u32>,

    /// Print what would be declared and write nothing: the same checks,
    /// refusals and exit statuses as without it.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct PersistRemoveArgs {
    /// Declarations to remove: their key (address or IDs), or any selector
    /// matching the devices they govern.
    #[arg(value_name = "SELECTOR", required = true)]
    pub selectors: Vec<String>,

    /// Print what would be removed and remove nothing: the same checks,
    /// refusals and exit statuses as without it.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove declarations of devices a defined (not running) VM's config
    /// names; never those of devices a running VM uses (see VIRTUAL MACHINES).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PersistListArgs {
    /// Print a JSON array (schema in the man page).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PersistApplyArgs {
    /// Print the plans and write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Seconds to wait for each unbind, for each bind to verify, and for the lock.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub timeout: u64,

    /// Print the reports as a JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HostConfigArgs {
    /// Write the files (only those vfioctl owns; unchanged files are left alone).
    #[arg(long, conflicts_with = "remove")]
    pub write: bool,

    /// Delete the files vfioctl wrote.
    #[arg(long)]
    pub remove: bool,

    /// Also blacklist the native drivers (affects every device they drive).
    #[arg(long)]
    pub blacklist: bool,

    /// Also claim the declared IDs ID-wide with `options vfio-pci ids=`.
    #[arg(long)]
    pub ids: bool,

    /// With --write or --remove: the same checks, refusals and exit
    /// statuses, and the files' status, but nothing is written or removed.
    #[arg(long)]
    pub dry_run: bool,

    /// Print a JSON object (schema in the man page).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print a JSON object (schema in the man page).
    #[arg(long)]
    pub json: bool,

    /// Also write the node_exporter textfile-collector format to FILE (atomically; - for stdout).
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<std::path::PathBuf>,

    /// Follow Node Problem Detector's custom plugin contract: one line of at
    /// most 80 bytes naming the worst check, exit 0 OK, 1 a problem (WARNING
    /// or CRITICAL), 2 UNKNOWN (see NODE PROBLEM DETECTOR).
    #[arg(long, conflicts_with = "json")]
    pub npd: bool,

    /// Expected counts, as TOML: [[expect]] ids = "10de:20b0", driver = "vfio-pci", count = 8.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<std::path::PathBuf>,

    /// Judge the health of every GPU and NVSwitch too, not only declared
    /// devices and devices on a VFIO driver.
    #[arg(long)]
    pub all: bool,

    /// Take the AER error counts read now as the new baseline of every
    /// device judged and the ports above it (once the errors were looked
    /// into): a rise is reported on every run until then.
    #[arg(long)]
    pub new_aer_baseline: bool,
}

#[derive(Debug, Args)]
pub struct NodedevArgs {
    /// Devices to show (see SELECTORS); a device only libvirt knows matches by
    /// address, IDs, class, libvirt's driver or group.
    #[arg(value_name = "SELECTOR")]
    pub selectors: Vec<String>,

    /// Print a JSON object (schema in the man page) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NovaArgs {
    /// Devices to configure (see SELECTORS). Default: every device declared
    /// with vfioctl persist or bound to a VFIO driver now. Bridges are left out.
    #[arg(value_name = "SELECTOR")]
    pub selectors: Vec<String>,

    /// OpenStack release: train, ussuri, victoria, wallaby, xena, yoga, zed,
    /// 2023.1 (antelope), 2023.2 (bobcat), 2024.1 (caracal), 2024.2 (dalmatian),
    /// 2025.1 (epoxy), 2025.2 (flamingo), 2026.1 (gazpacho), 2026.2 (hibiscus),
    /// or a later YEAR.N. Default: 2026.2.
    #[arg(long, value_name = "NAME")]
    pub release: Option<String>,

    /// Alias name, when the devices need exactly one alias (one vendor:product
    /// and device_type). Default: derived from pci.ids, e.g. nvidia-a100-sxm4-40gb.
    #[arg(long, value_name = "NAME")]
    pub alias: Option<String>,

    /// numa_policy of the aliases: legacy, preferred, required or socket (socket
    /// needs Wallaby or later). Default: none given, which Nova takes as legacy.
    #[arg(long, value_name = "POLICY")]
    pub numa_policy: Option<NumaPolicyArg>,

    /// HGX NVLink fabric: shared (Fabric Manager on the host keeps the
    /// NVSwitches, which are never offered; only GPUs go to VMs) or full (every
    /// GPU and NVSwitch of the host goes to one VM, requested by one flavor).
    /// Default: read from the host once a GPU or NVSwitch of the board is
    /// selected: full when every NVSwitch is on a VFIO driver or declared for
    /// one and Fabric Manager is neither enabled nor running, shared when
    /// every NVSwitch is on nvidia and Fabric Manager is enabled or running;
    /// refused when the host says neither. A note says which mode was read
    /// and from what. Given, it wins over the host (with a note when they
    /// disagree).
    #[arg(long, value_name = "MODE")]
    pub fabric: Option<FabricArg>,

    /// Up to Wallaby: have Placement filter hosts by availability zone
    /// (`[scheduler] query_placement_for_availability_zone = True`, after
    /// `nova-manage placement sync_aggregates`, printed first among the
    /// commands) and leave AvailabilityZoneFilter out of enabled_filters, as
    /// Xena does by default. Default: the release's own list, with
    /// AvailabilityZoneFilter. From Xena on Placement does this already and
    /// nothing is added.
    #[arg(long)]
    pub az_prefilter: bool,

    /// Track and schedule the devices in Placement (2023.1 on): `[pci]
    /// report_in_placement` on compute nodes (it cannot be switched off
    /// again), `[filter_scheduler] pci_in_placement` on controllers, and a
    /// resource_class in every device spec and alias.
    #[arg(long)]
    pub placement: bool,

    /// Resource class for --placement, when the devices need one alias
    /// (CUSTOM_ is added when missing). Default: Nova's own,
    /// CUSTOM_PCI_<VENDOR>_<PRODUCT>.
    #[arg(long, value_name = "NAME", requires = "placement")]
    pub resource_class: Option<String>,

    /// A trait for the devices in Placement (repeatable; CUSTOM_ is added when missing).
    #[arg(long = "trait", value_name = "NAME", requires = "placement")]
    pub traits: Vec<String>,

    /// Mark the devices live-migratable (`"live_migratable": "yes"` in device
    /// specs and aliases, 2025.1 on). Refused for GPUs and NVSwitches.
    #[arg(long)]
    pub live_migratable: bool,

    /// Mark the devices one-time-use (`"one_time_use": "true"` in their
    /// device specs; 2025.2 on, with --placement; type-PCI and type-PF
    /// devices only, a VF is refused). After a VM used such a device, Nova
    /// keeps it reserved in Placement until it is un-reserved: the commands
    /// part names each device's resource provider and prints the commands
    /// that list the waiting devices and return one to service once
    /// `vfioctl reset` has verified it (see BETWEEN TENANTS).
    #[arg(long)]
    pub one_time_use: bool,

    /// The hypervisor hostname Nova names the devices' Placement resource
    /// providers after (HOSTNAME_ADDRESS), with --one-time-use: the name
    /// libvirt reports on the compute node (`virsh hostname`). Default: this
    /// host's name (/proc/sys/kernel/hostname under --root); libvirt reports a
    /// name without a dot as the resolver's canonical name (often the FQDN),
    /// so compare. Letters, digits, '.', '-' and '_'.
    #[arg(long, value_name = "NAME", requires = "one_time_use")]
    pub hypervisor_hostname: Option<String>,

    /// Device specs for VFs name their PF's address (Nova matches a VF by its
    /// parent) when every VF of that PF with the IDs is offered, instead of
    /// one spec per VF address.
    #[arg(long)]
    pub vf_parent: bool,

    /// Print only one part, as it goes into its file or shell: controller
    /// (nova.conf for nova-api, nova-scheduler and nova-conductor), compute (nova.conf for
    /// nova-compute) or commands (the openstack client commands).
    #[arg(long, value_name = "PART", conflicts_with = "json")]
    pub part: Option<NovaPart>,

    /// Print a JSON object (schema in the man page) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NumaPolicyArg {
    Legacy,
    Preferred,
    Required,
    Socket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FabricArg {
    Shared,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NovaPart {
    Controller,
    Compute,
    Commands,
}

#[derive(Debug, Args)]
pub struct UdevHookArgs {
    /// The device's address (udev passes $kernel); default: PCI_SLOT_NAME from udev.
    #[arg(value_name = "ADDRESS")]
    pub device: Option<String>,

    /// Seconds to wait for each unbind and bind; udev kills RUN programs after about 180.
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Devices to list: an address (0000:25:00.0, 25:00.0), VENDOR:DEVICE (10de:20b0),
    /// VENDOR: (10de:), class=gpu|net|nvme|storage|HEX, driver=NAME|none, group=N.
    #[arg(value_name = "SELECTOR")]
    pub selectors: Vec<String>,

    /// Print a JSON array (schema in the man page) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The device: any selector that matches exactly one PCI function.
    #[arg(value_name = "SELECTOR")]
    pub selector: String,

    /// Print a JSON object (schema in the man page) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BindArgs {
    /// Driver to bind to instead of vfio-pci or its best variant (e.g. pci-stub, or a host driver).
    #[arg(long, value_name = "NAME")]
    pub driver: Option<String>,

    /// Also bind every other endpoint of the devices' IOMMU groups (bridges are never touched).
    #[arg(long)]
    pub with_group: bool,

    /// After a successful bind, also declare the devices (as `persist add` does).
    #[arg(long)]
    pub persist: bool,

    #[command(flatten)]
    pub change: ChangeArgs,
}

#[derive(Debug, Args)]
pub struct SriovArgs {
    /// The physical function (see SELECTORS); it must match one function.
    #[arg(value_name = "SELECTOR")]
    pub selector: String,

    /// The number of VFs wanted, 0 to the PF's sriov_totalvfs (0 removes them).
    #[arg(long, value_name = "N")]
    pub numvfs: u16,

    /// Driver for the VFs instead of vfio-pci or their best VFIO variant
    /// (e.g. pci-stub, or the native VF driver such as igbvf).
    #[arg(long, value_name = "NAME")]
    pub driver: Option<String>,

    /// Print the plan (the sysfs writes) and write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Once the change is verified, declare it in /etc/vfioctl/bindings.d
    /// (an [[sriov]] table: the count and the VFs' driver), applied again at
    /// boot and when the PF is added (see PERSISTENT BINDINGS).
    #[arg(long)]
    pub persist: bool,

    /// Destroy VFs the host uses in ways --force may override (addresses,
    /// routes, mounts), and change the count of a PF the host uses (a reset
    /// may interrupt it). Never VFs a process holds.
    #[arg(long)]
    pub force: bool,

    /// Seconds to wait for each sriov_numvfs write, for the VFs to appear,
    /// for each VF's bind to verify, and for the lock.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub timeout: u64,

    /// Print the plan and result as one JSON object (schema in the man page).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Print what was interrupted and the plan putting it back; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Pass uses --force may override (addresses, routes, mounts, the console;
    /// a VF count change on a PF the host uses). Never a process holding a device.
    #[arg(long)]
    pub force: bool,

    /// Clear the record of the interrupted change without touching any device
    /// (once the devices have been put right by hand).
    #[arg(long, conflicts_with = "force")]
    pub forget: bool,

    /// Seconds to wait for each unbind, sriov_numvfs write and verification, and for the lock.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub timeout: u64,

    /// Print what was found, the plan and the result as one JSON object (schema in the man page).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Devices to reset (see SELECTORS).
    #[arg(value_name = "SELECTOR", required = true)]
    pub selectors: Vec<String>,

    /// Use this reset method only (device_specific, acpi, flr, af_flr, pm,
    /// bus or cxl_bus; one the device's reset_method lists), then put
    /// reset_method back. Default: the kernel's order.
    #[arg(long, value_name = "METHOD")]
    pub method: Option<String>,

    /// Print the plan, with every check and refusal, and write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Seconds to wait for each reset and for the lock.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub timeout: u64,

    /// Print the plan, what was read before and after, and the verdicts as
    /// one JSON object (schema in the man page).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Devices to change (see SELECTORS).
    #[arg(value_name = "SELECTOR", required = true)]
    pub selectors: Vec<String>,

    /// Print the plan and write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Release devices the host uses (mounts, swap, addresses, routes, console).
    /// Never overrides the root filesystem or a process holding the device.
    #[arg(long)]
    pub force: bool,

    /// Seconds to wait for each unbind, for each bind to verify, and for the lock.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub timeout: u64,

    /// Print the plan and result as JSON (schema in the man page).
    #[arg(long)]
    pub json: bool,
}

/// Exit statuses, shared by the binary and the man page so they cannot drift.
pub mod exit {
    /// Every exit status vfioctl documents; the number is the discriminant.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[repr(i32)]
    pub enum ExitStatus {
        Ok = 0,
        Failed = 1,
        Usage = 2,
        NotFound = 3,
        Refused = 4,
        Environment = 5,
        Inconsistent = 6,
        Config = 7,
        Pending = 8,
        Busy = 75,
        NoPermission = 77,
    }

    impl ExitStatus {
        /// The number the process exits with.
        pub const fn code(self) -> i32 {
            self as i32
        }

        /// The stable `error.kind` of the JSON error document.
        pub const fn kind(self) -> &'static str {
            match self {
                ExitStatus::Ok => "ok",
                ExitStatus::Failed => "failed",
                ExitStatus::Usage => "usage",
                ExitStatus::NotFound => "not-found",
                ExitStatus::Refused => "refused",
                ExitStatus::Environment => "environment",
                ExitStatus::Inconsistent => "inconsistent",
                ExitStatus::Config => "config",
                ExitStatus::Pending => "pending",
                ExitStatus::Busy => "busy",
                ExitStatus::NoPermission => "no-permission",
            }
        }
    }

    /// `check`'s monitoring-plugin UNKNOWN: every error of `check`, usage
    /// errors included, exits with it (a plugin's 2 would read as CRITICAL).
    pub const CHECK_UNKNOWN: i32 = 3;

    use ExitStatus::*;

    /// `ExitStatus::Ok` as the number a command returns.
    pub const OK: i32 = Ok.code();

    /// (status, meaning) rows for the man page's EXIT STATUS section.
    pub const TABLE: &[(ExitStatus, &str)] = &[
        (Ok, "Success."),
        (
            Failed,
            "The operation failed; the error line names the device and file concerned.",
        ),
        (
            Usage,
            "Bad usage: unknown option, or a malformed selector or address; for nova, an option the release or the selected devices cannot take (--placement before 2023.1, --one-time-use before 2025.2, without --placement or for a VF, an unusable hypervisor hostname...): the message says why and what to change.",
        ),
        (NotFound, "A selector matched no PCI function, or a device vanished."),
        (
            Refused,
            "Refused for safety; nothing was changed. The message says why and how to proceed.",
        ),
        (
            Environment,
            "The host lacks something needed: sysfs not readable under --root, no IOMMU, a module not installed or blocked, libvirt not reachable (nodedev).",
        ),
        (
            Inconsistent,
            "A change failed and putting a device back failed too: the message names the device; check it with vfioctl show. The change stays recorded as unfinished: vfioctl check reports it CRITICAL and vfioctl recover puts the devices back once the cause is fixed (recover itself exits 6 when it cannot put a VF count back).",
        ),
        (
            Config,
            "The configuration under /etc/vfioctl is malformed (the message names file and line) or untrusted (it or a directory up to / not root-owned, writable by others or by a group other than root's, a symlink, or a file name that is not letters, digits, '.', '_' and '-'; under --root DIR other than /, the owner trusted is DIR's owner), or vfioctl's state under /run/vfioctl or /var/lib/vfioctl is untrusted by the same rules (a FIFO, a device or a symlink where a state file belongs, another owner, writable by others): the message names the path and the fix. Nothing was applied. Also: one device or PF declared twice, differently (persist apply applies the others; the hook and host-config --write nothing).",
        ),
        (
            Busy,
            "Another vfioctl held the change lock for longer than --timeout (60 s for persist add, remove, rules --write and host-config --write/--remove, which take the same lock).",
        ),
        (
            Pending,
            "A driver did not let go of a device within --timeout (a process holds it): the unbind is still pending in the kernel and vfioctl stopped waiting for it. The message names the device, the holder when found, and what happens when the holder lets go (the device is left with no driver; run vfioctl restore then). vfioctl show and check report it pending. Also: a reset that did not return within --timeout (it waits for the device's lock), still pending in the kernel; it stays recorded (check reports it) until vfioctl recover, once it has finished. --timeout bounds each kernel step: the blocked write returns within --timeout plus a second; a plan of several devices also spends the time of its other steps and its rollback (measured in the test bed: 4.2-4.7 s for a display and its audio companion at --timeout 3).",
        ),
        (
            NoPermission,
            "Not privileged: changing bindings needs CAP_SYS_ADMIN (run as root). Nothing was written.",
        ),
    ];
}

/// The safety gate's rules for the man page's SAFETY RULES table: (rule,
/// whether `--force` overrides it, exit status when it refuses). The gate
/// (`gate`, `RefusalKind::force_overrides`) is what enforces them; a test
/// keeps the two in step. How each path is judged is `gate::policy`.
pub const SAFETY: &[(&str, bool, exit::ExitStatus)] = &[
    ("The device backs the root filesystem (through dm, md, NVMe multipath, ZFS, 9p, overlay layers).", false, exit::ExitStatus::Refused),
    ("The device backs swap.", false, exit::ExitStatus::Refused),
    ("The device carries the transport of a network root (NFS, iSCSI, NBD): the interface the route to the server leaves by.", false, exit::ExitStatus::Refused),
    ("A process holds one of the device's nodes (DRM, sound, InfiniBand, NVMe, nvidia, VFIO group or cdev; for a PF, its VFs' too): the PID and command are named.", false, exit::ExitStatus::Refused),
    ("A mediated device (a vGPU) was created on the device (for a PF, on one of its VFs): its driver's unbind would destroy it under any VM using it; the UUID is named, to be removed by hand first.", false, exit::ExitStatus::Refused),
    ("The device's IOMMU group would keep an endpoint on a host driver (--with-group takes the whole group).", false, exit::ExitStatus::Refused),
    ("A member of the device's IOMMU group cannot be read, or the IOMMU is on and the device has no group (fail closed).", false, exit::ExitStatus::Refused),
    ("The device is a bridge or port.", false, exit::ExitStatus::Refused),
    ("The device backs another mounted filesystem.", true, exit::ExitStatus::Refused),
    ("The device carries addresses, routes or the default route (also through a bridge, bond, team, VLAN, macvlan or Open vSwitch), or has an interface enslaved to one.", true, exit::ExitStatus::Refused),
    ("The device has an interface in another network namespace.", true, exit::ExitStatus::Refused),
    ("The device is the boot display or the framebuffer console.", true, exit::ExitStatus::Refused),
    ("The device is an NVSwitch of a shared NVLink fabric (Fabric Manager enabled or running): Fabric Manager keeps it on the host; only GPUs go to VMs.", false, exit::ExitStatus::Refused),
    ("A claiming driver_override (VFIO, pci-stub) would be left on a device the host uses (root filesystem, swap, mounts, addresses, routes, the console) while it is on another driver: its next probe (a rebind, a hot-plug, drivers_probe) would hand it over. Never written (recover leaves such an override out and says so); check is CRITICAL for one found, whoever wrote it.", false, exit::ExitStatus::Refused),
    ("reset: the device, or a function its reset may also reset (a bus reset: every function below the bridge above it; with no --method, the worst method reset_method lists counts), is on a host driver, held open by a process, used by a running libvirt domain or used by the host (root filesystem, swap, mounts, addresses, routes, the console); or libvirt does not answer. A reset under a user corrupts what it is doing.", false, exit::ExitStatus::Refused),
    ("reset: the device has no reset method (neither reset_method nor reset, or an empty reset_method), --method names one its reset_method does not list, or it is a bridge or port: it is not fit to hand from one tenant to the next.", false, exit::ExitStatus::Refused),
    ("The device is an SR-IOV PF with VFs enabled (bind, unbind, a companion or group member): unbinding its driver destroys the VFs (igb, mlx5 and vfio-pci disable SR-IOV when they let go) or leaves them orphaned (nvme), and vfio-pci refuses such a PF (EBUSY). Run sriov PF --numvfs 0 first. A VF never has companions and is never one.", false, exit::ExitStatus::Refused),
    ("sriov (and [[sriov]] in persist apply and the udev hook) changes the VF count of a PF the host uses (addresses, routes, the default route, mounts, the root filesystem, swap, a network root, an enslaved or other-namespace interface, the console) only with --force: some drivers reset the PF when SR-IOV is enabled or disabled (ixgbe drops its link). Open handles on the PF do not count (it keeps its driver). The plan names each use (pf_uses in its JSON).", true, exit::ExitStatus::Refused),
    ("While an interrupted change is recorded this boot (its intent in /run/vfioctl/changes.json, its process gone), bind, restore, unbind, sriov, reset, persist apply and the udev hook refuse, dry runs too, naming it, until vfioctl recover has put it back; check is CRITICAL meanwhile. A record from another boot is ignored.", false, exit::ExitStatus::Refused),
    ("A running libvirt domain uses the device, another member of its IOMMU group, a VF of it or an mdev on it, and the change gives the device away (restore, unbind, bind --driver to a non-VFIO driver, persist remove, an sriov change that destroys VFs): the domain and its Nova instance are named (see VIRTUAL MACHINES).", false, exit::ExitStatus::Refused),
    ("A defined libvirt domain's config names the device (or a VF of it, or an mdev on it) and the change gives it away: the message says what the domain's next start does (managed='yes' takes the device back from the host, managed='no' fails) and whether it autostarts.", true, exit::ExitStatus::Refused),
    ("libvirt is there but does not answer within --connect-timeout (or answers what cannot be read) and the change gives a device away: whether a VM uses it is unknown; --no-libvirt changes it without the VM rules.", false, exit::ExitStatus::Refused),
    ("sriov destroys VFs (a lower count, or any change of a non-zero count) only when the gate clears every one of them: a process holding a VF (its /dev/vfio/N open) is named and never overridden; the uses --force overrides, only with --force.", false, exit::ExitStatus::Refused),
    ("persist add (and bind --persist) judge every device a declaration covers now, ID and class declarations included, as claimed at every boot (open handles aside).", false, exit::ExitStatus::Refused),
    ("host-config --write judges every device its boot files would take from its driver now (each declared device, with --ids every present device with a declared ID, with --blacklist every device the module drives) by the rules persist apply follows, without --force: a device the host uses is refused (bind it first, with --force where allowed); it has no --force.", false, exit::ExitStatus::Refused),
    ("An unbind (or a reset) that does not return within --timeout is left pending in the kernel (in a helper process) and reported; that write returns within --timeout plus a second (each kernel step has its own --timeout).", false, exit::ExitStatus::Pending),
];
