//! Replays every input under `fuzz/corpus/<target>/` (the seeds and every input a fuzzer ever
//! crashed on, kept as a regression) through the fuzz targets' own property checks
//! (`fuzz/checks/`), so `cargo test` on stable guards what the fuzzers found without nightly.
//! docs/fuzzing.md describes the targets and how a crash becomes one of these files.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/checks/config_load.rs"]
mod config_load;
#[path = "../../fuzz/checks/control_request.rs"]
mod control_request;
#[path = "../../fuzz/checks/decoder.rs"]
mod decoder;
#[path = "../../fuzz/checks/payment_api_answer.rs"]
mod payment_api_answer;
#[path = "../../fuzz/checks/state_load.rs"]
mod state_load;

/// The corpus files of `target`, sorted; a target without any is an error (a renamed or emptied
/// corpus must not make this test pass by checking nothing).
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}

fn replay(target: &str, check: impl Fn(&[u8])) {
    for file in corpus(target) {
        let data = std::fs::read(&file).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        assert!(outcome.is_ok(), "{} fails its checks", file.display());
    }
}

#[test]
fn serial_decoder_corpus() {
    replay("decoder", decoder::check);
}

#[test]
fn control_request_corpus() {
    replay("control_request", control_request::check);
}

#[test]
fn payment_api_answer_corpus() {
    replay("payment_api_answer", payment_api_answer::check);
}

#[test]
fn config_load_corpus() {
    replay("config_load", config_load::check);
}

#[test]
fn state_load_corpus() {
    replay("state_load", state_load::check);
}
