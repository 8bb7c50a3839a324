"""`python -m aprelu_exp.report RUN_OR_SWEEP_DIR... --out DIR`: report.md, runs.csv, plots."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aprelu_exp.report.build import build_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aprelu_exp.report", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="run directories or folders holding runs")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md, runs.csv, *.png")
    parser.add_argument("--title", default="aprelu-exp report")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"error: no such run directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    result = build_report(args.paths, args.out, args.title)
    if not result["runs"]:
        print(f"error: no run directories under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    print(f"{result['runs']} run(s) -> {args.out}/: {', '.join(result['files'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
