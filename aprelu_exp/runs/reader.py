"""The one reader of run directories (finished, failed, interrupted or still running): which folders
are runs, and each run's state, config, overrides, metrics rows and summary. The report, `records`
and the DataFrames (aprelu_exp.runs_frame, metrics_frame) all read runs through it."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from aprelu_exp.runs.rundir import STATUS_FILE, SUMMARY_FILE, find_config, read_metrics_rows, read_status
from aprelu_exp.runs.summary import metrics_summary

# Folders that hold copies of a run's files or a logger's own output, never a run: Lightning's
# CSVLogger (lightning_csv/version_0/metrics.csv), MLflow's artifact store beside the runs
# (mlartifacts/<experiment>/<run id>/artifacts/ holds config.yaml, status.json, summary.json).
NOT_RUNS = ("mlartifacts", "mlruns", "lightning_csv", ".hydra", "checkpoints")
_MLFLOW_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class RunInfo:
    path: Path
    record: str
    parent: str | None
    status: str
    error: str | None
    overrides: list[str]
    rows: list[dict]
    summary: dict
    config: object = None
    changes: list[tuple] = field(default_factory=list)

    label: str = ""  # what tells this run apart from the others of its report (report.collect.label_runs)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def measured(self) -> dict:
        """final/best/epochs from the metrics rows where there are any (they count epochs from 1
        whatever wrote them), else from summary.json."""
        return metrics_summary(self.rows) if self.rows else (self.summary or {})


def is_mlflow_copy(path: Path) -> bool:
    """MLflow's copy of a run's files: <store>/<experiment>/<32-hex run id>/artifacts."""
    return path.name == "artifacts" and bool(_MLFLOW_RUN_ID.match(path.parent.name))


def is_run_dir(path: Path) -> bool:
    """A run directory holds its config (config.yaml, or Hydra's copy for a job refused before it
    wrote its own) and its state (status.json or summary.json). A sweep's own folder (multirun.yaml)
    and MLflow's copies of a run are not runs."""
    path = Path(path)
    return (find_config(path) is not None and any((path / f).is_file() for f in (STATUS_FILE, SUMMARY_FILE))
            and not (path / "multirun.yaml").exists() and not is_mlflow_copy(path))


def find_runs(paths) -> list[Path]:
    """The run directories among `paths` (run dirs, sweep dirs, a run root), found recursively; a
    run's own subfolders and the loggers' folders (NOT_RUNS) are not searched."""
    found: list[Path] = []
    for top in map(Path, paths):
        if is_run_dir(top):
            found.append(top)
            continue
        for folder, dirs, _ in os.walk(top):
            # In place, sorted: os.walk descends into what is left, in this order.
            dirs[:] = sorted(d for d in dirs if d not in NOT_RUNS)
            kept = []
            for d in dirs:
                candidate = Path(folder) / d
                if is_run_dir(candidate):
                    found.append(candidate)
                else:
                    kept.append(d)
            dirs[:] = kept
    seen, unique = set(), []
    for p in found:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def read_summary(run_dir: Path) -> dict:
    """summary.json, or {} where there is none yet or it cannot be read."""
    try:
        return json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def read_config(run_dir: Path):
    found = find_config(run_dir)
    try:
        return OmegaConf.load(found) if found else None
    except Exception:  # a half-written config must not stop the reader
        return None


def load_run(path: Path) -> RunInfo:
    path = Path(path)
    status = read_status(path)
    rows = read_metrics_rows(path)
    summary = read_summary(path) or metrics_summary(rows)
    cfg = read_config(path)
    record = parent = None
    if cfg is not None and "record" in cfg:
        record, parent = cfg.record.get("name"), cfg.record.get("parent")
    overrides = []
    ov = path / ".hydra" / "overrides.yaml"
    if ov.exists():
        overrides = [str(o) for o in (OmegaConf.load(ov) or [])]
    return RunInfo(path=path, record=record or "?", parent=parent, status=status.get("status", "unknown"),
                   error=status.get("error"), overrides=overrides, rows=rows, summary=summary, config=cfg)
