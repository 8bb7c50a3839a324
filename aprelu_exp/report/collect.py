"""The report's view of runs read by the one reader (aprelu_exp.runs.reader): each run's changes
against its record's parent, and the label that tells it apart from the others of its report."""
from __future__ import annotations

from aprelu_exp.compose import compose_record
from aprelu_exp.errors import UserError
from aprelu_exp.runs.reader import RunInfo, find_runs, load_run
from aprelu_exp.settings import MISSING, config_diff, is_setting_override

def read_runs(paths, changes: bool = False) -> list[RunInfo]:
    """Every run under `paths`, read and labelled as the report names it; changes: each run's
    settings against its record's parent too (composes the parents: about a second each)."""
    runs = [load_run(p) for p in find_runs(paths)]
    if changes:
        attach_changes(runs)
    label_runs(runs)
    return runs


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
