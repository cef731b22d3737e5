//! Fuzz target: the properties are in fuzz/checks/payment_api_answer.rs (the stable suite replays the
//! corpus through the same checks: tests/suite/fuzz_corpus.rs).
#![no_main]

#[path = "../checks/payment_api_answer.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
