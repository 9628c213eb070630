//! Replays the corpus (`fuzz/corpus/TARGET/*`: the seeds AFL++ starts from)
//! and the regressions (`fuzz/regressions/TARGET/*`: every input that ever
//! crashed or hung a target) through the plain target functions, in file name
//! order, one target after the other: the same inputs and the same order on
//! every run, so the verdict depends on the code alone. This is the fuzz
//! stage of `make test`; random campaigns are `make fuzz`.
//! Runs with `cargo test -p vfioctl-fuzz`.

use std::fs;
use std::path::{Path, PathBuf};

fn fuzz_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// The files in `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut inputs: Vec<_> = entries.map(|e| e.expect("corpus entry").path()).collect();
    inputs.sort();
    inputs
}

#[test]
fn every_target_has_a_corpus_and_survives_it_and_its_regressions() {
    vfioctl_fuzz::prepare();
    let mut failures = Vec::new();
    let (mut seeds, mut regressions) = (0, 0);
    // One target after the other: udev_env sets process environment variables.
    for (name, target) in vfioctl_fuzz::TARGETS {
        let corpus = inputs(&fuzz_dir("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} has no seeds");
        let kept = inputs(&fuzz_dir("regressions").join(name));
        seeds += corpus.len();
        regressions += kept.len();
        for input in corpus.iter().chain(&kept) {
            let data = fs::read(input).expect("read corpus file");
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(input.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "targets panicked on: {failures:#?}");
    // Shown by `make test-fuzz` (--nocapture).
    eprintln!(
        "replayed {} inputs: {seeds} seeds and {regressions} regressions of {} targets",
        seeds + regressions,
        vfioctl_fuzz::TARGETS.len()
    );
}

#[test]
fn every_corpus_and_regression_directory_names_a_target() {
    for top in ["corpus", "regressions"] {
        for entry in fs::read_dir(fuzz_dir(top)).expect("fuzz/corpus and fuzz/regressions") {
            let entry = entry.expect("entry");
            let name = entry.file_name();
            let name = name.to_string_lossy();
            assert!(
                vfioctl_fuzz::target(&name).is_some(),
                "fuzz/{top}/{name} is no target"
            );
            assert!(
                entry.path().is_dir(),
                "fuzz/{top}/{name} is not a directory"
            );
        }
    }
}

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
