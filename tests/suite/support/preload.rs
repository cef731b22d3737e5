//! `LD_PRELOAD` libraries from `tools/` (the slow-storage shim, the power-cut recorder), built
//! with the host's C compiler into this build's target directory, once per process each.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// Whether a library preloaded into the daemon reaches it. Not when the suite runs under an
/// emulator (`POS_AGENT_TEST_RUNNER`, the qemu stage of `.ci/run`): the library is built for the
/// host, and the emulator gives the emulated daemon its own `LD_PRELOAD`. A test that needs one
/// says why it stops there and passes; what it shows is the daemon's own logic, which the host
/// run covers.
pub fn reaches_the_daemon(what: &str) -> bool {
    let emulated = std::env::var_os("POS_AGENT_TEST_RUNNER").is_some_and(|r| !r.is_empty());
    if emulated {
        eprintln!(
            "not under emulation (POS_AGENT_TEST_RUNNER is set): {what} needs a preloaded library"
        );
    }
    !emulated
}

/// Builds `tools/<source>` (once per process) and returns the library's path.
pub fn library(source: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(source) {
        return path.clone();
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tools")
        .join(source);
    let stem = source.trim_end_matches(".c");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("lib{stem}-{}.so", std::process::id()));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o",
        ])
        .arg(&out)
        .arg(&path)
        .args(["-ldl", "-lpthread"])
        .status()
        .unwrap_or_else(|e| panic!("run the C compiler (cc) to build tools/{source}: {e}"));
    assert!(status.success(), "building tools/{source} failed");
    built.insert(source.to_owned(), out.clone());
    out
}

/// `LD_PRELOAD` for the daemon's environment: `tools/<source>`, built by [`library`].
pub fn env(source: &str) -> (&'static str, String) {
    ("LD_PRELOAD", library(source).display().to_string())
}

/// Replaces `file` with `text` by a rename, so that a preloaded library re-reading it in the
/// daemon never reads half of it.
pub fn replace(file: &std::path::Path, text: &str) {
    let mut staging = file.as_os_str().to_owned();
    staging.push(".new");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(&staging, file).unwrap();
}
