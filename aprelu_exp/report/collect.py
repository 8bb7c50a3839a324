"""Read run directories (finished, failed, interrupted or still running) into plain records."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from aprelu_exp.compose import compose_record
from aprelu_exp.errors import UserError
from aprelu_exp.runs.rundir import METRICS_FILE, STATUS_FILE, SUMMARY_FILE, find_config, read_metrics_rows, read_status
from aprelu_exp.settings import MISSING, config_diff, is_setting_override
from aprelu_exp.runs.summary import metrics_summary


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

    label: str = ""  # what tells this run apart from the others of its report (see label_runs)

    @property
    def name(self) -> str:
        return self.path.name


def is_run_dir(path: Path) -> bool:
    return any((path / f).exists() for f in (STATUS_FILE, METRICS_FILE, ".hydra"))


def find_runs(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if is_run_dir(p) and not (p / "multirun.yaml").exists():
            found.append(p)
            continue
        for candidate in sorted(p.rglob("*")):
            if candidate.is_dir() and is_run_dir(candidate) and candidate.name != ".hydra":
                found.append(candidate)
    seen, unique = set(), []
    for p in found:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def _read_config(path: Path):
    found = find_config(path)
    try:
        return OmegaConf.load(found) if found else None
    except Exception:  # a half-written config must not stop the report
        return None


def load_run(path: Path) -> RunInfo:
    path = Path(path)
    status = read_status(path)
    summary = {}
    if (path / SUMMARY_FILE).exists():
        try:
            summary = json.loads((path / SUMMARY_FILE).read_text())
        except json.JSONDecodeError:
            summary = {}
    rows = read_metrics_rows(path)
    if not summary:
        summary = metrics_summary(rows)
    cfg = _read_config(path)
    record = parent = None
    if cfg is not None and "record" in cfg:
        record, parent = cfg.record.get("name"), cfg.record.get("parent")
    overrides = []
    ov = path / ".hydra" / "overrides.yaml"
    if ov.exists():
        overrides = [str(o) for o in (OmegaConf.load(ov) or [])]
    return RunInfo(path=path, record=record or "?", parent=parent, status=status.get("status", "unknown"),
                   error=status.get("error"), overrides=overrides, rows=rows, summary=summary, config=cfg)


def attach_changes(runs: list[RunInfo]) -> None:
    """Each run's resolved settings against its record's parent (the keys the record + overrides changed)."""
    parents: dict[str, object] = {}
    for run in runs:
        if run.config is None or not run.parent:
            continue
        if run.parent not in parents:
            try:
                parents[run.parent] = compose_record(run.parent)
            except UserError:
                parents[run.parent] = None
        if parents[run.parent] is not None:
            try:
                # Keys the run's file lacks are not changes it made (older or partial configs).
                run.changes = [c for c in config_diff(parents[run.parent], run.config) if c[2] != MISSING]
            except Exception:  # unresolvable interpolations in a foreign config
                run.changes = []


def setting_overrides(run: RunInfo) -> list[str]:
    """The run's overrides that change what it trains (no paths, no logging or progress switches)."""
    return [o.lstrip("+~") for o in run.overrides if is_setting_override(o)]


def label_runs(runs: list[RunInfo]) -> None:
    """Name each run by what distinguishes it from the others in the same report: its record (if
    the records differ) and the overrides not shared by all (e.g. `perf=fast seed=1`), falling
    back to the directory name only where two runs would read the same."""
    settings = setting_overrides
    shared = set.intersection(*(set(settings(r)) for r in runs)) if runs else set()
    records_differ = len({r.record for r in runs}) > 1
    for run in runs:
        # Where the record leads the label, its own experiment=... override would say it twice.
        parts = ([run.record] if records_differ or not settings(run) else []) + \
                [o for o in settings(run) if o not in shared and not (records_differ and o.startswith("experiment="))]
        run.label = " ".join(parts) or run.record
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.label] = counts.get(run.label, 0) + 1
    for run in runs:
        if counts[run.label] > 1:
            run.label = f"{run.label} ({run.name})"
