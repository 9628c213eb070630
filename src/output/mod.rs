//! Rendering for people (tables, text) and for scripts (JSON records).

pub mod check;
pub mod health;
pub mod labels;
pub mod prometheus;
pub mod records;
pub mod report;
pub mod reset;
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

/// The one escaping path for human output: every byte a command writes for
/// people (tables, plan and report lines, `show`'s group lines, `nova`'s
/// comments, boot file previews) passes through it, and control characters
/// other than newline and tab reach the terminal as `\u{1b}`-style escapes
/// (`escape_controls`), wherever the string came from. JSON output does not
/// pass through it (serde_json escapes what JSON needs).
pub struct HumanOut<W: Write> {
    inner: W,
    /// The start of a UTF-8 sequence split across two writes.
    pending: Vec<u8>,
}

impl<W: Write> HumanOut<W> {
    pub fn new(inner: W) -> HumanOut<W> {
        HumanOut {
            inner,
            pending: Vec::new(),
        }
    }

    fn write_text(&mut self, text: &str) -> std::io::Result<()> {
        let escaped: String = text
            .split_inclusive('\n')
            .map(|line| match line.strip_suffix('\n') {
                Some(body) => format!("{}\n", escape_controls(body)),
                None => escape_controls(line).into_owned(),
            })
            .collect();
        self.inner.write_all(escaped.as_bytes())
    }
}

impl<W: Write> Write for HumanOut<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        let bytes = std::mem::take(&mut self.pending);
        let mut rest = &bytes[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    self.write_text(text)?;
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    self.write_text(std::str::from_utf8(valid).expect("checked"))?;
                    match e.error_len() {
                        // Incomplete: the rest comes with the next write.
                        None => {
                            self.pending = after.to_vec();
                            break;
                        }
                        Some(n) => {
                            for b in &after[..n] {
                                write!(self.inner, "\\x{b:02x}")?;
                            }
                            rest = &after[n..];
                        }
                    }
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        for b in pending {
            write!(self.inner, "\\x{b:02x}")?;
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_output_escapes_controls_even_split_across_writes() {
        let mut buf = Vec::new();
        {
            let mut out = HumanOut::new(&mut buf);
            writeln!(out, "a\x1b[2Jb\tc").unwrap();
            // U+009B (CSI) split between two writes, then an invalid byte.
            out.write_all(&[b'x', 0xc2]).unwrap();
            out.write_all(&[0x9b, b'y', 0xff, b'\n']).unwrap();
            out.write_all("é\r\n".as_bytes()).unwrap();
            out.flush().unwrap();
        }
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "a\\u{1b}[2Jb\tc\nx\\u{9b}y\\xff\né\\u{d}\n"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("nvidia"), "nvidia");
        assert_eq!(
            escape_controls("a\x1b[2Jb\nc\u{9b}d"),
            "a\\u{1b}[2Jb\\u{a}c\\u{9b}d"
        );
    }
}
