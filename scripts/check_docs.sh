#!/usr/bin/env bash
# Build the workspace's API documentation as docs.rs would show it, then look through the
# generated pages for references a reader outside this repository cannot follow: design notes
# that are not shipped ("DESIGN.md", "§ 3"), internal names ("seed 1", "issue 4") and
# absolute paths of the development machine ("/shared/").
#
# Usage: scripts/check_docs.sh [--no-build] [--source]
#   --no-build  check the pages already in target/doc (skip `cargo doc`)
#   --source    also check the rendered source pages (target/doc/src/<crate>/), which show
#               code comments
#
# Prints every hit as `file: …excerpt…` and exits 1 if there is any, 0 if there is none
# (2 if the documentation does not build).
set -euo pipefail

cd "$(dirname "$0")/.."

CRATES=(osmem osmem_heap osmem_testkit osmem_bench)
PATTERN='DESIGN\.md|DESIGN §|§ ?[0-9]|[Ss]eed [0-9]|[Ii]ssue [0-9]+|/shared/'

build=1
source=0
for arg in "$@"; do
    case "$arg" in
    --no-build) build=0 ;;
    --source) source=1 ;;
    -h | --help)
        sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "check_docs.sh: unknown argument: $arg" >&2
        exit 2
        ;;
    esac
done

if [ "$build" = 1 ]; then
    if ! RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps; then
        echo "check_docs.sh: cargo doc failed" >&2
        exit 2
    fi
fi

doc_dir="${CARGO_TARGET_DIR:-target}/doc"
dirs=()
for c in "${CRATES[@]}"; do
    [ -d "$doc_dir/$c" ] && dirs+=("$doc_dir/$c")
    if [ "$source" = 1 ] && [ -d "$doc_dir/src/$c" ]; then
        dirs+=("$doc_dir/src/$c")
    fi
done
if [ "${#dirs[@]}" -eq 0 ]; then
    echo "check_docs.sh: no documentation under $doc_dir for ${CRATES[*]}" >&2
    exit 2
fi

hits=0
while IFS= read -r -d '' file; do
    # rustdoc's own "§" anchors (headings, fields) out first; then tags out and common
    # entities decoded, so a hit split by markup (`seed <code>1</code>`) is still found and the
    # excerpt reads as text. Each hit with up to 60 characters around it.
    found=$(sed -e 's/<a [^>]*class="anchor[^"]*"[^>]*>[^<]*<\/a>/ /g' \
        -e 's/<[^>]*>/ /g' \
        -e 's/&amp;/\&/g; s/&lt;/</g; s/&gt;/>/g; s/&quot;/"/g; s/&#39;/'"'"'/g; s/&sect;/§/g; s/&nbsp;/ /g' \
        "$file" |
        tr -s ' \t' ' ' |
        grep -oE ".{0,60}($PATTERN).{0,60}" || true)
    if [ -n "$found" ]; then
        while IFS= read -r line; do
            printf '%s: …%s…\n' "$file" "$line"
            hits=$((hits + 1))
        done <<<"$found"
    fi
done < <(find "${dirs[@]}" -type f -name '*.html' -print0 | sort -z)

if [ "$hits" -gt 0 ]; then
    echo "check_docs.sh: $hits internal reference(s) in the generated documentation" >&2
    exit 1
fi
echo "check_docs.sh: no internal references in the documentation of ${CRATES[*]}"
