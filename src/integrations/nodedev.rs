//! libvirt node devices: the PCI part of `virsh nodedev-dumpxml`, the
//! `device_type` Nova derives from it, and the cross-check with sysfs.
//!
//! Nova (`nova/virt/libvirt/host.py`) walks the `<capability>` children of a
//! device's `pci` capability in document order: the first `virt_functions`
//! child, even empty, makes it type-PF; the first `phys_function` child that
//! holds an `<address>` makes it type-VF (its parent is that address); without
//! either it is type-PCI. The address Nova records is the capability's own
//! `domain`/`bus`/`slot`/`function` (decimal), never the node device's name.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::model::address::PciAddress;
use crate::model::device::{NovaDeviceType, PciDevice};
use crate::model::driver::DriverName;
use crate::model::ids::{parse_sysfs_hex as hex, ClassCode, DeviceId, VendorId};
use crate::model::inventory::{Inventory, NoMatch};
use crate::model::selector::{Candidate, Selector};
use crate::model::xml::{child, children, text_of};

/// A `<capability>` child of the `pci` capability (`virt_functions`,
/// `phys_function`, `mdev_types`, `vpd`, `pci-bridge`...), in document order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionCapability {
    #[serde(rename = "type")]
    pub kind: String,
    /// `maxCount` of `virt_functions`: how many VFs the device can have.
    pub max_count: Option<u32>,
    /// The `<address>` children: the VFs of a PF, the PF of a VF.
    pub addresses: Vec<PciAddress>,
}

/// One PCI node device as libvirt describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDevice {
    /// `pci_0000_25_00_0`: libvirt's name, which need not match the address.
    pub name: String,
    pub parent: Option<String>,
    /// The sysfs path libvirt read it from, when given.
    pub path: Option<String>,
    /// The driver libvirt reports. Real libvirt reads it from sysfs; the test
    /// driver and some versions leave it out.
    pub driver: Option<DriverName>,
    pub address: PciAddress,
    pub vendor: VendorId,
    pub product: DeviceId,
    pub vendor_name: Option<String>,
    pub product_name: Option<String>,
    pub class: Option<ClassCode>,
    pub functions: Vec<FunctionCapability>,
    pub iommu_group: Option<u32>,
    pub numa_node: Option<u32>,
}

/// Node device XML that cannot be understood; names the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("libvirt node device {device}: {reason} (check it with virsh nodedev-dumpxml {device})")]
pub struct NodeDevXmlError {
    pub device: String,
    pub reason: String,
}

/// Parses decimal text as libvirt writes it in the pci capability's elements
/// (Nova reads them with `int(text)`). Hex attributes (`0x10de`, `3b`) go
/// through `parse_sysfs_hex`, as Nova reads them with `int(text, 16)`.
fn decimal(text: &str) -> Option<u32> {
    let text = text.trim();
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn checked_address(domain: u32, bus: u32, slot: u32, function: u32) -> Option<PciAddress> {
    (bus <= 0xff && slot <= 0x1f && function <= 7)
        .then(|| PciAddress::new(domain, bus as u8, slot as u8, function as u8))
}

impl NodeDevice {
    /// Parses `virNodeDeviceGetXMLDesc` output. `listed_as` is the name the
    /// device was listed under, used in errors when the XML has none.
    pub fn parse(listed_as: &str, xml: &str) -> Result<NodeDevice, NodeDevXmlError> {
        let mut device = listed_as.to_string();
        let fail = |device: &str, reason: String| NodeDevXmlError {
            device: device.to_string(),
            reason,
        };
        let doc = roxmltree::Document::parse(xml)
            .map_err(|e| fail(&device, format!("malformed XML: {e}")))?;
        let root = doc.root_element();
        if root.tag_name().name() != "device" {
            return Err(fail(
                &device,
                format!("root element is <{}>, not <device>", root.tag_name().name()),
            ));
        }
        let name = child(root, "name")
            .and_then(text_of)
            .ok_or_else(|| fail(&device, "no <name>".to_string()))?;
        device = name.clone();
        let pci = children(root, "capability")
            .find(|c| c.attribute("type") == Some("pci"))
            .ok_or_else(|| {
                fail(
                    &device,
                    "no <capability type='pci'>: not a PCI node device".to_string(),
                )
            })?;

        let field = |tag: &str| -> Result<u32, NodeDevXmlError> {
            let node = child(pci, tag)
                .ok_or_else(|| fail(&device, format!("pci capability has no <{tag}>")))?;
            let text = node.text().unwrap_or("");
            decimal(text).ok_or_else(|| {
                fail(
                    &device,
                    format!("<{tag}>{}</{tag}> is not a decimal number", text.trim()),
                )
            })
        };
        let (domain, bus, slot, function) = (
            field("domain")?,
            field("bus")?,
            field("slot")?,
            field("function")?,
        );
        let address = checked_address(domain, bus, slot, function).ok_or_else(|| {
            fail(
                &device,
                format!("address {domain}:{bus}:{slot}.{function} is out of range (bus 0..255, slot 0..31, function 0..7)"),
            )
        })?;

        let id_of = |tag: &str| -> Result<(u32, Option<String>), NodeDevXmlError> {
            let node = child(pci, tag)
                .ok_or_else(|| fail(&device, format!("pci capability has no <{tag}>")))?;
            let id = node
                .attribute("id")
                .ok_or_else(|| fail(&device, format!("<{tag}> has no id attribute")))?;
            let value = hex(id).filter(|v| *v <= 0xffff).ok_or_else(|| {
                fail(&device, format!("<{tag} id='{id}'> is not a 16-bit hex ID"))
            })?;
            Ok((value, text_of(node)))
        };
        let (vendor, vendor_name) = id_of("vendor")?;
        let (product, product_name) = id_of("product")?;

        let class = match child(pci, "class") {
            Some(node) => {
                let text = node.text().unwrap_or("").trim();
                Some(ClassCode(hex(text).ok_or_else(|| {
                    fail(
                        &device,
                        format!("<class>{text}</class> is not a hex class code"),
                    )
                })?))
            }
            None => None,
        };

        let mut functions = Vec::new();
        for cap in children(pci, "capability") {
            let kind = cap
                .attribute("type")
                .ok_or_else(|| fail(&device, "a <capability> inside pci has no type".to_string()))?
                .to_string();
            let max_count = match cap.attribute("maxCount") {
                Some(text) => Some(decimal(text).ok_or_else(|| {
                    fail(&device, format!("{kind} maxCount='{text}' is not a number"))
                })?),
                None => None,
            };
            let mut addresses = Vec::new();
            for addr in children(cap, "address") {
                let attr = |name: &str| -> Result<u32, NodeDevXmlError> {
                    let text = addr.attribute(name).ok_or_else(|| {
                        fail(&device, format!("an <address> in {kind} has no {name}"))
                    })?;
                    hex(text).ok_or_else(|| {
                        fail(
                            &device,
                            format!("an <address> in {kind} has {name}='{text}', not hex"),
                        )
                    })
                };
                let (d, b, s, f) = (
                    attr("domain")?,
                    attr("bus")?,
                    attr("slot")?,
                    attr("function")?,
                );
                addresses.push(checked_address(d, b, s, f).ok_or_else(|| {
                    fail(
                        &device,
                        format!("an <address> in {kind} is out of range: {d:x}:{b:x}:{s:x}.{f:x}"),
                    )
                })?);
            }
            functions.push(FunctionCapability {
                kind,
                max_count,
                addresses,
            });
        }

        let iommu_group = match child(pci, "iommuGroup") {
            Some(node) => {
                let text = node.attribute("number").unwrap_or("");
                Some(decimal(text).ok_or_else(|| {
                    fail(
                        &device,
                        format!("<iommuGroup number='{text}'> is not a number"),
                    )
                })?)
            }
            None => None,
        };
        // libvirt omits <numa> for an unknown node; a negative one means the same.
        let numa_node = child(pci, "numa")
            .and_then(|n| n.attribute("node"))
            .and_then(decimal);

        Ok(NodeDevice {
            name,
            parent: child(root, "parent").and_then(text_of),
            path: child(root, "path").and_then(text_of),
            driver: child(root, "driver")
                .and_then(|d| child(d, "name"))
                .and_then(text_of)
                .map(DriverName::new),
            address,
            vendor: VendorId(vendor as u16),
            product: DeviceId(product as u16),
            vendor_name,
            product_name,
            class,
            functions,
            iommu_group,
            numa_node,
        })
    }

    /// Nova's device_type, exactly as Nova derives it from this XML.
    pub fn nova_device_type(&self) -> NovaDeviceType {
        self.nova_derivation().0
    }

    /// For a type-VF, the physical function Nova records as its parent.
    pub fn nova_parent(&self) -> Option<PciAddress> {
        self.nova_derivation().1
    }

    fn nova_derivation(&self) -> (NovaDeviceType, Option<PciAddress>) {
        for cap in &self.functions {
            match cap.kind.as_str() {
                "virt_functions" => return (NovaDeviceType::Pf, None),
                "phys_function" => {
                    if let Some(parent) = cap.addresses.first() {
                        return (NovaDeviceType::Vf, Some(*parent));
                    }
                }
                _ => {}
            }
        }
        (NovaDeviceType::Pci, None)
    }

    /// The `virt_functions` capability, when present.
    pub fn virt_functions(&self) -> Option<&FunctionCapability> {
        self.functions.iter().find(|c| c.kind == "virt_functions")
    }

    /// The capability types in document order.
    pub fn capability_kinds(&self) -> Vec<&str> {
        self.functions.iter().map(|c| c.kind.as_str()).collect()
    }

    /// Whether a selector names this device by what libvirt reports (used for
    /// devices that sysfs does not have). Subsystem IDs are not in the XML.
    pub fn matched_by(&self, selector: &Selector) -> bool {
        selector.matcher.matches(&Candidate {
            address: self.address,
            vendor: self.vendor,
            device: self.product,
            subsystem: None,
            class: self.class,
            driver: self.driver.as_ref(),
            iommu_group: self.iommu_group,
        })
    }
}

/// Where libvirt and sysfs disagree about one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Disagreement {
    /// sysfs has the function; libvirt has no node device for it.
    MissingInLibvirt,
    /// libvirt has a node device; sysfs has no such function.
    MissingInSysfs,
    /// Another node device claims the same address.
    DuplicateAddress {
        other: String,
    },
    Ids {
        libvirt: String,
        sysfs: String,
    },
    IommuGroup {
        libvirt: Option<u32>,
        sysfs: Option<u32>,
    },
    DeviceType {
        libvirt: NovaDeviceType,
        sysfs: NovaDeviceType,
    },
    /// Only when libvirt reports a driver.
    Driver {
        libvirt: DriverName,
        sysfs: Option<DriverName>,
    },
}

fn or_none(value: Option<impl fmt::Display>) -> String {
    value.map_or_else(|| "none".to_string(), |v| v.to_string())
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disagreement::MissingInLibvirt => {
                f.write_str("in sysfs but not a libvirt node device (restart libvirtd or virtnodedevd if it was added recently)")
            }
            Disagreement::MissingInSysfs => {
                f.write_str("a libvirt node device with no PCI function in sysfs (stale libvirt, or --root is another host)")
            }
            Disagreement::DuplicateAddress { other } => {
                write!(f, "node device {other} has the same address")
            }
            Disagreement::Ids { libvirt, sysfs } => {
                write!(f, "IDs: libvirt {libvirt}, sysfs {sysfs}")
            }
            Disagreement::IommuGroup { libvirt, sysfs } => write!(
                f,
                "IOMMU group: libvirt {}, sysfs {}",
                or_none(*libvirt),
                or_none(*sysfs)
            ),
            Disagreement::DeviceType { libvirt, sysfs } => write!(
                f,
                "device_type: libvirt makes it {libvirt} (Nova uses this), sysfs says {sysfs}"
            ),
            Disagreement::Driver { libvirt, sysfs } => write!(
                f,
                "driver: libvirt {libvirt}, sysfs {}",
                or_none(sysfs.as_ref())
            ),
        }
    }
}

/// One address as libvirt and sysfs see it.
#[derive(Debug, Clone)]
pub struct Comparison<'a> {
    pub address: PciAddress,
    pub libvirt: Option<&'a NodeDevice>,
    pub sysfs: Option<&'a PciDevice>,
    pub disagreements: Vec<Disagreement>,
}

/// Lines up libvirt's PCI node devices with the sysfs inventory, in address
/// order (node devices sharing an address each get an entry), and lists
/// every disagreement.
pub fn cross_check<'a>(inv: &'a Inventory, nodedevs: &'a [NodeDevice]) -> Vec<Comparison<'a>> {
    let mut by_address: BTreeMap<PciAddress, Vec<&NodeDevice>> = BTreeMap::new();
    for nd in nodedevs {
        by_address.entry(nd.address).or_default().push(nd);
    }
    let mut out = Vec::new();
    for dev in &inv.devices {
        if !by_address.contains_key(&dev.address) {
            out.push(Comparison {
                address: dev.address,
                libvirt: None,
                sysfs: Some(dev),
                disagreements: vec![Disagreement::MissingInLibvirt],
            });
        }
    }
    for (address, mut nds) in by_address {
        nds.sort_by(|a, b| a.name.cmp(&b.name));
        let sysfs = inv.device(&address);
        for nd in &nds {
            let mut disagreements: Vec<Disagreement> = nds
                .iter()
                .filter(|o| o.name != nd.name)
                .map(|o| Disagreement::DuplicateAddress {
                    other: o.name.clone(),
                })
                .collect();
            match sysfs {
                None => disagreements.push(Disagreement::MissingInSysfs),
                Some(dev) => {
                    if (dev.ids.vendor, dev.ids.device) != (nd.vendor, nd.product) {
                        disagreements.push(Disagreement::Ids {
                            libvirt: format!("{}:{}", nd.vendor, nd.product),
                            sysfs: format!("{}:{}", dev.ids.vendor, dev.ids.device),
                        });
                    }
                    if dev.iommu_group != nd.iommu_group {
                        disagreements.push(Disagreement::IommuGroup {
                            libvirt: nd.iommu_group,
                            sysfs: dev.iommu_group,
                        });
                    }
                    if dev.nova_device_type() != nd.nova_device_type() {
                        disagreements.push(Disagreement::DeviceType {
                            libvirt: nd.nova_device_type(),
                            sysfs: dev.nova_device_type(),
                        });
                    }
                    if let Some(driver) = &nd.driver {
                        if dev.driver.as_ref() != Some(driver) {
                            disagreements.push(Disagreement::Driver {
                                libvirt: driver.clone(),
                                sysfs: dev.driver.clone(),
                            });
                        }
                    }
                }
            }
            out.push(Comparison {
                address,
                libvirt: Some(nd),
                sysfs,
                disagreements,
            });
        }
    }
    out.sort_by(|a, b| {
        (a.address, a.libvirt.map(|n| &n.name)).cmp(&(b.address, b.libvirt.map(|n| &n.name)))
    });
    out
}

/// The comparisons matched by any selector (by sysfs facts, else by libvirt's);
/// every selector must match at least one. No selectors selects everything.
pub fn select<'a, 'b>(
    comparisons: &'b [Comparison<'a>],
    selectors: &[Selector],
) -> Result<Vec<&'b Comparison<'a>>, NoMatch> {
    crate::model::inventory::select_matching(comparisons, selectors, |c, s| {
        c.sysfs.is_some_and(|d| s.matches(d)) || c.libvirt.is_some_and(|n| n.matched_by(s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::device::tests::endpoint;
    use crate::model::SriovRole;

    /// The A100 from the OpenStack runbook, as `virsh nodedev-dumpxml` printed it.
    const A100: &str = "<device>
  <name>pci_0000_25_00_0</name>
  <path>/sys/devices/pci0000:17/0000:17:00.0/0000:18:00.0/0000:19:04.0/0000:20:00.0/0000:21:10.0/0000:23:00.0/0000:24:00.0/0000:25:00.0</path>
  <parent>pci_0000_24_00_0</parent>
  <driver>
    <name>vfio-pci</name>
  </driver>
  <capability type='pci'>
    <domain>0</domain>
    <bus>37</bus>
    <slot>0</slot>
    <function>0</function>
    <product id='0x20b0' />
    <vendor id='0x10de'>NVIDIA Corporation</vendor>
    <capability type='virt_functions' maxCount='16'/>
    <iommuGroup number='47'>
      <address domain='0x0000' bus='0x25' slot='0x00' function='0x0'/>
    </iommuGroup>
    <numa node='0'/>
    <pci-express>
      <link validity='cap' port='0' speed='16' width='16'/>
      <link validity='sta' speed='16' width='16'/>
    </pci-express>
  </capability>
</device>";

    /// A device whose pci capability holds `caps` (inner XML) at 0000:3b:00.2.
    fn with_caps(name: &str, caps: &str) -> String {
        format!(
            "<device><name>{name}</name><capability type='pci'>\
             <class>0x020000</class><domain>0</domain><bus>59</bus><slot>0</slot><function>2</function>\
             <product id='0x1018'>MT27800 Family [ConnectX-5 Virtual Function]</product>\
             <vendor id='0x15b3'>Mellanox Technologies</vendor>{caps}\
             <iommuGroup number='22'/></capability></device>"
        )
    }

    fn addr(text: &str) -> PciAddress {
        text.parse().unwrap()
    }

    #[test]
    fn the_runbook_a100_is_type_pf() {
        let nd = NodeDevice::parse("pci_0000_25_00_0", A100).unwrap();
        assert_eq!(nd.name, "pci_0000_25_00_0");
        assert_eq!(nd.address, addr("0000:25:00.0"), "bus 37 is decimal");
        assert_eq!(nd.vendor, VendorId(0x10de));
        assert_eq!(nd.product, DeviceId(0x20b0));
        assert_eq!(nd.vendor_name.as_deref(), Some("NVIDIA Corporation"));
        assert_eq!(nd.product_name, None);
        assert_eq!(nd.driver, Some(DriverName::vfio_pci()));
        assert_eq!(nd.parent.as_deref(), Some("pci_0000_24_00_0"));
        assert_eq!(nd.iommu_group, Some(47));
        assert_eq!(nd.numa_node, Some(0));
        assert_eq!(nd.class, None);
        assert_eq!(nd.capability_kinds(), ["virt_functions"]);
        assert_eq!(nd.virt_functions().unwrap().max_count, Some(16));
        assert_eq!(nd.nova_device_type(), NovaDeviceType::Pf);
        assert_eq!(nd.nova_parent(), None);
    }

    #[test]
    fn empty_virt_functions_without_max_count_is_type_pf() {
        let nd =
            NodeDevice::parse("x", &with_caps("x", "<capability type='virt_functions'/>")).unwrap();
        assert_eq!(nd.nova_device_type(), NovaDeviceType::Pf);
        assert_eq!(nd.virt_functions().unwrap().max_count, None);
    }

    #[test]
    fn pf_with_enabled_vfs_lists_them() {
        let xml = with_caps(
            "pf",
            "<capability type='virt_functions' maxCount='8'>\
             <address domain='0x0000' bus='0x3b' slot='0x00' function='0x2'/>\
             <address domain='0x0000' bus='0x3b' slot='0x00' function='0x3'/></capability>",
        );
        let nd = NodeDevice::parse("pf", &xml).unwrap();
        assert_eq!(nd.nova_device_type(), NovaDeviceType::Pf);
        assert_eq!(
            nd.virt_functions().unwrap().addresses,
            [addr("3b:00.2"), addr("3b:00.3")]
        );
    }

    #[test]
    fn document_order_decides_vf_before_empty_virt_functions() {
        let xml = with_caps(
            "vf",
            "<capability type='phys_function'>\
             <address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/></capability>\
             <capability type='virt_functions'/>",
        );
        let nd = NodeDevice::parse("vf", &xml).unwrap();
        assert_eq!(nd.nova_device_type(), NovaDeviceType::Vf);
        assert_eq!(nd.nova_parent(), Some(addr("0000:3b:00.0")));
        assert_eq!(nd.capability_kinds(), ["phys_function", "virt_functions"]);

        // The other order makes the same device a PF, as in Nova.
        let xml = with_caps(
            "vf",
            "<capability type='virt_functions'/><capability type='phys_function'>\
             <address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/></capability>",
        );
        assert_eq!(
            NodeDevice::parse("vf", &xml).unwrap().nova_device_type(),
            NovaDeviceType::Pf
        );
    }

    #[test]
    fn phys_function_without_address_does_not_make_a_vf() {
        let xml = with_caps("x", "<capability type='phys_function'/>");
        let nd = NodeDevice::parse("x", &xml).unwrap();
        assert_eq!(nd.nova_device_type(), NovaDeviceType::Pci);
        let xml = with_caps(
            "x",
            "<capability type='phys_function'/><capability type='virt_functions' maxCount='4'/>",
        );
        assert_eq!(
            NodeDevice::parse("x", &xml).unwrap().nova_device_type(),
            NovaDeviceType::Pf,
            "an empty phys_function is skipped and the walk goes on"
        );
    }

    #[test]
    fn plain_pci_and_unrelated_capabilities() {
        let nd = NodeDevice::parse("x", &with_caps("x", "")).unwrap();
        assert_eq!(nd.nova_device_type(), NovaDeviceType::Pci);
        assert_eq!(nd.class, Some(ClassCode(0x020000)));
        let nd = NodeDevice::parse(
            "x",
            &with_caps(
                "x",
                "<capability type='mdev_types'/><capability type='vpd'/>",
            ),
        )
        .unwrap();
        assert_eq!(nd.nova_device_type(), NovaDeviceType::Pci);
        assert_eq!(nd.capability_kinds(), ["mdev_types", "vpd"]);
    }

    #[test]
    fn the_address_comes_from_the_xml_not_the_name() {
        let nd = NodeDevice::parse("pci_0000_99_00_0", &with_caps("pci_0000_99_00_0", "")).unwrap();
        assert_eq!(nd.name, "pci_0000_99_00_0");
        assert_eq!(nd.address, addr("0000:3b:00.2"));
    }

    #[test]
    fn hex_addresses_inside_capabilities_accept_both_spellings() {
        let xml = with_caps(
            "vf",
            "<capability type='phys_function'>\
             <address domain='0000' bus='3b' slot='0' function='0'/></capability>",
        );
        assert_eq!(
            NodeDevice::parse("vf", &xml).unwrap().nova_parent(),
            Some(addr("3b:00.0"))
        );
    }

    #[test]
    fn malformed_xml_is_an_error_naming_the_device() {
        let cases: &[(&str, &str)] = &[
            ("<device><name>a", "malformed XML"),
            ("<node/>", "root element is <node>"),
            ("<device><capability type='pci'/></device>", "no <name>"),
            (
                "<device><name>pci_x</name><capability type='usb_device'/></device>",
                "not a PCI node device",
            ),
        ];
        for (xml, reason) in cases {
            let err = NodeDevice::parse("listed_name", xml).unwrap_err();
            assert!(err.reason.contains(reason), "{xml}: {err}");
        }
        let err = NodeDevice::parse("listed_name", "<device/>").unwrap_err();
        assert_eq!(err.device, "listed_name");

        let bad = [
            (with_caps("d", "").replace("<bus>59</bus>", "<bus>0x3b</bus>"), "not a decimal number"),
            (with_caps("d", "").replace("<slot>0</slot>", ""), "no <slot>"),
            (with_caps("d", "").replace("<bus>59</bus>", "<bus>300</bus>"), "out of range"),
            (with_caps("d", "").replace(" id='0x1018'", ""), "<product> has no id"),
            (with_caps("d", "").replace("'0x15b3'", "'vendor'"), "not a 16-bit hex ID"),
            (
                with_caps("d", "<capability type='phys_function'><address domain='0' bus='zz' slot='0' function='0'/></capability>"),
                "bus='zz', not hex",
            ),
            (with_caps("d", "<capability type='virt_functions' maxCount='many'/>"), "maxCount='many'"),
        ];
        for (xml, reason) in &bad {
            let err = NodeDevice::parse("d", xml).unwrap_err();
            assert_eq!(err.device, "d");
            assert!(err.reason.contains(reason), "{reason}: {err}");
            assert!(err.to_string().starts_with("libvirt node device d: "));
        }
    }

    fn nodedev(addr_text: &str, caps: &str, group: u32) -> NodeDevice {
        let mut nd = NodeDevice::parse("x", &with_caps("x", caps)).unwrap();
        nd.address = addr(addr_text);
        nd.name = format!("pci_{}", addr_text.replace([':', '.'], "_"));
        nd.iommu_group = Some(group);
        nd
    }

    #[test]
    fn cross_check_lists_every_disagreement() {
        let mut pf = endpoint("0000:3b:00.0", 0x020000);
        pf.ids.vendor = VendorId(0x15b3);
        pf.ids.device = DeviceId(0x1018);
        pf.iommu_group = Some(21);
        pf.sriov = SriovRole::Pf {
            total_vfs: 8,
            num_vfs: 0,
            vfs: vec![],
        };
        let mut agreeing = pf.clone();
        agreeing.address = addr("0000:3b:00.1");
        let mut only_sysfs = pf.clone();
        only_sysfs.address = addr("0000:3b:00.4");
        let inv = Inventory {
            devices: vec![pf, agreeing, only_sysfs],
            ..Default::default()
        };
        let mut stale = nodedev("0000:3b:00.0", "", 22);
        stale.driver = Some(DriverName::new("mlx5_core"));
        let nodedevs = vec![
            stale,
            nodedev("0000:3b:00.1", "<capability type='virt_functions'/>", 21),
            nodedev("0000:3b:00.5", "", 30),
        ];
        let got = cross_check(&inv, &nodedevs);
        let summary: Vec<(String, Vec<String>)> = got
            .iter()
            .map(|c| {
                (
                    c.address.to_string(),
                    c.disagreements.iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        assert_eq!(summary.len(), 4);
        assert_eq!(summary[0].0, "0000:3b:00.0");
        assert_eq!(
            summary[0].1,
            [
                "IOMMU group: libvirt 22, sysfs 21",
                "device_type: libvirt makes it type-PCI (Nova uses this), sysfs says type-PF",
                "driver: libvirt mlx5_core, sysfs none",
            ]
        );
        assert!(summary[1].1.is_empty(), "{:?}", summary[1]);
        assert_eq!(summary[2].0, "0000:3b:00.4");
        assert_eq!(got[2].disagreements, [Disagreement::MissingInLibvirt]);
        assert_eq!(got[3].disagreements, [Disagreement::MissingInSysfs]);

        let sel: Vec<Selector> = vec!["3b:00.5".parse().unwrap()];
        assert_eq!(
            select(&got, &sel).unwrap().len(),
            1,
            "libvirt-only devices can be selected"
        );
        let sel: Vec<Selector> = vec!["group=30".parse().unwrap(), "3b:00.4".parse().unwrap()];
        assert_eq!(select(&got, &sel).unwrap().len(), 2);
        let sel: Vec<Selector> = vec!["class=gpu".parse().unwrap()];
        assert_eq!(select(&got, &sel).unwrap_err(), NoMatch("class=gpu".into()));
        assert_eq!(select(&got, &[]).unwrap().len(), 4);
    }

    #[test]
    fn node_devices_sharing_an_address_are_flagged() {
        let inv = Inventory::default();
        let mut a = nodedev("0000:01:00.0", "", 1);
        a.name = "pci_a".into();
        let mut b = a.clone();
        b.name = "pci_b".into();
        let nodedevs = [b, a];
        let got = cross_check(&inv, &nodedevs);
        assert_eq!(got[0].libvirt.unwrap().name, "pci_a");
        assert_eq!(
            got[0].disagreements,
            [
                Disagreement::DuplicateAddress {
                    other: "pci_b".into()
                },
                Disagreement::MissingInSysfs
            ]
        );
    }
}
