//! Rendering for people (tables, text) and for scripts (JSON records).

pub mod health;
pub mod labels;
pub mod records;
pub mod report;
pub mod table;

use std::borrow::Cow;
use std::io::Write;

use serde::Serialize;

/// Writes `value` as pretty JSON followed by a newline.
pub fn write_json(out: &mut dyn Write, value: &impl Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// The one note policy: notes go to stderr as `vfioctl: note: TEXT`, so that
/// stdout carries only the command's output (a table, a file, one JSON
/// document) whatever the mode.
pub fn note(text: &str) {
    eprintln!("vfioctl: note: {}", escape_controls(text));
}

/// `text` safe for a terminal: control characters (ESC, CR, newlines, C1
/// codes...) from outside strings (sysfs, file names, pci.ids) are written as
/// `\u{1b}`-style escapes instead of reaching the terminal. Tabs stay.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() && c != '\t' {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("nvidia"), "nvidia");
        assert_eq!(
            escape_controls("a\x1b[2Jb\nc\u{9b}d"),
            "a\\u{1b}[2Jb\\u{a}c\\u{9b}d"
        );
    }
}
