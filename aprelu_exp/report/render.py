"""Tables (CSV, Markdown) and learning-curve plots from collected runs."""
from __future__ import annotations

import csv
from pathlib import Path

from aprelu_exp.report.article import ARTICLE_TO_RUN, reported_epochs
from aprelu_exp.report.collect import RunInfo, setting_overrides
from aprelu_exp.report.evidence import COMPARISON_COLUMNS, GROUP_COLUMNS, P_BETTER_THRESHOLD, mean_interval

TABLE_COLUMNS = (
    "label", "run", "record", "status", "changes_vs_parent", "overrides", "epochs", "schedule",
    "final_val_acc", "best_val_acc", "final_val_acc_article", "best_val_acc_article",
    "final_train_acc", "wall_time_s", "train_images_per_s", "error",
)


def _fmt(v, digits=4):
    if v is None or v == "":
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _short(v) -> str:
    return "absent" if v == "<absent>" else repr(v) if isinstance(v, str) else str(v)


def table_row(run: RunInfo) -> dict:
    s = run.summary or {}
    final, best = s.get("final") or {}, s.get("best") or {}
    sched = s.get("schedule") or {}
    if not sched and run.config is not None and "schedule" in run.config:
        sched = {"full_epochs": run.config.schedule.get("epochs")}
    kind = sched.get("kind")
    schedule = ""
    if sched:
        schedule = f"{kind or '?'} of {sched.get('full_epochs')}"
        if sched.get("budget"):
            schedule += f", milestones {sched.get('milestones')}"
    best_epoch = lambda k: (f"{best[k]['value']:.4f} (ep {best[k]['epoch']})" if k in best else "")
    return {
        "label": run.label or run.name,
        "run": run.name,
        "record": run.record,
        "status": run.status,
        "changes_vs_parent": "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, a, b in run.changes)
        if run.parent else "(root record)",
        # Settings only: where a run was started (run_root, data.root, ...) is this machine's business.
        "overrides": " ".join(setting_overrides(run)),
        "epochs": s.get("epochs_completed", len(run.rows)),
        "schedule": schedule,
        "final_val_acc": _fmt(final.get("val_acc")),
        "best_val_acc": best_epoch("val_acc"),
        "final_val_acc_article": _fmt(final.get("val_acc_article")),
        "best_val_acc_article": best_epoch("val_acc_article"),
        "final_train_acc": _fmt(final.get("train_acc")),
        "wall_time_s": _fmt(s.get("wall_time_s"), 1),
        "train_images_per_s": _fmt(s.get("train_images_per_s_median"), 1),
        "error": run.error or "",
    }


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, TABLE_COLUMNS)
        w.writeheader()
        w.writerows(rows)


def _md_table(header: list[str], rows: list[list]) -> str:
    esc = lambda x: str(x).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def article_comparison(runs: list[RunInfo]) -> list[list]:
    """Article numbers beside the reproduction at the same (1-based) epoch, same eval mode."""
    out = []
    for run in runs:
        reported = reported_epochs(run.record)
        if not reported:
            continue
        by_epoch = {int(r["epoch"]) + 1: r for r in run.rows}
        if not any(int(rep["epoch"]) in by_epoch for rep in reported):
            first, last = reported[0], reported[-1]
            cells = [run.label or run.name, f"{first['epoch']}-{last['epoch']}"]
            for col in ARTICLE_TO_RUN:
                vals = [rep[col] for rep in reported]
                cells += [f"{min(vals):.4f}-{max(vals):.4f}", f"not reached ({len(run.rows)} epochs run)"]
            out.append(cells)
            continue
        for rep in reported:
            mine = by_epoch.get(int(rep["epoch"]))
            cells = [run.label or run.name, rep["epoch"]]
            for col, ours in ARTICLE_TO_RUN.items():
                cells += [_fmt(rep[col]), _fmt(float(mine[ours])) if mine and mine.get(ours) else "not reached"]
            out.append(cells)
    return out


def write_markdown(runs: list[RunInfo], rows: list[dict], plots: list[str], path: Path, title: str,
                   extra: list[str] | None = None) -> None:
    parts = [f"# {title}", "",
             "Validation modes: `val_acc` uses BatchNorm running statistics (standard); "
             "`val_acc_article` uses batch statistics over batches of 100, as the article's Keras "
             "code evaluated (`K.set_learning_phase(1)`).", ""]
    cols = [c for c in TABLE_COLUMNS if c != "error"]
    parts.append(_md_table(cols, [[r[c] for c in cols] for r in rows]))
    failed = [r for r in rows if r["error"]]
    if failed:
        parts += ["", "## Errors and notes", ""] + [f"- `{r['run']}` ({r['status']}): {r['error']}" for r in failed]
    comparison = article_comparison(runs)
    parts += ["", "## Article vs reproduction (matched epochs, article's evaluation mode)", ""]
    if comparison:
        header = ["run", "epoch"]
        for col, ours in ARTICLE_TO_RUN.items():
            header += [f"article {col}", f"ours {ours}"]
        parts.append(_md_table(header, comparison))
        reached = max((int(r["epoch"]) + 1 for run in runs for r in run.rows), default=0)
        parts += ["", f"The article logged only late epochs; the longest run here reached epoch {reached}."]
    else:
        parts.append("No run here belongs to a record for which the article reported per-epoch numbers.")
    if plots:
        parts += ["", "## Learning curves", ""] + [f"![{p}]({p})" for p in plots]
    parts += extra or []
    path.write_text("\n".join(parts) + "\n")


def plot_curves(runs: list[RunInfo], out_dir: Path) -> list[str]:
    # deferred: matplotlib (heavy) loads only when plotting
    import matplotlib

    matplotlib.use("Agg")
    # deferred: matplotlib (heavy) loads only when plotting
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    specs = {
        "accuracy.png": ("accuracy", ("train_acc", "val_acc", "val_acc_article")),
        "loss.png": ("loss", ("train_loss", "val_loss", "val_loss_article")),
    }
    styles = {0: "-", 1: "--", 2: ":"}
    for fname, (ylabel, keys) in specs.items():
        fig, ax = plt.subplots(figsize=(9, 5.5))
        for i, run in enumerate(runs):
            color = f"C{i % 10}"
            for j, key in enumerate(keys):
                pts = [(int(r["epoch"]) + 1, float(r[key])) for r in run.rows if r.get(key)]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, styles[j], color=color, marker="o" if len(xs) < 30 else None,
                            markersize=3, label=f"{run.label or run.name}: {key}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel}: train (solid), val running-BN (dashed), val article batch-BN (dotted)",
                     fontsize=9)
        ax.grid(alpha=0.3)
        if ax.lines:
            style_legend(ax)
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        written.append(fname)
    return written


def style_legend(ax):
    """A legend whose entries show each line's style: at the default handle length a dashed or
    dotted line with a marker at its middle shows no gap and reads as solid."""
    return ax.legend(fontsize=7, loc="best", handlelength=5, numpoints=2)


def write_rows(rows: list[dict], columns, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _num(v, digits=4) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "" if v != v else f"{v:.{digits}f}"  # NaN: n < 2
    return str(v)


def evidence_markdown(group_rows: list[dict], comparisons: list[dict], notes: list[str]) -> list[str]:
    if not group_rows:
        return []
    parts = ["", "## Groups: runs that differ only in their seed", "",
             "Mean, standard deviation and 95 % interval of the mean (Student's t, n - 1 degrees of "
             "freedom) over the seeds of each group.", "",
             _md_table(list(GROUP_COLUMNS), [[_num(r[c]) for c in GROUP_COLUMNS] for r in group_rows])]
    parts += [""] + [f"- {n}" for n in notes] if notes else []
    if comparisons:
        parts += ["", "## Comparisons", "",
                  "diff_mean = A - B with its 95 % interval (paired t-test on the per-seed differences "
                  "where both groups ran the same seeds, else Welch's t-test); p_better = P(a run of A "
                  f"beats a run of B). Verdict: a better when the interval lies above 0 and p_better >= "
                  f"{P_BETTER_THRESHOLD}; b better symmetrically; otherwise no detectable difference.", "",
                  _md_table(list(COMPARISON_COLUMNS), [[_num(r[c]) for c in COMPARISON_COLUMNS]
                                                       for r in comparisons])]
    return parts


def plot_group_curves(groups, out_dir: Path) -> list[str]:
    """Each group's mean per epoch with its 95 % t band (groups of 2+ runs), both validation modes."""
    # deferred: matplotlib (heavy) loads only when plotting
    import matplotlib

    matplotlib.use("Agg")
    # deferred: matplotlib (heavy) loads only when plotting
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    if not any(len(g.runs) >= 2 for g in groups):
        return []
    keys = ("val_acc_article", "val_acc", "train_acc")
    fig, axes = plt.subplots(1, len(keys), figsize=(15, 5), sharey=True)
    for ax, key in zip(axes, keys):
        for i, g in enumerate(groups):
            per_epoch: dict[int, list[float]] = {}
            for run in g.runs:
                for r in run.rows:
                    if r.get(key):
                        per_epoch.setdefault(int(r["epoch"]) + 1, []).append(float(r[key]))
            if not per_epoch:
                continue
            epochs = sorted(per_epoch)
            stats = [mean_interval(per_epoch[e]) for e in epochs]
            color = f"C{i % 10}"
            ax.plot(epochs, [s["mean"] for s in stats], "-", color=color, marker="o" if len(epochs) < 30 else None,
                    markersize=3, label=f"{g.label} (n={len(g.runs)})")
            if len(g.runs) >= 2:
                ax.fill_between(epochs, np.array([s["ci_low"] for s in stats], float),
                                np.array([s["ci_high"] for s in stats], float), color=color, alpha=0.2, lw=0)
        ax.set_title(f"{key}: group mean, 95 % t band", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out_dir / "groups_accuracy.png", dpi=110)
    plt.close(fig)
    return ["groups_accuracy.png"]
