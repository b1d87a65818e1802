#!/usr/bin/env bash
# Are the crates ready for crates.io? `cargo publish --workspace --dry-run` must pass with no
# warning, and the packaged osmem and osmem-heap must pass their own tests from their unpacked
# .crate files — what a user who downloads them gets — with each other and osmem-testkit
# taken from the local packages instead of crates.io (`[patch.crates-io]`).
# Extra arguments go to `cargo publish` (e.g. --allow-dirty while working).
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' osmem/Cargo.toml | head -1)
# `cargo publish --workspace` verifies each package against the others through a local
# registry overlay, whose sources it extracts under $CARGO_HOME/registry/src once per
# name-version and then reuses: with the version unchanged, a source extracted by an earlier
# run (an older osmem) would be verified instead of this one's. Remove ours first (only from
# the overlays: crates.io's index directory holds none of them).
cargo_home=${CARGO_HOME:-$HOME/.cargo}
for dir in "$cargo_home"/registry/src/*/; do
    case "$(basename "$dir")" in index.crates.io-*) continue ;; esac
    for c in osmem osmem-heap osmem-testkit osmem-bench osmem-cli; do
        rm -rf "$dir$c-$version"
    done
done

# Cargo also takes a registry crate's build for immutable: the verification builds of a
# same-version osmem from the overlay would be reused too. They get a target directory of
# their own, kept between runs for the third-party crates, with our crates' builds removed.
export CARGO_TARGET_DIR=target/publish-check
for p in debug/.fingerprint debug/deps; do
    rm -rf "$CARGO_TARGET_DIR/$p"/osmem* "$CARGO_TARGET_DIR/$p"/libosmem*
done

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo publish --workspace --dry-run "$@" 2>&1 | tee "$log"
# (A dry run always ends each upload with "aborting upload due to dry run": not a problem.)
if grep '^warning' "$log" | grep -vq 'aborting upload due to dry run'; then
    echo "cargo publish --dry-run printed warnings (above)" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -f "$log"; rm -rf "$work"' EXIT
for c in osmem osmem-heap osmem-testkit; do
    # `cargo publish --dry-run` leaves the .crate files in target/package/tmp-crate
    # (`cargo package`, in target/package).
    crate="$CARGO_TARGET_DIR/package/tmp-crate/$c-$version.crate"
    [ -f "$crate" ] || crate="$CARGO_TARGET_DIR/package/$c-$version.crate"
    tar -xzf "$crate" -C "$work"
done
cat >"$work/Cargo.toml" <<TOML
[workspace]
resolver = "2"
members = ["osmem-$version", "osmem-heap-$version", "osmem-testkit-$version"]

[patch.crates-io]
osmem = { path = "osmem-$version" }
osmem-heap = { path = "osmem-heap-$version" }
osmem-testkit = { path = "osmem-testkit-$version" }
TOML
# The packaged crates' own tests, examples and doc tests (a separate target directory: the
# workspace's would mix the two builds).
(cd "$work" && CARGO_TARGET_DIR="$work/target" cargo test -p osmem -p osmem-heap)
echo "packaged osmem and osmem-heap $version: tests pass from the .crate files"
