"""Seeds as replicates: group statistics and comparisons against hand computations and scipy's own
functions, the data stream's independence of the network, and a real 2 x 3 multirun's report."""
import csv
import math

import numpy as np
import pytest
import torch
from scipy import stats

from aprelu_exp.errors import UserError
from aprelu_exp.report.evidence import (COMPARISON_COLUMNS, GROUP_COLUMNS, compare, comparison_rows, holm,
                                        mean_interval, verdict)
from inprocess import run_cli, run_module


# -- statistics --------------------------------------------------------------------------------------

def test_group_interval_is_students_t_by_hand():
    # mean 0.6, s = 0.1, sem = 0.1 / sqrt(3), t(0.975, 2) = 4.302653 -> 0.6 -+ 0.248414
    out = mean_interval([0.5, 0.6, 0.7])
    assert out["n"] == 3 and out["mean"] == pytest.approx(0.6) and out["std"] == pytest.approx(0.1)
    assert out["ci_low"] == pytest.approx(0.351586, abs=1e-6) and out["ci_high"] == pytest.approx(0.848414, abs=1e-6)
    x = [0.41, 0.47, 0.44, 0.52, 0.39]
    low, high = stats.t.interval(0.95, 4, loc=np.mean(x), scale=stats.sem(x))
    assert (mean_interval(x)["ci_low"], mean_interval(x)["ci_high"]) == pytest.approx((low, high))
    one = mean_interval([0.5])
    assert one["n"] == 1 and math.isnan(one["ci_low"]) and math.isnan(one["std"])


def test_paired_comparison_by_hand():
    a = {0: 0.6, 1: 0.7, 2: 0.8}
    b = {0: 0.5, 1: 0.55, 2: 0.65}
    out = compare(a, b)
    # differences 0.10, 0.15, 0.15: mean 0.13333, s 0.028868, sem 0.016667, t = 8.0 on 2 df
    assert out["paired"] is True and out["n_a"] == out["n_b"] == 3
    assert out["diff_mean"] == pytest.approx(0.133333, abs=1e-6)
    assert out["ci_low"] == pytest.approx(0.133333 - 4.302653 * 0.0166667, abs=1e-5)
    assert out["ci_high"] == pytest.approx(0.133333 + 4.302653 * 0.0166667, abs=1e-5)
    assert out["p_value"] == pytest.approx(2 * stats.t.sf(8.0, 2))  # 0.01527
    # P(A > B) over all 9 pairs: 0.6 beats 0.5 and 0.55; 0.7 and 0.8 beat all three -> 8/9
    assert out["p_better"] == pytest.approx(8 / 9)
    assert out["verdict"] == "a better"
    assert compare(b, a)["verdict"] == "b better"


def test_unpaired_comparison_is_welchs_and_ties_count_half():
    a = {0: 0.61, 1: 0.72, 2: 0.66}
    b = {3: 0.58, 4: 0.69, 5: 0.60, 6: 0.63}
    out = compare(a, b)
    ref = stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
    assert out["paired"] is False and out["p_value"] == pytest.approx(ref.pvalue)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert out["diff_mean"] == pytest.approx(np.mean([0.61, 0.72, 0.66]) - np.mean([0.58, 0.69, 0.60, 0.63]))
    # 1 < 2 three times, 2 = 2 three times (half each), 3 > 2 three times: (0 + 1.5 + 3) / 9
    assert compare({0: 1.0, 1: 2.0, 2: 3.0}, {0: 2.0, 1: 2.0, 2: 2.0})["p_better"] == pytest.approx(0.5)


def test_verdict_needs_both_a_detectable_difference_and_a_large_p_better():
    # (difference A - B, its adjusted p-value, P(A > B), the smaller group's n)
    assert verdict(0.03, 0.01, 0.9, 3) == "a better"
    assert verdict(0.03, 0.01, 0.6, 3) == "no detectable difference (n=3)"
    assert verdict(0.03, 0.06, 1.0, 3) == "no detectable difference (n=3)"
    assert verdict(-0.03, 0.01, 0.1, 5) == "b better"
    assert verdict(0.03, 0.001, 1.0, 2) == "no verdict (n=2 < 3 runs per group)"
    assert verdict(0.03, math.nan, 1.0, 3) == "no verdict (no spread)"


def test_accuracy_intervals_stay_inside_0_and_1_at_small_n():
    # scipy's t interval at n=2 leaves [0, 1] (0.373 .. 1.517 and -0.331 .. 0.431); clipped to it.
    for values in ([0.90, 0.99], [0.02, 0.08]):
        low, high = stats.t.interval(0.95, 1, loc=np.mean(values), scale=stats.sem(values))
        out = mean_interval(values)
        assert (out["ci_low"], out["ci_high"]) == pytest.approx((max(low, 0.0), min(high, 1.0)))
        assert 0.0 <= out["ci_low"] <= out["ci_high"] <= 1.0
        assert "not informative" in out["note"] and "replicates=3" in out["note"]
    assert mean_interval([0.90, 0.99])["ci_high"] == 1.0 and mean_interval([0.02, 0.08])["ci_low"] == 0.0
    # Three equal values: no zero-width interval, but the words.
    same = mean_interval([0.5, 0.5, 0.5])
    assert math.isnan(same["ci_low"]) and math.isnan(same["ci_high"]) and same["note"] == "no spread in 3 runs"
    assert mean_interval([0.5, 0.6, 0.7])["note"] == ""


def test_holm_adjustment_by_hand():
    # m = 4: sorted 0.01, 0.03, 0.04, 0.20 -> 4 x 0.01 = 0.04; 3 x 0.03 = 0.09; 2 x 0.04 = 0.08, raised to
    # 0.09 (monotone); 1 x 0.20 = 0.20. Back in the given order:
    assert holm([0.01, 0.04, 0.03, 0.20]) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    # capped at 1, a NaN (no test) left out of m: m = 2 -> 2 x 0.3 = 0.6, then max(0.6, 0.7) = 0.7
    out = holm([0.7, math.nan, 0.3])
    assert out[0] == pytest.approx(0.7) and math.isnan(out[1]) and out[2] == pytest.approx(0.6)
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == [0.02]


def _group(label, values):
    from aprelu_exp.report.evidence import Group

    g = Group(label=label, key=(label,))
    g.runs = [type("Run", (), {"summary": {"seed": s, "final": {"val_acc": v}}, "config": None})()
              for s, v in values.items()]
    return g


def test_a_report_family_is_holm_adjusted_and_ties_are_marked():
    # Four groups, six paired comparisons of final_val_acc. Raw p (scipy's ttest_rel): a-b 0.015268,
    # a-c 0.000126, a-d 0.084954, b-c 0.012666, b-d 0.785166, c-d 0.042927. Holm by hand: sorted,
    # times 6, 5, 4, 3, 2, 1 and kept monotone: a-c 0.000757, b-c 0.063332, a-b max(0.061072, 0.063332),
    # c-d 0.128780, a-d 0.169908, b-d 0.785166.
    a = _group("a", {0: 0.60, 1: 0.70, 2: 0.80})
    b = _group("b", {0: 0.50, 1: 0.55, 2: 0.65})
    c = _group("c", {0: 0.30, 1: 0.41, 2: 0.50})
    d = _group("d", {0: 0.52, 1: 0.61, 2: 0.60})
    rows, _ = comparison_rows([a, b, c, d], metrics=("final_val_acc",))
    by_pair = {(r["a"], r["b"]): r for r in rows}
    for pair, x, y in ((("a", "b"), a, b), (("c", "d"), c, d)):
        ref = stats.ttest_rel(list(x.values("final_val_acc").values()), list(y.values("final_val_acc").values()))
        assert by_pair[pair]["p_value"] == pytest.approx(ref.pvalue)
    expected = {("a", "c"): 0.000757, ("b", "c"): 0.063332, ("a", "b"): 0.063332, ("c", "d"): 0.128780,
                ("a", "d"): 0.169908, ("b", "d"): 0.785166}
    assert {k: r["p_holm"] for k, r in by_pair.items()} == pytest.approx(expected, abs=2e-6)
    # a vs b alone would read "a better" (raw p 0.015, every run of a ahead); in this family it is not.
    assert compare(a.values("final_val_acc"), b.values("final_val_acc"))["verdict"] == "a better"
    assert by_pair[("a", "b")]["verdict"] == "no detectable difference (n=3)"
    assert by_pair[("a", "c")]["verdict"] == "a better"
    # Ties: a group without spread is marked; two without spread get no test and no verdict.
    flat = _group("flat", {0: 0.5, 1: 0.5, 2: 0.5})
    flat2 = _group("flat2", {0: 0.4, 1: 0.4, 2: 0.4})
    rows, _ = comparison_rows([flat, b], metrics=("final_val_acc",))
    assert "no spread in A (3 runs)" in rows[0]["note"] and math.isfinite(rows[0]["p_value"])
    rows, _ = comparison_rows([flat, flat2], metrics=("final_val_acc",))
    assert math.isnan(rows[0]["p_value"]) and rows[0]["verdict"] == "no verdict (no spread)"
    assert "no spread in the 3 paired differences" in rows[0]["note"]
    # Two groups of two: intervals inside [0, 1], a note by each group, never "better".
    big = _group("big", {0: 0.95, 1: 0.99})
    small = _group("small", {0: 0.02, 1: 0.08})
    rows, notes = comparison_rows([big, small], metrics=("final_val_acc",), strict=False)
    assert rows[0]["verdict"] == "no verdict (n=2 < 3 runs per group)"
    assert len(notes) == 2 and all("2 runs: its intervals are not informative" in n for n in notes)


def test_comparisons_refuse_too_few_runs_and_unpairable_seeds():
    with pytest.raises(UserError, match="at least 2 runs per group"):
        compare({0: 0.5}, {0: 0.4, 1: 0.45})
    with pytest.raises(UserError, match="same seeds in both groups"):
        compare({0: 0.5, 1: 0.6}, {2: 0.4, 3: 0.45}, paired=True)


# -- the data stream is the seed's, not the network's --------------------------------------------------

def _batches(make_cfg, cifar, tmp_path, name, *overrides):
    from aprelu_exp.data.datamodule import BatchLoader
    from aprelu_exp.train import train

    seen = []
    original = BatchLoader.__iter__

    def spy(self):
        for x, y in original(self):
            if self.shuffle:  # the training stream (evaluation is in order anyway)
                seen.append((x.double().sum().item(), x[:, :, 5, 7].double().sum().item(), y.tolist()))
            yield x, y

    BatchLoader.__iter__ = spy
    try:
        train(make_cfg("data.train_subset=200", "data.test_subset=100", "trainer.max_epochs=2",
                       "trainer.limit_val_batches=1", *overrides), tmp_path / name, arrays=cifar)
    finally:
        BatchLoader.__iter__ = original
    return seen


def test_the_seed_fixes_the_batches_whatever_the_network(make_cfg, cifar, tmp_path):
    a = _batches(make_cfg, cifar, tmp_path, "a", "experiment=record_16", "seed=3")
    b = _batches(make_cfg, cifar, tmp_path, "b", "experiment=record_15", "model/activation=relu",
                 "model.reduction=1", "seed=3")
    c = _batches(make_cfg, cifar, tmp_path, "c", "experiment=record_16", "seed=4")
    assert len(a) == 4  # 2 batches x 2 epochs, augmented
    assert a == b  # another network, the same images, augmentation draws and labels, in the same order
    assert a != c and [s[2] for s in a] != [s[2] for s in c]


# -- a real 2 configs x 3 seeds multirun -----------------------------------------------------------------

@pytest.fixture(scope="module")
def replicated_sweep(tmp_path_factory, cifar_root):
    import os

    root = tmp_path_factory.mktemp("replicates")
    env = {**os.environ, "APRELU_DATA_ROOT": str(cifar_root)}
    out = run_cli(["-m", f"run_root={root}", "experiment=record_15,record_16", "replicates=3",
                   "data.train_subset=300", "data.test_subset=200", "trainer.max_epochs=1",
                   "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=none"], env)
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep,) = list((root / "multirun").iterdir())
    return root, sweep, env


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_replicates_give_groups_of_three_with_scipy_intervals(replicated_sweep):
    _, sweep, _ = replicated_sweep
    runs = _csv(sweep / "runs.csv")
    assert len(runs) == 6 and {r["status"] for r in runs} == {"finished"}
    groups = _csv(sweep / "groups.csv")
    assert tuple(groups[0].keys()) == GROUP_COLUMNS
    assert {g["group"] for g in groups} == {"record_15", "record_16"}
    assert {g["metric"] for g in groups} >= {"final_val_acc", "final_val_acc_article", "final_train_acc",
                                             "best_val_acc_article"}
    for g in groups:
        assert g["n"] == "3" and g["seeds"] == "0 1 2"
    # Against the runs' own final values (runs.csv), through scipy directly.
    for record in ("record_15", "record_16"):
        values = [float(r["final_val_acc_article"]) for r in runs if r["record"] == record]
        row = next(g for g in groups if g["group"] == record and g["metric"] == "final_val_acc_article")
        low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
        assert float(row["mean"]) == pytest.approx(np.mean(values), abs=1e-4)
        assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx((low, high), abs=1e-4)
    comparisons = _csv(sweep / "comparisons.csv")
    assert tuple(comparisons[0].keys()) == COMPARISON_COLUMNS
    row = next(c for c in comparisons if c["metric"] == "final_val_acc_article")
    assert (row["a"], row["b"], row["n_a"], row["n_b"], row["paired"]) == ("record_15", "record_16", "3", "3", "True")
    by_seed = {rec: [float(r["final_val_acc_article"]) for r in sorted(runs, key=lambda r: r["label"])
                     if r["record"] == rec] for rec in ("record_15", "record_16")}
    ref = stats.ttest_rel(by_seed["record_15"], by_seed["record_16"])
    assert float(row["p_value"]) == pytest.approx(ref.pvalue, abs=1e-4)
    # One comparison per metric: Holm's p is scipy's own; the verdict follows from it (rule tested above).
    assert float(row["p_holm"]) == pytest.approx(ref.pvalue, abs=1e-4)
    expected = verdict(float(row["diff_mean"]), ref.pvalue, float(row["p_better"]), 3)
    assert row["verdict"] == expected
    report = (sweep / "report.md").read_text()
    assert "## Groups: runs that differ only in their seed" in report and "## Comparisons" in report
    assert (sweep / "groups_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("report.md", "runs.csv", "groups.csv", "comparisons.csv"):
        assert str(sweep.parent.parent) not in (sweep / name).read_text(), name  # no absolute run root


def test_report_baseline_and_paired_refusals(replicated_sweep, tmp_path):
    root, sweep, _ = replicated_sweep
    ok = run_module("aprelu_exp.report", [sweep, "--out", tmp_path / "ok", "--baseline", "record_16"])
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "record_15 vs record_16, final_val_acc_article" in ok.stdout
    bad = run_module("aprelu_exp.report", [sweep, "--out", tmp_path / "r", "--baseline", "record_99"])
    assert bad.returncode == 2 and "--baseline 'record_99' is not a group" in bad.stderr
    paired = run_module("aprelu_exp.report", [sweep, "--out", tmp_path / "p", "--paired"])
    assert paired.returncode == 2 and "isolates one change" in paired.stderr and "model.reduction" in paired.stderr
    one = next(p for p in sweep.iterdir() if p.name.startswith("0_"))
    single = run_module("aprelu_exp.report", [one, sweep / "3_record_16", "--out", tmp_path / "s",
                                              "--baseline", "record_16"])
    assert single.returncode == 2 and "a comparison needs at least 2" in single.stderr
    for out in ("r", "p", "s"):
        assert not (tmp_path / out).exists()


def test_replicates_refusals(cli_env, tmp_path):
    both = run_cli(["-m", f"run_root={tmp_path}", "replicates=3", "seed=0,1", "trainer.max_epochs=1"], cli_env)
    assert both.returncode == 2 and "replicates=3 and a seed sweep" in both.stderr
    single = run_cli([f"run_root={tmp_path}", "replicates=3", "trainer.max_epochs=1"], cli_env)
    assert single.returncode == 2 and "add -m" in single.stderr
    assert not list(tmp_path.rglob("summary.json"))
