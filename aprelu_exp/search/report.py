"""A study's section of a report, read from its storage (so it can be read while trials still run):
the trial table with pruned and failed trials, the best trial and its overrides, the optimisation
history, the objective per epoch of every trial, parameter importances and a slice plot."""
from __future__ import annotations

import csv
import logging
import math
import warnings
from pathlib import Path

from aprelu_exp.metrics import TRAIN_ACC, VAL_ACC, VAL_ACC_ARTICLE
from aprelu_exp.runs.rundir import read_metrics_rows
from aprelu_exp.settings import is_setting_override
from aprelu_exp.search.storage import load_study, recorded_storage

log = logging.getLogger(__name__)
TRIAL_COLUMNS = ("trial", "state", "value", "epochs_reported", VAL_ACC, VAL_ACC_ARTICLE, "overrides", "run",
                 "error")


def importance_evaluator():
    """fANOVA (a random forest over the trials, seeded) where scikit-learn is installed, as the
    hyperparameter-importance literature uses; otherwise Optuna's default PED-ANOVA, which needs
    nothing more but reads little from a dozen trials."""
    # deferred: optuna loads only where a study is read
    import optuna

    try:
        import sklearn  # noqa: F401
    except ImportError:
        return optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA (pip install scikit-learn for fANOVA)"
    return optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA"


def trial_rows(study) -> list[dict]:
    rows = []
    for t in study.trials:
        run = t.user_attrs.get("run_dir")
        rows.append({
            "trial": t.number,
            "state": t.state.name.lower(),
            "value": "" if t.value is None else f"{t.value:.4f}",
            "epochs_reported": len(t.intermediate_values),
            **_last_epoch(t),
            "overrides": " ".join(t.user_attrs.get("overrides", [])),
            "run": _shown_run(run) if run else "",
            "error": t.user_attrs.get("error", "") or "",
        })
    return rows


def last_epoch_values(rows: list[dict]) -> dict[str, float]:
    """The last completed epoch's accuracies in both validation modes (running-BN, the article's)."""
    return {k: float(rows[-1][k]) for k in (VAL_ACC, VAL_ACC_ARTICLE, TRAIN_ACC)
            if rows and rows[-1].get(k) not in (None, "")}


def _last_epoch(trial) -> dict:
    """From the sweeper's note on the trial, else from the run's metrics.csv where it is reachable."""
    last = dict(trial.user_attrs.get("last_epoch") or {})
    run = trial.user_attrs.get("run_dir")
    if not last and run:
        last = last_epoch_values(read_metrics_rows(Path(run)))
    return {k: f"{last[k]:.4f}" if k in last else "" for k in (VAL_ACC, VAL_ACC_ARTICLE)}


def _md(header, rows) -> str:
    esc = lambda x: str(x).replace("|", "\\|").replace("\n", " ")
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows])


def _save(ax_or_axes, path: Path) -> None:
    # deferred: matplotlib (heavy) loads only when plotting
    import matplotlib.pyplot as plt

    axes = list(ax_or_axes.flat) if hasattr(ax_or_axes, "flat") else [ax_or_axes]
    fig = axes[0].figure
    width, height = fig.get_size_inches()
    fig.set_size_inches(max(width, 4.5 * len(axes) + 1.5), max(height, 5))
    # No tight_layout: it would push Optuna's colour bar over the last panel.
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def study_plots(study, out_dir: Path, importances: dict, metric: str = "objective") -> list[str]:
    # deferred: matplotlib (heavy) loads only when plotting
    import matplotlib

    matplotlib.use("Agg")
    # deferred: optuna loads only where a study is read
    import optuna.visualization.matplotlib as ovm
    from optuna.trial import TrialState

    # matplotlib logs an INFO line per categorical axis of numbers-as-strings (Optuna's slice plot).
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    written = []
    plots = {
        "study_history.png": (len(done) >= 1, lambda: ovm.plot_optimization_history(study, target_name=metric)),
        "study_epochs.png": (any(t.intermediate_values for t in study.trials),
                             lambda: ovm.plot_intermediate_values(study)),
        "study_slice.png": (len(done) >= 1, lambda: readable_log_ticks(ovm.plot_slice(study, target_name=metric))),
        "study_importance.png": (bool(importances), lambda: _importance_bars(importances)),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        for name, (possible, draw) in plots.items():
            if not possible:
                continue
            try:
                _save(draw(), out_dir / name)
                written.append(name)
            except Exception as exc:  # one plot that cannot be drawn must not cost the report
                log.warning("study plot %s not drawn: %s", name, exc)
    return written


def readable_log_ticks(ax_or_axes):
    """Plain numbers at 1, 2 and 5 times each power of ten on the log-scaled axes of a plot (the
    slice plot's lr), no labels on minor ticks: matplotlib's default labels them too when a range
    spans less than a decade, and on a panel 4 inches wide they overlap."""
    # deferred: matplotlib (heavy) loads only when plotting
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for ax in (list(ax_or_axes.flat) if hasattr(ax_or_axes, "flat") else [ax_or_axes]):
        if ax.get_xscale() == "log":
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
    return ax_or_axes


def _importance_bars(importances: dict):
    # deferred: matplotlib (heavy) loads only when plotting
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.5 * len(importances)))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="C0")
    ax.set_xlabel("importance (share of the objective's variance)")
    ax.set_title("parameter importances")
    return ax


def param_importances(study) -> tuple[dict, str]:
    # deferred: optuna loads only where a study is read
    import optuna
    from optuna.trial import TrialState

    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    varying = {k for t in done for k in t.params if len({repr(u.params.get(k)) for u in done}) > 1}
    if len(done) < 3 or not varying:
        return {}, f"needs 3 or more completed trials whose parameters vary ({len(done)} completed)"
    evaluator, name = importance_evaluator()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study, evaluator=evaluator), name
    except Exception as exc:
        return {}, f"{name} could not be computed: {exc}"


def _shown_run(run_dir: str) -> str:
    """A trial's run as `<sweep>/<job>`: no machine's absolute path in a report."""
    return str(Path(run_dir).relative_to(Path(run_dir).parents[1]))


def study_section(study_name: str, storage: str, out_dir: Path) -> tuple[list[str], list[str]]:
    """Markdown lines and the files written (trials CSV, plots) for one study."""
    out_dir = Path(out_dir)
    study = load_study(study_name, storage)
    rows = trial_rows(study)
    with open(out_dir / "study_trials.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, TRIAL_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    attrs = study.user_attrs
    objective = attrs.get("objective", {})
    states = [r["state"] for r in rows]
    url, note = recorded_storage(storage)
    parts = [f"## Study `{study_name}`", "",
             f"Storage `{url}`{note}; objective {objective.get('metric')} ({objective.get('direction')}, "
             f"{objective.get('reduce')} epoch); {len(rows)} trial(s): "
             + ", ".join(f"{s} {states.count(s)}" for s in ("complete", "pruned", "fail", "running")
                         if states.count(s)) + ".",
             "", "Space: " + "; ".join(f"`{k}` {v}" for k, v in (attrs.get("space") or {}).items()),
             "", "Fixed for every trial: `" + " ".join(o for o in attrs.get("fixed_overrides") or []
                                                     if is_setting_override(o)) + "`"
             + ("; resolved: " + ", ".join(f"{k}={v}" for k, v in attrs["trial_settings"].items())
                if attrs.get("trial_settings") else ""), ""]
    try:
        best = study.best_trial
        parts += [f"**Best: trial {best.number}**, {objective.get('metric')} {best.value:.4f}: "
                  f"`{' '.join(best.user_attrs.get('overrides', []))}`"
                  + (f" (run `{_shown_run(best.user_attrs['run_dir'])}`)" if best.user_attrs.get("run_dir") else ""), ""]
    except ValueError:
        parts += ["No trial has completed yet.", ""]
    parts += [_md(TRIAL_COLUMNS, [[r[c] for c in TRIAL_COLUMNS] for r in rows]), ""]
    importances, evaluator = param_importances(study)
    if importances:
        parts += [f"Parameter importances ({evaluator}): "
                  + ", ".join(f"`{k}` {v:.2f}" for k, v in importances.items() if math.isfinite(v)), ""]
    else:
        parts += [f"Parameter importances: not yet ({evaluator}).", ""]
    plots = study_plots(study, out_dir, importances, objective.get("metric") or "objective")
    parts += [f"![{p}]({p})" for p in plots]
    return parts, ["study_trials.csv", *plots]
