//! /etc/vfioctl: declared bindings, one TOML drop-in file or more under
//! bindings.d. Only root-owned, not world-writable files are trusted (as sudo
//! does); a malformed file stops everything with its file and line.
//!
//! ```toml
//! [[binding]]
//! vendor = "10de"              # required, 4 hex digits
//! device = "20b0"              # required
//! subsystem_vendor = "10de"    # optional, with subsystem_device
//! subsystem_device = "134f"
//! address = "0000:25:00.0"     # optional: only this function (its IDs must still match)
//! driver = "vfio-pci"          # optional: default vfio-pci or the best VFIO variant
//! ```

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::host::HostRoot;
use crate::model::declaration::{Declaration, Declarations, DeclaredDriver, Origin};
use crate::model::{DeviceId, DriverName, PciAddress, VendorId};

pub const BINDINGS_DIR: &str = "/etc/vfioctl/bindings.d";
/// First line of files vfioctl writes itself; only those does it remove.
pub const WRITTEN_HEADER: &str =
    "# Written by vfioctl persist add; remove with vfioctl persist remove.";

/// Whether vfioctl wrote a file: its header (after an optional `#!` line)
/// starts with `header`. The one test every "may vfioctl replace or remove
/// this?" decision uses; files written by hand are never touched.
pub fn written_by_vfioctl(text: &str, header: &str) -> bool {
    text.lines().take(2).any(|l| l.starts_with(header))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A declaration in a file vfioctl did not write: refused, never removed.
    #[error("{file}:{line}: declared in a file vfioctl did not write; edit or delete it by hand")]
    HandWritten { file: String, line: usize },
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{path} is owned by uid {uid}, not root: vfioctl only trusts root-owned configuration (chown root:root {path})")]
    NotRootOwned { path: String, uid: u32 },
    #[error(
        "{path} is writable by everyone (mode {mode:o}): vfioctl refuses it (chmod o-w {path})"
    )]
    WorldWritable { path: String, mode: u32 },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    #[serde(default)]
    binding: Vec<toml::Spanned<BindingModel>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingModel {
    vendor: String,
    device: String,
    subsystem_vendor: Option<String>,
    subsystem_device: Option<String>,
    address: Option<String>,
    driver: Option<String>,
}

/// A host path as shown in messages (`/etc/...`, whatever the root).
fn shown(root: &HostRoot, path: &Path) -> String {
    match path.strip_prefix(root.base()) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => path.display().to_string(),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn trusted(root: &HostRoot, path: &Path) -> Result<(), ConfigError> {
    let meta = fs::metadata(path).map_err(|source| ConfigError::Io {
        action: "cannot stat",
        path: shown(root, path),
        source,
    })?;
    if meta.uid() != 0 {
        return Err(ConfigError::NotRootOwned {
            path: shown(root, path),
            uid: meta.uid(),
        });
    }
    if meta.mode() & 0o002 != 0 {
        return Err(ConfigError::WorldWritable {
            path: shown(root, path),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// Parses one file's text into declarations.
pub fn parse(file: &str, text: &str) -> Result<Vec<Declaration>, ConfigError> {
    let invalid = |line: usize, message: String| ConfigError::Invalid {
        file: file.to_string(),
        line,
        message,
    };
    let model: FileModel = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        invalid(line, e.message().trim().to_string())
    })?;
    let mut out = Vec::new();
    for spanned in model.binding {
        let line = line_of(text, spanned.span().start);
        let b = spanned.into_inner();
        let hex4 = |field: &str, value: &str| {
            (value.len() == 4 && value.bytes().all(|c| c.is_ascii_hexdigit()))
                .then(|| u16::from_str_radix(value, 16).expect("checked hex"))
                .ok_or_else(|| invalid(line, format!("{field} = \"{value}\" is not 4 hex digits")))
        };
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
        let driver = match b.driver.as_deref() {
            Some(d)
                if d.is_empty()
                    || !d
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') =>
            {
                return Err(invalid(
                    line,
                    format!("driver = \"{d}\" is not a driver name"),
                ))
            }
            Some(d) => DeclaredDriver::Named(DriverName::new(d)),
            None => DeclaredDriver::Auto,
        };
        out.push(Declaration {
            vendor: VendorId(hex4("vendor", &b.vendor)?),
            device: DeviceId(hex4("device", &b.device)?),
            subsystem,
            address,
            driver,
            origin: Origin {
                file: file.to_string(),
                line,
            },
        });
    }
    Ok(out)
}

/// The `*.toml` files of bindings.d, sorted.
fn binding_files(root: &HostRoot) -> Result<Vec<PathBuf>, ConfigError> {
    let dir = root.path(BINDINGS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::Io {
                action: "cannot list",
                path: shown(root, &dir),
                source,
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads every declaration; any bad file fails the whole read.
pub fn load(root: &HostRoot) -> Result<Declarations, ConfigError> {
    let files = binding_files(root)?;
    if !files.is_empty() {
        trusted(root, &root.path("/etc/vfioctl"))?;
        trusted(root, &root.path(BINDINGS_DIR))?;
    }
    let mut list = Vec::new();
    for file in files {
        trusted(root, &file)?;
        let text = fs::read_to_string(&file).map_err(|source| ConfigError::Io {
            action: "cannot read",
            path: shown(root, &file),
            source,
        })?;
        list.extend(parse(&shown(root, &file), &text)?);
    }
    Ok(Declarations { list })
}

/// The file name `persist add` uses for a declaration.
pub fn file_name(decl: &Declaration) -> String {
    match decl.address {
        Some(addr) => format!("addr-{}.toml", addr.to_string().replace(':', "_")),
        None => format!("id-{}.toml", decl.ids_text().replace(':', "_")),
    }
}

/// The text `persist add` writes for a declaration.
pub fn render(decl: &Declaration) -> String {
    let mut text = format!(
        "{WRITTEN_HEADER}\n[[binding]]\nvendor = \"{}\"\ndevice = \"{}\"\n",
        decl.vendor, decl.device
    );
    if let Some((sv, sd)) = decl.subsystem {
        text.push_str(&format!(
            "subsystem_vendor = \"{sv}\"\nsubsystem_device = \"{sd}\"\n"
        ));
    }
    if let Some(addr) = decl.address {
        text.push_str(&format!("address = \"{addr}\"\n"));
    }
    if let DeclaredDriver::Named(driver) = &decl.driver {
        text.push_str(&format!("driver = \"{driver}\"\n"));
    }
    text
}

/// Writes `text` to `path` atomically (see `HostRoot::write_atomic`), naming
/// the path as the host sees it on failure.
pub fn write_atomic(
    root: &HostRoot,
    path: &Path,
    text: &str,
    mode: u32,
) -> Result<(), ConfigError> {
    root.write_atomic(path, text, mode)
        .map_err(|e| ConfigError::Io {
            action: e.action,
            path: shown(root, &e.path),
            source: e.source,
        })
}

/// Writes a declaration to its own file (replacing an earlier one for the same key).
pub fn add(root: &HostRoot, decl: &Declaration) -> Result<PathBuf, ConfigError> {
    let path = root.path(BINDINGS_DIR).join(file_name(decl));
    write_atomic(root, &path, &render(decl), 0o644)?;
    Ok(path)
}

/// Removes the file vfioctl wrote for `decl`; refuses files written by hand.
pub fn remove(root: &HostRoot, decl: &Declaration) -> Result<(), ConfigError> {
    let path = root.path(&decl.origin.file);
    let text = fs::read_to_string(&path).unwrap_or_default();
    if !written_by_vfioctl(&text, WRITTEN_HEADER) {
        return Err(ConfigError::HandWritten {
            file: decl.origin.file.clone(),
            line: decl.origin.line,
        });
    }
    fs::remove_file(&path).map_err(|source| ConfigError::Io {
        action: "cannot remove",
        path: decl.origin.file.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ("[[binding]\n", 1, ""),
        ];
        for (text, line, message) in cases {
            let err = parse("/etc/vfioctl/bindings.d/x.toml", text).unwrap_err();
            match &err {
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
            assert!(err
                .to_string()
                .starts_with(&format!("/etc/vfioctl/bindings.d/x.toml:{line}: ")));
        }
    }
}
