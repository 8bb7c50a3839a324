"""perf=fast measures: the decision from given rates, its cache, the probe itself, and a tiny run."""
import json
import subprocess
import sys

import pytest
import torch

from aprelu_exp.training import precision as prec
from aprelu_exp.training import precision_probe as pp
from aprelu_exp.training.precision import perf_switches
from test_cli import REPO, run_dirs
from test_precision import EPYC_AVX2_ONLY, ZEN4_AVX512_BF16, force_cpu

# Training images/s the bench measured (docs/performance.md, the bench table): Zen 4 fp32 828, bf16 1,248;
# the Intel Xeon with AVX512_BF16 fp32 709, bf16 610.
ZEN4_RATES = {"32-true": 828.0, "bf16-mixed": 1248.0}
INTEL_RATES = {"32-true": 709.0, "bf16-mixed": 610.0}


def test_the_faster_precision_is_chosen_and_both_rates_kept():
    intel = pp.decide(709.0, 610.0)
    assert intel["choice"] == "32-true" and intel["rates"] == INTEL_RATES
    assert "fp32" in intel["why"] and "709" in intel["why"] and "610" in intel["why"] and "0.86x" in intel["why"]
    zen4 = pp.decide(828.0, 1248.0)
    assert zen4["choice"] == "bf16-mixed" and zen4["rates"] == ZEN4_RATES and "1.51x" in zen4["why"]
    # A tie (within the probe's scatter) keeps the article's fp32: bf16 must be 5 % faster.
    assert pp.decide(1000.0, 1040.0)["choice"] == "32-true"
    assert pp.decide(1000.0, 1050.0)["choice"] == "bf16-mixed"


class Measured:
    """A stand-in for the timed steps: given rates, and how often it was asked."""

    def __init__(self, rates):
        self.rates, self.calls = rates, 0

    def __call__(self, cfg, device, compile_net, channels_last):
        self.calls += 1
        return dict(self.rates)


def test_the_answer_is_cached_per_device_torch_version_and_compile_switch(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg()
    measured = Measured(INTEL_RATES)
    monkeypatch.setattr(pp, "cpu_model", lambda: "Intel(R) Xeon(R) Platinum 8481C")
    first = pp.probe("cpu", cfg, compile_net=True, channels_last=False, folder=tmp_path, measure_fn=measured)
    assert (first["cached"], first["choice"], measured.calls) == (False, "32-true", 1)
    assert first["rates"] == INTEL_RATES and first["probe_s"] >= 0
    stored = json.loads((tmp_path / "precision_probe.json").read_text())
    key = f"Intel(R) Xeon(R) Platinum 8481C | torch {torch.__version__} | compiled"
    assert list(stored) == [key] and stored[key]["choice"] == "32-true"

    again = pp.probe("cpu", cfg, compile_net=True, channels_last=False, folder=tmp_path, measure_fn=measured)
    assert (again["cached"], again["choice"], again["rates"], measured.calls) == (True, "32-true", INTEL_RATES, 1)

    # Another torch, another CPU model, or an eager run: each misses and is measured anew.
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    pp.probe("cpu", cfg, compile_net=True, channels_last=False, folder=tmp_path, measure_fn=measured)
    monkeypatch.setattr(pp, "cpu_model", lambda: "AMD EPYC 9R14 96-Core Processor")
    pp.probe("cpu", cfg, compile_net=True, channels_last=False, folder=tmp_path, measure_fn=measured)
    pp.probe("cpu", cfg, compile_net=False, channels_last=False, folder=tmp_path, measure_fn=measured)
    assert measured.calls == 4
    assert len(json.loads((tmp_path / "precision_probe.json").read_text())) == 4


def test_a_damaged_cache_is_measured_again_and_rewritten(make_cfg, tmp_path):
    (tmp_path / "precision_probe.json").write_text("{not json")
    measured = Measured(ZEN4_RATES)
    found = pp.probe("cpu", make_cfg(), compile_net=False, channels_last=False, folder=tmp_path, measure_fn=measured)
    assert (found["cached"], found["choice"], measured.calls) == (False, "bf16-mixed", 1)
    assert json.loads((tmp_path / "precision_probe.json").read_text())[found["key"]]["choice"] == "bf16-mixed"


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("APRELU_CACHE_DIR", str(tmp_path / "mine"))
    assert pp.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("APRELU_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pp.cache_dir() == tmp_path / "xdg" / "aprelu-exp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pp.cache_dir() == tmp_path / "home" / ".cache" / "aprelu-exp"


def _never(*args, **kwargs):
    raise AssertionError("probed where it must not")


@pytest.mark.parametrize("rates, runs", [(ZEN4_RATES, "bf16-mixed"), (INTEL_RATES, "32-true")], ids=["zen4", "intel"])
def test_fast_trains_in_what_the_probe_measured_faster(rates, runs, make_cfg, monkeypatch, tmp_path):
    force_cpu(monkeypatch, *ZEN4_AVX512_BF16)  # both CPUs have AVX512_BF16 and oneDNN bf16

    def given(device_type, cfg, compile_net, channels_last):
        return pp.probe(device_type, cfg, compile_net, channels_last, folder=tmp_path, measure_fn=Measured(rates))

    switches = perf_switches(make_cfg("perf=fast"), probe=given)
    assert switches["precision"] == runs and switches["precision_requested"] == "fast"
    assert switches["fast"]["rates"] == rates and switches["fast"]["probed"] is True
    # perf.precision=bf16 still forces bf16, without a probe.
    assert perf_switches(make_cfg("perf=fast", "perf.precision=bf16"), probe=_never)["precision"] == "bf16-mixed"


def test_where_bf16_would_be_emulated_fast_is_fp32_without_probing(make_cfg, monkeypatch):
    force_cpu(monkeypatch, *EPYC_AVX2_ONLY)
    switches = perf_switches(make_cfg("perf=fast"), probe=_never)
    assert switches["precision"] == "32-true"
    assert switches["fast"]["probed"] is False and "without probing" in switches["fast"]["why"]
    assert "rates" not in switches["fast"]


@pytest.mark.slow  # 40 s on the 2-core EPYC, where bf16 is emulated
def test_the_probe_times_both_precisions_and_leaves_the_seeded_rng_alone(make_cfg):
    # A narrow network and a small batch keep the real steps short (bf16 is emulated on some CPUs).
    cfg = make_cfg("layout=narrow", "data.batch_size=16")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    rates = pp.measure(cfg, torch.device("cpu"), compile_net=False, channels_last=False, windows=1, steps=1)
    assert set(rates) == {"32-true", "bf16-mixed"} and all(r > 0 for r in rates.values())
    assert torch.equal(torch.rand(3), expected)  # the run builds its network after the probe


@pytest.mark.slow
def test_a_fast_run_says_what_it_chose_and_why(cli_env, tmp_path):
    env = {**cli_env, "APRELU_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "aprelu_exp", f"run_root={tmp_path / 'runs'}", "perf=fast",
                          "data.train_subset=200", "data.test_subset=100", "trainer.max_epochs=1", "logger=none",
                          "trainer.limit_train_batches=2"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "runs")
    fast = json.loads((run / "summary.json").read_text())["perf"]["fast"]
    said = [ln for ln in out.stdout.splitlines() if ln.startswith("fast ")]
    assert len(said) == 1 and fast["why"] in said[0]  # once, in the first screen
    if not prec.bf16_support("cpu")[0]:  # this project's AVX2-only EPYC: no bf16 to measure
        assert fast["choice"] == "32-true" and fast["probed"] is False and "without probing" in fast["why"]
        assert not (tmp_path / "cache").exists()
    else:
        rates = fast["rates"]
        assert fast["probed"] and rates["32-true"] > 0 and rates["bf16-mixed"] > 0
        assert fast["choice"] == pp.decide(rates["32-true"], rates["bf16-mixed"])["choice"]
        assert (tmp_path / "cache" / "precision_probe.json").is_file()
