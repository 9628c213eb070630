//! Device health as sysfs shows it, parsed: PCIe link, AER error counts,
//! reset methods, power state and BAR0; the thresholds they are judged by;
//! the AER baseline kept between runs. Pure: `host::health` reads the files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::PciAddress;

/// A link speed in GT/s from `current_link_speed` / `max_link_speed`:
/// "16.0 GT/s PCIe" (5.x and later), "16 GT/s" and "2.5 GT/s" (4.13 to
/// 5.x). `None` for "Unknown", "Unknown speed" (a dead link or an
/// integrated endpoint) and anything else.
pub fn parse_gts(text: &str) -> Option<f64> {
    let number = text.trim().strip_suffix(" PCIe").unwrap_or(text.trim());
    let number = number.strip_suffix("GT/s")?.trim();
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value > 0.0).then_some(value)
}

/// A speed as people write it: "16", "2.5".
pub fn gts_text(gts: f64) -> String {
    format!("{gts}")
}

/// The four link attributes of one function (present on PCIe functions
/// since 4.13); each `None` when it could not be read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Link {
    pub current_speed: Option<String>,
    pub max_speed: Option<String>,
    pub current_width: Option<u32>,
    pub max_width: Option<u32>,
    /// An attribute exists but could not be read: the kernel cannot reach the
    /// function's config space (disconnected, or given up after a failed
    /// error recovery).
    pub unreadable: bool,
}

/// What a dead link's status register reads: all ones in the width field.
pub const DEAD_WIDTH: u32 = 63;

impl Link {
    pub fn current_gts(&self) -> Option<f64> {
        self.current_speed.as_deref().and_then(parse_gts)
    }
    pub fn max_gts(&self) -> Option<f64> {
        self.max_speed.as_deref().and_then(parse_gts)
    }
    /// Whether the function has a link at all: a root-complex integrated
    /// endpoint shows the attributes with a maximum width of 0. An
    /// unreadable one counts (and is judged dead).
    pub fn has_link(&self) -> bool {
        self.unreadable || self.max_width.is_some_and(|w| w != 0)
    }
}

/// Totals of the three AER counters (`TOTAL_ERR_*` lines).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AerTotals {
    pub correctable: u64,
    pub nonfatal: u64,
    pub fatal: u64,
}

impl AerTotals {
    /// Whether any counter is below `base`: the function was enumerated
    /// again (reboot, hot-plug, replaced card) since `base` was read.
    pub fn went_down_from(&self, base: &AerTotals) -> bool {
        self.correctable < base.correctable
            || self.nonfatal < base.nonfatal
            || self.fatal < base.fatal
    }
}

/// One function's AER counters: the totals and every named error type
/// counted at least once ("correctable RxErr 3").
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AerCounters {
    pub totals: AerTotals,
    pub nonzero: Vec<String>,
}

/// Parses one `aer_dev_*` file: `Name count` lines, unnamed bits as
/// `dev_cor_errs_bit[N] count`, and the total last (`TOTAL_ERR_COR N`).
/// Returns the total and the nonzero `(name, count)` lines; `None` when
/// there is no total line or a count is not a number.
pub fn parse_aer_file(text: &str) -> Option<(u64, Vec<(String, u64)>)> {
    let mut total = None;
    let mut nonzero = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (name, count) = line.trim().rsplit_once(' ')?;
        let count: u64 = count.parse().ok()?;
        if name.starts_with("TOTAL_") {
            total = Some(count);
        } else if count > 0 {
            nonzero.push((name.trim().to_string(), count));
        }
    }
    Some((total?, nonzero))
}

/// A function's `reset_method` (5.15+).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "methods", rename_all = "snake_case")]
pub enum ResetMethods {
    /// The methods in the kernel's order of use; empty: an admin disabled them all.
    Listed(Vec<String>),
    /// Neither `reset_method` nor `reset`: the kernel found no way to reset it.
    None,
    /// `reset` without `reset_method`: resettable, on a kernel before 5.15.
    Unlisted,
    /// The attribute exists but could not be read.
    Unreadable,
}

impl ResetMethods {
    /// Parses the attribute's text: methods separated by spaces.
    pub fn parse(text: &str) -> ResetMethods {
        ResetMethods::Listed(text.split_whitespace().map(str::to_string).collect())
    }
}

/// BAR0 as the config header reads it (offset 0x10; with the high half at
/// 0x14 when it is a 64-bit memory BAR), and whether the kernel assigned it
/// an address (`resource`, read only when BAR0 reads 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bar0 {
    pub low: u32,
    pub high: Option<u32>,
    pub assigned: Option<bool>,
}

impl Bar0 {
    /// From the first 64 bytes of config space.
    pub fn from_header(header: &[u8; 64]) -> Bar0 {
        let dword = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
        let low = dword(0x10);
        // A memory BAR (bit 0 clear) of type 64-bit (bits 2:1 = 10).
        let wide = low != u32::MAX && low & 0x1 == 0 && (low >> 1) & 0x3 == 0x2;
        Bar0 {
            low,
            high: wide.then(|| dword(0x14)),
            assigned: None,
        }
    }

    /// The address the BAR holds: flags masked off (bit 0 set: an I/O BAR).
    pub fn address(&self) -> u64 {
        let low = if self.low & 1 == 1 {
            self.low & !0x3
        } else {
            self.low & !0xf
        };
        (u64::from(self.high.unwrap_or(0)) << 32) | u64::from(low)
    }

    pub fn all_ones(&self) -> bool {
        self.low == u32::MAX
    }
}

/// What was read of one function: a judged device or a port above one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionHealth {
    pub address: PciAddress,
    /// `vendor:device:subsystem_vendor:subsystem_device rev NN`: a replaced
    /// card of another model reads differently.
    pub identity: Option<String>,
    /// The PCIe Device Serial Number (root only: beyond the first 64 bytes of
    /// config space), as 16 hex digits.
    pub serial: Option<String>,
    pub power_state: Option<String>,
    /// `None`: no link attributes (conventional PCI).
    pub link: Option<Link>,
    /// `None`: no AER counters (no AER capability, or no CONFIG_PCIEAER).
    pub aer: Option<AerCounters>,
    /// A root port's `aer_rootport_total_err_*`: everything reported below it.
    pub rootport_aer: Option<AerTotals>,
    /// Read for judged devices only.
    pub reset: Option<ResetMethods>,
    /// vfio-pci's enable count: 0 while no user (VM) has the device open.
    pub enable: Option<u32>,
    /// Read for judged endpoints that are not VFs.
    pub bar0: Option<Bar0>,
    /// Other functions on the same bus: read when `bus` is the only reset.
    pub bus_siblings: Vec<PciAddress>,
}

impl FunctionHealth {
    /// Nothing read yet.
    pub fn new(address: PciAddress) -> FunctionHealth {
        FunctionHealth {
            address,
            identity: None,
            serial: None,
            power_state: None,
            link: None,
            aer: None,
            rootport_aer: None,
            reset: None,
            enable: None,
            bar0: None,
            bus_siblings: Vec::new(),
        }
    }
}

/// Everything read for the devices judged: their functions and the ports
/// above them, by address.
#[derive(Debug, Clone, Default)]
pub struct HealthFacts {
    pub functions: BTreeMap<PciAddress, FunctionHealth>,
    /// A function's ports up to the root port, nearest first; an empty list
    /// for a function on a root bus.
    pub upstream: BTreeMap<PciAddress, Vec<PciAddress>>,
    /// Whether the OS owns AER below a root port (its `pcie002` service).
    pub aer_service: BTreeMap<PciAddress, bool>,
    /// /proc/sys/kernel/random/boot_id.
    pub boot_id: Option<String>,
}

impl HealthFacts {
    /// `address` and its ports, nearest first.
    pub fn path(&self, address: PciAddress) -> Vec<&FunctionHealth> {
        std::iter::once(address)
            .chain(self.upstream.get(&address).into_iter().flatten().copied())
            .filter_map(|a| self.functions.get(&a))
            .collect()
    }
    /// The functions of `address`'s path that report a link (powered:
    /// a function in D3cold reports none), nearest first.
    pub fn linked_path(&self, address: PciAddress) -> Vec<&FunctionHealth> {
        self.path(address)
            .into_iter()
            .filter(|f| f.power_state.as_deref() != Some("D3cold"))
            .filter(|f| f.link.as_ref().is_some_and(Link::has_link))
            .collect()
    }

    /// The width and speed `address`'s path allows: the narrowest and
    /// slowest maximum from it to its root port.
    pub fn expected(&self, address: PciAddress) -> (Option<u32>, Option<f64>) {
        let path = self.linked_path(address);
        let links = || path.iter().filter_map(|f| f.link.as_ref());
        (
            links()
                .filter_map(|l| l.max_width)
                .filter(|w| *w != DEAD_WIDTH)
                .min(),
            links().filter_map(Link::max_gts).reduce(f64::min),
        )
    }

    /// The root port above `address` (the last port of its path).
    pub fn root_port(&self, address: PciAddress) -> Option<PciAddress> {
        self.upstream.get(&address)?.last().copied()
    }
}

/// How the link speed is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpeedPolicy {
    /// Only while the device is idle (enable count 0): drivers lower the
    /// speed of a link in use to save power.
    Idle,
    Always,
    Never,
}

/// A verdict a threshold can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

/// The verdict check.toml gives to what the host structurally cannot
/// report (`[not_judged]`): any of the four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Ok,
    Warning,
    Critical,
    Unknown,
}

/// Why a device's health family is not judged: the host cannot report it by
/// design (not a read that failed: that is UNKNOWN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotJudged {
    /// The firmware keeps AER below the root port (firmware-first: no
    /// `pcie002` service): the OS's counters stay 0.
    FirmwareFirstAer,
    /// No PCIe link: a conventional PCI function or an integrated endpoint.
    NoPcieLink,
    /// On a root bus (an integrated endpoint, or a device a hypervisor put
    /// on the root complex): no root port whose AER service would count.
    NoRootPort,
    /// No AER capability on the device or any port above it.
    NoAerCapability,
}

impl NotJudged {
    /// The JSON and Prometheus label value, and check.toml's key.
    pub fn key(self) -> &'static str {
        match self {
            NotJudged::FirmwareFirstAer => "firmware_first_aer",
            NotJudged::NoPcieLink => "no_pcie_link",
            NotJudged::NoRootPort => "no_root_port",
            NotJudged::NoAerCapability => "no_aer_capability",
        }
    }
    /// A few words for summaries: "firmware-first AER".
    pub fn words(self) -> &'static str {
        match self {
            NotJudged::FirmwareFirstAer => "firmware-first AER",
            NotJudged::NoPcieLink => "no PCIe link",
            NotJudged::NoRootPort => "no root port",
            NotJudged::NoAerCapability => "no AER capability",
        }
    }
}

/// `[not_judged]`: the verdict for each reason a family is not judged.
/// OK by default: a host that cannot report something by design is not a
/// check that failed to run.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotJudgedThresholds {
    pub firmware_first_aer: Severity,
    pub no_pcie_link: Severity,
    pub no_root_port: Severity,
    pub no_aer_capability: Severity,
}

impl Default for NotJudgedThresholds {
    fn default() -> Self {
        NotJudgedThresholds {
            firmware_first_aer: Severity::Ok,
            no_pcie_link: Severity::Ok,
            no_root_port: Severity::Ok,
            no_aer_capability: Severity::Ok,
        }
    }
}

impl NotJudgedThresholds {
    pub fn severity(&self, why: NotJudged) -> Severity {
        match why {
            NotJudged::FirmwareFirstAer => self.firmware_first_aer,
            NotJudged::NoPcieLink => self.no_pcie_link,
            NotJudged::NoRootPort => self.no_root_port,
            NotJudged::NoAerCapability => self.no_aer_capability,
        }
    }
}

/// `[change]`: how long a change recorded as in progress may run before
/// `check` warns (a change blocked in the kernel, or a stuck process).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangeThresholds {
    pub in_progress_minutes: u64,
}

impl Default for ChangeThresholds {
    fn default() -> Self {
        ChangeThresholds {
            in_progress_minutes: 15,
        }
    }
}

/// The thresholds of the checks: /etc/vfioctl/check.toml, every key
/// optional (the defaults below).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    pub link: LinkThresholds,
    pub aer: AerThresholds,
    pub power: PowerThresholds,
    pub not_judged: NotJudgedThresholds,
    pub change: ChangeThresholds,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkThresholds {
    /// Verdict for a hop narrower than expected.
    pub width_below_expected: Level,
    /// Verdict for a hop slower than expected (when `speed` allows judging it).
    pub speed_below_expected: Level,
    pub speed: SpeedPolicy,
}

impl Default for LinkThresholds {
    fn default() -> Self {
        LinkThresholds {
            width_below_expected: Level::Warning,
            speed_below_expected: Level::Warning,
            speed: SpeedPolicy::Idle,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AerThresholds {
    /// New fatal errors since the baseline that make it CRITICAL.
    pub fatal_rise: u64,
    /// New nonfatal errors since the baseline that make it WARNING.
    pub nonfatal_rise: u64,
    /// Correctable errors per hour above which it is WARNING (over at least
    /// one hour, and at most `correctable_window_hours`).
    pub correctable_per_hour: f64,
    /// How far back the correctable rate looks; its reference is renewed then.
    pub correctable_window_hours: f64,
}

impl Default for AerThresholds {
    fn default() -> Self {
        AerThresholds {
            fatal_rise: 1,
            nonfatal_rise: 1,
            correctable_per_hour: 60.0,
            correctable_window_hours: 24.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PowerThresholds {
    /// Verdict for an idle passthrough GPU in D3cold.
    pub d3cold_idle_gpu: Level,
}

impl Default for PowerThresholds {
    fn default() -> Self {
        PowerThresholds {
            d3cold_idle_gpu: Level::Warning,
        }
    }
}

impl Thresholds {
    /// Values a TOML file cannot be refused for by type alone: `Err` names
    /// the key and what it must be.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let aer = &self.aer;
        if aer.fatal_rise == 0 {
            return Err(("fatal_rise", "aer.fatal_rise is at least 1".into()));
        }
        if aer.nonfatal_rise == 0 {
            return Err(("nonfatal_rise", "aer.nonfatal_rise is at least 1".into()));
        }
        if !(aer.correctable_per_hour.is_finite() && aer.correctable_per_hour >= 0.0) {
            return Err((
                "correctable_per_hour",
                "aer.correctable_per_hour is a number of errors, 0 or more".into(),
            ));
        }
        if !(aer.correctable_window_hours.is_finite() && aer.correctable_window_hours >= 1.0) {
            return Err((
                "correctable_window_hours",
                "aer.correctable_window_hours is at least 1".into(),
            ));
        }
        if self.change.in_progress_minutes == 0 {
            return Err((
                "in_progress_minutes",
                "change.in_progress_minutes is at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The AER counts a function was last judged against
/// (/var/lib/vfioctl/aer-baseline.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineEntry {
    pub boot_id: Option<String>,
    pub identity: Option<String>,
    pub serial: Option<String>,
    /// Seconds since the epoch.
    pub taken_at: u64,
    pub totals: AerTotals,
    /// The correctable count and time the rate is measured from.
    pub correctable_since: u64,
    pub correctable_base: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AerBaseline {
    pub functions: BTreeMap<PciAddress, BaselineEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_speeds_of_every_kernel_format() {
        assert_eq!(parse_gts("16.0 GT/s PCIe\n"), Some(16.0));
        assert_eq!(parse_gts("2.5 GT/s PCIe"), Some(2.5));
        assert_eq!(parse_gts("16 GT/s"), Some(16.0));
        assert_eq!(parse_gts("8 GT/s\n"), Some(8.0));
        assert_eq!(parse_gts("Unknown"), None);
        assert_eq!(parse_gts("Unknown speed\n"), None);
        assert_eq!(parse_gts("fast"), None);
        assert_eq!(gts_text(16.0), "16");
        assert_eq!(gts_text(2.5), "2.5");
    }

    #[test]
    fn aer_files_parse_with_totals_last() {
        let text = "RxErr 3\nBadTLP 0\nBadDLLP 1\ndev_cor_errs_bit[5] 2\nTOTAL_ERR_COR 6\n";
        let (total, nonzero) = parse_aer_file(text).unwrap();
        assert_eq!(total, 6);
        assert_eq!(
            nonzero,
            vec![
                ("RxErr".to_string(), 3),
                ("BadDLLP".to_string(), 1),
                ("dev_cor_errs_bit[5]".to_string(), 2)
            ]
        );
        assert_eq!(parse_aer_file("Undefined 0\n"), None, "no total line");
        assert_eq!(parse_aer_file("TOTAL_ERR_FATAL x\n"), None);
        assert_eq!(parse_aer_file("TOTAL_ERR_FATAL 0\n"), Some((0, vec![])));
    }

    #[test]
    fn reset_methods_and_bar0() {
        assert_eq!(
            ResetMethods::parse("flr bus\n"),
            ResetMethods::Listed(vec!["flr".into(), "bus".into()])
        );
        assert_eq!(ResetMethods::parse("\n"), ResetMethods::Listed(vec![]));
        let mut header = [0u8; 64];
        header[0x10..0x14].copy_from_slice(&0x0000_000cu32.to_le_bytes());
        header[0x14..0x18].copy_from_slice(&0x0000_0380u32.to_le_bytes());
        let wide = Bar0::from_header(&header);
        assert_eq!(
            wide.address(),
            0x380_0000_0000,
            "a 64-bit BAR above 4 GiB whose low half reads 0 is assigned"
        );
        header[0x10..0x14].copy_from_slice(&0xfb00_0000u32.to_le_bytes());
        let narrow = Bar0::from_header(&header);
        assert_eq!((narrow.address(), narrow.high), (0xfb00_0000, None));
        header[0x10..0x14].copy_from_slice(&0xe001u32.to_le_bytes());
        assert_eq!(Bar0::from_header(&header).address(), 0xe000, "I/O BAR");
        header[0x10..0x14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Bar0::from_header(&header).all_ones());
    }

    #[test]
    fn thresholds_default_and_validate() {
        let t = Thresholds::default();
        assert_eq!(t.aer.fatal_rise, 1);
        assert_eq!(t.link.speed, SpeedPolicy::Idle);
        assert!(t.validate().is_ok());
        let mut bad = t.clone();
        bad.aer.correctable_window_hours = 0.5;
        assert!(bad.validate().is_err());
    }
}
