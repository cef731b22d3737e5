#!/usr/bin/env bash
# Release binaries of pos-agent for the ARM card terminals.
#
#   cross/build.sh [--docker | --debian] [TARGET...]
#
# --docker (the default when `cross` and a container engine are there) builds in cross's images
# (Cross.toml); --debian builds with Debian's cross toolchains, no container (cross/debian-env.sh;
# apt-get install gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross
# libc6-dev-armhf-cross; rustup target add TARGET). TARGETs default to all three of Cross.toml.
# Each binary is printed with its size; `packaging/sbom.sh TARGET` then writes its SBOM and
# `cargo deb --no-build --target TARGET` packages both (packaging/deb.sh does all of it).
#
# Release binaries are auditable (docs/supply-chain.md): --debian builds with `cargo auditable
# build` (installed with `cargo install --locked cargo-auditable` when missing), as CI does.
# `cross` cannot run a cargo plugin inside its image, so --docker builds plain binaries without
# the embedded dependency list: fine for development, not for what ships.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=""
case "${1:-}" in
--docker) mode=docker; shift ;;
--debian) mode=debian; shift ;;
esac
if [ -z "$mode" ]; then
    if command -v cross >/dev/null && { docker info >/dev/null 2>&1 || podman info >/dev/null 2>&1; }; then
        mode=docker
    else
        mode=debian
    fi
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] ||
    targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf aarch64-unknown-linux-musl)

echo "building with $mode: ${targets[*]}"
if [ "$mode" = debian ]; then
    # shellcheck source=debian-env.sh
    . cross/debian-env.sh
    cargo auditable --version >/dev/null 2>&1 || cargo install --locked cargo-auditable
else
    echo "note: cross builds without cargo auditable; the binaries carry no dependency list" >&2
fi
for target in "${targets[@]}"; do
    if [ "$mode" = docker ]; then
        cross build --release --locked --no-default-features --target "$target"
    else
        cargo auditable build --release --locked --no-default-features --target "$target"
    fi
done
for target in "${targets[@]}"; do
    printf '%-32s %10s bytes  %s\n' "$target" \
        "$(stat -c %s "target/$target/release/pos-agent")" "target/$target/release/pos-agent"
done
