//! The slow-storage shim (`tools/slow-fsync-shim.c`): preloaded into the daemon with
//! `LD_PRELOAD`, delaying every `fsync`/`fdatasync` by `SLOW_FSYNC_MS` milliseconds.

use std::path::PathBuf;

/// Builds the shim (once per process) and returns its path.
pub fn shim() -> PathBuf {
    super::preload::library("slow-fsync-shim.c")
}

/// The environment that slows the daemon's syncs by `ms` milliseconds.
pub fn env(ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("LD_PRELOAD", shim().display().to_string()),
        ("SLOW_FSYNC_MS", ms.to_string()),
    ]
}

/// The environment that makes the daemon's syncs fail with `EIO` while `flag` exists, as a
/// failing SD card's do.
pub fn failing_while(flag: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("LD_PRELOAD", shim().display().to_string()),
        ("FAIL_FSYNC_WHILE", flag.display().to_string()),
    ]
}
