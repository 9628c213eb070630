//! The AFL++ harness: `vfioctl-afl TARGET` fuzzes one target of
//! `vfioctl_fuzz::TARGETS` in persistent mode. Built by `fuzz/run`.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = vfioctl_fuzz::target(&name) else {
        eprintln!(
            "usage: vfioctl-afl TARGET (one of: {})",
            vfioctl_fuzz::names().join(", ")
        );
        std::process::exit(2);
    };
    vfioctl_fuzz::prepare();
    afl::fuzz!(|data: &[u8]| target(data));
}
