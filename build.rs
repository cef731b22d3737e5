//! Link settings of the terminal's binary (docs/deployment.md, "Building for the terminals").
//!
//! GNU ld aligns the end of the RELRO segment to the maximum page size, which is 64 KB on
//! aarch64, and pads the file to get there: the stripped binary grows in steps of up to 64 KB
//! whatever the code adds (it was 1.7 KB below such a step at 2,957,976 bytes). Terminals run
//! kernels with 4 KB pages (as Debian's arm64 kernel does), so the aarch64 binary is linked for
//! 4 KB pages: at most 4 KB of padding. A kernel built for 64 KB pages would refuse to load it.
//!
//! The ARM release binaries also leave out `.eh_frame_hdr`, the unwinder's search index (about
//! 100 KB on aarch64). The release profile aborts on panic, so nothing ever unwinds; only a
//! backtrace asked for with `RUST_BACKTRACE` would come out short. Debug and test builds, which
//! unwind, keep it. Without that index glibc's unwinder finds no frame description of the
//! executable at all, so the glibc ARM release binaries leave out `.eh_frame` itself too (368 KB
//! on aarch64), through a linker script fragment that discards it (docs/deployment.md,
//! "Building for the terminals").
//!
//! It also records which commit a build is (`POS_AGENT_COMMIT`, read by `src/build_info.rs`;
//! docs/development.md, "Which build is this"): git's hash of `HEAD`, `-dirty` when what goes
//! into the binary (`src/`, `Cargo.toml`, `Cargo.lock`, `build.rs`) differs from it, and `unknown`
//! where there is no git checkout (a source tarball). A packager who knows the commit of a
//! tarball sets `POS_AGENT_COMMIT` in the build's environment.

use std::path::Path;
use std::process::Command;

/// What `-dirty` looks at: the files the binary is built from.
const BUILD_INPUTS: [&str; 4] = ["src", "Cargo.toml", "Cargo.lock", "build.rs"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let commit = commit();
    println!("cargo:rustc-env=POS_AGENT_COMMIT={commit}");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let (arch, os) = (var("CARGO_CFG_TARGET_ARCH"), var("CARGO_CFG_TARGET_OS"));
    let terminal = os == "linux" && (arch == "aarch64" || arch == "arm");
    if arch == "aarch64" && os == "linux" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,max-page-size=4096");
    }
    if terminal && var("PROFILE") == "release" {
        println!("cargo:rustc-link-arg-bins=-Wl,--no-eh-frame-hdr");
    }
    // musl's start files register `.eh_frame` with the unwinder themselves, so it stays there.
    if terminal && var("PROFILE") == "release" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        let script = Path::new(&var("OUT_DIR")).join("discard-eh-frame.ld");
        std::fs::write(&script, DISCARD_EH_FRAME).expect("OUT_DIR is writable");
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
}

/// A linker script fragment: the default script, with `.eh_frame` discarded. Without
/// `.eh_frame_hdr` the unwinder cannot find a frame description of the executable (it searches
/// `PT_GNU_EH_FRAME`, which that header makes), so `.eh_frame` would be bytes nothing reads.
const DISCARD_EH_FRAME: &str = "SECTIONS { /DISCARD/ : { *(.eh_frame) *(.eh_frame.*) } }
INSERT AFTER .text;
";

/// The commit this build is, as `docs/development.md` ("Which build is this") describes.
fn commit() -> String {
    println!("cargo:rerun-if-env-changed=POS_AGENT_COMMIT");
    if let Some(given) = std::env::var("POS_AGENT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_graphic()))
    {
        return given;
    }
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let root = Path::new(&root);
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    // Only the crate's own repository: a tarball unpacked inside some other checkout must not
    // take that checkout's commit.
    let own_repository = git(&["rev-parse", "--show-toplevel"])
        .is_some_and(|top| std::fs::canonicalize(top).ok() == std::fs::canonicalize(root).ok());
    if !own_repository {
        return "unknown".into();
    }
    // A new commit, a checkout or a staged change moves one of these: the hash is read again.
    let mut watched = vec![
        "HEAD".to_owned(),
        "index".to_owned(),
        "packed-refs".to_owned(),
    ];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            println!("cargo:rerun-if-changed={}", root.join(path).display());
        }
    }
    for input in BUILD_INPUTS {
        println!("cargo:rerun-if-changed={input}");
    }
    let Some(hash) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let mut status = vec!["status", "--porcelain", "--"];
    status.extend(BUILD_INPUTS);
    match git(&status) {
        Some(changes) if changes.is_empty() => hash,
        _ => format!("{hash}-dirty"),
    }
}
