#!/usr/bin/env bash
# A/B against an earlier commit, in one run: the same measurement program
# (osmem-bench/examples/ab.rs) built against this tree and against BASE, run alternately
# ROUNDS times on this machine, then each figure's median per build and the ratio
# this/BASE. Ratios, not absolute times, are what carry between machines and sessions.
#
#   bash scripts/ab.sh [BASE] [ROUNDS]      (defaults: 07f74cc, the commit before the
#                                            concurrency core was redesigned; 5 rounds)
#
# Needs nothing but git, cargo and python3. Builds BASE in a temporary git worktree.
set -euo pipefail
base=${1:-07f74cc}
rounds=${2:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
wt="$tmp/base"
git -C "$root" worktree add -f --detach "$wt" "$base" >/dev/null 2>&1
cleanup() {
    git -C "$root" worktree remove --force "$wt" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
cp "$root/osmem-bench/examples/ab.rs" "$wt/osmem-bench/examples/ab.rs"
echo "building $base and this tree (release)..." >&2
(cd "$wt" && cargo build -q --release -p osmem-bench --example ab)
(cd "$root" && cargo build -q --release -p osmem-bench --example ab)
for r in $(seq "$rounds"); do
    echo "round $r/$rounds" >&2
    "$wt/target/release/examples/ab" >"$tmp/base.$r"
    "$root/target/release/examples/ab" >"$tmp/this.$r"
done
python3 - "$tmp" "$rounds" "$base" "$(git -C "$root" rev-parse --short HEAD)" <<'PY'
import sys, statistics
tmp, rounds, base, head = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(kind):
    out = {}
    for r in range(1, rounds + 1):
        for line in open(f"{tmp}/{kind}.{r}"):
            name, value, unit = line.split()
            out.setdefault(name, (unit, []))[1].append(float(value))
    return out
a, b = load("base"), load("this")
print(f"| figure | {base} (median of {rounds}) | {head} (median of {rounds}) | {head} / {base} |")
print("|---|---:|---:|---:|")
for name, (unit, vals) in a.items():
    x, y = statistics.median(vals), statistics.median(b[name][1])
    print(f"| {name} | {x:.3f} {unit} | {y:.3f} {unit} | {y / x:.3f} |")
PY
