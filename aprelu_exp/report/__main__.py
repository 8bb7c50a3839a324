"""`python -m aprelu_exp.report RUN_OR_SWEEP_DIR... --out DIR [--baseline GROUP] [--paired]`: report.md,
runs.csv, groups.csv (seeds as replicates), comparisons.csv and plots."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aprelu_exp.errors import UserError, run_command
from aprelu_exp.report.build import build_report
from aprelu_exp.runs.reader import find_runs


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m aprelu_exp.report", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="run directories or folders holding runs")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md, runs.csv, *.png")
    parser.add_argument("--title", default="aprelu-exp report")
    parser.add_argument("--baseline", help="compare every group against this one (a group's name as "
                        "groups.csv gives it), instead of every pair of groups")
    parser.add_argument("--paired", action="store_true",
                        help="insist on paired comparisons: same seeds, groups that differ in one key")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_command(lambda: report(args))


def report(args) -> None:
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        raise UserError(f"no such run directory: {', '.join(missing)}. Give run directories "
                        f"(runs/<date>/<run>) or folders holding them (a sweep: runs/multirun/<sweep>).")
    if not find_runs(args.paths):
        raise UserError(f"no run directories under {', '.join(map(str, args.paths))}: a run directory "
                        f"holds config.yaml and status.json (or summary.json). Nothing was written.")
    strict = args.baseline is not None or args.paired
    result = build_report(args.paths, args.out, args.title, baseline=args.baseline,
                          paired=True if args.paired else None, strict=strict)
    print(f"{result['runs']} run(s) -> {args.out}/: {', '.join(result['files'])}")
    for row in result["comparisons"]:
        print(f"{row['a']} vs {row['b']}, {row['metric']}: {row['diff_mean']:+.4f} "
              f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}], p {row['p_value']:.3f} (Holm {row['p_holm']:.3f}), "
              f"P(A>B) {row['p_better']:.2f}: {row['verdict']}")


if __name__ == "__main__":
    sys.exit(main())
