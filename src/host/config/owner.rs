//! Which files vfioctl owns: the header it writes first ([`WRITTEN_HEADER`]
//! with the SHA-256 of the rest, [`seal`]), and the tests every "may
//! vfioctl replace or remove this?" decision uses ([`owned`],
//! [`written_by_vfioctl`], [`file_owned`]). Takes nothing from its siblings.

use std::fs;

use crate::host::HostRoot;

/// First line of the declaration files vfioctl writes, followed by
/// ` sha256=` and the digest of the rest of the file (`seal`).
pub const WRITTEN_HEADER: &str =
    "# Written by vfioctl persist add; remove with vfioctl persist remove.";

/// `body` with the header line that makes it vfioctl's: `WRITTEN_HEADER`,
/// then ` sha256=` and the SHA-256 of `body` in hex.
pub fn seal(body: &str) -> String {
    format!("{WRITTEN_HEADER} sha256={}\n{body}", sha256_hex(body))
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a declaration file is exactly what vfioctl wrote: its first line
/// is the header with the digest of everything after it. A declaration
/// appended, a comment added, a value edited, or a header copied onto a
/// file written by hand: the digest no longer matches, and the file is the
/// operator's, never replaced or removed by vfioctl. The package's purge
/// (`packaging/maint/generated.sh`) applies the same rule with sha256sum.
pub fn owned(text: &str) -> bool {
    let Some((first, body)) = text.split_once('\n') else {
        return false;
    };
    first
        .strip_prefix(WRITTEN_HEADER)
        .and_then(|rest| rest.strip_prefix(" sha256="))
        .is_some_and(|digest| digest == sha256_hex(body))
}

/// Whether vfioctl wrote a file: its header (after an optional `#!` line)
/// starts with `header`. The one test every "may vfioctl replace or remove
/// this?" decision uses; files written by hand are never touched.
pub fn written_by_vfioctl(text: &str, header: &str) -> bool {
    text.lines().take(2).any(|l| l.starts_with(header))
}

/// Whether the file at host path `file` (`/etc/vfioctl/bindings.d/x.toml`)
/// is one vfioctl owns (`owned`). A file that cannot be read is not.
pub fn file_owned(root: &HostRoot, file: &str) -> bool {
    fs::read_to_string(root.path(file)).is_ok_and(|text| owned(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// #24 class 5: vfioctl owns a declaration file exactly as it wrote it.
    #[test]
    fn a_file_is_owned_only_exactly_as_written() {
        let body = "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\n";
        let text = seal(body);
        assert!(owned(&text));
        // The digest is sha256sum's of everything after the first line.
        assert_eq!(
            text.lines().next().unwrap(),
            format!("{WRITTEN_HEADER} sha256=1bf1f1e3e2e64713d6e76ac4842529236bd6de72ae9a1047171d67aa5eb07f0c")
        );
        for edited in [
            format!("{text}\n[[binding]]\nvendor = \"8086\"\ndevice = \"1521\"\n"),
            format!("{text}# mine\n"),
            text.replace("20b0", "20b1"),
            format!("{WRITTEN_HEADER}\n{body}"),
            text.replace("sha256=", "sha256= "),
            body.to_string(),
            String::new(),
        ] {
            assert!(!owned(&edited), "{edited}");
        }
    }
}
