"""Turn what `.ci/run` printed into the CI figures `scripts/perf_tables.py` reads.

    bash .ci/run 2>&1 | tee ci.log          # with PYTEST_ADDOPTS=--durations=0 for the durations
    python scripts/ci_figures.py ci.log results/<date>_ci/<label> --commit SHA --total-s 1234

writes `phases.json` (machine, commit, date, each phase's seconds, each suite's pytest summary) and
`<suite>.durations.txt` for default, slow and cluster. The three pytest sessions are taken in the
order `.ci/run` prints them (default, slow, cluster; both the sequential `.ci/run` of before
2026-12-07 and the side-by-side one print them in that order). Phase seconds come from the phase
table the current `.ci/run` prints at its end; for an older log without it, each suite's seconds are
pytest's own and the set-up is what `--total-s` leaves.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

SUITES = ("default", "slow", "cluster")
SESSION_START = re.compile(r"^=+ test session starts =+$")
SUMMARY = re.compile(r"^=+ (.*\d+ (?:passed|failed|error|errors|skipped|deselected).*) in ([\d.]+)s(?: \([\d:]+\))? =+$")
DURATION = re.compile(r"^\s*\d+(?:\.\d+)?s (?:setup|call|teardown)\s+\S")
PHASE = re.compile(r"^  (.+?)\s+(\d+) s$")
PHASE_KEYS = {"set-up": "setup", "default suite": "default", "cluster start": "cluster_start",
              "slow and cluster suites": "slow_and_cluster", "of which -m slow": "slow",
              "of which -m cluster": "cluster", "-m slow": "slow", "-m cluster": "cluster",
              "whole .ci/run": "total"}


def sessions(lines: list[str]) -> list[list[str]]:
    found, current = [], None
    for line in lines:
        if SESSION_START.match(line):
            current = []
            found.append(current)
        elif current is not None:
            current.append(line)
    return found


def phase_table(lines: list[str]) -> dict[str, int]:
    phases = {}
    if "CI phases, wall time" not in "\n".join(lines):
        return phases
    start = max(i for i, line in enumerate(lines) if line.startswith("CI phases, wall time"))
    for line in lines[start + 1:]:
        m = PHASE.match(line)
        if not m:
            break
        label = m.group(1).strip()
        for prefix, key in PHASE_KEYS.items():
            if label.startswith(prefix):
                phases[key] = int(m.group(2))
    return phases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--total-s", type=int, help="the whole run's wall seconds, for a log without a phase table")
    ap.add_argument("--date", default=dt.date.today().isoformat())
    args = ap.parse_args(argv)
    lines = args.log.read_text(errors="replace").splitlines()
    found = sessions(lines)
    if len(found) != len(SUITES):
        print(f"ci_figures: {args.log} holds {len(found)} pytest sessions, not the 3 of .ci/run "
              f"(default, slow, cluster); was the run cut short?", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    counts, seconds = {}, {}
    for suite, body in zip(SUITES, found):
        summary = next((SUMMARY.match(line) for line in reversed(body) if SUMMARY.match(line)), None)
        if summary:
            counts[suite], seconds[suite] = summary.group(1), round(float(summary.group(2)))
        (args.out / f"{suite}.durations.txt").write_text(
            "\n".join(line for line in body if DURATION.match(line)) + "\n")
    phases = phase_table(lines)
    if not phases:
        phases = dict(seconds)
        if args.total_s:
            phases["total"] = args.total_s
            phases["setup"] = args.total_s - sum(seconds.values())  # with the cluster's start
    # The capability line .ci/run prints: "CPU: <model>; vector level <level>; ..."
    cpu = next((line for line in lines if line.startswith("CPU: ")), "")
    machine = ", ".join(part.strip() for part in cpu[len("CPU: "):].split(";")[:2]).replace("vector level ", "")
    (args.out / "phases.json").write_text(json.dumps(
        {"machine": machine, "commit": args.commit, "date": args.date, "phases": phases, "counts": counts},
        indent=2) + "\n")
    print(f"ci_figures: wrote {args.out}/phases.json and the durations of {', '.join(SUITES)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
