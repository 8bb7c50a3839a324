"""`python -m aprelu_exp.records list | show RECORD | diff A B | promote TRIAL_OR_STUDY --name NAME
[--confirm N] [overrides] | confirm RECORD --seeds N overrides` (A, B: record names or run dirs)."""
from __future__ import annotations

import argparse
import sys

from omegaconf import OmegaConf

from aprelu_exp.compose import use_config_dir
from aprelu_exp.errors import run_command
from aprelu_exp.records.confirm import confirm_record
from aprelu_exp.records.lineage import lineage, load_config
from aprelu_exp.records.promote import promote
from aprelu_exp.report.article import article_results
from aprelu_exp.settings import config_diff


def evidence_lines(name: str, rec: dict, records: dict | None = None) -> list[str]:
    """What is known of a record's accuracy: the article's number, and the reproduced mean (its own
    confirmation's, or a child's confirmation that trained it as the parent)."""
    lines = []
    reported = article_results().get(name)
    if reported:
        last = (reported.get("epochs") or [None])[-1]
        if last:
            lines.append(f"article: val_acc {last['val_acc']:.4f} at epoch {last['epoch']} ({reported['eval_mode']} "
                         f"evaluation)")
        elif reported.get("final"):
            f = reported["final"]
            lines.append(f"article: test_acc {f['test_acc']:.4f} after {f['epoch']} epochs")
    ev = rec.get("evidence")
    if ev:
        lines.append(f"reproduced: {ev['metric']} {ev['mean']:.4f} [{ev['ci'][0]:.4f}, {ev['ci'][1]:.4f}] "
                     f"(n={ev['n']}, {ev['settings']}); vs parent {ev['diff_mean']:+.4f} "
                     f"[{ev['diff_ci'][0]:+.4f}, {ev['diff_ci'][1]:+.4f}], P(better) {ev['p_better']:.2f}: "
                     f"{'confirmed' if ev.get('confirmed') else 'UNCONFIRMED'}")
    for child, crec in sorted((records or {}).items()):
        cev = crec.get("evidence")
        if crec.get("parent") == name and cev:
            lines.append(f"reproduced (as {child}'s parent): {cev['metric']} {cev['parent_mean']:.4f} "
                         f"[{cev['parent_ci'][0]:.4f}, {cev['parent_ci'][1]:.4f}] (n={cev['n']}, {cev['settings']})")
    if not ev and rec.get("provenance") == "searched":
        lines.append("reproduced: not confirmed (python -m aprelu_exp.records confirm "
                     f"{name} --seeds 3 budget=10)")
    return lines


def cmd_list() -> None:
    recs = lineage()
    children: dict[str | None, list[str]] = {}
    for name, rec in recs.items():
        children.setdefault(rec.get("parent"), []).append(name)

    def walk(name: str, prefix: str, connector: str, below: str) -> None:
        """connector: this record's glyph (├── with a later sibling, └── for the last); below: what
        continues its parent's line on the lines under it (│ while siblings follow)."""
        rec = recs[name]
        kids = sorted(children.get(name, []))
        print(f"{prefix}{connector}{name}  [{rec.get('provenance')}]  parent: {rec.get('parent') or '-'}")
        inner = prefix + below
        for line in [f"change: {rec.get('change')}", *evidence_lines(name, rec, recs)]:
            print(f"{inner}{'│   ' if kids else '    '}{line}")
        for i, child in enumerate(kids):
            last = i == len(kids) - 1
            walk(child, inner, "└── " if last else "├── ", "    " if last else "│   ")

    roots = [n for n, r in recs.items() if not r.get("parent") or r.get("parent") not in recs]
    for root in sorted(roots):
        walk(root, "", "", "")


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
    path = promote(args.ref, args.name, storage=args.storage, number=args.trial, force=args.force,
                   confirm=args.confirm, overrides=args.overrides, run_root=args.run_root)
    print(f"wrote {path}")
    print(path.read_text(), end="")
    parent = load_config(args.name).record.parent
    print(f"\nCheck it: python -m aprelu_exp.records diff {parent} {args.name}\n"
          f"Train it:  python -m aprelu_exp experiment={args.name}")


def cmd_confirm(args) -> None:
    path = confirm_record(args.record, args.seeds, args.overrides, force=args.force, metric=args.metric)
    print(f"wrote the evidence into {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aprelu_exp.records", description=__doc__)
    parser.add_argument("--config-dir", metavar="DIR", help="your own config folder, searched before the "
                        "package's (as `aprelu-exp --config-dir DIR`): its experiment/*.yaml are records, "
                        "and promote writes new records there")
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
    p_promote.add_argument("--run-root", metavar="DIR", help="the search's run_root, where REF is a study "
                           "name: a relative --storage (as a record states it) is read from there, and the "
                           "new record names the storage relative to it (default: the sweep's own, or runs)")
    p_promote.add_argument("--trial", type=int, help="promote this trial number instead of the study's best")
    p_promote.add_argument("--force", action="store_true", help="replace an existing record of that name "
                           "(with --confirm: write it even when not confirmed, marked unconfirmed)")
    p_promote.add_argument("--confirm", type=int, metavar="N", help="first train the trial and its parent "
                           "with N seeds each; write only if the trial is better on the search's objective")
    p_promote.add_argument("overrides", nargs="*", help="with --confirm: settings on top of the search's "
                           "(budget=10, hydra/launcher=submitit_slurm, ...)")
    p_confirm = sub.add_parser("confirm", help="train a record and its parent with N seeds each; write the "
                               "evidence into the record when it is better")
    p_confirm.add_argument("record")
    p_confirm.add_argument("--seeds", type=int, default=3)
    p_confirm.add_argument("--metric", default="final_val_acc_article")
    p_confirm.add_argument("--force", action="store_true", help="write the evidence even when not confirmed")
    p_confirm.add_argument("overrides", nargs="*", help="budget=N (required), data.train_subset=..., perf=fast, ...")
    # Overrides may follow the options (confirm record_17 --seeds 3 budget=10), which argparse's
    # subcommands do not take as positionals: collect the key=value leftovers here.
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e or args.cmd not in ("promote", "confirm")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    commands = {"list": cmd_list, "show": lambda: cmd_show(args.ref), "diff": lambda: cmd_diff(args.a, args.b),
                "promote": lambda: cmd_promote(args), "confirm": lambda: cmd_confirm(args)}

    def command() -> None:
        use_config_dir(args.config_dir)  # also clears an earlier call's folder (the tests call main in process)
        commands[args.cmd]()

    return run_command(command)

if __name__ == "__main__":
    sys.exit(main())
