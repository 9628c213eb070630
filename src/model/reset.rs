//! Linux's PCI function reset methods (`reset_method`, 5.15+): their names
//! as the kernel spells them, and what each resets besides the function.
//! What `vfioctl reset` reads of a device before and after its reset
//! ([`Fitness`]), the verdict on the two ([`verify`]: config space, BARs,
//! link, AER, power state, driver and VFIO node), and the state it keeps
//! between runs ([`ResetState`], /var/lib/vfioctl/reset.json). Pure:
//! `host::reset` reads the files.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

use super::health::{AerTotals, Link, DEAD_WIDTH};
use super::{DeviceId, DriverKind, DriverName, PciAddress, VendorId};

/// One reset method, as `/sys/bus/pci/devices/ADDR/reset_method` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetMethod {
    DeviceSpecific,
    Acpi,
    Flr,
    AfFlr,
    Pm,
    Bus,
    CxlBus,
}

impl ResetMethod {
    pub const ALL: [ResetMethod; 7] = [
        ResetMethod::DeviceSpecific,
        ResetMethod::Acpi,
        ResetMethod::Flr,
        ResetMethod::AfFlr,
        ResetMethod::Pm,
        ResetMethod::Bus,
        ResetMethod::CxlBus,
    ];

    /// The kernel's name (`pci_reset_fn_methods[]`).
    pub fn name(self) -> &'static str {
        match self {
            ResetMethod::DeviceSpecific => "device_specific",
            ResetMethod::Acpi => "acpi",
            ResetMethod::Flr => "flr",
            ResetMethod::AfFlr => "af_flr",
            ResetMethod::Pm => "pm",
            ResetMethod::Bus => "bus",
            ResetMethod::CxlBus => "cxl_bus",
        }
    }

    /// A secondary bus reset (`bus`, `cxl_bus`) resets every function below
    /// the bridge above the device, not the function alone.
    pub fn resets_the_bus(self) -> bool {
        matches!(self, ResetMethod::Bus | ResetMethod::CxlBus)
    }
}

impl fmt::Display for ResetMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the kernel's reset methods.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a reset method; the kernel's are device_specific, acpi, flr, af_flr, pm, bus and cxl_bus")]
pub struct UnknownResetMethod(pub String);

impl FromStr for ResetMethod {
    type Err = UnknownResetMethod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResetMethod::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownResetMethod(s.to_string()))
    }
}

/// Whether a reset made with `methods` (the kernel's names, in its order;
/// `chosen` when one is asked for) may reset the bus: with no method chosen
/// the kernel tries each listed method in turn, so the worst one counts. A
/// name vfioctl does not know counts as a bus reset (fail closed).
pub fn may_reset_the_bus(methods: &[String], chosen: Option<ResetMethod>) -> bool {
    match chosen {
        Some(m) => m.resets_the_bus(),
        None => methods.iter().any(|name| {
            name.parse::<ResetMethod>()
                .map_or(true, |m| m.resets_the_bus())
        }),
    }
}

fn hex<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("0x{value:x}"))
}

fn hex32s<S: Serializer>(values: &Option<Vec<u32>>, s: S) -> Result<S::Ok, S::Error> {
    match values {
        None => s.serialize_none(),
        Some(v) => s.collect_seq(v.iter().map(|x| format!("0x{x:08x}"))),
    }
}

/// What the first bytes of the function's `config` file read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConfigIds {
    /// The vendor and device ID registers.
    Readable {
        vendor_id: VendorId,
        device_id: DeviceId,
    },
    /// All ones: the device does not answer (gone, or stuck in reset or D3cold).
    AllOnes,
    /// The file could not be read.
    Unreadable,
}

impl ConfigIds {
    /// From the first 64 bytes of config space (`None`: unreadable). A VF's
    /// ID registers read all ones by design (its IDs are in its PF's SR-IOV
    /// capability): for a VF (`vf_ids`: its IDs as the kernel knows them)
    /// the class register tells whether it answers.
    pub fn from_header(
        header: Option<&[u8; 64]>,
        vf_ids: Option<(VendorId, DeviceId)>,
    ) -> ConfigIds {
        let Some(h) = header else {
            return ConfigIds::Unreadable;
        };
        let ids = ConfigIds::from_bytes(Some([h[0], h[1], h[2], h[3]]));
        match (ids, vf_ids) {
            (ConfigIds::AllOnes, Some((vendor_id, device_id))) if h[8..12] != [0xff; 4] => {
                ConfigIds::Readable {
                    vendor_id,
                    device_id,
                }
            }
            _ => ids,
        }
    }

    /// From the first four bytes of config space (`None`: unreadable).
    pub fn from_bytes(bytes: Option<[u8; 4]>) -> ConfigIds {
        match bytes {
            None => ConfigIds::Unreadable,
            Some(b) if b == [0xff; 4] => ConfigIds::AllOnes,
            Some(b) => ConfigIds::Readable {
                vendor_id: VendorId(u16::from_le_bytes([b[0], b[1]])),
                device_id: DeviceId(u16::from_le_bytes([b[2], b[3]])),
            },
        }
    }
}

/// One resource the kernel assigned the function (a line of `resource`
/// whose start or end is not 0): its index (0-5 the BARs, 6 the ROM, then
/// the SR-IOV BARs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Resource {
    pub index: usize,
    #[serde(serialize_with = "hex")]
    pub start: u64,
    #[serde(serialize_with = "hex")]
    pub end: u64,
    #[serde(serialize_with = "hex")]
    pub flags: u64,
}

impl Resource {
    /// The assigned lines of a `resource` file (`0xSTART 0xEND 0xFLAGS` each).
    pub fn parse_file(text: &str) -> Vec<Resource> {
        let number = |t: &str| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok();
        text.lines()
            .enumerate()
            .filter_map(|(index, line)| {
                let mut fields = line.split_whitespace();
                let start = number(fields.next()?)?;
                let end = number(fields.next()?)?;
                let flags = number(fields.next()?).unwrap_or(0);
                (start != 0 || end != 0).then_some(Resource {
                    index,
                    start,
                    end,
                    flags,
                })
            })
            .collect()
    }
}

/// What `vfioctl reset` reads of one device, before and after its reset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fitness {
    /// The ID registers as config space reads them now.
    pub config: ConfigIds,
    /// The six BAR registers of config space (offsets 0x10 to 0x24);
    /// `None` when they could not be read.
    #[serde(serialize_with = "hex32s")]
    pub bar_registers: Option<Vec<u32>>,
    /// The resources the kernel assigned (`resource`).
    pub resources: Vec<Resource>,
    /// The function whose link is read: the device, or a VF's PF.
    pub link_of: PciAddress,
    /// `None`: no link attributes.
    pub link: Option<Link>,
    /// The AER totals of the device (a VF's PF) and of every port above it.
    pub aer: BTreeMap<PciAddress, AerTotals>,
    pub power_state: Option<String>,
    pub driver: Option<DriverName>,
    /// The IOMMU group, and whether `/dev/vfio/N` exists (asked only when
    /// the device is on a VFIO driver).
    pub iommu_group: Option<u32>,
    pub vfio_node: Option<bool>,
}

/// What one verification looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Config,
    Bars,
    Link,
    Aer,
    Power,
    Driver,
    VfioNode,
}

impl Check {
    pub fn label(self) -> &'static str {
        match self {
            Check::Config => "config",
            Check::Bars => "BARs",
            Check::Link => "link",
            Check::Aer => "AER",
            Check::Power => "power",
            Check::Driver => "driver",
            Check::VfioNode => "VFIO node",
        }
    }
}

/// One verification's verdict, with what it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: Check,
    pub ok: bool,
    pub message: String,
}

fn finding(check: Check, ok: bool, message: String) -> Finding {
    Finding { check, ok, message }
}

fn link_text(l: &Link) -> String {
    format!(
        "{} x{}",
        l.current_speed.as_deref().unwrap_or("unknown speed"),
        l.current_width.map_or("?".to_string(), |w| w.to_string())
    )
}

/// Compares a device after its reset with the device before it: config
/// space answers with the same IDs, the BARs and the kernel's resources are
/// as before, the link is back at its width and speed (or its maximum), no
/// new fatal or nonfatal AER error on the device or a port above it, power
/// D0 (or D3hot as before: a driver may suspend an idle device again), the
/// same driver, and `/dev/vfio/N` for a device on a VFIO driver. The device
/// is fit for the next tenant when every finding is ok.
pub fn verify(before: &Fitness, after: &Fitness) -> Vec<Finding> {
    let mut out = vec![verify_config(before, after)];
    out.push(verify_bars(before, after));
    out.push(verify_link(before, after));
    out.push(verify_aer(before, after));
    out.push(verify_power(before, after));
    out.push(if after.driver == before.driver {
        finding(
            Check::Driver,
            true,
            format!("on {}, as before", driver_text(after.driver.as_ref())),
        )
    } else {
        finding(
            Check::Driver,
            false,
            format!(
                "on {} after the reset, {} before",
                driver_text(after.driver.as_ref()),
                driver_text(before.driver.as_ref())
            ),
        )
    });
    let vfio = after
        .driver
        .as_ref()
        .is_some_and(|d| d.kind() == DriverKind::Vfio);
    if let (true, Some(group)) = (vfio, after.iommu_group) {
        let present = after.vfio_node == Some(true);
        out.push(finding(
            Check::VfioNode,
            present,
            if present {
                format!("/dev/vfio/{group} present")
            } else {
                format!("/dev/vfio/{group} missing")
            },
        ));
    }
    out
}

fn driver_text(d: Option<&DriverName>) -> String {
    d.map_or("no driver".to_string(), ToString::to_string)
}

fn verify_config(before: &Fitness, after: &Fitness) -> Finding {
    match (after.config, before.config) {
        (
            ConfigIds::Readable {
                vendor_id,
                device_id,
            },
            ConfigIds::Readable {
                vendor_id: was_vendor,
                device_id: was_device,
            },
        ) if (vendor_id, device_id) != (was_vendor, was_device) => finding(
            Check::Config,
            false,
            format!("reads {vendor_id}:{device_id}, {was_vendor}:{was_device} before the reset"),
        ),
        (
            ConfigIds::Readable {
                vendor_id,
                device_id,
            },
            _,
        ) => finding(
            Check::Config,
            true,
            format!("reads {vendor_id}:{device_id}"),
        ),
        (ConfigIds::AllOnes, _) => finding(
            Check::Config,
            false,
            "reads all ones: the device did not come back from the reset".to_string(),
        ),
        (ConfigIds::Unreadable, _) => finding(
            Check::Config,
            false,
            "cannot be read after the reset".to_string(),
        ),
    }
}

fn verify_bars(before: &Fitness, after: &Fitness) -> Finding {
    let lost: Vec<String> = before
        .resources
        .iter()
        .filter(|r| !after.resources.contains(r))
        .map(|r| format!("resource {} (0x{:x}-0x{:x})", r.index, r.start, r.end))
        .collect();
    if !lost.is_empty() {
        return finding(
            Check::Bars,
            false,
            format!("no longer assigned as before: {}", lost.join(", ")),
        );
    }
    if after.config == ConfigIds::AllOnes {
        return finding(
            Check::Bars,
            false,
            "cannot be judged: config space reads all ones".to_string(),
        );
    }
    match (&before.bar_registers, &after.bar_registers) {
        (Some(b), Some(a)) if a != b => {
            let changed: Vec<String> = b
                .iter()
                .zip(a)
                .enumerate()
                .filter(|(_, (x, y))| x != y)
                .map(|(i, (x, y))| format!("BAR{i} 0x{y:08x} (0x{x:08x} before)"))
                .collect();
            finding(
                Check::Bars,
                false,
                format!("config space lost its BARs: {}", changed.join(", ")),
            )
        }
        (Some(_), None) => finding(
            Check::Bars,
            false,
            "the BAR registers cannot be read after the reset".to_string(),
        ),
        _ => finding(
            Check::Bars,
            true,
            format!(
                "{} resource(s) assigned as before, BAR registers as before",
                after.resources.len()
            ),
        ),
    }
}

fn verify_link(before: &Fitness, after: &Fitness) -> Finding {
    let Some(was) = before.link.as_ref().filter(|l| l.has_link()) else {
        return finding(Check::Link, true, "no link to judge".to_string());
    };
    let of = if after.link_of == before.link_of {
        String::new()
    } else {
        format!(" (of {})", after.link_of)
    };
    let Some(now) = after.link.as_ref() else {
        return finding(
            Check::Link,
            false,
            format!("link attributes gone after the reset{of}"),
        );
    };
    let dead = now.unreadable || now.current_width.is_none_or(|w| w == 0 || w == DEAD_WIDTH);
    if dead {
        return finding(
            Check::Link,
            false,
            format!("link down after the reset{of}: {}", link_text(now)),
        );
    }
    let width_ok = match (now.current_width, was.current_width) {
        (Some(n), Some(w)) => n >= w || now.max_width == Some(n),
        _ => true,
    };
    let speed_ok = match (now.current_gts(), was.current_gts()) {
        (Some(n), Some(w)) => n >= w || now.max_gts() == Some(n),
        (None, Some(_)) => false,
        _ => true,
    };
    let message = format!("{}{of} (before: {})", link_text(now), link_text(was));
    finding(Check::Link, width_ok && speed_ok, message)
}

fn verify_aer(before: &Fitness, after: &Fitness) -> Finding {
    if before.aer.is_empty() && after.aer.is_empty() {
        return finding(
            Check::Aer,
            true,
            "no AER counters on the device or above it".to_string(),
        );
    }
    let mut problems = Vec::new();
    let mut correctable = 0;
    for (address, was) in &before.aer {
        let Some(now) = after.aer.get(address) else {
            problems.push(format!("{address}: counters unreadable after the reset"));
            continue;
        };
        if now.went_down_from(was) {
            problems.push(format!("{address}: counters went down (enumerated again?)"));
            continue;
        }
        if now.fatal > was.fatal {
            problems.push(format!("{address}: {} new fatal", now.fatal - was.fatal));
        }
        if now.nonfatal > was.nonfatal {
            problems.push(format!(
                "{address}: {} new nonfatal",
                now.nonfatal - was.nonfatal
            ));
        }
        correctable += now.correctable - was.correctable;
    }
    if !problems.is_empty() {
        return finding(Check::Aer, false, problems.join(", "));
    }
    let extra = if correctable > 0 {
        format!(" ({correctable} correctable)")
    } else {
        String::new()
    };
    finding(
        Check::Aer,
        true,
        format!(
            "no new fatal or nonfatal error on {} function(s){extra}",
            after.aer.len()
        ),
    )
}

fn verify_power(before: &Fitness, after: &Fitness) -> Finding {
    match (after.power_state.as_deref(), before.power_state.as_deref()) {
        (Some("D0"), _) => finding(Check::Power, true, "D0".to_string()),
        (Some("D3hot"), Some("D3hot")) => finding(
            Check::Power,
            true,
            "D3hot, as before (its driver suspends it while idle)".to_string(),
        ),
        (None, None) => finding(
            Check::Power,
            true,
            "power_state not shown by this kernel".to_string(),
        ),
        (now, was) => finding(
            Check::Power,
            false,
            format!(
                "{} after the reset, {} before",
                now.unwrap_or("not shown"),
                was.unwrap_or("not shown")
            ),
        ),
    }
}

/// How a device's last reset by vfioctl ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Reset and verified: fit for the next tenant.
    Verified,
    /// Reset, and a verification failed.
    Unfit,
    /// The reset write failed.
    Failed,
    /// The reset did not return by the deadline (still in the kernel).
    Pending,
    /// vfioctl was killed while resetting it (found by `recover`).
    Interrupted,
}

impl Outcome {
    pub fn verified(self) -> bool {
        self == Outcome::Verified
    }
}

/// The last reset of one device, as /var/lib/vfioctl/reset.json keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetEntry {
    pub outcome: Outcome,
    /// Seconds since the epoch, UTC.
    pub at: u64,
    pub boot_id: Option<String>,
    /// `vendor:device` when reset: an entry applies to that card only.
    pub ids: String,
    /// The method asked for (`--method`); null: the kernel's order.
    #[serde(default)]
    pub method: Option<String>,
    /// The failed verifications (or the error).
    #[serde(default)]
    pub findings: Vec<String>,
}

/// /var/lib/vfioctl/reset.json: every device's last reset by vfioctl.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetState {
    #[serde(default)]
    pub devices: BTreeMap<PciAddress, ResetEntry>,
}

/// `vendor:device`, as a reset entry names a card.
pub fn ids_text(vendor: VendorId, device: DeviceId) -> String {
    format!("{vendor}:{device}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_the_bus_methods_reach_beyond_the_function() {
        for m in ResetMethod::ALL {
            assert_eq!(m.name().parse::<ResetMethod>().unwrap(), m);
        }
        assert!("flr\nbus".parse::<ResetMethod>().is_err());
        assert!("".parse::<ResetMethod>().is_err());
        let bus: Vec<ResetMethod> = ResetMethod::ALL
            .into_iter()
            .filter(|m| m.resets_the_bus())
            .collect();
        assert_eq!(bus, [ResetMethod::Bus, ResetMethod::CxlBus]);
        let listed = |t: &str| t.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert!(!may_reset_the_bus(&listed("flr pm"), None));
        assert!(may_reset_the_bus(&listed("flr bus"), None));
        assert!(!may_reset_the_bus(
            &listed("flr bus"),
            Some(ResetMethod::Flr)
        ));
        assert!(
            may_reset_the_bus(&listed("flr someday"), None),
            "unknown: fail closed"
        );
    }

    fn fit() -> Fitness {
        Fitness {
            config: ConfigIds::from_bytes(Some([0x86, 0x80, 0xd3, 0x10])),
            bar_registers: Some(vec![0xfe00_0000, 0, 0, 0, 0, 0]),
            resources: Resource::parse_file(
                "0x00000000fe000000 0x00000000fe01ffff 0x0000000000040200\n0x0000000000000000 0x0000000000000000 0x0000000000000000\n",
            ),
            link_of: "01:00.0".parse().unwrap(),
            link: Some(Link {
                current_speed: Some("8.0 GT/s PCIe".into()),
                max_speed: Some("16.0 GT/s PCIe".into()),
                current_width: Some(4),
                max_width: Some(16),
                unreadable: false,
            }),
            aer: BTreeMap::from([("01:00.0".parse().unwrap(), AerTotals::default())]),
            power_state: Some("D0".into()),
            driver: Some(DriverName::vfio_pci()),
            iommu_group: Some(5),
            vfio_node: Some(true),
        }
    }

    fn failed(before: &Fitness, after: &Fitness) -> Vec<(Check, String)> {
        verify(before, after)
            .into_iter()
            .filter(|f| !f.ok)
            .map(|f| (f.check, f.message))
            .collect()
    }

    #[test]
    fn a_device_as_it_was_verifies_and_every_loss_is_named() {
        let before = fit();
        let findings = verify(&before, &before);
        assert!(findings.iter().all(|f| f.ok), "{findings:?}");
        assert_eq!(
            findings.iter().map(|f| f.check).collect::<Vec<_>>(),
            [
                Check::Config,
                Check::Bars,
                Check::Link,
                Check::Aer,
                Check::Power,
                Check::Driver,
                Check::VfioNode
            ]
        );
        assert_eq!(ConfigIds::from_bytes(None), ConfigIds::Unreadable);
        // A VF's ID registers read all ones by design; its class register answers.
        let mut vf = [0xffu8; 64];
        vf[8..12].copy_from_slice(&[0x00, 0x00, 0x00, 0x02]);
        let ids = (VendorId(0x8086), DeviceId(0x10ca));
        assert_eq!(
            ConfigIds::from_header(Some(&vf), Some(ids)),
            ConfigIds::Readable {
                vendor_id: ids.0,
                device_id: ids.1
            }
        );
        assert_eq!(ConfigIds::from_header(Some(&vf), None), ConfigIds::AllOnes);
        assert_eq!(
            ConfigIds::from_header(Some(&[0xff; 64]), Some(ids)),
            ConfigIds::AllOnes
        );
        // Gone: config all ones, BARs lost, link down, a fatal error, D3cold, no node.
        let mut gone = fit();
        gone.config = ConfigIds::from_bytes(Some([0xff; 4]));
        gone.bar_registers = Some(vec![0; 6]);
        gone.link.as_mut().unwrap().current_width = Some(DEAD_WIDTH);
        gone.aer.values_mut().for_each(|a| a.fatal = 1);
        gone.power_state = Some("D3cold".into());
        gone.vfio_node = Some(false);
        let f = failed(&before, &gone);
        let checks: Vec<Check> = f.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            checks,
            [
                Check::Config,
                Check::Bars,
                Check::Link,
                Check::Aer,
                Check::Power,
                Check::VfioNode
            ],
            "{f:?}"
        );
        assert!(f[0].1.contains("all ones"), "{f:?}");
        assert!(f[1].1.contains("config space reads all ones"), "{f:?}");
        let mut lost = fit();
        lost.bar_registers = Some(vec![0; 6]);
        let f2 = failed(&before, &lost);
        assert!(
            f2[0].1.contains("BAR0 0x00000000 (0xfe000000 before)"),
            "{f2:?}"
        );
        assert!(f[3].1.contains("1 new fatal"), "{f:?}");
        // A narrower or slower link fails, unless it is at its maximum;
        // a resource the kernel no longer assigns fails.
        let mut slow = fit();
        slow.link.as_mut().unwrap().current_speed = Some("2.5 GT/s PCIe".into());
        assert_eq!(failed(&before, &slow)[0].0, Check::Link);
        let mut full = fit();
        let l = full.link.as_mut().unwrap();
        (l.current_speed, l.current_width) = (Some("16.0 GT/s PCIe".into()), Some(16));
        assert!(failed(&before, &full).is_empty());
        let mut unassigned = fit();
        unassigned.resources.clear();
        assert!(failed(&before, &unassigned)[0]
            .1
            .contains("no longer assigned as before: resource 0"));
        // D3hot as before is its driver's doing; another driver is not.
        let (mut was, mut now) = (fit(), fit());
        was.power_state = Some("D3hot".into());
        now.power_state = Some("D3hot".into());
        assert!(failed(&was, &now).is_empty());
        now.driver = None;
        assert_eq!(failed(&was, &now)[0].0, Check::Driver);
        // Other IDs: another device answers.
        let mut other = fit();
        other.config = ConfigIds::from_bytes(Some([0xde, 0x10, 0xb0, 0x20]));
        assert_eq!(
            failed(&before, &other)[0].1,
            "reads 10de:20b0, 8086:10d3 before the reset"
        );
    }
}
