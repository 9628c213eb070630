//! The file grammar of bindings.d: where the files are, how they are named,
//! and the TOML read ([`parse_all`], every error with its file and line)
//! and written ([`render`], serialized by the toml crate and checked to
//! read back as written).
//!
//! ```toml
//! [[binding]]
//! vendor = "10de"              # required, 4 hex digits
//! device = "20b0"              # required
//! subsystem_vendor = "10de"    # optional, with subsystem_device
//! subsystem_device = "134f"
//! address = "0000:25:00.0"     # optional: only this function (its IDs must still match)
//! driver = "vfio-pci"          # optional: default vfio-pci or the best VFIO variant
//! expect = 8                   # optional, IDs only: functions it covers (persist add records it)
//! seen = ["0000:25:00.0"]      # optional, IDs only: the addresses covered when declared
//!
//! [[sriov]]
//! address = "0000:3b:00.0"     # required: the SR-IOV physical function
//! vendor = "8086"              # required: the PF's IDs (a replaced card is reported, not configured)
//! device = "10c9"
//! numvfs = 7                   # required: the VFs it carries, 0 up to its sriov_totalvfs
//! vf_driver = "vfio-pci"       # optional: its VFs' driver; default vfio-pci or the best VFIO variant
//! ```
//!
//! Takes [`ConfigError`] from `error.rs` and [`seal`] from `owner.rs`.

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::owner::seal;
use crate::model::declaration::{Declaration, DeclaredDriver, Origin, SriovDeclaration};
use crate::model::{DeviceId, DriverName, PciAddress, VendorId};

pub const BINDINGS_DIR: &str = "/etc/vfioctl/bindings.d";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    #[serde(default)]
    binding: Vec<toml::Spanned<BindingModel>>,
    #[serde(default)]
    sriov: Vec<toml::Spanned<SriovModel>>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SriovModel {
    address: String,
    vendor: String,
    device: String,
    numvfs: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    vf_driver: Option<String>,
}

/// What `sriov --persist` writes.
#[derive(Serialize)]
struct SriovFileOut<'a> {
    sriov: [&'a SriovModel; 1],
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct BindingModel {
    vendor: String,
    device: String,
    subsystem_vendor: Option<String>,
    subsystem_device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expect: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    seen: Vec<String>,
}

/// What `persist add` writes: serialized by the toml crate, never by formatting.
#[derive(Serialize)]
struct FileOut<'a> {
    binding: [&'a BindingModel; 1],
}

/// Line numbers of byte offsets in one text: its newlines found once, then a
/// binary search per offset (a file of 10,000 bindings is not rescanned 10,000 times).
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Lines {
        Lines(text.match_indices('\n').map(|(i, _)| i).collect())
    }

    fn line_of(&self, offset: usize) -> usize {
        self.0.partition_point(|&newline| newline < offset) + 1
    }
}

/// Parses one file's text into its `[[binding]]` declarations.
pub fn parse(file: &str, text: &str) -> Result<Vec<Declaration>, ConfigError> {
    parse_all(file, text).map(|(bindings, _)| bindings)
}

/// Four hex digits (a vendor or device ID field), or the error naming it.
fn hex4(
    invalid: impl Fn(String) -> ConfigError,
    field: &str,
    value: &str,
) -> Result<u16, ConfigError> {
    (value.len() == 4 && value.bytes().all(|c| c.is_ascii_hexdigit()))
        .then(|| u16::from_str_radix(value, 16).expect("checked hex"))
        .ok_or_else(|| {
            invalid(format!(
                "{field} = \"{}\" is not 4 hex digits",
                value.escape_debug()
            ))
        })
}

/// A driver field: `auto` (or absent), or a valid driver name.
fn declared_driver(
    invalid: impl Fn(String) -> ConfigError,
    field: &str,
    value: Option<&str>,
) -> Result<DeclaredDriver, ConfigError> {
    // One reading of "auto" (DeclaredDriver::parse); any other name must
    // be a valid driver name.
    Ok(match DeclaredDriver::parse(value) {
        DeclaredDriver::Named(d) => DeclaredDriver::Named(
            DriverName::parse(d.as_str()).map_err(|e| invalid(format!("{field} = {e}")))?,
        ),
        DeclaredDriver::Auto => DeclaredDriver::Auto,
    })
}

/// Parses one file's text into its `[[binding]]` and `[[sriov]]` declarations.
pub fn parse_all(
    file: &str,
    text: &str,
) -> Result<(Vec<Declaration>, Vec<SriovDeclaration>), ConfigError> {
    let invalid = |line: usize, message: String| ConfigError::Invalid {
        file: file.to_string(),
        line,
        message,
    };
    let lines = Lines::new(text);
    let model: FileModel = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| lines.line_of(s.start));
        invalid(line, e.message().trim().to_string())
    })?;
    let origin = |line| Origin {
        file: file.to_string(),
        line,
    };
    let mut sriov = Vec::new();
    for spanned in model.sriov {
        let line = lines.line_of(spanned.span().start);
        let s = spanned.into_inner();
        let at_line = |message| invalid(line, message);
        sriov.push(SriovDeclaration {
            address: s
                .address
                .parse::<PciAddress>()
                .map_err(|e| invalid(line, e.to_string()))?,
            vendor: VendorId(hex4(at_line, "vendor", &s.vendor)?),
            device: DeviceId(hex4(at_line, "device", &s.device)?),
            numvfs: s.numvfs,
            vf_driver: declared_driver(at_line, "vf_driver", s.vf_driver.as_deref())?,
            origin: origin(line),
        });
    }
    let mut out = Vec::new();
    for spanned in model.binding {
        let line = lines.line_of(spanned.span().start);
        let b = spanned.into_inner();
        let hex4 = |field: &str, value: &str| hex4(|m| invalid(line, m), field, value);
        let subsystem = match (&b.subsystem_vendor, &b.subsystem_device) {
            (Some(v), Some(d)) => Some((
                VendorId(hex4("subsystem_vendor", v)?),
                DeviceId(hex4("subsystem_device", d)?),
            )),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    line,
                    "subsystem_vendor and subsystem_device go together".to_string(),
                ))
            }
        };
        let address = b
            .address
            .as_deref()
            .map(|a| a.parse::<PciAddress>())
            .transpose()
            .map_err(|e| invalid(line, e.to_string()))?;
        let driver = declared_driver(|m| invalid(line, m), "driver", b.driver.as_deref())?;
        if (b.expect.is_some() || !b.seen.is_empty()) && address.is_some() {
            return Err(invalid(
                line,
                "expect and seen are for declarations by IDs, not by address".to_string(),
            ));
        }
        let seen = b
            .seen
            .iter()
            .map(|a| a.parse::<PciAddress>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(line, format!("seen: {e}")))?;
        out.push(Declaration {
            expect: b.expect,
            seen,
            vendor: VendorId(hex4("vendor", &b.vendor)?),
            device: DeviceId(hex4("device", &b.device)?),
            subsystem,
            address,
            driver,
            origin: origin(line),
        });
    }
    Ok((out, sriov))
}

/// The grammar of a bindings.d file name: `[A-Za-z0-9][A-Za-z0-9._-]*.toml`,
/// at most 255 bytes. File names reach generated files (comments in udev
/// rules and initramfs scripts), so a newline or quote in one is refused
/// instead of rendered.
pub fn valid_file_name(name: &str) -> bool {
    name.len() <= 255
        && name.ends_with(".toml")
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// The line of a byte offset in `text` (1-based), for errors naming file:line.
pub fn line_of(text: &str, offset: usize) -> usize {
    Lines::new(text).line_of(offset)
}

/// The file name `persist add` uses for a declaration.
pub fn file_name(decl: &Declaration) -> String {
    match decl.address {
        Some(addr) => format!("addr-{}.toml", addr.to_string().replace(':', "_")),
        None => format!("id-{}.toml", decl.ids_text().replace(':', "_")),
    }
}

/// The text `persist add` writes for a declaration: the header, then the
/// binding serialized by the toml crate.
pub fn render(decl: &Declaration) -> String {
    let binding = BindingModel {
        vendor: decl.vendor.to_string(),
        device: decl.device.to_string(),
        subsystem_vendor: decl.subsystem.map(|(sv, _)| sv.to_string()),
        subsystem_device: decl.subsystem.map(|(_, sd)| sd.to_string()),
        address: decl.address.map(|a| a.to_string()),
        driver: decl.driver.named().map(|d| d.to_string()),
        expect: decl.expect,
        seen: decl.seen.iter().map(ToString::to_string).collect(),
    };
    let body = toml::to_string(&FileOut {
        binding: [&binding],
    })
    .expect("a declaration serializes");
    seal(&body)
}

/// The file name `sriov --persist` uses for a PF's declaration.
pub fn sriov_file_name(decl: &SriovDeclaration) -> String {
    sriov_file_name_of(decl.address)
}

pub(super) fn sriov_file_name_of(pf: PciAddress) -> String {
    format!("sriov-{}.toml", pf.to_string().replace(':', "_"))
}

/// The text `sriov --persist` writes: the header, then the `[[sriov]]`
/// table serialized by the toml crate.
pub fn render_sriov(decl: &SriovDeclaration) -> String {
    let model = SriovModel {
        address: decl.address.to_string(),
        vendor: decl.vendor.to_string(),
        device: decl.device.to_string(),
        numvfs: decl.numvfs,
        vf_driver: decl.vf_driver.named().map(|d| d.to_string()),
    };
    let body =
        toml::to_string(&SriovFileOut { sriov: [&model] }).expect("a declaration serializes");
    seal(&body)
}

/// `render(decl)`, checked to parse back to the same declaration: nothing
/// vfioctl writes can fail its own parser.
pub(super) fn render_checked(decl: &Declaration, file: &str) -> Result<String, ConfigError> {
    let text = render(decl);
    let back = parse_all(file, &text)?;
    // Everything but where it was read from.
    let same = back.0.len() == 1 && back.1.is_empty() && {
        let mut b = back.0[0].clone();
        b.origin = decl.origin.clone();
        b == *decl
    };
    if !same {
        return Err(not_read_back(file, &decl.key()));
    }
    Ok(text)
}

/// What vfioctl refuses to write: text its own parser reads differently.
fn not_read_back(file: &str, key: &str) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_string(),
        line: 1,
        message: format!("declaration {key} does not read back as written"),
    }
}

/// `render_sriov(decl)`, checked to parse back to the same declaration.
pub(super) fn render_sriov_checked(
    decl: &SriovDeclaration,
    file: &str,
) -> Result<String, ConfigError> {
    let text = render_sriov(decl);
    let (bindings, back) = parse_all(file, &text)?;
    let same = bindings.is_empty()
        && back.len() == 1
        && SriovDeclaration {
            origin: decl.origin.clone(),
            ..back[0].clone()
        } == *decl;
    if !same {
        return Err(not_read_back(file, &decl.key()));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::config::WRITTEN_HEADER;

    #[test]
    fn parses_declarations_with_lines() {
        let text = "# site\n[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\n\n[[binding]]\nvendor = \"8086\"\ndevice = \"10d3\"\naddress = \"01:00.0\"\ndriver = \"pci-stub\"\nsubsystem_vendor = \"8086\"\nsubsystem_device = \"a01f\"\n";
        let decls = parse("/etc/vfioctl/bindings.d/site.toml", text).unwrap();
        assert_eq!(decls.len(), 2);
        assert_eq!(decls[0].origin.line, 2);
        assert_eq!(decls[0].key(), "10de:20b0");
        assert_eq!(decls[1].origin.line, 6);
        assert_eq!(decls[1].key(), "0000:01:00.0");
        assert_eq!(
            decls[1].driver,
            DeclaredDriver::Named(DriverName::new("pci_stub"))
        );
        assert_eq!(decls[1].ids_text(), "8086:10d3:8086:a01f");
        // What persist add writes parses back to the same declaration.
        let again = parse(&decls[1].origin.file, &render(&decls[1])).unwrap();
        assert_eq!(again[0].key(), decls[1].key());
        assert_eq!(again[0].driver, decls[1].driver);
    }

    /// `err` is an invalid-file error at `line` whose message contains `message`.
    fn assert_invalid(err: &ConfigError, text: &str, line: usize, message: &str) {
        match err {
            ConfigError::Invalid {
                line: l,
                message: m,
                ..
            } => {
                assert_eq!(*l, line, "{text}: {err}");
                assert!(m.contains(message), "{text}: {m}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn bad_files_name_file_and_line() {
        let cases = [
            (
                "[[binding]]\nvendor = \"10de\"\n",
                1,
                "missing field `device`",
            ),
            (
                "[[binding]]\nvendor = \"10de\"\ndevice = \"20b\"\n",
                1,
                "device = \"20b\" is not 4 hex digits",
            ),
            (
                "\n\n[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\ncolour = \"red\"\n",
                6,
                "unknown field `colour`",
            ),
            (
                "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\naddress = \"25:00\"\n",
                1,
                "malformed PCI address '25:00'",
            ),
            (
                "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\nsubsystem_vendor = \"10de\"\n",
                1,
                "go together",
            ),
            (
                "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\ndriver = \"vfio pci\"\n",
                1,
                "is not a driver name",
            ),
            (
                "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\ndriver = \"x\\\"\\n[[binding]]\"\n",
                1,
                "is not a driver name",
            ),
            (
                "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\ndriver = \"-n\"\n",
                1,
                "not starting with '-'",
            ),
            ("[[binding]\n", 1, ""),
        ];
        for (text, line, message) in cases {
            let err = parse("/etc/vfioctl/bindings.d/x.toml", text).unwrap_err();
            assert_invalid(&err, text, line, message);
            assert!(err
                .to_string()
                .starts_with(&format!("/etc/vfioctl/bindings.d/x.toml:{line}: ")));
        }
    }

    #[test]
    fn sriov_declarations_parse_render_and_read_back() {
        let text = "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\n\n[[sriov]]\naddress = \"3b:00.0\"\nvendor = \"8086\"\ndevice = \"10C9\"\nnumvfs = 7\n\n[[sriov]]\naddress = \"0000:5e:00.0\"\nvendor = \"144d\"\ndevice = \"a824\"\nnumvfs = 0\nvf_driver = \"pci-stub\"\n";
        let (bindings, sriov) = parse_all("/etc/vfioctl/bindings.d/s.toml", text).unwrap();
        assert_eq!(bindings.len(), 1);
        assert_eq!(sriov.len(), 2);
        assert_eq!(sriov[0].key(), "0000:3b:00.0");
        assert_eq!(sriov[0].ids_text(), "8086:10c9");
        assert_eq!(sriov[0].numvfs, 7);
        assert_eq!(sriov[0].vf_driver, DeclaredDriver::Auto);
        assert_eq!(sriov[0].origin.line, 5);
        assert_eq!(
            sriov[1].vf_driver,
            DeclaredDriver::Named(DriverName::new("pci_stub"))
        );
        for decl in &sriov {
            let written = render_sriov_checked(decl, "/x.toml").unwrap();
            assert!(written.starts_with(WRITTEN_HEADER));
            assert!(parse("/x.toml", &written).unwrap().is_empty());
        }
        assert_eq!(
            render_sriov(&sriov[1]),
            seal("[[sriov]]\naddress = \"0000:5e:00.0\"\nvendor = \"144d\"\ndevice = \"a824\"\nnumvfs = 0\nvf_driver = \"pci-stub\"\n")
        );
        assert_eq!(sriov_file_name(&sriov[0]), "sriov-0000_3b_00.0.toml");
        assert!(valid_file_name(&sriov_file_name(&sriov[0])));
    }

    #[test]
    fn bad_sriov_tables_name_file_and_line() {
        let head = "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\n\n";
        let cases = [
            ("[[sriov]]\naddress = \"3b:00.0\"\nvendor = \"8086\"\ndevice = \"10c9\"\n", 5, "missing field `numvfs`"),
            ("[[sriov]]\naddress = \"3b:00.0\"\nvendor = \"8086\"\ndevice = \"10c9\"\nnumvfs = -1\n", 9, "u16"),
            ("[[sriov]]\naddress = \"3b:00.0\"\nvendor = \"8086\"\ndevice = \"10c9\"\nnumvfs = 70000\n", 9, "u16"),
            ("[[sriov]]\naddress = \"3b:00\"\nvendor = \"8086\"\ndevice = \"10c9\"\nnumvfs = 1\n", 5, "malformed PCI address"),
            ("[[sriov]]\naddress = \"3b:00.0\"\nvendor = \"80866\"\ndevice = \"10c9\"\nnumvfs = 1\n", 5, "vendor = \"80866\" is not 4 hex digits"),
            ("[[sriov]]\naddress = \"3b:00.0\"\nvendor = \"8086\"\ndevice = \"10c9\"\nnumvfs = 1\nvf_driver = \"a\\\"\\nRUN\"\n", 5, "vf_driver = "),
            ("[[sriov]]\naddress = \"3b:00.0\"\nvendor = \"8086\"\ndevice = \"10c9\"\nnumvfs = 1\ndriver = \"vfio-pci\"\n", 10, "unknown field `driver`"),
        ];
        for (tail, line, message) in cases {
            let text = format!("{head}{tail}");
            let err = parse_all("/etc/vfioctl/bindings.d/x.toml", &text).unwrap_err();
            assert_invalid(&err, &text, line, message);
        }
    }

    #[test]
    fn file_names_follow_a_strict_grammar() {
        for ok in [
            "addr-0000_25_00.0.toml",
            "id-10de_20b0.toml",
            "site.toml",
            "a-b_c.d.toml",
        ] {
            assert!(valid_file_name(ok), "{ok}");
        }
        for bad in [
            "x\nKERNEL==\"*\", RUN+=\"/bin/sh\".toml",
            ".hidden.toml",
            "a b.toml",
            "a\"b.toml",
            "a;reboot.toml",
            "é.toml",
            "-x.toml",
            "x.toml.bak",
        ] {
            assert!(!valid_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn written_declarations_are_toml_serialized_and_read_back() {
        let text = "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\nsubsystem_vendor = \"10de\"\nsubsystem_device = \"134f\"\naddress = \"0000:25:00.0\"\ndriver = \"vfio-pci\"\n";
        let decl = &parse("/x.toml", text).unwrap()[0];
        let written = render_checked(decl, "/x.toml").unwrap();
        assert!(written.starts_with(WRITTEN_HEADER));
        assert_eq!(
            written.lines().skip(1).collect::<Vec<_>>().join("\n") + "\n",
            text
        );
    }
}
