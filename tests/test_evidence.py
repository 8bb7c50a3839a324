"""Seeds as replicates: group statistics and comparisons against hand computations and scipy's own
functions, the data stream's independence of the network, and a real 2 x 3 multirun's report."""
import csv
import math

import numpy as np
import pytest
import torch
from scipy import stats

from aprelu_exp.errors import UserError
from aprelu_exp.report.evidence import (COMPARISON_COLUMNS, GROUP_COLUMNS, compare, mean_interval, verdict)
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


def test_verdict_needs_both_an_interval_clear_of_zero_and_a_large_p_better():
    assert verdict(0.01, 0.05, 0.9, 3) == "a better"
    assert verdict(0.01, 0.05, 0.6, 3) == "no detectable difference (n=3)"
    assert verdict(-0.01, 0.05, 1.0, 3) == "no detectable difference (n=3)"
    assert verdict(-0.05, -0.01, 0.1, 5) == "b better"


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
    assert row["verdict"] in ("a better", "b better", "no detectable difference (n=3)")
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
