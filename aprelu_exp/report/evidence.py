"""Seeds as replicates: runs that differ only in `seed` form a group; each group gets a mean with a
95 % interval, and groups are compared with a difference, its interval, a p-value, P(A > B) and a
verdict in words.

Methods (scipy.stats; see docs/records.md, "Evidence: seeds as replicates"):
* a group's interval is Student's t for the mean, `t.interval(0.95, n - 1, mean, sem)`: right at the
  3 to 5 seeds a CPU allows, where a bootstrap's interval is unreliable. An accuracy cannot leave
  [0, 1], so its interval is clipped to those bounds. Below 3 runs the interval is not informative
  (at n = 2 the t multiplier is 12.7), and the group says so; where all runs are equal the interval
  says "no spread in n runs" instead of claiming a zero width;
* a comparison is paired (`ttest_rel` on the per-seed differences) when both groups ran the same
  seeds, so the data order and augmentation draws they share cancel out; otherwise Welch's
  `ttest_ind(equal_var=False)`. The interval is the test's own for the mean difference;
* `p_better` is P(a run of A beats a run of B) over all pairs of runs, ties counting half: the
  Mann-Whitney U of A divided by n_A * n_B (Bouthillier et al., MLSys 2021);
* several comparisons of one metric in a report are a family: their p-values are Holm-adjusted
  (`p_holm`, beside the raw one), which keeps the chance of any false "better" at 5 %;
* the verdict: "a better" when the difference is detectable (p_holm < 0.05, its sign positive) and
  p_better >= 0.75 (large enough to matter, as Bouthillier et al. propose), "b better"
  symmetrically, else "no detectable difference (n=...)"; never a verdict with fewer than 3 runs in
  a group, or where no run differs from another (the test is then undefined).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from aprelu_exp.errors import UserError
from aprelu_exp.metrics import TEST_ACC, TEST_ACC_ARTICLE, TRAIN_ACC, VAL_ACC, VAL_ACC_ARTICLE
from aprelu_exp.settings import settings_without_seed

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
P_BETTER_THRESHOLD = 0.75
MIN_RUNS_FOR_VERDICT = 3  # at n = 2 the t interval has 1 degree of freedom: a multiplier of 12.7
ACCURACY_BOUNDS = (0.0, 1.0)  # every metric compared here is an accuracy
# (column name, summary section, metric)
METRICS = (
    ("final_val_acc", "final", VAL_ACC),
    ("final_val_acc_article", "final", VAL_ACC_ARTICLE),
    ("final_train_acc", "final", TRAIN_ACC),
    ("best_val_acc_article", "best", VAL_ACC_ARTICLE),
    # The test set, evaluated once at the end (the same as the final validation without data.val_split).
    (TEST_ACC, "test", TEST_ACC),
    (TEST_ACC_ARTICLE, "test", TEST_ACC_ARTICLE),
)
METRIC_NAMES = tuple(m[0] for m in METRICS)
GROUP_COLUMNS = ("group", "n", "metric", "mean", "std", "ci_low", "ci_high", "seeds", "note")
COMPARISON_COLUMNS = ("a", "b", "metric", "n_a", "n_b", "paired", "diff_mean", "ci_low", "ci_high",
                      "p_value", "p_holm", "p_better", "verdict", "note")


@dataclass
class Group:
    """Finished runs with the same settings but their seed."""

    label: str
    key: tuple
    runs: list = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [seed_of(r) for r in self.runs]

    def values(self, metric: str) -> dict[int, float]:
        """seed -> the metric's value, for the runs that have it."""
        out = {}
        for run in self.runs:
            v = metric_value(run.summary, metric)
            if v is not None:
                out[seed_of(run)] = v
        return out


def seed_of(run) -> int:
    if run.summary.get("seed") is not None:
        return int(run.summary["seed"])
    return int(run.config.get("seed", 0)) if run.config is not None else 0


def metric_value(summary: dict, metric: str) -> float | None:
    for name, section, key in METRICS:
        if name == metric:
            entry = (summary.get(section) or {}).get(key)
            if isinstance(entry, dict):  # best: {"value": ..., "epoch": ...}
                entry = entry.get("value")
            return float(entry) if entry is not None and math.isfinite(float(entry)) else None
    raise UserError(f"metric {metric!r} is not reported; use one of {', '.join(METRIC_NAMES)}.")


def no_spread(n: int) -> str:
    return f"no spread in {n} runs"


def too_few_note(n: int) -> str:
    """What a group of fewer than MIN_RUNS_FOR_VERDICT runs says once, and how many would do."""
    return (f"{n} runs: its intervals are not informative (Student's t on {n - 1} degree(s) of freedom) and "
            f"it gets no verdict; run at least {MIN_RUNS_FOR_VERDICT} replicates (replicates={MIN_RUNS_FOR_VERDICT}, "
            f"5 for a tighter interval)")


def mean_interval(values, bounds: tuple[float, float] | None = ACCURACY_BOUNDS) -> dict:
    """n, mean, std (n-1), the 95 % Student t interval of the mean clipped to `bounds`, and a note
    where that interval means less than it seems (1 run, no spread, too few runs)."""
    # deferred: scipy.stats takes ~0.8 s to import, which every run's start would pay (the main
    # command imports the report for its sweeps)
    from scipy import stats

    x = np.asarray(list(values), dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                "note": f"{n} run: no interval"}
    std = float(x.std(ddof=1))
    if std == 0.0:
        return {"n": n, "mean": mean, "std": std, "ci_low": math.nan, "ci_high": math.nan, "note": no_spread(n)}
    low, high = stats.t.interval(CONFIDENCE, n - 1, loc=mean, scale=stats.sem(x))
    if bounds is not None:
        low, high = max(float(low), bounds[0]), min(float(high), bounds[1])
    note = too_few_note(n) if n < MIN_RUNS_FOR_VERDICT else ""
    return {"n": n, "mean": mean, "std": std, "ci_low": float(low), "ci_high": float(high), "note": note}


def compare(a: dict[int, float], b: dict[int, float], paired: bool | None = None) -> dict:
    """A against B (seed -> value each). paired=None pairs when both ran the same seeds; True insists.
    The verdict here treats it as the only comparison; `comparison_rows` adjusts a family's."""
    # deferred: scipy.stats (see mean_interval)
    from scipy import stats

    n_a, n_b = len(a), len(b)
    if n_a < 2 or n_b < 2:
        raise UserError(f"a comparison needs at least 2 runs per group (seeds as replicates); this one has "
                        f"{n_a} and {n_b}. Run more seeds: add replicates=3 (or seed=0,1,2) to the -m command.")
    same_seeds = set(a) == set(b)
    if paired and not same_seeds:
        raise UserError(f"a paired comparison needs the same seeds in both groups; they ran {sorted(a)} and "
                        f"{sorted(b)}. Run the missing seeds, or compare unpaired (leave out --paired).")
    paired = same_seeds if paired is None else paired
    xa, xb = np.array(list(a.values()), float), np.array(list(b.values()), float)
    notes = [f"no spread in {side} ({len(x)} runs)" for side, x in (("A", xa), ("B", xb)) if np.all(x == x[0])]
    low = high = p_value = math.nan  # where the test is undefined: no spread to judge a difference by
    if paired:
        seeds = sorted(a)
        xa, xb = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
        diff = xa - xb
        diff_mean = float(diff.mean())
        if np.all(diff == diff[0]):
            notes.append(f"no spread in the {len(diff)} paired differences: no test")
        else:
            res = stats.ttest_rel(xa, xb)
            low, high = res.confidence_interval(CONFIDENCE)
            p_value = float(res.pvalue)
    else:
        diff_mean = float(xa.mean() - xb.mean())
        if len(notes) == 2:
            notes.append("no test")
        else:
            res = stats.ttest_ind(xa, xb, equal_var=False)
            low, high = res.confidence_interval(CONFIDENCE)
            p_value = float(res.pvalue)
    # A difference of two accuracies lies in [-1, 1]; its interval is clipped there as theirs are to [0, 1].
    low, high = max(float(low), -1.0), min(float(high), 1.0)
    u = stats.mannwhitneyu(xa, xb, alternative="two-sided").statistic
    p_better = float(u) / (len(xa) * len(xb))
    return {"n_a": n_a, "n_b": n_b, "paired": bool(paired), "diff_mean": diff_mean, "ci_low": float(low),
            "ci_high": float(high), "p_value": p_value, "p_holm": p_value, "p_better": p_better,
            "verdict": verdict(diff_mean, p_value, p_better, min(n_a, n_b)), "note": "; ".join(notes)}


def verdict(diff_mean: float, p_value: float, p_better: float, n: int) -> str:
    """In words, from the (adjusted) p-value, the difference's sign and P(A > B); n is the smaller group's."""
    if n < MIN_RUNS_FOR_VERDICT:
        return f"no verdict (n={n} < {MIN_RUNS_FOR_VERDICT} runs per group)"
    if not math.isfinite(p_value):
        return "no verdict (no spread)"
    if p_value < ALPHA and diff_mean > 0 and p_better >= P_BETTER_THRESHOLD:
        return "a better"
    if p_value < ALPHA and diff_mean < 0 and p_better <= 1 - P_BETTER_THRESHOLD:
        return "b better"
    return f"no detectable difference (n={n})"


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN and is not counted): the
    i-th smallest of m is multiplied by m - i + 1, then made monotone and capped at 1."""
    finite = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    m, out, running = len(finite), [math.nan] * len(p_values), 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def adjust_family(rows: list[dict]) -> None:
    """Holm-adjust the p-values of each metric's comparisons (one family per metric) and give every
    row its verdict from the adjusted one."""
    for metric in dict.fromkeys(r["metric"] for r in rows):
        family = [r for r in rows if r["metric"] == metric]
        for row, adjusted in zip(family, holm([r["p_value"] for r in family])):
            row["p_holm"] = adjusted
            row["verdict"] = verdict(row["diff_mean"], adjusted, row["p_better"], min(row["n_a"], row["n_b"]))


# -- groups of runs ----------------------------------------------------------------------------------

def group_runs(runs, finished_only: bool = True) -> list[Group]:
    """Finished runs (all runs, for the learning curves) grouped by their resolved settings without
    the seed; labelled by what tells the groups apart (the runs' labels without their seed)."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        if finished_only and (run.status != "finished" or run.config is None):
            continue
        key = _settings_key(run)
        if key not in groups:
            groups[key] = Group(label=_group_label(run), key=key)
        groups[key].runs.append(run)
    taken: dict[str, int] = {}
    for g in groups.values():
        taken[g.label] = taken.get(g.label, 0) + 1
    for i, g in enumerate(groups.values()):
        if taken[g.label] > 1:
            g.label = f"{g.label} #{i + 1}"
    return list(groups.values())


def _settings_key(run) -> tuple:
    try:
        return settings_without_seed(run.config)
    except Exception:  # no config, or one that does not resolve (a run that died early): a group of its own
        return (("run", str(run.path)),)


def _group_label(run) -> str:
    words = [w for w in run.label.split(" (")[0].split() if not w.startswith("seed=")]
    return " ".join(words) or run.record


def group_rows(groups: list[Group]) -> list[dict]:
    rows = []
    for g in groups:
        for metric in METRIC_NAMES:
            values = g.values(metric)
            if not values:
                continue
            rows.append({"group": g.label, "metric": metric, **mean_interval(values.values()),
                         "seeds": " ".join(map(str, sorted(values)))})
    return rows


def differing_keys(a: Group, b: Group) -> list[str]:
    da, db = dict(a.key), dict(b.key)
    return sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))


def comparison_rows(groups: list[Group], baseline: str | None = None, paired: bool | None = None,
                    metrics=METRIC_NAMES, strict: bool = True) -> tuple[list[dict], list[str]]:
    """Every pair of groups (A listed first), or each group against `baseline` (as B). strict: a group
    of fewer than 2 runs is an error; otherwise it is left out with a note."""
    by_label = {g.label: g for g in groups}
    if baseline is not None and baseline not in by_label:
        raise UserError(f"--baseline {baseline!r} is not a group here; the groups are: "
                        f"{', '.join(repr(l) for l in by_label) or 'none (no finished run)'}.")
    notes = []
    usable = []
    for g in groups:
        if len(g.runs) >= 2:
            usable.append(g)
            if len(g.runs) < MIN_RUNS_FOR_VERDICT:
                notes.append(f"`{g.label}`, {too_few_note(len(g.runs))}.")
        elif strict:
            raise UserError(f"group {g.label!r} has {len(g.runs)} finished run(s); a comparison needs at least "
                            f"2 per group. Run more seeds (replicates=3 with -m), or leave it out of the paths.")
        else:
            notes.append(f"`{g.label}` has 1 run: no interval and no comparison (add replicates=3 to the sweep).")
    if baseline is not None:
        base = by_label[baseline]
        if base not in usable:
            return [], notes
        pairs = [(g, base) for g in usable if g is not base]
    else:
        pairs = [(usable[i], usable[j]) for i in range(len(usable)) for j in range(i + 1, len(usable))]
    rows = []
    for a, b in pairs:
        if paired:
            keys = differing_keys(a, b)
            if len(keys) != 1:
                raise UserError(f"a paired comparison isolates one change, but {a.label!r} and {b.label!r} "
                                f"differ in {len(keys)} keys ({', '.join(keys[:8])}"
                                f"{', ...' if len(keys) > 8 else ''}). Compare them unpaired (leave out "
                                f"--paired), or compare groups that differ in one key.")
        for metric in metrics:
            va, vb = a.values(metric), b.values(metric)
            if len(va) < 2 or len(vb) < 2:
                continue
            rows.append({"a": a.label, "b": b.label, "metric": metric, **compare(va, vb, paired)})
    adjust_family(rows)
    return rows, notes
