#!/usr/bin/env python3
"""Generate TESTING.md: the profiles x suites table and the failure-injection matrix.

Usage (from anywhere):  python3 scripts/testing_md.py

Runs `cargo test -p osmem -p osmem-heap --test profiles --test matrix --test residency
--no-fail-fast` with
OSMEM_TESTING_OUT set to a fresh temporary directory (osmem/tests/matrix.rs is left
out while it does not exist), reads the rows the tests append there
(profiles.tsv: profile, suite, result, detail; matrix.tsv: scenario, call, injected,
operation, expected, result; tab-separated, no header) and writes TESTING.md at the
repository root. Exits non-zero if cargo failed, any row failed, or a table is
incomplete. Standard library only.

`--rows DIR` renders from the .tsv files already in DIR instead of running cargo (for
checking the rendering; the file then says so).
"""

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = "python3 scripts/testing_md.py"
OUT_FILE = os.path.join(ROOT, "TESTING.md")
PROFILE_COLS = ["profile", "suite", "result", "detail"]
MATRIX_COLS = ["scenario", "call", "injected", "operation", "expected", "result"]


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def source_order(path, pattern):
    """Names in the order a source file declares them (for stable table order)."""
    return re.findall(pattern, read_text(path))


def profile_order():
    src = read_text(os.path.join(ROOT, "testkit", "src", "profile.rs"))
    m = re.search(r"pub const PROFILES: &\[&str\] = &\[(.*?)\];", src, re.S)
    return re.findall(r'"([^"]+)"', m.group(1)) if m else []


def suite_order():
    heap = re.search(
        r"const SUITES: &\[&str\] = &\[(.*?)\];",
        read_text(os.path.join(ROOT, "osmem-heap", "tests", "profiles.rs")),
        re.S,
    )
    return source_order(
        os.path.join(ROOT, "osmem", "tests", "profiles.rs"), r'\("(\w+)", suite_\w+\)'
    ) + (re.findall(r'"([^"]+)"', heap.group(1)) if heap else [])


def ordered(found, declared):
    """Every declared name in declaration order, then names found only in the rows."""
    return list(declared) + sorted(set(found) - set(declared))


def read_rows(path, ncols):
    rows, bad = [], []
    for line in read_text(path).splitlines():
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != ncols:
            bad.append(line)
            continue
        rows.append(cols)
    return rows, bad


def natural_key(s):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def cell(s):
    return s.replace("|", "\\|").replace("\n", " ")


def run(cmd):
    try:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def run_tests(cargo, out):
    """Run cargo with OSMEM_TESTING_OUT=out; returns (exit status, seconds)."""
    env = dict(os.environ, OSMEM_TESTING_OUT=out)
    print("running:", " ".join(cargo), file=sys.stderr)
    t0 = time.monotonic()
    proc = subprocess.run(cargo, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        # The tail is enough to see which test failed; TESTING.md lists the failed cells.
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-2000:])
    return proc.returncode, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", metavar="DIR", help="render from DIR's .tsv files; run nothing")
    args = ap.parse_args()
    have_matrix = os.path.exists(os.path.join(ROOT, "osmem", "tests", "matrix.rs"))
    tests = ["--test", "profiles"] + (["--test", "matrix"] if have_matrix else [])
    # The residency chain's fallback rows (R1…) join the matrix.
    if os.path.exists(os.path.join(ROOT, "osmem", "tests", "residency.rs")):
        tests += ["--test", "residency"]
    # osmem-heap's profile suites (heap-*) join the profiles table.
    pkgs = ["-p", "osmem"]
    if os.path.exists(os.path.join(ROOT, "osmem-heap", "tests", "profiles.rs")):
        pkgs += ["-p", "osmem-heap"]
    cargo = ["cargo", "test"] + pkgs + tests + ["--no-fail-fast"]
    problems = []
    with tempfile.TemporaryDirectory(prefix="osmem-testing-") as tmp:
        out = args.rows or tmp
        if args.rows:
            status, seconds = 0, 0.0
            ran = f"nothing (`--rows`): rendered from the rows already in `{args.rows}`"
        else:
            status, seconds = run_tests(cargo, out)
            ran = f"`{' '.join(cargo)}`"
            if status != 0:
                problems.append(f"{ran} exited with status {status}")
        prof_rows, prof_bad = read_rows(os.path.join(out, "profiles.tsv"), len(PROFILE_COLS))
        mat_rows, mat_bad = read_rows(os.path.join(out, "matrix.tsv"), len(MATRIX_COLS))
        have_matrix = have_matrix or bool(mat_rows)
    for line in prof_bad:
        problems.append(f"malformed profiles.tsv row: {line!r}")
    for line in mat_bad:
        problems.append(f"malformed matrix.tsv row: {line!r}")

    # Table 1: profiles x suites.
    profiles = ordered((r[0] for r in prof_rows), profile_order())
    suites = ordered((r[1] for r in prof_rows), suite_order())
    cells = {}
    for p, s, result, detail in prof_rows:
        cells.setdefault((p, s), []).append((result, detail))
    prof_pass = prof_fail = 0
    lines = ["| profile | " + " | ".join(suites) + " |", "|---" * (len(suites) + 1) + "|"]
    fail_details = []
    for p in profiles:
        row = []
        missing = [s for s in suites if (p, s) not in cells]
        if missing:
            problems.append(f"profile {p}: no row for {', '.join(missing)}")
        for s in suites:
            got = cells.get((p, s), [])
            if not got:
                row.append("missing")
                prof_fail += 1
            elif all(r == "pass" for r, _ in got):
                row.append("pass")
                prof_pass += 1
            else:
                row.append("**FAIL**")
                prof_fail += 1
                for r, d in got:
                    if r != "pass":
                        fail_details.append(f"- `{p}` / `{s}`: {cell(d)}")
        lines.append(f"| `{p}` | " + " | ".join(row) + " |")
    if prof_fail:
        problems.append(f"{prof_fail} profile cell(s) failed or missing")
    if not prof_rows:
        problems.append("the profile tests wrote no rows")
    profile_table = "\n".join(lines)
    paths = []
    for p in profiles:
        passes = [(s, d) for s in suites for r, d in cells.get((p, s), []) if r == "pass" and d]
        if passes:
            paths.append(f"- `{p}`")
            paths.extend(f"  - {s}: {cell(d)}" for s, d in passes)

    # Table 2: the failure matrix.
    mat_pass = sum(1 for r in mat_rows if r[5] == "pass")
    mat_fail = len(mat_rows) - mat_pass
    if not have_matrix:
        matrix_section = "Not yet generated: `osmem/tests/matrix.rs` does not exist yet."
    elif not mat_rows:
        matrix_section = "Not generated: `osmem/tests/matrix.rs` ran but wrote no rows."
        problems.append("the matrix tests wrote no rows")
    else:
        if mat_fail:
            problems.append(f"{mat_fail} matrix scenario(s) failed")
        m = ["| " + " | ".join(MATRIX_COLS) + " |", "|---" * len(MATRIX_COLS) + "|"]
        for r in sorted(mat_rows, key=lambda r: natural_key(r[0])):
            shown = list(r)
            shown[5] = "pass" if r[5] == "pass" else "**FAIL**"
            m.append("| " + " | ".join(cell(c) for c in shown) + " |")
        matrix_section = "\n".join(m)

    matrix_total = f"{mat_pass} of {len(mat_rows)} scenarios pass" if have_matrix else (
        "not yet generated"
    )
    if have_matrix:
        matrix_count = f"{len(mat_rows)} scenarios: {mat_pass} pass, {mat_fail} fail"
    else:
        matrix_count = "not yet generated"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = run(["git", "rev-parse", "--short", "HEAD"])
    dirty = " (with uncommitted changes)" if run(["git", "status", "--porcelain"]) else ""
    doc = f"""# TESTING

Generated by `{COMMAND}` — do not edit by hand; run the command again.

- Ran: {ran}, with `OSMEM_TESTING_OUT` naming a fresh temporary directory, where the
  tests append one tab-separated row per result; {seconds:.1f} s, exit status {status}.
- Date: {now}; commit {commit}{dirty}.
- Machine: Linux {platform.release()} ({platform.machine()}); {run(["rustc", "-V"])}.
- Profiles: {len(profiles)} × {len(suites)} suites = {len(profiles) * len(suites)} cells:
  {prof_pass} pass, {prof_fail} fail or missing.
- Failure matrix: {matrix_count}.

## 1. The semantic suite under every emulated kernel and sandbox

Each profile is a seccomp filter that answers like that kernel or sandbox
(`testkit/src/profile.rs` gives the rules and the kernel history behind each one); the suite
(`osmem/tests/profiles.rs`) runs in a freshly exec'd copy of the test binary so that osmem's
probe itself runs under the filter.

{profile_table}

"""
    if fail_details:
        doc += "Failures:\n\n" + "\n".join(fail_details) + "\n\n"
    if paths:
        doc += (
            "<details><summary>What each profile took (the detail of every passing cell)"
            "</summary>\n\n" + "\n".join(paths) + "\n\n</details>\n\n"
        )
    doc += f"""## 2. The failure-injection matrix

Every syscall and advice osmem issues, made to fail with an injected errno, and the
outcome the test checked against the kernel's view (`osmem/tests/matrix.rs`; the rows
`R…`, the residency queries' chain, `osmem/tests/residency.rs`).

{matrix_section}

## Totals

- Profiles: {prof_pass} of {len(profiles) * len(suites)} cells pass.
- Matrix: {matrix_total}.
- Overall: {"PASS" if not problems else "FAIL"}.
"""
    if problems:
        doc += "\nProblems:\n\n" + "\n".join(f"- {cell(p)}" for p in problems) + "\n"
    with open(OUT_FILE, "w", encoding="utf-8") as f:
        f.write(doc)
    print(f"wrote {OUT_FILE}", file=sys.stderr)
    for p in problems:
        print("problem:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
