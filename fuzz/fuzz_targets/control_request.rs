//! Fuzz target: the properties are in fuzz/checks/control_request.rs (the stable suite replays the
//! corpus through the same checks: tests/suite/fuzz_corpus.rs).
#![no_main]

#[path = "../checks/control_request.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
