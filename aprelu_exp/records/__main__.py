"""`python -m aprelu_exp.records list | show RECORD | diff A B | promote TRIAL_OR_STUDY --name NAME
[--confirm N] [overrides] | confirm RECORD --seeds N overrides | replay [RECORD ...] --seeds N [overrides]`
(A, B: record names or run dirs). Installed, the same command is `aprelu-exp-records`."""
from __future__ import annotations

import argparse
import sys

from omegaconf import OmegaConf

from aprelu_exp.compose import use_config_dir
from aprelu_exp.console.stop_command import command_stops_cleanly
from aprelu_exp.errors import run_command
from aprelu_exp.records.confirm import confirm_record
from aprelu_exp.records.lineage import lineage, lineage_order, load_config
from aprelu_exp.records.promote import promote
from aprelu_exp.records.replay import replay_command
from aprelu_exp.report.article import reported_accuracy
from aprelu_exp.settings import config_diff


def evidence_lines(name: str, rec: dict, records: dict | None = None) -> list[str]:
    """What is known of a record's accuracy: the article's number, and the reproduced mean (its own
    confirmation's, or a child's confirmation that trained it as the parent)."""
    lines = []
    reported = reported_accuracy(name)
    if reported and reported["what"] == "test_acc":
        lines.append(f"article: test_acc {reported['value']:.4f} after {reported['epoch']} epochs")
    elif reported:
        lines.append(f"article: val_acc {reported['value']:.4f} at epoch {reported['epoch']} ({reported['mode']} "
                     f"evaluation)")
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
    order = lineage_order(recs)

    def kids(name: str) -> list[str]:
        return [n for n in order if recs[n].get("parent") == name]

    def walk(name: str, prefix: str, connector: str, below: str) -> None:
        """connector: this record's glyph (├── with a later sibling, └── for the last); below: what
        continues its parent's line on the lines under it (│ while siblings follow)."""
        rec = recs[name]
        children = kids(name)
        print(f"{prefix}{connector}{name}  [{rec.get('provenance')}]  parent: {rec.get('parent') or '-'}")
        inner = prefix + below
        for line in [f"change: {rec.get('change')}", *evidence_lines(name, rec, recs)]:
            print(f"{inner}{'│   ' if children else '    '}{line}")
        for i, child in enumerate(children):
            last = i == len(children) - 1
            walk(child, inner, "└── " if last else "├── ", "    " if last else "│   ")

    for root in (n for n in order if not recs[n].get("parent") or recs[n].get("parent") not in recs):
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


def cmd_replay(args, argv: list[str]) -> int:
    names = [r for r in args.records if "=" not in r]
    overrides = [r for r in args.records if "=" in r] + list(args.overrides)
    return replay_command(names, args.seeds, args.seed, overrides, args.metric, args.plan, args.resume, args.new,
                          argv)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line as the command reads it (argparse's exit 2 and message on a bad one)."""
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
    p_replay = sub.add_parser("replay", help="train the tuning log again, every record with N seeds, and "
                              "judge each step against its parent and the article (replay.csv, .md, .png)")
    p_replay.add_argument("records", nargs="*", metavar="RECORD",
                          help="records to replay (default: the whole lineage of `records list`), then "
                               "overrides for every run: budget=50 data.val_split=5000 perf=fast trainer=gpu ...")
    p_replay.add_argument("--seeds", type=int, default=3, help="seeds per record (default 3)")
    p_replay.add_argument("--seed", type=int, default=0, help="the first seed (default 0: seeds 0..N-1)")
    p_replay.add_argument("--metric", default="final_val_acc_article", help="what the replay ranks by "
                          "(final_val_acc_article: the article's evaluation, on held-out images with data.val_split)")
    p_replay.add_argument("--plan", action="store_true", help="print the runs it would train, how many are "
                          "done, and an estimate of the time left here; train nothing")
    p_replay.add_argument("--resume", metavar="DIR", help="go on with this replay folder (the same command "
                          "again finds it too)")
    p_replay.set_defaults(overrides=[])
    p_replay.add_argument("--new", action="store_true", help="start a new replay folder even where one of the "
                          "same command exists")
    # Overrides may follow the options (confirm record_17 --seeds 3 budget=10), which argparse's
    # subcommands do not take as positionals: collect the key=value leftovers here.
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e
             or args.cmd not in ("promote", "confirm", "replay")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


@command_stops_cleanly("aprelu_exp.records")
def main(argv=None) -> int:
    args = parse_args(argv)
    commands = {"list": cmd_list, "show": lambda: cmd_show(args.ref), "diff": lambda: cmd_diff(args.a, args.b),
                "promote": lambda: cmd_promote(args), "confirm": lambda: cmd_confirm(args),
                "replay": lambda: cmd_replay(args, sys.argv[1:] if argv is None else list(argv))}
    status = []

    def command() -> None:
        use_config_dir(args.config_dir)  # also clears an earlier call's folder (the tests call main in process)
        status.append(commands[args.cmd]())

    code = run_command(command)
    # A command that ran to its end may still end non-zero (a replay whose sweep was stopped).
    return code if code or not status else int(status[0] or 0)

if __name__ == "__main__":
    sys.exit(main())
