//! Fuzz target: the properties are in fuzz/checks/decoder.rs (the stable suite replays the
//! corpus through the same checks: tests/suite/fuzz_corpus.rs).
#![no_main]

#[path = "../checks/decoder.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
