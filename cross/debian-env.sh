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
# real pos-agent binary through POS_AGENT_TEST_RUNNER (tests/support/mod.rs).
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="qemu-arm-static -L /usr/arm-linux-gnueabihf"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER="qemu-aarch64-static"
