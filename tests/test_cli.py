"""The CLI end to end, in subprocesses, on a real CIFAR-10 subset."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from aprelu_exp.runs.rundir import read_status

REPO = Path(__file__).resolve().parents[1]


def run_cli(args, env, cwd=REPO, timeout=600):
    return subprocess.run([sys.executable, "-m", "aprelu_exp", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_dirs(root: Path):
    return sorted(p.parent for p in root.rglob(".hydra"))


def test_cfg_job_prints_the_composed_config(cli_env, tmp_path):
    from inprocess import run_cli as run_in_process

    out = run_in_process(["--cfg", "job", "model.reduction=4"], cli_env)
    assert out.returncode == 0, out.stderr
    assert "reduction: 4" in out.stdout and "name: record_16" in out.stdout
    assert "epochs: 5000" in out.stdout and "every: 1500" in out.stdout


@pytest.mark.slow
def test_end_to_end_run_on_a_real_subset(cli_env, tmp_path):
    out = run_cli([f"run_root={tmp_path}", "data.train_subset=3000", "data.test_subset=1000",
                   "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "model.reduction=4"],
                  cli_env)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    for name in ("config.yaml", ".hydra/overrides.yaml", "metrics.csv", "summary.json",
                 "status.json", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    for key in ("val_acc", "val_acc_article"):
        assert float(rows[1][key]) > 0.2, key  # chance is 0.1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and read_status(run)["status"] == "finished"
    assert summary["epochs_completed"] == 2 and summary["num_train"] == 3000
    assert summary["best"]["val_acc"]["value"] == max(float(r["val_acc"]) for r in rows)
    assert summary["final"]["val_acc_article"] == float(rows[-1]["val_acc_article"])
    assert summary["environment"]["packages"]["torch"]
    assert len(summary["data_digests"]) == 6 and summary["train_images_per_s_median"] > 0
    assert "reduction: 4" in (run / "config.yaml").read_text()
