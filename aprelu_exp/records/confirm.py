"""Confirm a candidate against its parent record before it enters the tuning log: N seeds of each,
trained through the main command (`python -m aprelu_exp -m ... replicates=N`, so the configured Hydra
launcher runs them: locally, through joblib or on SLURM), then compared as the report compares groups."""
from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import yaml

from aprelu_exp.console.child import run_child
from aprelu_exp.compose import compose_config, compose_record, config_dir_args, record_file
from aprelu_exp.errors import UserError
from aprelu_exp.records.lineage import lineage
from aprelu_exp.report.build import build_report
from aprelu_exp.report.collect import read_runs
from aprelu_exp.report.evidence import compare, group_runs, mean_interval
from aprelu_exp.runs.stop import RunInterrupted
from aprelu_exp.runs.rundir import git_commit, shared_path, unique_suffix, write_text_atomic
from aprelu_exp.settings import is_setting_override

# What a confirmation fixes about the runs, as keys of a search's resolved trial settings.
# A confirmation judges on the search's own held-out split (data.val_split), never on the test set.
SETTING_KEYS = ("budget", "trainer.max_epochs", "data.train_subset", "data.test_subset", "data.val_split",
                "data.split_seed", "perf.precision", "perf.compile")


class NotConfirmed(UserError):
    """The candidate was not better than its parent on the metric; nothing was written."""

    exit_code = 1
    prefix = "not confirmed"


def merge_settings(base: dict, overrides: list[str]) -> list[str]:
    """Settings as key=value overrides: the search's own, then the user's (a larger budget=, a
    launcher) key by key; a budget given by the user replaces the search's max_epochs too."""
    merged = dict(base)
    for o in overrides:
        if "=" not in o:
            raise UserError(f"{o!r} is not an override; give key=value (e.g. budget=10).")
        key, value = o.split("=", 1)
        merged[key] = value
        if key == "budget":
            merged.pop("trainer.max_epochs", None)
    if merged.get("budget") not in (None, "null"):
        merged.pop("trainer.max_epochs", None)
    return [f"{k}={'null' if v is None else v}" for k, v in merged.items()]


def run_confirmation(parent: str, candidate: list[str], seeds: int, settings: list[str], out_dir: Path,
                     metric: str = "final_val_acc_article") -> dict:
    """Train `experiment=parent` and the candidate (its overrides, starting from a record) with `seeds`
    seeds each and compare them on `metric`. Returns the evidence for the record file."""
    if seeds < 2:
        raise UserError(f"{seeds} seed(s): a comparison needs at least 2 seeds per side (3 or more "
                        f"to detect anything but a large difference).")
    out_dir = Path(out_dir)
    dirs = {"parent": out_dir / "parent", "candidate": out_dir / "candidate"}
    for side, overrides in (("parent", [f"experiment={parent}"]), ("candidate", candidate)):
        cmd = [sys.executable, "-m", "aprelu_exp", *config_dir_args(), "-m", *overrides, *settings, f"replicates={seeds}",
               f"hydra.sweep.dir={dirs[side]}"]
        print(f"confirm: {side}: python -m aprelu_exp {' '.join(cmd[3:])}", flush=True)
        done = run_child(cmd)
        if done.signum is not None or done.returncode in (130, 143):
            stop = RunInterrupted(done.signum or done.returncode - 128)
            print(f"confirm stopped by {stop}: the {side}'s runs in {dirs[side]} keep their last checkpoints "
                  f"(python -m aprelu_exp -m resume={dirs[side]} goes on with them); nothing was written into "
                  f"the record.", file=sys.stderr, flush=True)
            stop.reported = True
            raise stop
        if done.returncode != 0:
            raise UserError(f"the {side}'s runs did not complete (exit status {done.returncode}); see "
                            f"{dirs[side]}. Nothing was written.")

    sides = {}
    for side, d in dirs.items():
        runs = read_runs([d])
        groups = group_runs(runs)
        finished = sum(len(g.runs) for g in groups)
        if len(groups) != 1 or finished < seeds:
            raise UserError(f"the {side}'s runs in {d}: {finished} of {seeds} finished "
                            f"({', '.join(f'{r.name} {r.status}' for r in runs)}). Nothing was written.")
        sides[side] = groups[0]
    if sides["parent"].key == sides["candidate"].key:
        raise UserError(f"the candidate trains exactly what {parent} trains; there is nothing to confirm.")
    a, b = sides["candidate"].values(metric), sides["parent"].values(metric)
    result = compare(a, b)

    build_report(list(dirs.values()), out_dir / "report", title=f"Confirmation against {parent}",
                 baseline=sides["parent"].label, strict=True)
    ca, pa = mean_interval(a.values()), mean_interval(b.values())
    return {
        "confirmed": result["verdict"] == "a better",
        "metric": metric,
        "n": min(len(a), len(b)),
        "seeds": sorted(a),
        "paired": result["paired"],
        "mean": round(ca["mean"], 5), "ci": [round(ca["ci_low"], 5), round(ca["ci_high"], 5)],
        "parent_mean": round(pa["mean"], 5), "parent_ci": [round(pa["ci_low"], 5), round(pa["ci_high"], 5)],
        "diff_mean": round(result["diff_mean"], 5),
        "diff_ci": [round(result["ci_low"], 5), round(result["ci_high"], 5)],
        "p_value": round(result["p_value"], 5), "p_better": round(result["p_better"], 4),
        "verdict": result["verdict"],
        # What the runs trained with (not where they were written or how progress was shown).
        "settings": " ".join(s for s in settings if is_setting_override(s)),
        "commit": git_commit(),
        "date": dt.date.today().isoformat(),
        "runs": "".join(shared_path(out_dir, settings_run_root(settings))),  # no machine's path in a record
    }


def settings_run_root(settings: list[str]) -> Path:
    """The run_root the runs go under: a `run_root=` among the settings, else the config's."""
    given = [s.partition("=")[2] for s in settings if s.partition("=")[0].lstrip("+~") == "run_root"]
    return Path(given[-1] if given and given[-1] else str(compose_config().run_root))


def confirm_out_dir(name: str, settings: list[str]) -> tuple[Path, list[str]]:
    """Where a confirmation writes, as the main command would: under `hydra.sweep.dir` where given
    (the two sides' sweeps and the report), else `<run_root>/confirm/<date>_<time>_<name>_<uid>`;
    and the settings without hydra.sweep.dir, since each side gets its own sweep directory in it."""
    rest, sweep_dir = [], None
    for s in settings:
        key, _, value = s.partition("=")
        if key.lstrip("+~") == "hydra.sweep.dir":
            sweep_dir = value
            continue
        rest.append(s)
    if sweep_dir:
        return Path(sweep_dir), rest
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return settings_run_root(rest) / "confirm" / f"{stamp}_{name}_{unique_suffix()}", rest


def describe(evidence: dict, parent: str) -> str:
    return (f"{evidence['metric']}: {evidence['mean']:.4f} [{evidence['ci'][0]:.4f}, {evidence['ci'][1]:.4f}] vs "
            f"{parent} {evidence['parent_mean']:.4f} [{evidence['parent_ci'][0]:.4f}, "
            f"{evidence['parent_ci'][1]:.4f}], n={evidence['n']} {'paired ' if evidence['paired'] else ''}"
            f"seeds; difference {evidence['diff_mean']:+.4f} [{evidence['diff_ci'][0]:+.4f}, "
            f"{evidence['diff_ci'][1]:+.4f}], P(candidate > parent) {evidence['p_better']:.2f}: "
            f"{evidence['verdict']} ({evidence['settings']}).")


def confirm_record(name: str, seeds: int, overrides: list[str], force: bool = False,
                   metric: str = "final_val_acc_article", out_dir: Path | None = None) -> Path:
    """Train an existing record and its parent with `seeds` seeds each (`overrides`: the budget, subset,
    precision, launcher) and write the evidence into the record file when it is better; otherwise
    NotConfirmed and the file stays as it was (force: written, marked unconfirmed)."""
    records = lineage()
    if name not in records:
        raise UserError(f"No record named {name!r}; known records: {', '.join(records)}.")
    parent = records[name].get("parent")
    if not parent or parent not in records:
        raise UserError(f"{name} has no parent record to be confirmed against (parent: {parent!r}).")
    settings = merge_settings({}, overrides)
    if not any(s.split("=", 1)[0] in ("budget", "trainer.max_epochs") for s in settings):
        raise UserError(f"give the length of the confirmation runs: budget=N (the schedule compressed into N "
                        f"epochs) or trainer.max_epochs=N; {name}'s full schedule is "
                        f"{compose_record(name).schedule.epochs} epochs.")
    where, settings = confirm_out_dir(name, settings)
    evidence = run_confirmation(parent, [f"experiment={name}"], seeds, settings, out_dir or where, metric)
    print(f"confirm: {name}: {describe(evidence, parent)}", flush=True)
    if not evidence["confirmed"] and not force:
        raise NotConfirmed(f"{name} was not confirmed: {describe(evidence, parent)} Its file was left as it "
                           f"was; --force writes the evidence, marked unconfirmed.")
    path = record_file(name)
    write_evidence(path, evidence)
    return path


def write_evidence(path: Path, evidence: dict) -> None:
    """Put `record.evidence` into a record file, keeping its header comments and key order."""
    text = path.read_text()
    header = "".join(ln for ln in text.splitlines(keepends=True)[:20] if ln.startswith("#"))
    data = yaml.safe_load(text)
    data.setdefault("record", {})["evidence"] = evidence
    write_text_atomic(path, header + yaml.safe_dump(data, sort_keys=False, width=1000))
