//! The slow-storage shim (`tools/slow-fsync-shim.c`): built with the host's C compiler into
//! this build's target directory, preloaded into the daemon with `LD_PRELOAD`, delaying every
//! `fsync`/`fdatasync` by `SLOW_FSYNC_MS` milliseconds.

use std::path::PathBuf;
use std::process::Command;

/// Builds the shim (once per process) and returns its path.
pub fn shim() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/slow-fsync-shim.c");
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("libslow-fsync-{}.so", std::process::id()));
            let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
                .args([
                    "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o",
                ])
                .arg(&out)
                .arg(source)
                .arg("-ldl")
                .status()
                .expect("run the C compiler (cc) to build tools/slow-fsync-shim.c");
            assert!(status.success(), "building tools/slow-fsync-shim.c failed");
            out
        })
        .clone()
}

/// The environment that slows the daemon's syncs by `ms` milliseconds.
pub fn env(ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("LD_PRELOAD", shim().display().to_string()),
        ("SLOW_FSYNC_MS", ms.to_string()),
    ]
}
