#!/usr/bin/env bash
# The CycloneDX SBOM of a pos-agent release binary, read from the binary itself
# (docs/supply-chain.md): `cargo auditable build` embedded the list of crates the build used
# (section .dep-v0), and auditable2cdx turns it into a CycloneDX JSON document, written beside
# the binary as pos-agent.cdx.json. The packages ship it as /usr/share/doc/pos-agent/sbom.cdx.json
# (Cargo.toml, [package.metadata.deb] assets).
#
#   packaging/sbom.sh [TARGET...]     no TARGET: the host's target/release/pos-agent
#
# Installs auditable2cdx (`cargo install --locked`) when missing. A binary built without
# `cargo auditable` has no list to read: the script fails, naming the binary.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v auditable2cdx >/dev/null; then
    cargo install --locked auditable2cdx
fi
dirs=()
for target in "$@"; do
    dirs+=("target/$target/release")
done
[ ${#dirs[@]} -gt 0 ] || dirs=(target/release)
for dir in "${dirs[@]}"; do
    binary="$dir/pos-agent"
    [ -f "$binary" ] || { echo "sbom.sh: no $binary (build it with cargo auditable build first)" >&2; exit 1; }
    if ! auditable2cdx "$binary" >"$binary.cdx.json.tmp" 2>"$binary.cdx.json.err"; then
        cat "$binary.cdx.json.err" >&2
        rm -f "$binary.cdx.json.tmp" "$binary.cdx.json.err"
        echo "sbom.sh: $binary carries no dependency list; build it with cargo auditable build" >&2
        exit 1
    fi
    rm -f "$binary.cdx.json.err"
    mv "$binary.cdx.json.tmp" "$binary.cdx.json"
    echo "$binary.cdx.json: $(stat -c %s "$binary.cdx.json") bytes"
done
