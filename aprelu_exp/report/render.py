"""Tables (CSV, Markdown) and learning-curve plots from collected runs."""
from __future__ import annotations

import csv
from pathlib import Path

from aprelu_exp.metrics import L2_PENALTY, TEST_ACC, TEST_ACC_ARTICLE, TRAIN_ACC, TRAIN_IMAGES_PER_S, TRAIN_LOSS, VAL_ACC, VAL_ACC_ARTICLE, VAL_LOSS, VAL_LOSS_ARTICLE
from aprelu_exp.report.article import ARTICLE_TO_RUN, reported_epochs
from aprelu_exp.report.collect import RunInfo, setting_overrides
from aprelu_exp.report.evidence import (COMPARISON_COLUMNS, GROUP_COLUMNS, MIN_RUNS_FOR_VERDICT, P_BETTER_THRESHOLD,
                                        group_runs, mean_interval)

TABLE_COLUMNS = (
    "label", "run", "record", "status", "changes_vs_parent", "overrides", "epochs", "schedule", "budget",
    "val_split", "final_val_acc", "best_val_acc", "best_val_acc_epoch", "final_val_acc_article",
    "best_val_acc_article", "best_val_acc_article_epoch", TEST_ACC, TEST_ACC_ARTICLE, "final_train_acc",
    "wall_time_s", TRAIN_IMAGES_PER_S, "error",
)
# report.md's runs table: the numbers read at 4 digits, the best epoch beside its value.
MARKDOWN_COLUMNS = ("label", "run", "record", "status", "changes_vs_parent", "overrides", "epochs", "schedule",
                    "final_val_acc", "best_val_acc", "final_val_acc_article", "best_val_acc_article", TEST_ACC,
                    TEST_ACC_ARTICLE, "final_train_acc", "wall_time_s", TRAIN_IMAGES_PER_S)


def _fmt(v, digits=4):
    if v is None or v == "":
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _short(v) -> str:
    return "absent" if v == "<absent>" else repr(v) if isinstance(v, str) else str(v)


def _number(v):
    """A summary value as a number for the CSV (None where absent or not finite)."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if v == v and abs(v) != float("inf") else None


def schedule_text(sched: dict, gamma=None) -> str:
    """The schedule the run actually trained: its length against the record's and the epochs
    (counted from 1) after which the lr dropped."""
    full, length, kind = sched.get("full_epochs"), sched.get("max_epochs"), sched.get("kind")
    if length is None:
        return f"the record's schedule of {full} epochs" if full else ""
    drops = [int(m) for m in sched.get("milestones") or [] if int(m) < int(length)]
    factor = f"x{gamma:g}" if isinstance(gamma, (int, float)) else "dropped"
    lr = (f"lr {factor} after epoch{'s' if len(drops) > 1 else ''} {', '.join(map(str, drops))}" if drops
          else "lr constant")
    if kind == "budget":
        return f"budget: {length} epochs (the record's {full} compressed), {lr}"
    if kind == "truncated":
        return f"truncated: {length} of {full} epochs, {lr}"
    return f"full: {length} epochs, {lr}"


def override_columns(run: RunInfo) -> dict:
    """One column per overridden key (`model.reduction`, `model/activation`, ...), its value as given."""
    out = {}
    for o in setting_overrides(run):
        key, _, value = o.partition("=")
        out[f"override.{key}" if key in TABLE_COLUMNS else key] = value
    return out


def table_row(run: RunInfo) -> dict:
    s = run.summary or {}
    measured = run.measured
    final, best = measured.get("final") or {}, measured.get("best") or {}
    test = s.get("test") or {}
    sched = s.get("schedule") or {}
    if not sched and run.config is not None and "schedule" in run.config:
        sched = {"full_epochs": run.config.schedule.get("epochs")}
    gamma = run.config.schedule.get("gamma") if run.config is not None and "schedule" in run.config else None
    split = s.get("split") or {}
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
        "schedule": schedule_text(sched, gamma),
        "budget": sched.get("budget"),
        "val_split": split.get("val_split"),
        "final_val_acc": _number(final.get(VAL_ACC)),
        "best_val_acc": _number((best.get(VAL_ACC) or {}).get("value")),
        "best_val_acc_epoch": (best.get(VAL_ACC) or {}).get("epoch"),
        "final_val_acc_article": _number(final.get(VAL_ACC_ARTICLE)),
        "best_val_acc_article": _number((best.get(VAL_ACC_ARTICLE) or {}).get("value")),
        "best_val_acc_article_epoch": (best.get(VAL_ACC_ARTICLE) or {}).get("epoch"),
        TEST_ACC: _number(test.get(TEST_ACC)),
        TEST_ACC_ARTICLE: _number(test.get(TEST_ACC_ARTICLE)),
        "final_train_acc": _number(final.get(TRAIN_ACC)),
        "wall_time_s": _number(s.get("wall_time_s")),
        TRAIN_IMAGES_PER_S: _number(s.get("train_images_per_s_median")),
        "error": run.error or "",
        **override_columns(run),
    }


def table_columns(rows: list[dict]) -> list[str]:
    """The fixed columns, then one per overridden key found in any row."""
    extra = dict.fromkeys(k for r in rows for k in r if k not in TABLE_COLUMNS)
    return [*TABLE_COLUMNS, *extra]


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, table_columns(rows))
        w.writeheader()
        w.writerows(rows)


def _md_table(header: list[str], rows: list[list]) -> str:
    esc = lambda x: str(x).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def article_comparison(runs: list[RunInfo]) -> list[list]:
    """Article numbers beside the reproduction at the same epoch (both count from 1), same eval mode."""
    out = []
    for run in runs:
        reported = reported_epochs(run.record)
        if not reported:
            continue
        by_epoch = {int(r["epoch"]): r for r in run.rows}
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


def _markdown_cell(row: dict, column: str) -> str:
    if column in ("best_val_acc", "best_val_acc_article") and row[column] is not None:
        return f"{row[column]:.4f} (ep {row[column + '_epoch']})"
    return _fmt(row[column], 1 if column in ("wall_time_s", TRAIN_IMAGES_PER_S) else 4)


def protocol_line(runs: list[RunInfo]) -> str:
    """One line: what the validation metrics were measured on (held-out training images or the test set)."""
    splits = {split_key(r.summary.get("split")) for r in runs if r.summary}
    held = sorted(s for s in splits if s)
    if not held:
        return ("Validation here is the CIFAR-10 test set (the article's protocol; no `data.val_split`): best "
                "epochs and any choice made on `val_*` were made on the data that judges them.")
    text = ("Validation: " + "; ".join(f"{v} held-out training images (`data.val_split={v}`, `split_seed={k}`)"
                                       for v, k in held)
            + "; `test_acc`, `test_acc_article`: the test set, evaluated once, at the end of each run.")
    if None in splits:
        text += " Runs without a split validate on the test set (the article's protocol)."
    return text


def split_key(split: dict | None):
    return (split["val_split"], split["split_seed"]) if split else None


def write_markdown(runs: list[RunInfo], rows: list[dict], plots: list[str], path: Path, title: str,
                   extra: list[str] | None = None) -> None:
    parts = [f"# {title}", "",
             "Validation modes: `val_acc` uses BatchNorm running statistics (standard); "
             "`val_acc_article` uses batch statistics over batches of 100, as the article's Keras "
             "code evaluated (`K.set_learning_phase(1)`). Epochs count from 1.", "", protocol_line(runs), ""]
    parts.append(_md_table(list(MARKDOWN_COLUMNS), [[_markdown_cell(r, c) for c in MARKDOWN_COLUMNS] for r in rows]))
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
        reached = max((int(r["epoch"]) for run in runs for r in run.rows), default=0)
        parts += ["", f"The article logged only late epochs; the longest run here reached epoch {reached}."]
    else:
        parts.append("No run here belongs to a record for which the article reported per-epoch numbers.")
    if plots:
        parts += ["", "## Learning curves", ""] + [f"![{p}]({p})" for p in plots]
    parts += extra or []
    path.write_text("\n".join(parts) + "\n")


# -- figures ---------------------------------------------------------------------------------------

# A metric's line style, the same in every panel and figure: the legend's key to the panels.
STYLES = {"train": "-", "val": "--", "article": ":"}
ACCURACY_PANELS = ((TRAIN_ACC, "train accuracy", "train"),
                   (VAL_ACC, "val_acc: running-BN statistics", "val"),
                   (VAL_ACC_ARTICLE, "val_acc_article: batch statistics (article)", "article"))
LOSS_PANELS = ((TRAIN_LOSS, "train data loss (cross-entropy)", "train"),
               (VAL_LOSS, "val data loss (cross-entropy), running BN", "val"),
               ("val_data_loss_article", "val data loss (cross-entropy), batch stats (article)", "article"),
               (L2_PENALTY, "L2 term (l2 * sum w^2), at each epoch's end", "train"))
# Where a run's test metric shows, as a marker at its last epoch (runs with data.val_split only).
TEST_MARKERS = {VAL_ACC: TEST_ACC, VAL_ACC_ARTICLE: TEST_ACC_ARTICLE}


def _curve(run: RunInfo, key: str) -> dict[int, float]:
    """epoch (from 1) -> value; val_data_loss_article is the article's val loss less its L2 term."""
    out = {}
    for r in run.rows:
        if key == "val_data_loss_article":
            if r.get(VAL_LOSS_ARTICLE) and r.get(L2_PENALTY):
                out[int(r["epoch"])] = float(r[VAL_LOSS_ARTICLE]) - float(r[L2_PENALTY])
        elif r.get(key):
            out[int(r["epoch"])] = float(r[key])
    return out


def _pyplot():
    # deferred: matplotlib (heavy) loads only when plotting
    import matplotlib

    matplotlib.use("Agg")
    # deferred: matplotlib (heavy) loads only when plotting
    import matplotlib.pyplot as plt

    return plt


def _small_multiples(panels, title: str, columns: int):
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns + 2.8, 3.6 * rows + 0.5), layout="constrained",
                             squeeze=False)
    for ax, (_, name, _) in zip(axes.flat, panels):
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return plt, fig, list(axes.flat)


def _legend(fig, groups, keys: list[tuple[dict, str]]) -> None:
    """One entry per group (its colour), then the key to the line styles: (Line2D style, words)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=f"C{i % 10}", lw=2.2, label=f"{g.label} (n={len(g.runs)})")
               for i, g in enumerate(groups)]
    handles += [Line2D([], [], color="0.3", **style, label=words) for style, words in keys]
    # Long handles: at the default length a dashed or dotted key shows no gap and reads as solid.
    fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False, handlelength=5)


def _style_keys(panels, test_shown: bool) -> list[tuple[dict, str]]:
    styles_used = {p[2] for p in panels}
    names = {"train": "solid: train" + (", the L2 term" if any(p[0] == L2_PENALTY for p in panels) else ""),
             "val": "dashed: val_acc / val_loss (running BN)", "article": "dotted: article mode (batch statistics)"}
    keys = [({"lw": 0.8, "alpha": 0.6}, "thin: one run"), ({"lw": 2.2}, "bold: group mean")]
    keys += [({"ls": STYLES[k], "lw": 1.4}, names[k]) for k in STYLES if k in styles_used]
    if test_shown:
        keys.append(({"ls": "", "marker": "x"}, "x: test set, once at the end"))
    return keys


def plot_curves(runs: list[RunInfo], out_dir: Path) -> list[str]:
    """accuracy.png and loss.png as small multiples: one panel per metric, one colour per group of
    replicates (runs differing only in their seed), each run thin, the group's mean bold, the legend
    outside the panels with one entry per group."""
    import numpy as np

    groups = group_runs(runs, finished_only=False)
    figures = {"accuracy.png": ("Accuracy", ACCURACY_PANELS, 3), "loss.png": ("Loss", LOSS_PANELS, 2)}
    written = []
    for fname, (what, panels, columns) in figures.items():
        title = (f"{what} per epoch: {len(runs)} run{'s' if len(runs) != 1 else ''} in {len(groups)} "
                 f"group{'s' if len(groups) != 1 else ''} (runs that differ only in their seed)")
        if what == "Loss":
            title += "; the data loss apart from the L2 term"
        plt, fig, axes = _small_multiples(panels, title, columns)
        test_shown = False
        for ax, (key, _, style) in zip(axes, panels):
            for i, g in enumerate(groups):
                colour = f"C{i % 10}"
                curves = [c for c in (_curve(run, key) for run in g.runs) if c]
                for c in curves:
                    xs = sorted(c)
                    ax.plot(xs, [c[x] for x in xs], STYLES[style], color=colour, lw=0.8 if len(curves) > 1 else 2.0,
                            alpha=0.55 if len(curves) > 1 else 1.0, marker="o" if len(xs) == 1 else None, ms=3)
                if len(curves) > 1:
                    epochs = sorted(set().union(*curves))
                    means = [np.mean([c[e] for c in curves if e in c]) for e in epochs]
                    ax.plot(epochs, means, STYLES[style], color=colour, lw=2.2, marker="o" if len(epochs) == 1 else None)
                for run in g.runs:
                    test = (run.summary or {}).get("test") or {}
                    if key in TEST_MARKERS and (run.summary or {}).get("split") and test.get(TEST_MARKERS[key]) is not None:
                        ax.plot([test["epoch"]], [test[TEST_MARKERS[key]]], "x", color=colour, ms=6)
                        test_shown = True
        for ax in axes[::columns]:
            ax.set_ylabel(what.lower())
        _legend(fig, groups, _style_keys(panels, test_shown))
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        written.append(fname)
    return written


def write_rows(rows: list[dict], columns, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        w.writeheader()
        # No number is an empty cell (a notebook reads it as missing), never the string "nan".
        w.writerows({k: ("" if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows)


def _num(v, digits=4) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "" if v != v else f"{v:.{digits}f}"  # NaN: n < 2, or no spread
    return str(v)


def _interval_cell(row: dict) -> str:
    """The interval, or what stands in its place: 'no spread in n runs', '1 run: no interval'."""
    if row["ci_low"] != row["ci_low"]:
        return row.get("note") or ""
    return f"{row['ci_low']:.4f} .. {row['ci_high']:.4f}"


def evidence_markdown(group_rows: list[dict], comparisons: list[dict], notes: list[str]) -> list[str]:
    if not group_rows:
        return []
    header = ["group", "n", "metric", "mean", "std", "95 % interval", "seeds"]
    parts = ["", "## Groups: runs that differ only in their seed", "",
             "Mean, standard deviation and 95 % interval of the mean over the seeds of each group: Student's t "
             "(n - 1 degrees of freedom), clipped to [0, 1], the bounds of an accuracy. Where every run of a "
             "group scored the same, there is no interval to give (\"no spread\"). Groups of fewer than "
             f"{MIN_RUNS_FOR_VERDICT} runs are named below; their intervals are not informative.", "",
             _md_table(header, [[r["group"], r["n"], r["metric"], _num(r["mean"]), _num(r["std"]), _interval_cell(r),
                                 r["seeds"]] for r in group_rows])]
    parts += [""] + [f"- {n}" for n in notes] if notes else []
    if comparisons:
        columns = [c for c in COMPARISON_COLUMNS if c != "note"]
        parts += ["", "## Comparisons", "",
                  "diff_mean = A - B with its 95 % interval (paired t-test on the per-seed differences "
                  "where both groups ran the same seeds, else Welch's t-test; clipped to [-1, 1]); p_holm = the p-value Holm-adjusted "
                  "over the comparisons of the same metric in this report; p_better = P(a run of A beats a run "
                  f"of B). Verdict: a better when p_holm < 0.05 with A ahead and p_better >= {P_BETTER_THRESHOLD}; "
                  f"b better symmetrically; none with fewer than {MIN_RUNS_FOR_VERDICT} runs in a group or without "
                  "spread; otherwise no detectable difference.", "",
                  _md_table(columns + ["note"], [[_num(r[c]) for c in columns] + [r.get("note") or ""]
                                                 for r in comparisons])]
    return parts


def plot_group_curves(groups, out_dir: Path) -> list[str]:
    """Each group's mean per epoch with its 95 % t band (groups of 2+ runs), both validation modes."""
    import numpy as np

    if not any(len(g.runs) >= 2 for g in groups):
        return []
    panels = ((VAL_ACC_ARTICLE, "val_acc_article: group mean, 95 % t band", "article"),
              (VAL_ACC, "val_acc: group mean, 95 % t band", "val"),
              (TRAIN_ACC, "train_acc: group mean, 95 % t band", "train"))
    runs = sum(len(g.runs) for g in groups)
    plt, fig, axes = _small_multiples(panels, f"Group means per epoch with their 95 % t bands: {runs} finished "
                                              f"runs in {len(groups)} groups", 3)
    for ax, (key, _, style) in zip(axes, panels):
        for i, g in enumerate(groups):
            per_epoch: dict[int, list[float]] = {}
            for run in g.runs:
                for epoch, value in _curve(run, key).items():
                    per_epoch.setdefault(epoch, []).append(value)
            if not per_epoch:
                continue
            epochs = sorted(per_epoch)
            stats = [mean_interval(per_epoch[e]) for e in epochs]
            color = f"C{i % 10}"
            ax.plot(epochs, [s["mean"] for s in stats], STYLES[style], color=color, lw=2.0,
                    marker="o" if len(epochs) < 30 else None, markersize=3)
            if len(g.runs) >= 2:
                ax.fill_between(epochs, np.array([s["ci_low"] for s in stats], float),
                                np.array([s["ci_high"] for s in stats], float), color=color, alpha=0.2, lw=0)
    axes[0].set_ylabel("accuracy")
    _legend(fig, groups, [({"lw": 2.0}, "line: group mean"), ({"lw": 8, "alpha": 0.2}, "band: 95 % t interval, in [0, 1]")])
    fig.savefig(out_dir / "groups_accuracy.png", dpi=110)
    plt.close(fig)
    return ["groups_accuracy.png"]
