"""Runs as DataFrames (aprelu_exp.runs_frame, metrics_frame) against the run files read independently
(csv, json, yaml); which folders count as runs; the notebook example of docs/tracking.md run as it stands."""
from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inprocess import REPO, run_module

HEADER = ("epoch,lr,train_loss,train_loss_keras,train_acc,val_loss,val_acc,val_loss_article,"
          "val_acc_article,l2_penalty,train_time_s,eval_time_s,epoch_time_s,train_images_per_s")
ROWS = "1,0.1,2.0,2.1,0.30,1.8,0.35,1.9,0.36,0.2,10,2,12,500\n2,0.1,1.7,1.8,0.40,1.6,0.33,1.7,0.41,0.2,10,2,12,520\n"
CONFIG = "record:\n  name: record_16\n  parent: record_15\nseed: 3\nmodel:\n  reduction: 4\n"
STATUS = json.dumps({"status": "finished", "error": None})
SUMMARY = json.dumps({"status": "finished", "seed": 3, "wall_time_s": 40.5, "train_images_per_s_median": 510.0,
                      "epochs_completed": 2, "test": {"test_acc": 0.33, "test_acc_article": 0.41}})


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.fixture
def run_tree(tmp_path):
    """A run root as the loggers leave it: two real runs and the folders that only look like runs."""
    root = tmp_path / "runs"
    run = "2026-12-03/10-00-00_record_16_abc"
    _write(root, {f"{run}/config.yaml": CONFIG, f"{run}/status.json": STATUS, f"{run}/summary.json": SUMMARY,
                  f"{run}/metrics.csv": HEADER + "\n" + ROWS,
                  # Lightning's CSVLogger inside the run, and MLflow's copy of the run beside the runs.
                  f"{run}/lightning_csv/version_0/metrics.csv": "epoch,step,val_acc\n0,1,0.3\n",
                  f"{run}/lightning_csv/version_0/hparams.yaml": "config: {}\n",
                  **{f"mlartifacts/1/{'0f' * 16}/artifacts/{name}": text for name, text in
                     (("config.yaml", CONFIG), ("status.json", STATUS), ("summary.json", SUMMARY),
                      ("metrics.csv", HEADER + "\n" + ROWS))},
                  # A sweep whose one job was refused before it wrote config.yaml: Hydra's copy and
                  # the failed status make it a run; a folder holding only a metrics.csv is none.
                  "multirun/s1/multirun.yaml": "hydra: {}\n",
                  "multirun/s1/0_record_16/.hydra/config.yaml":
                      "record:\n  name: record_16\n  parent: record_15\nseed: 0\nmodel:\n  reduction: 64\n"
                      "trainer:\n  default_root_dir: ${hydra:runtime.output_dir}\n",
                  "multirun/s1/0_record_16/.hydra/overrides.yaml": "- model.reduction=64\n",
                  "multirun/s1/0_record_16/status.json": json.dumps({"status": "failed", "error": "too large"}),
                  "notes/metrics.csv": HEADER + "\n" + ROWS})
    return root, root / run, root / "multirun/s1/0_record_16"


def test_only_run_directories_are_runs(run_tree, tmp_path):
    from aprelu_exp.runs.reader import find_runs

    root, run, refused = run_tree
    assert sorted(find_runs([root])) == sorted([run, refused])
    assert find_runs([root / "mlartifacts"]) == [] and find_runs([run / "lightning_csv"]) == []
    # What the user meets: the report lists the two runs, not the loggers' folders.
    out = run_module("aprelu_exp.report", [root, "--out", tmp_path / "report"])
    assert out.returncode == 0, out.stderr
    table = list(csv.DictReader(open(tmp_path / "report" / "runs.csv")))
    assert sorted((r["run"], r["status"]) for r in table) == sorted([(run.name, "finished"), (refused.name, "failed")])


def test_runs_frame_of_hand_made_runs(run_tree):
    import aprelu_exp

    root, run, refused = run_tree
    frame = aprelu_exp.runs_frame(root).set_index("run")
    assert len(frame) == 2
    a = frame.loc[run.name]
    assert (a.status, a.seed, a.record, a.path, a.epochs) == ("finished", 3, "record_16", str(run), 2)
    # final: the last row; best: the highest row and its epoch (epoch 1 for val_acc, 2 for the article's).
    assert (a.final_val_acc, a.best_val_acc, a.best_val_acc_epoch) == (0.33, 0.35, 1)
    assert (a.final_val_acc_article, a.best_val_acc_article, a.best_val_acc_article_epoch) == (0.41, 0.41, 2)
    assert (a.final_train_acc, a.final_l2_penalty, a.final_train_images_per_s) == (0.40, 0.2, 520.0)
    assert (a.wall_time_s, a.train_images_per_s, a.test_acc, a.test_acc_article) == (40.5, 510.0, 0.33, 0.41)
    assert a["model.reduction"] == 4 and a.group == "record_16"
    b = frame.loc[refused.name]
    assert (b.status, b.error, b.epochs, b["model.reduction"]) == ("failed", "too large", 0, 64)
    # Its config does not resolve outside Hydra: the value as written, not a missing column.
    assert b["trainer.default_root_dir"] == "${hydra:runtime.output_dir}"
    metrics = aprelu_exp.metrics_frame([root])
    assert list(metrics[["run", "epoch", "val_acc"]].itertuples(index=False, name=None)) == [
        (run.name, 1, 0.35), (run.name, 2, 0.33)]


def test_frames_refuse_a_missing_path(tmp_path):
    import aprelu_exp
    from aprelu_exp.errors import UserError

    with pytest.raises(UserError, match="no such run directory"):
        aprelu_exp.runs_frame([tmp_path / "nope"])


def test_the_package_loads_pandas_only_for_the_frames(tmp_path):
    probe = ("import runpy, sys\nimport aprelu_exp\nloaded = lambda: ('pandas' in sys.modules, 'torch' in sys.modules)\n"
             "print('IMPORT', *loaded())\nsys.argv = ['aprelu-exp', '--help']\ntry:\n"
             "    runpy.run_module('aprelu_exp', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print('HELP', *loaded())\nprint('FRAME', callable(aprelu_exp.runs_frame), 'pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "IMPORT False False" in out.stdout and "HELP False False" in out.stdout
    assert "FRAME True True" in out.stdout


def test_a_sweep_job_that_crashed_before_its_run_began_is_a_failed_run(tmp_path, cli_env, monkeypatch):
    """A crash before the run directory is taken (here building the network) still leaves a run the
    sweep's report lists as failed, so a sweep whose every job crashed is a failed command."""
    from aprelu_exp import train
    from inprocess import run_cli

    def crash(cfg, check_only=False):
        raise RuntimeError("boom while building")

    monkeypatch.setattr(train, "build_net", crash)
    out = run_cli(["-m", f"run_root={tmp_path}", "model.reduction=4", "data.train_subset=200", "data.test_subset=100",
                   "trainer.max_epochs=1", "logger=none"], cli_env)
    assert out.returncode == 1 and "every job of the sweep failed" in out.stderr, out.stderr[-2000:]
    (sweep,) = (tmp_path / "multirun").iterdir()
    (row,) = csv.DictReader(open(sweep / "runs.csv"))
    assert (row["status"], row["error"]) == ("failed", "RuntimeError: boom while building")


# -- a real sweep ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory, cifar_root):
    """`python -m aprelu_exp -m model.reduction=4,16 ...` once, into <tmp>/runs/multirun/<sweep>."""
    work = tmp_path_factory.mktemp("frames")
    env = {**os.environ, "APRELU_DATA_ROOT": str(cifar_root), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "aprelu_exp", "-m", "model.reduction=4,16", "data.train_subset=200",
                          "data.test_subset=100", "trainer.max_epochs=2", "logger=none",
                          "trainer.enable_progress_bar=false", f"run_root={work / 'runs'}"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep,) = (work / "runs" / "multirun").iterdir()
    return work, sweep


def _csv_rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_frames_of_a_real_sweep_match_its_files(real_sweep):
    import aprelu_exp

    _, sweep = real_sweep
    runs = sorted(p.parent for p in sweep.glob("*/summary.json"))
    assert len(runs) == 2
    frame = aprelu_exp.runs_frame([sweep]).set_index("path")
    metrics = aprelu_exp.metrics_frame([sweep])
    assert sorted(frame.index) == [str(r) for r in runs]
    for run in runs:
        rows, summary = _csv_rows(run), json.loads((run / "summary.json").read_text())
        reduction = yaml.safe_load((run / "config.yaml").read_text())["model"]["reduction"]
        row = frame.loc[str(run)]
        assert (row.run, row.status, row.seed, row.epochs) == (run.name, "finished", 0, 2)
        assert row["model.reduction"] == reduction and row.group == f"model.reduction={reduction}"
        assert row["data.train_subset"] == 200 and row["trainer.max_epochs"] == 2
        for key in ("val_acc", "val_acc_article", "train_acc", "train_loss", "lr"):
            assert row[f"final_{key}"] == float(rows[-1][key])
        for key in ("val_acc", "val_acc_article"):
            values = [float(r[key]) for r in rows]
            assert row[f"best_{key}"] == max(values) and row[f"best_{key}_epoch"] == values.index(max(values)) + 1
        assert row.wall_time_s == summary["wall_time_s"]
        assert row.train_images_per_s == pytest.approx(statistics.median(float(r["train_images_per_s"]) for r in rows))
        assert row.test_acc == summary["test"]["test_acc"] and row.test_acc_article == summary["test"]["test_acc_article"]
        mine = metrics[metrics.path == str(run)]
        assert list(mine.epoch) == [int(r["epoch"]) for r in rows] == [1, 2]
        for column in rows[0]:
            assert list(mine[column].astype(float)) == [float(r[column]) for r in rows], column
    assert set(metrics.run) == {r.name for r in runs} and len(metrics) == 4
    # The groups as the sweep's own report named them.
    assert set(frame.group) == {g["group"] for g in csv.DictReader(open(sweep / "groups.csv"))}


@pytest.mark.slow
def test_the_docs_notebook_example_runs(real_sweep):
    work, sweep = real_sweep
    page = (REPO / "docs" / "tracking.md").read_text()
    section = page.split("## Analysing runs in Python", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # The grouped table: one line per reduction, under the setting's name.
    assert "model.reduction" in out.stdout
    assert {ln.split()[0] for ln in out.stdout.splitlines()[2:]} == {"4", "16"}, out.stdout
    png = (work / "val_acc_article.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
