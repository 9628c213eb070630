//! Module aliases: which module claims a device, and the best VFIO variant.
//!
//! Variant drivers (mlx5_vfio_pci, nvgrace_gpu_vfio_pci, ...) declare
//! `alias vfio_pci:v...d...sv...sd...bc..sc..i.. MODULE` lines in
//! modules.alias. The most specific match (fewest wildcards) wins, which is
//! how the kernel's own userspace tools choose among them.

use serde::Serialize;

use super::device::PciDevice;
use super::driver::ModuleName;

impl PciDevice {
    /// The device's modalias body (after the `pci:` or `vfio_pci:` prefix),
    /// formatted exactly as the kernel does.
    pub fn modalias_body(&self) -> String {
        format!(
            "v{:08X}d{:08X}sv{:08X}sd{:08X}bc{:02X}sc{:02X}i{:02X}",
            self.ids.vendor.0,
            self.ids.device.0,
            self.ids.subsystem_vendor.0,
            self.ids.subsystem_device.0,
            self.class.base(),
            self.class.subclass(),
            self.class.prog_if()
        )
    }
}

/// Shell-style glob match supporting `*`, `?` and `[...]` classes, as
/// modules.alias patterns use them.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    // Position to retry from after the last `*`: (pattern index, text index).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(&p[pi..], t[ti]) {
                        if matched {
                            pi += next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == b'[' {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Matches one byte against a `[...]` class at the start of `p`; returns
/// (matched, length of the class) or `None` when the class is unterminated.
fn class_match(p: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() && (first || p[i] != b']') {
        first = false;
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            matched |= p[i] <= c && c <= p[i + 2];
            i += 3;
        } else {
            matched |= p[i] == c;
            i += 1;
        }
    }
    (i < p.len()).then_some((matched != negate, i + 1))
}

/// One `alias PATTERN MODULE` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub pattern: String,
    pub module: ModuleName,
}

/// The `vfio_pci:` aliases of variant drivers: vfio-pci itself declares a
/// catch-all `vfio_pci:v*d*...` alias, which names no variant.
pub fn variant_aliases(text: &str) -> Vec<Alias> {
    let generic = ModuleName::new("vfio_pci");
    parse_aliases(text, "vfio_pci")
        .into_iter()
        .filter(|a| a.module != generic)
        .collect()
}

/// Parses modules.alias text, keeping aliases whose pattern starts with `prefix:`.
///
/// The file is over a megabyte (about 30,000 lines for a distribution
/// kernel) and a handful of lines matter, so it is searched for `prefix:`
/// and only the lines holding it are split into words: the udev hook and
/// every bind pay this, and under emulation (the test bed) splitting every
/// line cost tens of milliseconds.
pub fn parse_aliases(text: &str, prefix: &str) -> Vec<Alias> {
    let want = format!("{prefix}:");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(hit) = text[from..].find(&want).map(|i| from + i) {
        let start = text[..hit].rfind('\n').map_or(0, |i| i + 1);
        let end = text[hit..].find('\n').map_or(text.len(), |i| hit + i);
        from = end.max(hit + want.len());
        let mut words = text[start..end].split_whitespace();
        if words.next() != Some("alias") {
            continue;
        }
        let (Some(pattern), Some(module)) = (words.next(), words.next()) else {
            continue;
        };
        if pattern.starts_with(&want) {
            out.push(Alias {
                pattern: pattern.to_string(),
                module: ModuleName::new(module),
            });
        }
    }
    out
}

/// The variant driver chosen for a device, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VariantChoice {
    pub module: ModuleName,
    pub pattern: String,
    pub wildcards: usize,
}

/// The most specific alias (fewest `*`/`?`) among `aliases` matching the
/// device under `prefix`; ties go to the first listed.
pub fn best_match(aliases: &[Alias], prefix: &str, dev: &PciDevice) -> Option<VariantChoice> {
    let modalias = format!("{prefix}:{}", dev.modalias_body());
    aliases
        .iter()
        .filter(|a| glob_match(&a.pattern, &modalias))
        .map(|a| VariantChoice {
            module: a.module.clone(),
            pattern: a.pattern.clone(),
            wildcards: a
                .pattern
                .bytes()
                .filter(|&b| b == b'*' || b == b'?')
                .count(),
        })
        .min_by_key(|c| c.wildcards)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The search finds exactly what reading every line finds.
    #[test]
    fn the_search_reads_what_every_line_reads() {
        let by_lines = |text: &str, prefix: &str| -> Vec<Alias> {
            let want = format!("{prefix}:");
            text.lines()
                .filter_map(|line| {
                    let mut words = line.split_whitespace();
                    (words.next()? == "alias").then_some(())?;
                    let pattern = words.next()?;
                    let module = words.next()?;
                    pattern.starts_with(&want).then(|| Alias {
                        pattern: pattern.to_string(),
                        module: ModuleName::new(module),
                    })
                })
                .collect()
        };
        let text = "alias pci:v000010DEd*sv*sd*bc03sc*i* nouveau\r\n\
alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci\n\
# alias vfio_pci:v*d*sv*sd*bc*sc*i* commented\n\
alias vfio_pci:v00008086d*sv*sd*bc*sc*i*\n\
alias pci:v*d*sv*sd*bc*sc*i* vfio_pci: vfio_pci:x\n\
alias vfio_pci:v00001AF4d*sv*sd*bc*sc*i* virtio_vfio_pci vfio_pci:v00001AF4d*sv*sd*bc*sc*i* x\n\
alias vfio_pci:v000010DEd*sv*sd*bc03sc*i* nvgrace_gpu_vfio_pci";
        for prefix in ["vfio_pci", "pci", "x"] {
            assert_eq!(
                parse_aliases(text, prefix),
                by_lines(text, prefix),
                "{prefix}"
            );
        }
        assert_eq!(parse_aliases(text, "vfio_pci").len(), 3);
    }
    use crate::model::device::tests::endpoint;
    use crate::model::ids::{DeviceId, VendorId};

    #[test]
    fn globs_match_like_modprobe() {
        assert!(glob_match(
            "pci:v000010DEd*sv*",
            "pci:v000010DEd000020B0sv000010DE"
        ));
        assert!(!glob_match("pci:v000010DEd*", "pci:v00008086d000020B0"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("*", ""));
        assert!(glob_match("bc0[23]sc*", "bc03sc02"));
        assert!(!glob_match("bc0[!23]sc*", "bc03sc02"));
        assert!(glob_match("x[a-c]y", "xby"));
        assert!(!glob_match("abc", "abcd"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }

    #[test]
    fn modalias_is_formatted_like_the_kernel() {
        let dev = endpoint("25:00.0", 0x030200);
        assert_eq!(
            dev.modalias_body(),
            "v000010DEd000020B0sv000010DEsd0000134Fbc03sc02i00"
        );
    }

    #[test]
    fn most_specific_variant_wins() {
        let text = "\
alias pci:v000015B3d00001018sv*sd*bc*sc*i* mlx5_core
alias vfio_pci:v000015B3d00001018sv*sd*bc*sc*i* mlx5_vfio_pci
alias vfio_pci:v000015B3d*sv*sd*bc*sc*i* generic_mlx_vfio
alias vfio_pci:v000010DEd00002342sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci
alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci
alias something_else foo
";
        assert_eq!(parse_aliases(text, "vfio_pci").len(), 4);
        let aliases = variant_aliases(text);
        assert_eq!(aliases.len(), 3, "vfio-pci's own catch-all is no variant");
        let mut vf = endpoint("3b:00.2", 0x020000);
        vf.ids.vendor = VendorId(0x15b3);
        vf.ids.device = DeviceId(0x1018);
        let best = best_match(&aliases, "vfio_pci", &vf).unwrap();
        assert_eq!(best.module, ModuleName::new("mlx5_vfio_pci"));
        assert_eq!(best.wildcards, 5);
        let a100 = endpoint("25:00.0", 0x030200);
        assert_eq!(
            best_match(&aliases, "vfio_pci", &a100),
            None,
            "plain vfio-pci for the A100"
        );
        let host = parse_aliases(text, "pci");
        assert_eq!(
            best_match(&host, "pci", &vf).unwrap().module,
            ModuleName::new("mlx5_core")
        );
    }
}
