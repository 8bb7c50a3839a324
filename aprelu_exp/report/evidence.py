"""Seeds as replicates: runs that differ only in `seed` form a group; each group gets a mean with a
95 % interval, and groups are compared with a difference, its interval, a p-value, P(A > B) and a
verdict in words.

Methods (scipy.stats; see EVIDENCE in the README):
* a group's interval is Student's t for the mean, `t.interval(0.95, n - 1, mean, sem)`: right at the
  3 to 5 seeds a CPU allows, where a bootstrap's interval is unreliable;
* a comparison is paired (`ttest_rel` on the per-seed differences) when both groups ran the same
  seeds, so the data order and augmentation draws they share cancel out; otherwise Welch's
  `ttest_ind(equal_var=False)`. The interval is the test's own for the mean difference;
* `p_better` is P(a run of A beats a run of B) over all pairs of runs, ties counting half: the
  Mann-Whitney U of A divided by n_A * n_B (Bouthillier et al., MLSys 2021);
* the verdict: "a better" when the difference's interval lies above 0 and p_better >= 0.75 (a
  difference both detectable and large enough to matter, as Bouthillier et al. propose), "b better"
  symmetrically, else "no detectable difference (n=...)".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from aprelu_exp.errors import UserError
from aprelu_exp.settings import settings_without_seed

CONFIDENCE = 0.95
P_BETTER_THRESHOLD = 0.75
# (column name, summary section, metric)
METRICS = (
    ("final_val_acc", "final", "val_acc"),
    ("final_val_acc_article", "final", "val_acc_article"),
    ("final_train_acc", "final", "train_acc"),
    ("best_val_acc_article", "best", "val_acc_article"),
)
METRIC_NAMES = tuple(m[0] for m in METRICS)
GROUP_COLUMNS = ("group", "n", "metric", "mean", "std", "ci_low", "ci_high", "seeds")
COMPARISON_COLUMNS = ("a", "b", "metric", "n_a", "n_b", "paired", "diff_mean", "ci_low", "ci_high",
                      "p_value", "p_better", "verdict")


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


def mean_interval(values) -> dict:
    """n, mean, std (n-1) and the 95 % Student t interval of the mean."""
    # deferred: scipy.stats takes ~0.8 s to import, which every run's start would pay (the main
    # command imports the report for its sweeps)
    from scipy import stats

    x = np.asarray(list(values), dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    std = float(x.std(ddof=1))
    if std == 0.0:
        low = high = mean
    else:
        low, high = stats.t.interval(CONFIDENCE, n - 1, loc=mean, scale=stats.sem(x))
    return {"n": n, "mean": mean, "std": std, "ci_low": float(low), "ci_high": float(high)}


def compare(a: dict[int, float], b: dict[int, float], paired: bool | None = None) -> dict:
    """A against B (seed -> value each). paired=None pairs when both ran the same seeds; True insists."""
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
    if paired:
        seeds = sorted(a)
        xa, xb = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
        diff = xa - xb
        diff_mean = float(diff.mean())
        if np.all(diff == diff[0]):  # no spread: the t statistic is undefined, the interval a point
            low = high = diff_mean
            p_value = 1.0 if diff_mean == 0 else 0.0
        else:
            res = stats.ttest_rel(xa, xb)
            low, high = res.confidence_interval(CONFIDENCE)
            p_value = float(res.pvalue)
    else:
        diff_mean = float(xa.mean() - xb.mean())
        if xa.std() == 0 and xb.std() == 0:
            low = high = diff_mean
            p_value = 1.0 if diff_mean == 0 else 0.0
        else:
            res = stats.ttest_ind(xa, xb, equal_var=False)
            low, high = res.confidence_interval(CONFIDENCE)
            p_value = float(res.pvalue)
    u = stats.mannwhitneyu(xa, xb, alternative="two-sided").statistic
    p_better = float(u) / (len(xa) * len(xb))
    return {"n_a": n_a, "n_b": n_b, "paired": bool(paired), "diff_mean": diff_mean, "ci_low": float(low),
            "ci_high": float(high), "p_value": p_value, "p_better": p_better,
            "verdict": verdict(float(low), float(high), p_better, min(n_a, n_b))}


def verdict(ci_low: float, ci_high: float, p_better: float, n: int) -> str:
    if ci_low > 0 and p_better >= P_BETTER_THRESHOLD:
        return "a better"
    if ci_high < 0 and p_better <= 1 - P_BETTER_THRESHOLD:
        return "b better"
    return f"no detectable difference (n={n})"


# -- groups of runs ----------------------------------------------------------------------------------

def group_runs(runs) -> list[Group]:
    """Finished runs grouped by their resolved settings without the seed; labelled by what tells the
    groups apart (the runs' labels without their seed)."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        if run.status != "finished" or run.config is None:
            continue
        key = settings_without_seed(run.config)
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
    return rows, notes
