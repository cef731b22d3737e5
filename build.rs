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
//! unwind, keep it.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let (arch, os) = (var("CARGO_CFG_TARGET_ARCH"), var("CARGO_CFG_TARGET_OS"));
    let terminal = os == "linux" && (arch == "aarch64" || arch == "arm");
    if arch == "aarch64" && os == "linux" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,max-page-size=4096");
    }
    if terminal && var("PROFILE") == "release" {
        println!("cargo:rustc-link-arg-bins=-Wl,--no-eh-frame-hdr");
    }
}
