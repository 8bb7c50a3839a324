"""`python -m aprelu_exp.records list | show RECORD | diff A B | promote TRIAL_OR_STUDY --name NAME`
(A, B: record names or run dirs)."""
from __future__ import annotations

import argparse
import sys

from omegaconf import OmegaConf

from aprelu_exp.errors import run_command
from aprelu_exp.records.lineage import config_diff, lineage, load_config


def cmd_list() -> None:
    recs = lineage()
    children: dict[str | None, list[str]] = {}
    for name, rec in recs.items():
        children.setdefault(rec.get("parent"), []).append(name)

    def walk(name: str, depth: int) -> None:
        rec = recs[name]
        pad = "    " * depth + ("└── " if depth else "")
        print(f"{pad}{name}  [{rec.get('provenance')}]  parent: {rec.get('parent') or '-'}")
        print(f"{'    ' * (depth + 1)}change: {rec.get('change')}")
        for child in sorted(children.get(name, [])):
            walk(child, depth + 1)

    roots = [n for n, r in recs.items() if not r.get("parent") or r.get("parent") not in recs]
    for root in sorted(roots):
        walk(root, 0)


def cmd_show(ref: str) -> None:
    data = OmegaConf.to_container(load_config(ref), resolve=True)
    data.pop("hydra", None)
    print(OmegaConf.to_yaml(data), end="")


def cmd_diff(a: str, b: str) -> None:
    rows = config_diff(load_config(a), load_config(b))
    if not rows:
        print(f"{a} and {b} train with the same settings.")
        return
    print(f"# {a} -> {b}: {len(rows)} change(s)")
    for key, old, new in rows:
        print(f"{key}: {old!r} -> {new!r}")


def cmd_promote(args) -> None:
    from aprelu_exp.records.promote import promote

    path = promote(args.ref, args.name, storage=args.storage, number=args.trial, force=args.force)
    print(f"wrote {path}")
    print(path.read_text(), end="")
    parent = load_config(args.name).record.parent
    print(f"\nCheck it: python -m aprelu_exp.records diff {parent} {args.name}\n"
          f"Train it:  python -m aprelu_exp experiment={args.name}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aprelu_exp.records", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the lineage as a tree")
    p_show = sub.add_parser("show", help="a record's fully resolved config")
    p_show.add_argument("ref")
    p_diff = sub.add_parser("diff", help="resolved-config difference, key by key")
    p_diff.add_argument("a")
    p_diff.add_argument("b")
    p_promote = sub.add_parser("promote", help="write a searched trial as a new record (conf/experiment/NAME.yaml)")
    p_promote.add_argument("ref", help="a search's sweep directory, a trial's run directory, or a study name")
    p_promote.add_argument("--name", required=True, help="the new record's name, e.g. record_17")
    p_promote.add_argument("--storage", help="the study's storage when REF is a study name (default: runs/optuna.db)")
    p_promote.add_argument("--trial", type=int, help="promote this trial number instead of the study's best")
    p_promote.add_argument("--force", action="store_true", help="replace an existing record of that name")
    args = parser.parse_args(argv)
    commands = {"list": cmd_list, "show": lambda: cmd_show(args.ref), "promote": lambda: cmd_promote(args),
                "diff": lambda: cmd_diff(args.a, args.b)}
    return run_command(commands[args.cmd])

if __name__ == "__main__":
    sys.exit(main())
