#!/usr/bin/env bash
# A Debian package of pos-agent as CI builds it (docs/supply-chain.md, docs/deployment.md): the
# terminal's binary built with `cargo auditable` (no simulators), its SBOM read back from it
# (packaging/sbom.sh), then `cargo deb --no-build`, which packages both. Plain `cargo deb` needs
# the SBOM to exist already (it is one of the package's files): this script is the one command.
#
#   packaging/deb.sh [--target TARGET] [CARGO_DEB_OPTION...]
#
# e.g. packaging/deb.sh; packaging/deb.sh --target aarch64-unknown-linux-gnu -o /tmp/
# (for an ARM target, cross/debian-env.sh is sourced: Debian's cross toolchains). Installs
# cargo-auditable, auditable2cdx and cargo-deb (`cargo install --locked`) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

target=""
if [ "${1:-}" = --target ]; then
    target=$2
    shift 2
fi
cargo auditable --version >/dev/null 2>&1 || cargo install --locked cargo-auditable
cargo deb --version >/dev/null 2>&1 || cargo install --locked cargo-deb
if [ -n "$target" ]; then
    # shellcheck source=../cross/debian-env.sh
    . cross/debian-env.sh
    cargo auditable build --release --locked --no-default-features --target "$target"
    packaging/sbom.sh "$target"
    cargo deb --locked --no-build --target "$target" "$@"
else
    cargo auditable build --release --locked --no-default-features
    packaging/sbom.sh
    cargo deb --locked --no-build "$@"
fi
