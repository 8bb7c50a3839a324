"""`python -m aprelu_exp.report RUN_OR_SWEEP_DIR... --out DIR`: report.md, runs.csv, plots."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aprelu_exp.errors import UserError, run_command
from aprelu_exp.report.build import build_report
from aprelu_exp.report.collect import find_runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aprelu_exp.report", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="run directories or folders holding runs")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md, runs.csv, *.png")
    parser.add_argument("--title", default="aprelu-exp report")
    args = parser.parse_args(argv)
    return run_command(lambda: report(args))


def report(args) -> None:
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        raise UserError(f"no such run directory: {', '.join(missing)}. Give run directories "
                        f"(runs/<date>/<run>) or folders holding them (a sweep: runs/multirun/<sweep>).")
    if not find_runs(args.paths):
        raise UserError(f"no run directories under {', '.join(map(str, args.paths))}: a run directory "
                        f"holds status.json, metrics.csv or .hydra/. Nothing was written.")
    result = build_report(args.paths, args.out, args.title)
    print(f"{result['runs']} run(s) -> {args.out}/: {', '.join(result['files'])}")


if __name__ == "__main__":
    sys.exit(main())
