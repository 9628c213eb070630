//! libvirt domains (virtual machines) and the host PCI functions they name:
//! the domain XML parsed, Nova's instance metadata, and what the host knows
//! about each domain (running or defined, its QEMU process). Pure: the
//! `host` layer asks libvirt (through the helper process) and sysfs.
//!
//! Every string here comes from libvirt and, through it, from whoever
//! defined the domain (a Nova user names the instance): callers escape it
//! for the format they write (tables, notes, Prometheus labels).

use std::fmt;

use serde::Serialize;

use super::address::PciAddress;
use super::xml::{child, text_of};

/// How a domain's XML names a host PCI function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostDeviceKind {
    /// `<hostdev mode='subsystem' type='pci'>`.
    Hostdev,
    /// `<interface type='hostdev'>` (an SR-IOV VF as a NIC).
    Interface,
    /// `<hostdev mode='subsystem' type='mdev'>`: a mediated device, whose
    /// parent function stays on its vendor driver.
    Mdev,
    /// `<disk type='nvme'>` with a PCI source (QEMU's userspace NVMe driver).
    Nvme,
}

impl HostDeviceKind {
    pub fn label(self) -> &'static str {
        match self {
            HostDeviceKind::Hostdev => "hostdev",
            HostDeviceKind::Interface => "interface type='hostdev'",
            HostDeviceKind::Mdev => "mdev hostdev",
            HostDeviceKind::Nvme => "disk type='nvme'",
        }
    }
}

/// One host device a domain definition names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostDevice {
    pub kind: HostDeviceKind,
    /// The host PCI function: the `<source>` address, or for an mdev its
    /// parent function (from sysfs; `None` while unresolved or when the
    /// mdev does not exist now).
    pub address: Option<PciAddress>,
    /// The mdev's UUID (mdev hostdevs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mdev: Option<String>,
    /// `managed='yes'`: libvirt detaches the function to vfio-pci when the
    /// domain starts and reattaches it to the host when it stops. `None` for
    /// mdevs (their parent is never detached).
    pub managed: Option<bool>,
}

/// An owner (user or project) in Nova's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NovaOwner {
    pub name: Option<String>,
    pub uuid: Option<String>,
}

/// Nova's `<nova:instance>` metadata block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NovaInstance {
    /// The namespace's version: `1.0`, `1.1`.
    pub version: String,
    /// The instance uuid is the domain's uuid (Nova sets both).
    pub uuid: Option<String>,
    /// `nova:name`: the display name the user gave.
    pub name: Option<String>,
    pub flavor: Option<String>,
    pub user: NovaOwner,
    pub project: NovaOwner,
    /// `nova:creationTime`, as Nova wrote it (`YYYY-MM-DD HH:MM:SS`, UTC).
    pub creation_time: Option<String>,
    /// `nova:package@version`: the nova-compute that wrote the block.
    pub package: Option<String>,
}

impl fmt::Display for NovaInstance {
    /// `Nova instance "NAME" (UUID)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nova instance")?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        if let Some(uuid) = &self.uuid {
            write!(f, " ({uuid})")?;
        }
        Ok(())
    }
}

/// One domain XML (live or inactive), the parts vfioctl reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DomainDefinition {
    pub name: String,
    pub uuid: Option<String>,
    pub devices: Vec<HostDevice>,
    pub nova: Option<NovaInstance>,
}

/// Domain XML that cannot be understood; names the domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("libvirt domain {domain}: {reason} (check it with virsh dumpxml {domain})")]
pub struct DomainXmlError {
    pub domain: String,
    pub reason: String,
}

/// The namespace of Nova's metadata, before its version.
pub const NOVA_NAMESPACE: &str = "http://openstack.org/xmlns/libvirt/nova/";

/// An unsigned number as libvirt reads address attributes (`strtoul` with
/// base 0): `0x` hex, a leading `0` octal, else decimal. `bus='59'` is bus
/// 0x3b; libvirt itself writes `0x3b`.
pub fn libvirt_number(text: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            (hex, 16)
        } else if text.len() > 1 && text.starts_with('0') {
            (&text[1..], 8)
        } else {
            (text, 10)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// `yes`/`no` as libvirt writes booleans; absent is `default`.
fn yes_no(node: roxmltree::Node, attr: &str, default: bool) -> Result<bool, String> {
    match node.attribute(attr) {
        None => Ok(default),
        Some("yes") => Ok(true),
        Some("no") => Ok(false),
        Some(other) => Err(format!("{attr}='{other}' is neither yes nor no")),
    }
}

/// A host PCI address element (`<address domain= bus= slot= function=/>`).
fn pci_address(node: roxmltree::Node, what: &str) -> Result<PciAddress, String> {
    let field = |name: &str, max: u64| -> Result<u64, String> {
        let text = node
            .attribute(name)
            .ok_or_else(|| format!("the source address of a {what} has no {name}"))?;
        libvirt_number(text).filter(|v| *v <= max).ok_or_else(|| {
            format!(
                "the source address of a {what} has {name}='{text}' (not a number up to {max:#x})"
            )
        })
    };
    // libvirt defaults a missing domain to 0; bus, slot and function are required.
    let domain = match node.attribute("domain") {
        None => 0,
        Some(_) => field("domain", u64::from(u32::MAX))?,
    };
    let bus = field("bus", 0xff)?;
    let slot = field("slot", 0x1f)?;
    let function = field("function", 7)?;
    Ok(PciAddress::new(
        domain as u32,
        bus as u8,
        slot as u8,
        function as u8,
    ))
}

/// The `<address>` inside `<source>`: the host's function. The `<address>`
/// directly under the device element is where the guest sees it, never the host's.
fn source_address(device: roxmltree::Node, what: &str) -> Result<PciAddress, String> {
    let source = child(device, "source").ok_or_else(|| format!("a {what} has no <source>"))?;
    let address = child(source, "address")
        .ok_or_else(|| format!("the <source> of a {what} has no <address>"))?;
    if let Some(kind) = address.attribute("type").filter(|t| *t != "pci") {
        return Err(format!(
            "the <source> address of a {what} is type '{kind}', not a PCI address"
        ));
    }
    pci_address(address, what)
}

/// The host devices under `<devices>`, in document order.
fn host_devices(devices: roxmltree::Node) -> Result<Vec<HostDevice>, String> {
    let mut out = Vec::new();
    for node in devices.children().filter(|c| c.is_element()) {
        match (node.tag_name().name(), node.attribute("type")) {
            ("hostdev", Some("pci")) if node.attribute("mode").is_none_or(|m| m == "subsystem") => {
                out.push(HostDevice {
                    kind: HostDeviceKind::Hostdev,
                    address: Some(source_address(node, "<hostdev type='pci'>")?),
                    mdev: None,
                    managed: Some(yes_no(node, "managed", false)?),
                });
            }
            ("hostdev", Some("mdev"))
                if node.attribute("mode").is_none_or(|m| m == "subsystem") =>
            {
                let uuid = child(node, "source")
                    .and_then(|s| child(s, "address"))
                    .and_then(|a| a.attribute("uuid"))
                    .ok_or_else(|| {
                        "an mdev <hostdev> has no <source><address uuid=…/>".to_string()
                    })?;
                if !valid_uuid(uuid) {
                    return Err(format!("an mdev <hostdev> names uuid '{uuid}', not a UUID"));
                }
                out.push(HostDevice {
                    kind: HostDeviceKind::Mdev,
                    address: None,
                    mdev: Some(uuid.to_ascii_lowercase()),
                    managed: None,
                });
            }
            ("interface", Some("hostdev")) => {
                out.push(HostDevice {
                    kind: HostDeviceKind::Interface,
                    address: Some(source_address(node, "<interface type='hostdev'>")?),
                    mdev: None,
                    managed: Some(yes_no(node, "managed", false)?),
                });
            }
            ("disk", Some("nvme")) => {
                let source = child(node, "source")
                    .ok_or_else(|| "a <disk type='nvme'> has no <source>".to_string())?;
                if source.attribute("type").is_some_and(|t| t != "pci") {
                    continue;
                }
                out.push(HostDevice {
                    kind: HostDeviceKind::Nvme,
                    address: Some(source_address(node, "<disk type='nvme'>")?),
                    mdev: None,
                    // libvirt's default for NVMe disks is managed.
                    managed: Some(yes_no(source, "managed", true)?),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `8-4-4-4-12` hex digits.
pub fn valid_uuid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Nova's `<nova:instance>` in `<metadata>`, any namespace version.
fn nova_instance(metadata: roxmltree::Node, uuid: Option<&str>) -> Option<NovaInstance> {
    let instance = metadata.children().find(|c| {
        c.is_element()
            && c.tag_name().name() == "instance"
            && c.tag_name()
                .namespace()
                .is_some_and(|ns| ns.starts_with(NOVA_NAMESPACE))
    })?;
    let ns = instance.tag_name().namespace().unwrap_or_default();
    fn in_ns<'a, 'i>(
        node: roxmltree::Node<'a, 'i>,
        ns: &str,
        tag: &str,
    ) -> Option<roxmltree::Node<'a, 'i>> {
        node.children().find(|c| {
            c.is_element() && c.tag_name().name() == tag && c.tag_name().namespace() == Some(ns)
        })
    }
    let nova = |node, tag: &'static str| in_ns(node, ns, tag);
    let owner = |tag: &'static str| {
        nova(instance, "owner")
            .and_then(|o| nova(o, tag))
            .map(|n| NovaOwner {
                name: text_of(n),
                uuid: n.attribute("uuid").map(str::to_string),
            })
            .unwrap_or_default()
    };
    Some(NovaInstance {
        version: ns[NOVA_NAMESPACE.len()..].to_string(),
        uuid: uuid.map(str::to_string),
        name: nova(instance, "name").and_then(text_of),
        flavor: nova(instance, "flavor")
            .and_then(|f| f.attribute("name"))
            .map(str::to_string),
        user: owner("user"),
        project: owner("project"),
        creation_time: nova(instance, "creationTime").and_then(text_of),
        package: nova(instance, "package")
            .and_then(|p| p.attribute("version"))
            .map(str::to_string),
    })
}

/// Parses `virDomainGetXMLDesc` output. `listed_as` names the domain in
/// errors when the XML has no name.
pub fn parse_domain_xml(listed_as: &str, xml: &str) -> Result<DomainDefinition, DomainXmlError> {
    let fail = |domain: &str, reason: String| DomainXmlError {
        domain: domain.to_string(),
        reason,
    };
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| fail(listed_as, format!("malformed XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "domain" {
        return Err(fail(
            listed_as,
            format!("root element is <{}>, not <domain>", root.tag_name().name()),
        ));
    }
    let name = child(root, "name")
        .and_then(text_of)
        .ok_or_else(|| fail(listed_as, "no <name>".to_string()))?;
    let uuid = child(root, "uuid").and_then(text_of);
    let devices = match child(root, "devices") {
        Some(devices) => host_devices(devices).map_err(|reason| fail(&name, reason))?,
        None => Vec::new(),
    };
    let nova = child(root, "metadata").and_then(|m| nova_instance(m, uuid.as_deref()));
    Ok(DomainDefinition {
        name,
        uuid,
        devices,
        nova,
    })
}

/// A domain's state as `virDomainGetState` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    NoState,
    Running,
    Blocked,
    Paused,
    ShuttingDown,
    ShutOff,
    Crashed,
    Suspended,
}

impl DomainState {
    /// From libvirt's `virDomainState` number.
    pub fn from_libvirt(state: i32) -> DomainState {
        match state {
            1 => DomainState::Running,
            2 => DomainState::Blocked,
            3 => DomainState::Paused,
            4 => DomainState::ShuttingDown,
            5 => DomainState::ShutOff,
            6 => DomainState::Crashed,
            7 => DomainState::Suspended,
            _ => DomainState::NoState,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            DomainState::NoState => "no state",
            DomainState::Running => "running",
            DomainState::Blocked => "blocked",
            DomainState::Paused => "paused",
            DomainState::ShuttingDown => "shutting down",
            DomainState::ShutOff => "shut off",
            DomainState::Crashed => "crashed",
            DomainState::Suspended => "pmsuspended",
        }
    }
}

/// One domain as libvirt lists it, with both of its definitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Domain {
    pub name: String,
    pub uuid: String,
    /// The hypervisor's id while active.
    pub id: Option<u32>,
    /// Running (or paused, or otherwise live): `virDomainIsActive`.
    pub active: bool,
    pub state: DomainState,
    /// Defined (survives a stop): `virDomainIsPersistent`.
    pub persistent: bool,
    pub autostart: bool,
    /// The live definition (active domains).
    pub live: Option<DomainDefinition>,
    /// The inactive definition: what the next start uses (persistent domains).
    pub config: Option<DomainDefinition>,
    /// The QEMU process, from libvirt's pid file (`/run/libvirt/qemu/NAME.pid`).
    pub qemu_pid: Option<u32>,
}

/// Which definition of a domain names a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Named {
    /// The live XML (the running domain has it).
    Live,
    /// The inactive XML only (the next start takes it).
    Config,
    Both,
}

impl Named {
    pub fn label(self) -> &'static str {
        match self {
            Named::Live => "live XML",
            Named::Config => "config XML",
            Named::Both => "live and config XML",
        }
    }
}

/// A domain's use of one host function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainUse<'a> {
    pub domain: &'a Domain,
    pub device: &'a HostDevice,
    pub named: Named,
}

impl Domain {
    /// Nova's metadata, from the live definition or else the config.
    pub fn nova(&self) -> Option<&NovaInstance> {
        self.live
            .as_ref()
            .and_then(|d| d.nova.as_ref())
            .or_else(|| self.config.as_ref().and_then(|d| d.nova.as_ref()))
    }

    /// The domain's state for people: `running`, `shut off`...
    pub fn state_label(&self) -> &'static str {
        self.state.label()
    }

    /// Whether the domain holds its devices now.
    pub fn running(&self) -> bool {
        self.active
    }

    /// How the domain names `addr`: live, in its config, or both (`None`: not at all).
    pub fn uses(&self, addr: &PciAddress) -> Option<DomainUse<'_>> {
        fn find<'d>(
            def: &'d Option<DomainDefinition>,
            addr: &PciAddress,
        ) -> Option<&'d HostDevice> {
            def.as_ref()
                .and_then(|d| d.devices.iter().find(|h| h.address == Some(*addr)))
        }
        let live = if self.active {
            find(&self.live, addr)
        } else {
            None
        };
        let config = if self.persistent {
            find(&self.config, addr)
        } else {
            None
        };
        let (device, named) = match (live, config) {
            (Some(l), Some(_)) => (l, Named::Both),
            (Some(l), None) => (l, Named::Live),
            (None, Some(c)) => (c, Named::Config),
            (None, None) => return None,
        };
        Some(DomainUse {
            domain: self,
            device,
            named,
        })
    }

    /// Every host function either definition names, with how (deduplicated).
    pub fn all_devices(&self) -> Vec<DomainUse<'_>> {
        let mut addrs: Vec<PciAddress> = [&self.live, &self.config]
            .into_iter()
            .flatten()
            .flat_map(|d| d.devices.iter().filter_map(|h| h.address))
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs.iter().filter_map(|a| self.uses(a)).collect()
    }

    /// `instance-0000002a (Nova instance "web-1" (UUID))`.
    pub fn describe(&self) -> String {
        match self.nova() {
            Some(nova) => format!("{} ({nova})", self.name),
            None => self.name.clone(),
        }
    }
}

/// What vfioctl knows about the host's domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmFacts {
    /// libvirt answered: every domain at `uri`.
    Known { uri: String, domains: Vec<Domain> },
    /// libvirt was not asked, and why (no libvirt on this host, `--root`
    /// without `--connect`, `--no-libvirt`, the udev hook and boot). Changes
    /// proceed; VM facts are unknown.
    NotAsked(String),
    /// No libvirt on this host (a local `qemu:///system` without any of its
    /// sockets): no VM libvirt runs, but VM facts are unknown and said so
    /// (another tool may run QEMU; the holder search still sees it).
    Absent(String),
    /// libvirt is there but did not answer (or answered what cannot be
    /// read): changes that VM refusals cover are refused unless
    /// `--no-libvirt`; VM checks are UNKNOWN.
    Failed(String),
}

impl VmFacts {
    pub fn domains(&self) -> &[Domain] {
        match self {
            VmFacts::Known { domains, .. } => domains,
            _ => &[],
        }
    }

    /// The domains naming `addr`, running ones first.
    pub fn users_of(&self, addr: &PciAddress) -> Vec<DomainUse<'_>> {
        let mut found: Vec<DomainUse<'_>> =
            self.domains().iter().filter_map(|d| d.uses(addr)).collect();
        found.sort_by_key(|u| (!u.domain.active, u.domain.name.clone()));
        found
    }

    /// Why VM facts are unknown, when they are.
    pub fn unknown(&self) -> Option<&str> {
        match self {
            VmFacts::Known { .. } => None,
            VmFacts::NotAsked(why) | VmFacts::Absent(why) | VmFacts::Failed(why) => Some(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOVA_1_0: &str = r#"<domain type='kvm' id='3'>
  <name>instance-0000002a</name>
  <uuid>1b0e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.0">
      <nova:package version="23.2.0"/>
      <nova:name>gpu-trainer-1</nova:name>
      <nova:creationTime>2026-11-30 12:00:00</nova:creationTime>
      <nova:flavor name="g1.a100"><nova:memory>8192</nova:memory></nova:flavor>
      <nova:owner>
        <nova:user uuid="5d2a0c2e4f7a4f1f9b8e2f4c1a3b5d6e">alice</nova:user>
        <nova:project uuid="9c8b7a6f5e4d4c3b2a1f0e9d8c7b6a5f">ml-team</nova:project>
      </nova:owner>
      <nova:root type="image" uuid="cccccccc-cccc-cccc-cccc-cccccccccccc"/>
    </nova:instance>
  </metadata>
  <devices>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <driver name='vfio'/>
      <source>
        <address domain='0x0000' bus='0x25' slot='0x00' function='0x0'/>
      </source>
      <alias name='hostdev0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </hostdev>
  </devices>
</domain>"#;

    #[test]
    fn nova_1_0_with_hex_addresses() {
        let d = parse_domain_xml("x", NOVA_1_0).unwrap();
        assert_eq!(d.name, "instance-0000002a");
        assert_eq!(d.devices.len(), 1);
        let h = &d.devices[0];
        assert_eq!(h.kind, HostDeviceKind::Hostdev);
        assert_eq!(h.address, Some("0000:25:00.0".parse().unwrap()));
        assert_eq!(h.managed, Some(true));
        let nova = d.nova.unwrap();
        assert_eq!(nova.version, "1.0");
        assert_eq!(
            nova.uuid.as_deref(),
            Some("1b0e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
        );
        assert_eq!(nova.name.as_deref(), Some("gpu-trainer-1"));
        assert_eq!(nova.flavor.as_deref(), Some("g1.a100"));
        assert_eq!(nova.user.name.as_deref(), Some("alice"));
        assert_eq!(
            nova.user.uuid.as_deref(),
            Some("5d2a0c2e4f7a4f1f9b8e2f4c1a3b5d6e")
        );
        assert_eq!(nova.project.name.as_deref(), Some("ml-team"));
        assert_eq!(nova.creation_time.as_deref(), Some("2026-11-30 12:00:00"));
        assert_eq!(nova.package.as_deref(), Some("23.2.0"));
    }

    #[test]
    fn nova_1_1_with_decimal_and_octal_addresses() {
        let xml = r#"<domain type='kvm'>
  <name>instance-00000001</name>
  <uuid>00000000-0000-0000-0000-000000000001</uuid>
  <metadata>
    <other:thing xmlns:other="http://example.org/other"><other:name>not nova</other:name></other:thing>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:name>web &amp; db</nova:name>
      <nova:flavor name="m1.vf"/>
      <nova:owner><nova:user uuid="u1">bob</nova:user><nova:project uuid="p1">ops</nova:project></nova:owner>
    </nova:instance>
  </metadata>
  <devices>
    <interface type='hostdev' managed='yes'>
      <mac address='52:54:00:6d:90:02'/>
      <source><address type='pci' domain='0' bus='59' slot='0' function='2'/></source>
    </interface>
    <hostdev mode='subsystem' type='pci'>
      <source><address domain='0' bus='037' slot='0' function='1'/></source>
    </hostdev>
    <disk type='nvme' device='disk'>
      <source type='pci' namespace='1'><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <hostdev mode='subsystem' type='mdev' model='vfio-pci'>
      <source><address uuid='C2177883-F1BB-47F0-914D-32A22E3A8804'/></source>
    </hostdev>
    <hostdev mode='capabilities' type='storage'><source><block>/dev/sdf1</block></source></hostdev>
    <hostdev mode='subsystem' type='usb'><source><vendor id='0x1234'/><product id='0xbeef'/></source></hostdev>
  </devices>
</domain>"#;
        let d = parse_domain_xml("x", xml).unwrap();
        let nova = d.nova.as_ref().unwrap();
        assert_eq!(nova.version, "1.1");
        assert_eq!(nova.name.as_deref(), Some("web & db"));
        assert_eq!(nova.flavor.as_deref(), Some("m1.vf"));
        assert_eq!(nova.project.uuid.as_deref(), Some("p1"));
        let got: Vec<(HostDeviceKind, Option<String>, Option<bool>)> = d
            .devices
            .iter()
            .map(|h| (h.kind, h.address.map(|a| a.to_string()), h.managed))
            .collect();
        assert_eq!(
            got,
            vec![
                // Decimal 59 is bus 0x3b, as libvirt reads it.
                (
                    HostDeviceKind::Interface,
                    Some("0000:3b:00.2".into()),
                    Some(true)
                ),
                // A leading 0 is octal to libvirt: 037 is bus 0x1f.
                (
                    HostDeviceKind::Hostdev,
                    Some("0000:1f:00.1".into()),
                    Some(false)
                ),
                (
                    HostDeviceKind::Nvme,
                    Some("0000:01:00.0".into()),
                    Some(true)
                ),
                (HostDeviceKind::Mdev, None, None),
            ]
        );
        assert_eq!(
            d.devices[3].mdev.as_deref(),
            Some("c2177883-f1bb-47f0-914d-32a22e3a8804")
        );
    }

    #[test]
    fn the_guest_address_is_never_the_host_address() {
        let xml = "<domain><name>g</name><devices><hostdev mode='subsystem' type='pci'>\
            <address type='pci' domain='0x0000' bus='0x25' slot='0x00' function='0x0'/>\
            <source><address domain='0x0000' bus='0x41' slot='0x00' function='0x0'/></source>\
            </hostdev></devices></domain>";
        let d = parse_domain_xml("g", xml).unwrap();
        assert_eq!(d.devices[0].address, Some("0000:41:00.0".parse().unwrap()));
        let no_source = "<domain><name>g</name><devices><hostdev mode='subsystem' type='pci'>\
            <address type='pci' domain='0x0000' bus='0x25' slot='0x00' function='0x0'/>\
            </hostdev></devices></domain>";
        let err = parse_domain_xml("g", no_source).unwrap_err();
        assert!(err.to_string().contains("has no <source>"), "{err}");
    }

    #[test]
    fn bad_input_names_the_domain() {
        for (xml, words) in [
            ("<domain>", "malformed XML"),
            ("<node/>", "not <domain>"),
            ("<domain><uuid>x</uuid></domain>", "no <name>"),
            (
                "<domain><name>d</name><devices><hostdev type='pci'><source><address bus='0x100' slot='0' function='0'/></source></hostdev></devices></domain>",
                "bus='0x100'",
            ),
            (
                "<domain><name>d</name><devices><hostdev type='pci'><source><address bus='1' slot='32' function='0'/></source></hostdev></devices></domain>",
                "slot='32'",
            ),
            (
                "<domain><name>d</name><devices><hostdev type='pci' managed='maybe'><source><address bus='1' slot='0' function='0'/></source></hostdev></devices></domain>",
                "managed='maybe'",
            ),
            (
                "<domain><name>d</name><devices><hostdev type='pci'><source><address bus='-1' slot='0' function='0'/></source></hostdev></devices></domain>",
                "bus='-1'",
            ),
            (
                "<domain><name>d</name><devices><hostdev type='mdev'><source><address uuid='../../etc'/></source></hostdev></devices></domain>",
                "not a UUID",
            ),
        ] {
            let err = parse_domain_xml("listed", xml).unwrap_err().to_string();
            assert!(err.contains(words), "{xml}: {err}");
            assert!(err.contains("libvirt domain "), "{err}");
        }
    }

    #[test]
    fn libvirt_numbers_follow_strtoul_base_0() {
        assert_eq!(libvirt_number("0x3b"), Some(0x3b));
        assert_eq!(libvirt_number("0X3B"), Some(0x3b));
        assert_eq!(libvirt_number("59"), Some(59));
        assert_eq!(libvirt_number("037"), Some(31));
        assert_eq!(libvirt_number("0"), Some(0));
        for bad in ["", "0x", "08", "+1", "-1", " 1", "1 ", "3b", "0x1g"] {
            assert_eq!(libvirt_number(bad), None, "{bad:?}");
        }
    }

    fn domain(active: bool, persistent: bool, live: &[&str], config: &[&str]) -> Domain {
        let def = |addrs: &[&str]| DomainDefinition {
            name: "d".into(),
            uuid: None,
            devices: addrs
                .iter()
                .map(|a| HostDevice {
                    kind: HostDeviceKind::Hostdev,
                    address: Some(a.parse().unwrap()),
                    mdev: None,
                    managed: Some(true),
                })
                .collect(),
            nova: None,
        };
        crate::model::test_support::domain(
            "d",
            active,
            persistent,
            false,
            active.then(|| def(live)),
            persistent.then(|| def(config)),
        )
    }

    #[test]
    fn which_definition_names_a_device() {
        let a: PciAddress = "0000:25:00.0".parse().unwrap();
        let d = domain(true, true, &["25:00.0"], &["25:00.0"]);
        assert_eq!(d.uses(&a).unwrap().named, Named::Both);
        let d = domain(true, true, &["25:00.0"], &[]);
        assert_eq!(d.uses(&a).unwrap().named, Named::Live);
        let d = domain(true, true, &[], &["25:00.0"]);
        assert_eq!(d.uses(&a).unwrap().named, Named::Config);
        let d = domain(false, true, &[], &["25:00.0"]);
        assert_eq!(d.uses(&a).unwrap().named, Named::Config);
        let d = domain(true, false, &["25:00.0"], &[]);
        assert_eq!(d.uses(&a).unwrap().named, Named::Live);
        assert!(domain(true, true, &["26:00.0"], &[]).uses(&a).is_none());
    }
}
