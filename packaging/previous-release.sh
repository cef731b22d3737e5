#!/usr/bin/env bash
# The previous release's Debian package, built from git (docs/development.md, "Releases"): the
# commit named in packaging/previous-release is exported with `git archive` into
# target/previous-release/source-COMMIT and packaged there by its own packaging/deb.sh (the
# terminal's build, --no-default-features, cargo auditable, its SBOM), exactly as that release
# was. Every such build shares one target directory, target/previous-release/target, so a second
# run on a developer's machine reuses it; CI's clean clone builds it once.
#
#   packaging/previous-release.sh [--target TARGET] OUTDIR
#
# e.g. packaging/previous-release.sh /tmp/prev;
#      packaging/previous-release.sh --target aarch64-unknown-linux-gnu /tmp/prev
# (cross/debian-env.sh of that commit sets up Debian's cross toolchains). Prints the package's
# path. Needs the commit in this clone: a shallow clone is refused with what to fetch.
set -euo pipefail
cd "$(dirname "$0")/.."

target_args=()
if [ "${1:-}" = --target ]; then
    target_args=(--target "$2")
    shift 2
fi
[ $# -eq 1 ] || { echo "usage: packaging/previous-release.sh [--target TARGET] OUTDIR" >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd)

read -r commit version < <(grep -v '^#' packaging/previous-release | awk 'NF { print $1, $2; exit }')
if [ -z "${commit:-}" ] || [ -z "${version:-}" ]; then
    echo "packaging/previous-release names no commit and version" >&2
    exit 1
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
    if [ "$(git rev-parse --is-shallow-repository 2>/dev/null)" = true ]; then
        echo "the previous release's commit $commit (packaging/previous-release) is not in this" \
            "shallow clone; fetch the history first: git fetch --unshallow" >&2
    else
        echo "the previous release's commit $commit (packaging/previous-release) is not in this" \
            "repository" >&2
    fi
    exit 1
fi

base=$PWD/target/previous-release
source_dir=$base/source-$commit
if [ ! -e "$source_dir/.exported" ]; then
    rm -rf "$source_dir"
    mkdir -p "$source_dir"
    git archive "$commit" | tar -x -C "$source_dir"
    touch "$source_dir/.exported"
fi
given=$(sed -n 's/^version = "\(.*\)"/\1/p' "$source_dir/Cargo.toml" | head -n1)
[ "$given" = "$version" ] ||
    { echo "packaging/previous-release says $version, but $commit is version $given" >&2; exit 1; }
# Its own scripts build into its target/, which is the shared one.
mkdir -p "$base/target"
ln -sfn ../target "$source_dir/target"
(
    # Its own build settings only: not this release's (tests/system/run has sourced this
    # release's cross/debian-env.sh, whose path remapping that commit may not have had).
    unset CARGO_TARGET_DIR RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
    for variable in $(compgen -e | grep -E '^CARGO_TARGET_[A-Z0-9_]+_RUSTFLAGS$'); do
        unset "$variable"
    done
    cd "$source_dir"
    packaging/deb.sh "${target_args[@]}" -o "$out/" >&2
)
case "${target_args[1]:-}" in
aarch64-*) arch=arm64 ;;
armv7-*) arch=armhf ;;
'') arch=$(dpkg --print-architecture) ;;
*) ls "$out"/pos-agent_"$version"-1_*.deb; exit ;;
esac
ls "$out"/pos-agent_"$version"-1_"$arch".deb
