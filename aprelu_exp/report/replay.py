"""The tuning log replayed as one table: each record's runs (one per seed) against its parent's,
paired by seed, and beside the number the article reported.

A replay folder is a sweep directory (records x seeds, `python -m aprelu_exp -m ...`) holding
`replay.json`, the replay's own account of what it trains (written by `records replay`, read here
and by the sweep's report callback, so `-m resume=<folder>` rewrites the tables too). The numbers
come from the evidence code every report uses (report/evidence.py): Student's t intervals, the
paired comparison, P(A > B), Holm's adjustment over the log's steps, the verdict rule.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from aprelu_exp.report.article import reported_accuracy
from aprelu_exp.report.collect import read_runs
from aprelu_exp.report.evidence import (MIN_RUNS_FOR_VERDICT, P_BETTER_THRESHOLD, compare, holm, mean_interval,
                                        metric_value, seed_of, verdict)
from aprelu_exp.report.render import _md_table, _num, _pyplot, write_rows

SPEC_FILE = "replay.json"
FILES = ("replay.csv", "replay.md", "replay.png")
COLUMNS = ("record", "parent", "n", "seeds", "metric", "validated_on", "mean", "ci_low", "ci_high",
           "diff_vs_parent", "diff_ci_low", "diff_ci_high", "p_value", "p_holm", "p_better_vs_parent", "verdict",
           "article", "article_epoch", "article_metric", "epochs", "change", "note")
VERDICTS = {"a better": "better", "b better": "worse"}
COLOURS = {"better": "#1a7f37", "worse": "#cf222e"}  # anything else: not detectable, grey


def read_spec(folder: Path) -> dict | None:
    """The replay's account of itself, or None for a folder that is no replay."""
    path = Path(folder) / SPEC_FILE
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return spec if isinstance(spec, dict) and spec.get("kind") == "replay" else None


def step_word(raw: str, n: int, budget_text: str) -> str:
    """The verdict of one step in the replay's words: better, worse, or not detectable at this n and budget."""
    if raw in VERDICTS:
        return VERDICTS[raw]
    if n < MIN_RUNS_FOR_VERDICT:
        return f"not detectable at n={n} (fewer than {MIN_RUNS_FOR_VERDICT} seeds give no verdict), {budget_text}"
    return f"not detectable at n={n}, {budget_text}"


def replay_rows(folder: Path, spec: dict) -> list[dict]:
    """One row per trained record, in lineage order: its mean over the finished seeds with the 95 %
    t interval, and against its parent (where the parent was trained too) the paired difference, its
    interval, the paired t-test's p-value, Holm's adjustment over the steps, P(record > parent) and
    the verdict; the article's number beside it."""
    metric = spec["metric"]
    values: dict[str, dict[int, float]] = {name: {} for name in spec["records"]}
    epochs: dict[str, set] = {name: set() for name in spec["records"]}
    for run in read_runs([folder]):
        if run.status != "finished" or run.record not in values:
            continue
        v = metric_value(run.summary, metric)
        if v is not None:
            values[run.record][seed_of(run)] = v
        trained = (run.summary.get("schedule") or {}).get("max_epochs")
        if trained is not None:
            epochs[run.record].add(int(trained))
    rows, comparisons = [], []
    for name in spec["records"]:
        step = spec["steps"][name]
        vals = values[name]
        stats = mean_interval(vals.values())
        reported = reported_accuracy(name)
        row = {"record": name, "parent": step.get("parent") or "", "n": stats["n"],
               "seeds": " ".join(map(str, sorted(vals))), "metric": metric, "validated_on": spec["validated_on"],
               "mean": stats["mean"], "ci_low": stats["ci_low"], "ci_high": stats["ci_high"],
               "diff_vs_parent": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan,
               "p_value": math.nan, "p_holm": math.nan, "p_better_vs_parent": math.nan, "verdict": "",
               "article": reported["value"] if reported else "", "article_epoch": reported["epoch"] if reported else "",
               "article_metric": f"{reported['what']} ({reported['mode']} evaluation)" if reported else "",
               "epochs": " ".join(map(str, sorted(epochs[name]))), "change": step.get("change") or "",
               "note": "" if len(vals) == len(spec["seeds"]) else
               f"{len(vals)} of {len(spec['seeds'])} seeds finished"}
        parent = step.get("parent")
        if parent in values:
            # Paired by seed: only the seeds both sides finished (a failed run drops its pair).
            shared = sorted(set(vals) & set(values[parent]))
            if len(shared) >= 2:
                result = compare({s: vals[s] for s in shared}, {s: values[parent][s] for s in shared}, paired=True)
                row.update(diff_vs_parent=result["diff_mean"], diff_ci_low=result["ci_low"],
                           diff_ci_high=result["ci_high"], p_value=result["p_value"],
                           p_better_vs_parent=result["p_better"], n_pairs=len(shared))
                comparisons.append(row)
                if result["note"]:
                    row["note"] = "; ".join(x for x in (row["note"], result["note"]) if x)
            else:
                row["verdict"] = f"no comparison ({len(shared)} seed(s) finished on both sides)"
        else:
            row["verdict"] = ("the replay's starting point" + (f" (its parent {parent} is not replayed)" if parent else ""))
        rows.append(row)
    # The log's steps are one family: Holm keeps the chance of any false "better" or "worse" at 5 %.
    for row, adjusted in zip(comparisons, holm([r["p_value"] for r in comparisons])):
        row["p_holm"] = adjusted
        raw = verdict(row["diff_vs_parent"], adjusted, row["p_better_vs_parent"], row.pop("n_pairs"))
        row["verdict"] = step_word(raw, row["n"], spec["budget_text"])
    return rows


def budget_paragraph(spec: dict, rows: list[dict]) -> str:
    reported = [r for r in rows if r["article"] != ""]
    article = ", ".join(f"{r['record']} {r['article']:.4f} after {r['article_epoch']} epochs" for r in reported)
    return (f"**What the budget means.** Every run here trained {spec['budget_text']}; the article trained its "
            f"records for thousands of epochs (record 16: 5000, with the lr cut every 1500) on all 50,000 "
            f"training images. A replay at this budget asks whether each step helped *at this budget*: the "
            f"ranking of the steps can differ from the article's, and the `article` column"
            f"{' (' + article + ')' if article else ''} is not comparable to the replayed means unless the "
            f"budget and the data are the article's. It is shown, not hidden, so that the gap is seen. The "
            f"replay ranks by `{spec['metric']}` on {spec['validated_on']}.")


def write_replay_tables(folder: Path, spec: dict | None = None) -> dict:
    """replay.csv, replay.md and replay.png in the replay folder; returns the rows."""
    folder = Path(folder)
    spec = spec or read_spec(folder)
    rows = replay_rows(folder, spec)
    write_rows(rows, COLUMNS, folder / "replay.csv")
    (folder / "replay.md").write_text(markdown(spec, rows))
    plot_replay(spec, rows, folder / "replay.png")
    return {"rows": rows, "files": list(FILES)}


def _interval(row: dict, low: str, high: str, value: str, sign: str = "") -> str:
    if row[value] != row[value]:
        return ""
    text = f"{row[value]:{sign}.4f}"
    return text + (f" [{row[low]:{sign}.4f}, {row[high]:{sign}.4f}]" if row[low] == row[low] else "")


def markdown(spec: dict, rows: list[dict]) -> str:
    header = ["record", "change against its parent", "n", f"{spec['metric']}: mean [95 % CI]",
              "vs parent: difference [95 % CI]", "P(better)", "p (Holm)", "verdict", "article"]
    table = [[r["record"], r["change"], r["n"], _interval(r, "ci_low", "ci_high", "mean"),
              _interval(r, "diff_ci_low", "diff_ci_high", "diff_vs_parent", "+"), _num(r["p_better_vs_parent"], 2),
              _num(r["p_holm"], 4), r["verdict"],
              f"{r['article']:.4f} (epoch {r['article_epoch']})" if r["article"] != "" else ""] for r in rows]
    notes = [f"- `{r['record']}`: {r['note']}" for r in rows if r["note"]]
    return "\n".join([
        f"# Replay of the tuning log: {len(rows)} records x {len(spec['seeds'])} seeds", "",
        f"`{spec['command']}`", "",
        f"Seeds {', '.join(map(str, spec['seeds']))} for every record (the seed fixes the initial weights, the data "
        f"order and the augmentation draws, so a record's run and its parent's with the same seed are a pair). "
        f"Settings on every run: {' '.join(spec['overrides']) or 'none (the records as they are)'}.", "",
        _md_table(header, table), "",
        *notes, *([""] if notes else []),
        f"The mean's interval is Student's t over the seeds, clipped to [0, 1]. A step is compared with its "
        f"parent by the paired t-test on the per-seed differences (its interval and p-value), with P(better) "
        f"the share of (record, parent) run pairs the record wins; p (Holm) adjusts the p-values over the "
        f"{sum(1 for r in rows if r['p_value'] == r['p_value'])} steps of this replay. A step is *better* "
        f"(*worse*) when p (Holm) < 0.05 and P(better) >= {P_BETTER_THRESHOLD} (<= {1 - P_BETTER_THRESHOLD:g}); "
        f"with fewer than {MIN_RUNS_FOR_VERDICT} seeds no step gets a verdict.", "",
        budget_paragraph(spec, rows), "",
        "![the replay](replay.png)", ""])


def plot_replay(spec: dict, rows: list[dict], path: Path) -> None:
    """One point per record with its interval, in lineage order; each step an arrow from its parent,
    coloured by its verdict; the article's numbers as separate markers."""
    plt = _pyplot()
    # deferred: matplotlib (heavy) loads only when plotting
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=100, layout="constrained")
    x = {r["record"]: i for i, r in enumerate(rows)}
    for r in rows:
        if r["mean"] == r["mean"]:
            low = r["mean"] - r["ci_low"] if r["ci_low"] == r["ci_low"] else 0
            high = r["ci_high"] - r["mean"] if r["ci_high"] == r["ci_high"] else 0
            ax.errorbar(x[r["record"]], r["mean"], yerr=[[low], [high]], fmt="o", color="0.15", capsize=5,
                        markersize=7, zorder=3)
        if r["article"] != "":
            ax.plot(x[r["record"]], r["article"], marker="*", color="#9a6700", markersize=14, ls="", zorder=4)
    for r in rows:
        parent = next((p for p in rows if p["record"] == r["parent"]), None)
        if parent is None or r["mean"] != r["mean"] or parent["mean"] != parent["mean"]:
            continue
        word = r["verdict"].split()[0] if r["verdict"] else ""
        ax.annotate("", xy=(x[r["record"]], r["mean"]), xytext=(x[parent["record"]], parent["mean"]),
                    arrowprops={"arrowstyle": "-|>", "color": COLOURS.get(word, "0.6"), "lw": 2.2,
                                "shrinkA": 8, "shrinkB": 8, "connectionstyle": "arc3,rad=-0.15"}, zorder=2)
    ax.set_xticks(range(len(rows)), [r["record"] for r in rows], rotation=20)
    ax.set_ylabel(f"{spec['metric']}\n({spec['validated_on']})")
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"The tuning log replayed: {len(spec['seeds'])} seeds per record, {spec['budget_text']}", fontsize=10)
    handles = [Line2D([], [], color="0.15", marker="o", ls="", label="mean over seeds, 95 % t interval"),
               Line2D([], [], color="#9a6700", marker="*", ls="", markersize=12,
                      label="the article's reported number (its own budget)"),
               Line2D([], [], color=COLOURS["better"], lw=2.2, label="step: better"),
               Line2D([], [], color=COLOURS["worse"], lw=2.2, label="step: worse"),
               Line2D([], [], color="0.6", lw=2.2, label="step: not detectable at this n and budget")]
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncols=3, frameon=False)
    fig.savefig(path)
    plt.close(fig)
