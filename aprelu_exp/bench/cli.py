"""`python -m aprelu_exp.bench cli [--repeats N] [--baseline CHECKOUT] [--out FILE.json]`: how long
the commands that train nothing take, as a person meets them (a new process each time): --help,
--cfg, --info, a completion query (each TAB press), a refused override, the records commands, and
the floor of a bare `import hydra, omegaconf`. With --baseline, the same commands from another
checkout (e.g. `git worktree add /tmp/before <commit>`) run interleaved with these in one run, so
that the machine's drift touches both alike; the table gives both medians and their ratio."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMPLETION = "aprelu-exp augment="
COMMANDS = (
    ("--help", ["-m", "aprelu_exp", "--help"], {}),
    ("--cfg job", ["-m", "aprelu_exp", "--cfg", "job"], {}),
    ("--info", ["-m", "aprelu_exp", "--info"], {}),
    ("TAB: completion query", ["-m", "aprelu_exp", "-sc", "query=bash"],
     {"COMP_LINE": COMPLETION, "COMP_POINT": str(len(COMPLETION))}),
    ("refused override", ["-m", "aprelu_exp", "model.reducton=16"], {}),
    ("records list", ["-m", "aprelu_exp.records", "list"], {}),
    ("records show record_16", ["-m", "aprelu_exp.records", "show", "record_16"], {}),
    ("records diff record_15 record_16", ["-m", "aprelu_exp.records", "diff", "record_15", "record_16"], {}),
    ("floor: import hydra, omegaconf", ["-c", "import hydra, omegaconf"], {}),
)


def timed(args: list[str], env: dict, cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def measure(repeats: int, checkouts: dict[str, Path]) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("COMP_LINE", "COMP_POINT")}
    times: dict = {name: {label: [] for label in checkouts} for name, _, _ in COMMANDS}
    for _ in range(repeats):
        for name, args, extra in COMMANDS:
            for label, root in checkouts.items():  # interleaved: drift lands on both sides alike
                env = {**base, **extra, "PYTHONPATH": str(root)}
                times[name][label].append(timed(args, env, root))
    return {name: {label: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "n": len(v)}
                   for label, v in by.items()} for name, by in times.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aprelu_exp.bench cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="another checkout to time beside this one")
    parser.add_argument("--out", type=Path, default=Path("bench_cli.json"))
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats takes a positive number")
    here = Path(__file__).resolve().parents[2]
    checkouts = {"before": args.baseline.resolve(), "now": here} if args.baseline else {"now": here}
    if args.baseline and not (args.baseline / "aprelu_exp").is_dir():
        parser.error(f"--baseline {args.baseline}: no aprelu_exp/ there; give a checkout of this project")
    results = measure(args.repeats, checkouts)
    args.out.write_text(json.dumps({"repeats": args.repeats, "checkouts": {k: str(v) for k, v in checkouts.items()},
                                    "commands": results}, indent=2) + "\n")
    labels = list(checkouts)
    head = " | ".join(f"{label} s (min-max)" for label in labels)
    print(f"| command | {head} |{' ratio |' if len(labels) == 2 else ''}")
    print("|---|" + "---|" * (len(labels) + (len(labels) == 2)))
    for name, by in results.items():
        cells = " | ".join(f"{by[lb]['median_s']:.2f} ({by[lb]['min_s']:.2f}-{by[lb]['max_s']:.2f})" for lb in labels)
        ratio = f" {by['now']['median_s'] / by['before']['median_s']:.2f}x |" if len(labels) == 2 else ""
        print(f"| {name} | {cells} |{ratio}")
    print(f"\nwritten: {args.out}")
    return 0
