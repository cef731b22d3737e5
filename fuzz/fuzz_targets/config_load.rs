//! Fuzz target: the properties are in fuzz/checks/config_load.rs (the stable suite replays the
//! corpus through the same checks: tests/fuzz_corpus.rs).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

#[path = "../checks/config_load.rs"]
mod checks;

/// One scratch directory per fuzzing process, in memory when /dev/shm exists (a few small files
/// left behind; /dev/shm is emptied at boot).
fn scratch() -> &'static std::path::Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::path::Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_owned()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("pos-agent-fuzz-config_load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data, scratch()));
