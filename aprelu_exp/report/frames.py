"""Runs as pandas DataFrames, for notebooks: `aprelu_exp.runs_frame(paths)` (one row per run) and
`aprelu_exp.metrics_frame(paths)` (one row per run and epoch), read by the report's own reader."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from aprelu_exp.errors import UserError
from aprelu_exp.metrics import TEST, TRAIN_IMAGES_PER_S
from aprelu_exp.report.collect import read_runs
from aprelu_exp.report.evidence import group_runs, seed_of
from aprelu_exp.runs.reader import RunInfo
from aprelu_exp.runs.summary import BEST_OF
from aprelu_exp.settings import settings

# Every row has these, in this order; then the final metrics, then one column per setting.
RUN_COLUMNS = ("run", "path", "record", "status", "group", "label", "seed", "epochs", "wall_time_s",
               TRAIN_IMAGES_PER_S, *(f"best_{k}" for key in BEST_OF for k in (key, f"{key}_epoch")), *TEST,
               "error")


def _paths(paths) -> list[Path]:
    """One path or several; each must exist (a typo must not read as a sweep without runs)."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UserError(f"no such run directory: {', '.join(missing)}. Give run directories (runs/<date>/<run>), "
                        f"sweep directories (runs/multirun/<sweep>) or a folder holding them (runs).")
    return paths


def _number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def run_settings(run: RunInfo) -> dict:
    """The run's settings, flattened (`model.stages[0].channels`); where its config does not resolve
    (a job refused before it wrote its own), the values as written."""
    if run.config is None:
        return {}
    try:
        return settings(run.config)
    except Exception:  # an interpolation that only resolves inside Hydra (${hydra:...})
        return settings(run.config, resolve=False)


def run_row(run: RunInfo, group: str) -> dict:
    s, measured = run.summary or {}, run.measured
    final, best, test = measured.get("final") or {}, measured.get("best") or {}, s.get("test") or {}
    row = {"run": run.name, "path": str(run.path), "record": run.record, "status": run.status, "group": group,
           "label": run.label, "seed": seed_of(run), "epochs": s.get("epochs_completed", len(run.rows)),
           "wall_time_s": _number(s.get("wall_time_s")),
           TRAIN_IMAGES_PER_S: _number(s.get("train_images_per_s_median")), "error": run.error}
    for key in BEST_OF:
        row[f"best_{key}"] = _number((best.get(key) or {}).get("value"))
        row[f"best_{key}_epoch"] = (best.get(key) or {}).get("epoch")
    row.update({key: _number(test.get(key)) for key in TEST})
    row.update({f"final_{k}": _number(v) for k, v in final.items() if k != "epoch"})
    # Settings last: they never replace a column above (seed is one of them).
    row.update({k: v for k, v in run_settings(run).items() if k not in row})
    return row


def groups_of(runs: list[RunInfo]) -> dict[int, str]:
    """id(run) -> its replicate group as the report names it: finished runs as in groups.csv, the
    others as in the learning curves (every run in a group)."""
    named = {id(r): g.label for g in group_runs(runs, finished_only=False) for r in g.runs}
    named.update({id(r): g.label for g in group_runs(runs) for r in g.runs})
    return named


def runs_frame(paths) -> pd.DataFrame:
    """One row per run under `paths` (run dirs, sweep dirs or a run root, searched recursively):
    run, path, record, status, group (the runs that differ only in their seed, named as the report
    names them), label, seed, epochs, wall_time_s, train_images_per_s (median), best_* and the
    epoch each was reached, test_*, error, final_* (the last metrics.csv row), then every setting
    flattened (`model.reduction`, `optim.lr`, ...)."""
    runs = read_runs(_paths(paths))
    groups = groups_of(runs)
    rows = [run_row(r, groups[id(r)]) for r in runs]
    return pd.DataFrame(rows, columns=list(dict.fromkeys([*RUN_COLUMNS, *(k for r in rows for k in r)])))


def metrics_frame(paths) -> pd.DataFrame:
    """One row per run and epoch: each run's metrics.csv (complete rows, epochs from 1) as numbers,
    after a `run` and a `path` column (the path joins it to runs_frame's rows)."""
    frames = []
    for run in read_runs(_paths(paths)):
        if run.rows:
            rows = pd.DataFrame(run.rows).apply(pd.to_numeric, errors="coerce")
            rows["epoch"] = rows["epoch"].astype(int)
            frames.append(rows.assign(run=run.name, path=str(run.path)))
    if not frames:
        return pd.DataFrame(columns=["run", "path", "epoch"])
    out = pd.concat(frames, ignore_index=True)
    return out[["run", "path", *(c for c in out.columns if c not in ("run", "path"))]]
