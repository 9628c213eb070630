//! Replays the corpus (`fuzz/corpus/TARGET/*`, seeds and every input that
//! once crashed a target) through the plain target functions: the fuzz smoke
//! test that needs no AFL++. Runs with `cargo test -p vfioctl-fuzz`.

use std::fs;
use std::path::Path;

#[test]
fn every_target_has_a_corpus_and_survives_it() {
    vfioctl_fuzz::prepare();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut failures = Vec::new();
    // One target after the other: udev_env sets process environment variables.
    for (name, target) in vfioctl_fuzz::TARGETS {
        let dir = corpus.join(name);
        let mut inputs: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{} has no seeds", dir.display());
        for input in inputs {
            let data = fs::read(&input).expect("read corpus file");
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(input.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "targets panicked on: {failures:#?}");
}

#[test]
fn every_corpus_directory_names_a_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for entry in fs::read_dir(&corpus).expect("fuzz/corpus") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            vfioctl_fuzz::target(&name).is_some(),
            "corpus/{name} is no target"
        );
    }
}

/// `VFIOCTL_FUZZ_INPUT=FILE VFIOCTL_FUZZ_TARGET=NAME VFIOCTL_FUZZ_SHOW=1
/// cargo test -p vfioctl-fuzz --test replay one_input -- --nocapture`
/// runs one input (a crash AFL++ found) and shows what vfioctl printed.
#[test]
fn one_input() {
    let (Some(file), Some(name)) = (
        std::env::var_os("VFIOCTL_FUZZ_INPUT"),
        std::env::var("VFIOCTL_FUZZ_TARGET").ok(),
    ) else {
        return;
    };
    vfioctl_fuzz::prepare();
    let target = vfioctl_fuzz::target(&name).expect("VFIOCTL_FUZZ_TARGET names a target");
    target(&fs::read(file).expect("VFIOCTL_FUZZ_INPUT is readable"));
}
