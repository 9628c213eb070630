//! Fuzz targets for every parser of outside input in vfioctl.
//!
//! Each target is a plain function over bytes: AFL++ drives it through the
//! `vfioctl-afl` harness (`fuzz/run TARGET SECONDS`), and `cargo test -p
//! vfioctl-fuzz` replays the corpus (`fuzz/corpus/TARGET/*`) through it. A
//! target fails by panicking: a parser that panics, or a round trip that does
//! not hold. Targets that read files write the input into a fresh fake host
//! root (a temp dir) and run vfioctl on it with `--root`: nothing touches the
//! real /sys, /proc or /etc.

mod fakeroot;
mod targets;

pub use fakeroot::FakeRoot;

/// One fuzz target: its name (the corpus directory) and its function.
pub type Target = fn(&[u8]);

/// Every target, by name. `docs/fuzzing.md` lists what each one covers.
pub const TARGETS: &[(&str, Target)] = &[
    ("address", targets::address),
    ("ids", targets::ids),
    ("selector", targets::selector),
    ("bindings_toml", targets::bindings_toml),
    ("bindings_file", targets::bindings_file),
    ("udev_env", targets::udev_env),
    ("nodedev_xml", targets::nodedev_xml),
    ("domain_xml", targets::domain_xml),
    ("pci_ids", targets::pci_ids),
    ("cmdline", targets::cmdline),
    ("mountinfo", targets::mountinfo),
    ("modules_alias", targets::modules_alias),
    ("sysfs_attrs", targets::sysfs_attrs),
    ("health_attrs", targets::health_attrs),
    ("survey", targets::survey),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Every target's name.
pub fn names() -> Vec<&'static str> {
    TARGETS.iter().map(|(n, _)| *n).collect()
}

/// Process-wide setup before the first input: no environment variable may
/// point vfioctl at the real host or at a libvirt daemon.
pub fn prepare() {
    for var in ["VFIOCTL_ROOT", "VFIOCTL_CONNECT", "LIBVIRT_DEFAULT_URI"] {
        std::env::remove_var(var);
    }
}

/// Splits an input into at most `n` fields at NUL bytes (the last field keeps
/// any further NULs); missing fields are empty.
pub fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |&b| b == 0).collect();
    out.resize(n, &[]);
    out
}
