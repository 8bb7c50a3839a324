"""`python -m aprelu_exp.bench packed`: the step it times is each run's own training step, and its
figures are what it says they are (the summed rate, the per-run rate, the hours of a 5000-epoch
record 16 at that rate)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from aprelu_exp.bench.packed import Stepper
from aprelu_exp.compose import compose_record
from inprocess import run_module
from test_cli import REPO


def test_the_timed_packed_step_is_each_runs_own_sgd_step():
    # Against a hand-written solo loop: same seeds, same batches, torch's SGD with the record's
    # momentum and Nesterov, the mean cross entropy of each run's own batch. Two steps of 20 images
    # agree to float32 rounding (under 1e-6 here); with fewer images a batch norm amplifies the
    # rounding of the grouped convolution's backward step by step. A wrong reduction (a sum over the
    # batch, one run's loss for all) is off by orders of magnitude more.
    cfg = compose_record("record_16", ["data.batch_size=20"])
    packed = Stepper(cfg, 3, packed=True, device=torch.device("cpu"), bf16=False, seed=4)
    solo = Stepper(cfg, 3, packed=False, device=torch.device("cpu"), bf16=False, seed=4)
    opts = [torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True) for net in solo.models]
    assert torch.equal(packed.x, solo.x) and packed.images_per_step == 60
    for _ in range(2):
        packed.step()
        for i, (net, opt) in enumerate(zip(solo.models, opts)):
            opt.zero_grad()
            F.cross_entropy(net(solo.x[i]), solo.y[i]).backward()
            opt.step()
    (model,) = packed.models
    for i, net in enumerate(solo.models):
        views = model.run_views(i)
        for name, t in net.state_dict().items():
            torch.testing.assert_close(views[name], t, rtol=1e-4, atol=1e-5, msg=f"run {i} {name}")


@pytest.mark.parametrize("args, says", [
    (["--runs", "0"], "every number of runs must be 1 or more"),
    (["--runs", "a,b"], "give numbers of runs separated by commas"),
    (["--modes", "packed,fused"], "--modes fused: choose from packed, solo, processes"),
])
def test_bad_arguments_are_refused(args, says):
    out = run_module("aprelu_exp.bench", ["packed", *args])
    assert out.returncode == 2 and says in out.stderr


@pytest.mark.slow
def test_the_comparison_runs_all_three_ways_and_its_figures_add_up(cli_env, tmp_path):
    out = tmp_path / "packed.json"
    done = subprocess.run([sys.executable, "-m", "aprelu_exp.bench", "packed", "data.batch_size=4", "--runs", "1,2",
                           "--steps", "1", "--windows", "2", "--warmup", "0", "--out", str(out)],
                          cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["kind"] == "bench_packed" and report["batch_per_run"] == 4 and report["precision"] == "fp32"
    assert set(report["runs"]) == {"1", "2"}
    for n, r in report["runs"].items():
        for mode in ("packed", "solo", "processes"):
            m = r[mode]
            assert m["min"] <= m["summed_images_per_s"] <= m["max"]
            assert m["per_run_images_per_s"] == pytest.approx(m["summed_images_per_s"] / int(n), abs=0.1)
            hours = 5000 * 50_000 / (m["summed_images_per_s"] / int(n)) / 3600
            assert m["record16_5000_epochs_h_per_run"] == pytest.approx(hours, rel=0.01)
        assert r["packed_over_processes"] == pytest.approx(
            r["packed"]["summed_images_per_s"] / r["processes"]["summed_images_per_s"], abs=0.01)
    assert "N=2: over solo in turn" in done.stdout
