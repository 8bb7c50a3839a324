"""Promote a searched trial to a record: conf/experiment/<name>.yaml, a `# @package _global_` diff
against the record the search started from, holding only the keys the trial changed."""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from aprelu_exp.compose import compose_record, record_names, writable_conf_dir
from aprelu_exp.errors import UserError
from aprelu_exp.records.confirm import (SETTING_KEYS, NotConfirmed, confirm_out_dir, describe, merge_settings,
                                        run_confirmation, settings_run_root)
from aprelu_exp.report.evidence import METRIC_NAMES
from aprelu_exp.runs.reader import read_summary
from aprelu_exp.runs.rundir import find_config, write_text_atomic
from aprelu_exp.settings import config_diff, is_setting_override
from aprelu_exp.search.storage import load_study, normalise, read_search_ref, shared_storage

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def find_trial(ref: str, storage: str | None = None, number: int | None = None, run_root: str | None = None):
    """(study, trial, storage, run_root) from a trial's run directory, a search's sweep directory or a
    study name; the study's best trial unless a run directory or `number` names one. run_root is the
    search's (its search.json says; else the one given, if any), which the record names the storage
    against; a study name's relative --storage is read from it."""
    path = Path(ref)
    if path.is_dir():
        search = read_search_ref(path)
        if search:
            study_name, storage = search["study"], search["storage"]
        else:
            cfg_file = find_config(path)
            cfg = OmegaConf.load(cfg_file) if cfg_file else None
            link = cfg.get("trial") if cfg is not None else None
            if not link or link.get("number") is None:
                raise UserError(f"{ref} is neither a search's sweep directory (search.json) nor the run "
                                f"directory of a search trial (config.yaml with trial.study and trial.number).")
            study_name, storage = str(link.study), str(link.storage)
            number = int(link.number) if number is None else number
            search = read_search_ref(path.parent)  # the trial's sweep directory
        run_root = (search or {}).get("run_root") or run_root
    else:
        study_name, storage = ref, normalise(storage, run_root or "runs", relative_to=run_root)
    study = load_study(study_name, storage)
    if number is None:
        try:
            return study, study.best_trial, storage, run_root
        except ValueError:
            raise UserError(f"study {study_name!r} has no completed trial yet; nothing to promote.") from None
    chosen = [t for t in study.trials if t.number == number]
    if not chosen:
        raise UserError(f"study {study_name!r} has no trial {number} (it has {len(study.trials)}).")
    trial = chosen[0]
    if trial.state.name != "COMPLETE":
        raise UserError(f"trial {number} of study {study_name!r} is {trial.state.name.lower()}, not complete: "
                        f"its objective was never measured to the end. Promote a completed trial.")
    return study, trial, storage, run_root


def _nested(cfg, keys: list[str]) -> dict[str, Any]:
    """The values to write for changed flattened keys: a list (stages) is written whole."""
    out: dict[str, Any] = {}
    for key in keys:
        path = key.split("[", 1)[0]
        value = OmegaConf.select(cfg, path)
        value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        node = out
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _trained(trial) -> str:
    """What the trial's value was measured on (its run's summary), e.g. ` after 4 epochs (budget) on
    10000 images, bf16-mixed`."""
    run = trial.user_attrs.get("run_dir")
    summary = read_summary(Path(run)) if run else None
    if not summary:
        return ""
    sched = summary.get("schedule") or {}
    return (f" after {summary.get('epochs_completed')} epochs ({sched.get('kind')} of {sched.get('full_epochs')}) "
            f"on {summary.get('num_train')} images, {(summary.get('perf') or {}).get('precision')}")


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def objective_metric(objective: dict) -> str:
    """The report's metric column for a search objective (val_acc_article, last epoch -> final_...)."""
    column = f"{'best' if objective.get('reduce') == 'best' else 'final'}_{objective.get('metric', 'val_acc_article')}"
    if column not in METRIC_NAMES:
        raise UserError(f"the search optimised {objective.get('metric')!r} ({objective.get('reduce')} epoch); a "
                        f"confirmation compares one of {', '.join(METRIC_NAMES)}.")
    return column


def promote(ref: str, name: str, storage: str | None = None, number: int | None = None,
            force: bool = False, conf_dir: Path | None = None, confirm: int | None = None,
            overrides: list[str] | None = None, out_dir: Path | None = None, run_root: str | None = None) -> Path:
    """Write the trial as conf/experiment/NAME.yaml. With confirm=N, first train it and its parent with
    N seeds each (the search's settings, `overrides` on top) and write only when the candidate is
    better on the search's objective (NotConfirmed otherwise; force writes it marked unconfirmed).
    The record names the study's storage without a machine's path, relative to the search's run_root:
    its search.json's, else `run_root` (--run-root), else a `run_root=` override, else the config's."""
    if not _NAME.match(name):
        raise UserError(f"--name {name!r}: a record name is letters, digits and _ (it becomes "
                        f"conf/experiment/{name}.yaml and experiment={name}).")
    study, trial, storage, run_root = find_trial(ref, storage, number, run_root)
    attrs = study.user_attrs
    parent = attrs.get("record")
    if not parent or parent not in record_names():
        raise UserError(f"study {study.study_name!r} started from record {parent!r}, which is not among "
                        f"the records ({', '.join(record_names())}).")
    if name == parent:
        raise UserError(f"--name {name} is the parent record itself; choose a new name.")
    target = Path(conf_dir or writable_conf_dir()) / "experiment" / f"{name}.yaml"
    if target.exists() and not force:
        raise UserError(f"{target} exists; choose another --name, or pass --force to replace it.")
    trial_overrides = list(trial.user_attrs.get("overrides") or [])
    parent_cfg = compose_record(parent)
    changes = config_diff(parent_cfg, compose_record(parent, trial_overrides))
    if not changes:
        raise UserError(f"trial {trial.number} trains exactly what {parent} trains ({' '.join(trial_overrides)}); "
                        f"there is nothing to promote{' or confirm' if confirm else ''}.")
    child_cfg = compose_record(parent, trial_overrides)
    objective = attrs.get("objective", {})

    fixed = " ".join(o for o in attrs.get("fixed_overrides", []) if is_setting_override(o))
    evidence = None
    if confirm is not None:
        searched = {k: v for k, v in (attrs.get("trial_settings") or {}).items() if k in SETTING_KEYS}
        metric = objective_metric(objective)
        where, settings = confirm_out_dir(name, merge_settings(searched, list(overrides or [])))
        evidence = run_confirmation(parent, [f"experiment={parent}", *trial_overrides], confirm, settings,
                                    out_dir or where, metric)
        print(f"confirm: {name}: {describe(evidence, parent)}", flush=True)
        if not evidence["confirmed"] and not force:
            raise NotConfirmed(f"{name} was not confirmed: {describe(evidence, parent)} Nothing was written; "
                               f"--force writes it marked unconfirmed.")
    url, note = shared_storage(storage, run_root or settings_run_root(list(overrides or [])))
    record = {
        "name": name, "parent": parent, "provenance": "searched",
        "source": (f"Optuna study {study.study_name} in {url}{note}, trial {trial.number}: "
                   f"{objective.get('metric', 'objective')} {trial.value:.4f}{_trained(trial)}"
                   + (f"; search overrides: {fixed}" if fixed else "")),
        "change": "; ".join(f"{k} {_short(a)} -> {_short(b)}" for k, a, b in changes),
    }
    if evidence is not None:
        record["evidence"] = evidence
    body = {"record": record, **_nested(child_cfg, [k for k, _, _ in changes])}
    header = (f"# @package _global_\n"
              f"# Promoted on {dt.date.today().isoformat()} from trial {trial.number} of the search around "
              f"{parent}\n# (python -m aprelu_exp.records promote). Only the keys the trial changed are set.\n")
    text = header + yaml.safe_dump({"defaults": [parent, "_self_"]}, sort_keys=False) + "\n" + \
        yaml.safe_dump(body, sort_keys=False, width=1000)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, text)
    try:
        written = config_diff(parent_cfg, compose_record(name))
    except Exception as exc:
        target.unlink()
        raise UserError(f"the promoted record did not compose ({exc}); nothing was kept.") from None
    if written != changes:
        target.unlink()
        raise UserError(f"the promoted record would change {written}, not the trial's {changes}; nothing was kept.")
    return target

