"""The bench command runs end to end on a small setting and writes every figure it promises."""
import json
import subprocess
import sys

import pytest

from test_cli import REPO


@pytest.mark.slow
def test_bench_writes_the_full_table(cli_env, tmp_path):
    out_json = tmp_path / "bench.json"
    out = subprocess.run([sys.executable, "-m", "aprelu_exp.bench", "perf.compile=false", "data.test_subset=200",
                          "--windows", "2", "--steps", "1", "--epoch-subset", "200", "--out", str(out_json)],
                         cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out_json.read_text())
    for key in ("train_images_per_s", "train_images_per_s_relu_eager", "eval_images_per_s_standard",
                "eval_images_per_s_article", "augment_images_per_s"):
        v = r[key]
        assert v["windows"] == 2 and 0 < v["min"] <= v["median"] <= v["max"], key
    e = r["epoch"]
    # Scaled from 200 images to the 50,000 of a full epoch.
    assert e["train_time_s_full"] == pytest.approx(e["train_time_s_measured"] * 250)
    # and from the 200 test images of data.test_subset to the 10,000 of the test set.
    assert e["test_subset"] == 200
    assert e["eval_time_s"] == pytest.approx(e["eval_time_s_measured"] * 50)
    assert e["end_to_end_epoch_s"] == pytest.approx(e["train_time_s_full"] + e["eval_time_s"])
    f = r["convolution_floor"]
    # The convolutions are a part of a training step, and of the epoch.
    assert 0 < f["train_conv_ms_per_step"] < f["train_ms_per_step_profiled"]
    assert 0 < f["epoch_conv_s"] < e["end_to_end_epoch_s"]
    assert r["perf"]["eval_batch_size"] == 100
    assert r["peak_memory_mb"] > 100 and r["environment"]["torch_threads"] >= 1
    assert "end-to-end epoch" in out.stdout and "convolutions alone" in out.stdout
