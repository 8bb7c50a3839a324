"""`python -m aprelu_exp.search list | report STUDY --out DIR`: studies in a storage, and a study's
report read from its storage (any time: during a search, or from another machine)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aprelu_exp.errors import run_command
from aprelu_exp.search.report import study_section
from aprelu_exp.search.storage import normalise, open_storage


def cmd_list(storage: str) -> None:
    # deferred: optuna loads only where a study is read
    import optuna

    summaries = optuna.get_all_study_summaries(open_storage(storage, create=False))
    if not summaries:
        print(f"no study in {storage}")
    for s in sorted(summaries, key=lambda s: s.study_name):
        best = f"best {s.best_trial.value:.4f} (trial {s.best_trial.number})" if s.best_trial else "no completed trial"
        print(f"{s.study_name}  {s.n_trials} trial(s), {best}; record {s.user_attrs.get('record')}")


def cmd_report(study: str, storage: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines, files = study_section(study, storage, out)
    (out / "study.md").write_text("\n".join(lines) + "\n")
    print(f"{out}/: study.md, {', '.join(files)}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m aprelu_exp.search", description=__doc__)
    parser.add_argument("--storage", help="SQLAlchemy URL or journal:PATH (default: optuna.db under run_root)")
    parser.add_argument("--run-root", metavar="DIR", help="the search's run_root (default: runs): a relative "
                        "storage file, as a promoted record states it (sqlite:///optuna.db relative to "
                        "run_root), is read from there")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the studies in the storage, with their trial counts and best values")
    p_report = sub.add_parser("report", help="study.md, study_trials.csv and plots for one study")
    p_report.add_argument("study")
    p_report.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    def command() -> None:
        storage = normalise(args.storage, args.run_root or "runs", relative_to=args.run_root)
        if args.cmd == "list":
            cmd_list(storage)
        else:
            cmd_report(args.study, storage, args.out)

    return run_command(command)


if __name__ == "__main__":
    sys.exit(main())
