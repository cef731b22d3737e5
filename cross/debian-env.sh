# Source this (`. cross/debian-env.sh`) to cross-build pos-agent on Debian/Ubuntu without
# Docker, with Debian's cross toolchains (packages gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf,
# libc6-dev-arm64-cross, libc6-dev-armhf-cross; qemu-user-static to run the results).
# .ci/run uses it too. ring (TLS) compiles C and assembly, hence CC_* and AR_* besides the linker.

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar

export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc
export AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar

# Static aarch64 binary: Rust's musl target brings its own C library and start files; Debian's
# glibc cross gcc serves as linker and compiles ring's C code (which needs no libc headers beyond
# the freestanding ones).
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar

# Running foreign binaries (cargo test/run) through user-mode emulation; the tests start the
# real pos-agent binary through POS_AGENT_TEST_RUNNER (tests/suite/support/mod.rs).
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="qemu-arm-static -L /usr/arm-linux-gnueabihf"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER="qemu-aarch64-static"

# Shorter source paths in the ARM binaries. Every panic location names its file (about 400 of
# them in the terminal's binary, 44 KB of paths), and a dependency's path starts with the build
# machine's cargo home (`/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/`). Remapped
# to nothing, each reads `tokio-1.48.0/src/...`: about 20 KB off the aarch64 binary, and a binary
# that no longer says where it was built. Run from the source tree (as every script that sources
# this file does), so that the project's own `src/` is remapped too.
pos_agent_remap="--remap-path-prefix=$PWD/="
for pos_agent_registry in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do
    [ -d "$pos_agent_registry" ] &&
        pos_agent_remap="$pos_agent_remap --remap-path-prefix=$pos_agent_registry="
done
pos_agent_remap="$pos_agent_remap --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}/registry/src/="
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$pos_agent_remap"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="$pos_agent_remap"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="$pos_agent_remap"
unset pos_agent_remap pos_agent_registry
