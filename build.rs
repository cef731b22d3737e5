//! Link settings of the terminal's binary (docs/deployment.md, "Building for the terminals").
//!
//! GNU ld aligns the end of the RELRO segment to the maximum page size, which is 64 KB on
//! aarch64, and pads the file to get there: the stripped binary grows in steps of up to 64 KB
//! whatever the code adds (it was 1.7 KB below such a step at 2,957,976 bytes). Terminals run
//! kernels with 4 KB pages (as Debian's arm64 kernel does), so the aarch64 binary is linked for
//! 4 KB pages: at most 4 KB of padding. A kernel built for 64 KB pages would refuse to load it.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if arch == "aarch64" && os == "linux" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,max-page-size=4096");
    }
}
