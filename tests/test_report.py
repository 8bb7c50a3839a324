"""The report over hand-made run directories (finished, crashed, still running) and a real sweep."""
import csv
import json
import os
from pathlib import Path

import pytest

from aprelu_exp.report.build import build_report
from inprocess import run_cli, run_module

HEADER = ("epoch,lr,train_loss,train_loss_keras,train_acc,val_loss,val_acc,val_loss_article,"
          "val_acc_article,train_time_s,eval_time_s,epoch_time_s,train_images_per_s")


def _run_dir(root: Path, name: str, record: str, parent: str, rows: list[str], status: dict,
             summary: dict | None = None, partial_line: str = "") -> Path:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("- model.reduction=4\n")
    (d / "config.yaml").write_text(
        f"record:\n  name: {record}\n  parent: {parent}\nmodel:\n  reduction: 4\n"
        "schedule:\n  epochs: 5000\n  every: 1500\n  gamma: 0.1\n")
    (d / "metrics.csv").write_text(HEADER + "\n" + "\n".join(rows) + "\n" + partial_line)
    (d / "status.json").write_text(json.dumps(status))
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    return d


@pytest.fixture
def fixture_runs(tmp_path):
    root = tmp_path / "runs"
    rows_a = ["1,0.1,2.0,2.1,0.30,1.8,0.35,1.9,0.36,10,2,12,500",
              "2,0.1,1.7,1.8,0.40,1.6,0.45,1.7,0.41,10,2,12,520",
              "3,0.1,1.5,1.6,0.47,1.55,0.44,1.6,0.49,10,2,12,510"]
    _run_dir(root, "a_finished", "record_16", "record_15", rows_a, {"status": "finished", "error": None},
             summary=None)
    rows_b = ["0,0.1,2.2,2.3,0.25,2.0,0.28,2.1,0.27,11,2,13,450"]
    _run_dir(root, "b_crashed", "record_15", "record_14", rows_b,
             {"status": "failed", "error": "RuntimeError: boom"}, partial_line="1,0.1,2.0,2.1")
    rows_c = ["0,0.1,2.1,2.2,0.26,1.9,0.31,2.0,0.30,12,2,14,430"]
    # Still running: this very process is "the trainer", so its pid is alive.
    _run_dir(root, "c_running", "record_16", "record_15", rows_c,
             {"status": "running", "pid": os.getpid(), "host": os.uname().nodename})
    # A run whose process died without saying so (SIGKILL): a dead pid on this host.
    _run_dir(root, "d_killed", "record_16", "record_15", rows_c,
             {"status": "running", "pid": 2 ** 22 + 12345, "host": os.uname().nodename})
    return root


def test_report_table_matches_the_metrics_files(fixture_runs, tmp_path):
    out = tmp_path / "report"
    result = build_report([fixture_runs], out)
    assert result["runs"] == 4
    table = {r["run"]: r for r in csv.DictReader(open(out / "runs.csv"))}
    a = table["a_finished"]
    assert a["status"] == "finished" and a["epochs"] == "3"
    # Every number in its own column, as a number; epochs count from 1 (this file's rows do).
    assert float(a["final_val_acc"]) == 0.44 and float(a["best_val_acc"]) == 0.45 and a["best_val_acc_epoch"] == "2"
    assert float(a["final_val_acc_article"]) == 0.49 and float(a["best_val_acc_article"]) == 0.49
    assert a["best_val_acc_article_epoch"] == "3"
    assert float(a["final_train_acc"]) == 0.47 and float(a["train_images_per_s"]) == 510.0
    assert a["model.reduction"] == "4"  # one column per overridden key, beside the full string
    assert a["changes_vs_parent"] == "model.reduction: 1 -> 4"  # record_15 has reduction 1
    b = table["b_crashed"]
    assert b["status"] == "failed" and b["error"] == "RuntimeError: boom" and b["epochs"] == "1"
    assert float(b["final_val_acc"]) == 0.28  # the cut-off partial row was ignored
    assert table["c_running"]["status"] == "running"
    assert table["d_killed"]["status"] == "interrupted"
    md = (out / "report.md").read_text()
    # Runs are named by what tells them apart (here their records; same-record runs add their dir).
    assert "| record_16 (a_finished) | a_finished | record_16 | finished |" in md and "RuntimeError: boom" in md
    assert "| 0.4500 (ep 2) |" in md and "Validation here is the CIFAR-10 test set" in md
    assert table["b_crashed"]["label"] == "record_15"
    assert "Article vs reproduction" in md
    for png in ("accuracy.png", "loss.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_runs_are_labelled_by_the_overrides_that_differ(tmp_path):
    from aprelu_exp.report.collect import RunInfo, label_runs

    def run(name, overrides, record="record_16"):
        return RunInfo(path=tmp_path / name, record=record, parent="record_15", status="finished", error=None,
                       overrides=overrides, rows=[], summary={})

    runs = [run("a", ["run_root=runs/x", "seed=0", "trainer.max_epochs=5"]),
            run("b", ["run_root=runs/y", "seed=0", "trainer.max_epochs=5", "perf=fast"]),
            run("c", ["run_root=runs/x", "seed=1", "trainer.max_epochs=5"])]
    label_runs(runs)
    # Shared overrides (max_epochs) and where a run was written (run_root) say nothing about it.
    assert [r.label for r in runs] == ["seed=0", "seed=0 perf=fast", "seed=1"]
    runs = [run("a", ["seed=0"]), run("b", ["seed=0"], record="record_15")]
    label_runs(runs)
    assert [r.label for r in runs] == ["record_16", "record_15"]


def test_report_cli_refuses_missing_dirs(tmp_path):
    out = run_module("aprelu_exp.report", [tmp_path / "nope", "--out", tmp_path / "r"])
    assert out.returncode == 2 and "no such run directory" in out.stderr


@pytest.mark.slow
def test_sweep_with_one_failing_job_reports_three_rows(cli_env, tmp_path):
    # reduction=64 cannot be built (16 channels): that job fails, the other two must still run.
    out = run_cli(["-m", f"run_root={tmp_path}", "model.reduction=1,64,16", "data.train_subset=300",
                   "data.test_subset=200", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"],
                  cli_env)
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep,) = list((tmp_path / "multirun").iterdir())
    table = list(csv.DictReader(open(sweep / "runs.csv")))
    assert len(table) == 3
    by_override = {next(o for o in r["overrides"].split() if o.startswith("model.reduction")): r for r in table}
    assert by_override["model.reduction=64"]["status"] == "failed"
    assert "model.reduction=64 is larger than" in by_override["model.reduction=64"]["error"]
    for ok in ("model.reduction=1", "model.reduction=16"):
        assert by_override[ok]["status"] == "finished" and float(by_override[ok]["final_val_acc"]) > 0
    assert (sweep / "report.md").exists() and (sweep / "accuracy.png").exists()


def test_metrics_written_before_epochs_counted_from_1_are_read_from_1(fixture_runs):
    from aprelu_exp.runs.rundir import read_metrics_rows

    # b_crashed's file was written the old way (its one row says epoch 0); a_finished's the new way.
    assert [r["epoch"] for r in read_metrics_rows(fixture_runs / "b_crashed")] == ["1"]
    assert [r["epoch"] for r in read_metrics_rows(fixture_runs / "a_finished")] == ["1", "2", "3"]


def test_the_schedule_column_states_the_budget_and_drops_actually_used():
    from aprelu_exp.report.render import schedule_text
    from aprelu_exp.training.schedule import step_factor

    budget = {"full_epochs": 5000, "max_epochs": 10, "budget": 10, "milestones": [3, 6, 9], "kind": "budget"}
    assert schedule_text(budget, 0.1) == "budget: 10 epochs (the record's 5000 compressed), lr x0.1 after epochs 3, 6, 9"
    # "after epoch 3", counting from 1: epochs 1-3 train at the full lr, epoch 4 (index 3) at a tenth.
    assert step_factor(2, [3, 6, 9], 0.1) == 1.0 and step_factor(3, [3, 6, 9], 0.1) == pytest.approx(0.1)
    truncated = {"full_epochs": 5000, "max_epochs": 3, "budget": None, "milestones": [1500, 3000, 4500],
                 "kind": "truncated"}
    assert schedule_text(truncated, 0.1) == "truncated: 3 of 5000 epochs, lr constant"
    full = {"full_epochs": 20, "max_epochs": 20, "budget": None, "milestones": [6, 12, 18], "kind": "full"}
    assert schedule_text(full, 0.5) == "full: 20 epochs, lr x0.5 after epochs 6, 12, 18"


def _replicate(root: Path, name: str, reduction: int, seed: int, acc: float) -> None:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(f"- model.reduction={reduction}\n- seed={seed}\n")
    (d / "config.yaml").write_text(f"record:\n  name: record_16\n  parent: record_15\nseed: {seed}\n"
                                   f"model:\n  reduction: {reduction}\n")
    (d / "metrics.csv").write_text(HEADER + f"\n1,0.1,2.0,2.1,0.3,1.8,{acc},1.9,{acc},10,2,12,500\n")
    (d / "status.json").write_text(json.dumps({"status": "finished", "error": None}))
    (d / "summary.json").write_text(json.dumps({
        "status": "finished", "seed": seed, "epochs_completed": 1, "split": None,
        "final": {"epoch": 1, "val_acc": acc, "val_acc_article": acc, "train_acc": 0.3},
        "best": {"val_acc_article": {"value": acc, "epoch": 1}},
        "test": {"test_acc": acc, "test_acc_article": acc, "epoch": 1}}))


def test_a_two_group_report_of_two_replicates_stays_in_bounds_and_gives_no_verdict(tmp_path):
    root = tmp_path / "sweep"
    # scipy's t interval at n=2 would read 0.373 .. 1.517 and -0.331 .. 0.431 for these.
    for i, (reduction, seed, acc) in enumerate([(4, 0, 0.90), (4, 1, 0.99), (16, 0, 0.02), (16, 1, 0.08)]):
        _replicate(root, f"{i}_run", reduction, seed, acc)
    out = tmp_path / "report"
    result = build_report([root], out)
    groups = list(csv.DictReader(open(out / "groups.csv")))
    assert {g["n"] for g in groups} == {"2"} and len({g["group"] for g in groups}) == 2
    for g in groups:
        if g["metric"] != "final_train_acc":  # 0.3 in every run: no spread, no interval
            assert 0.0 <= float(g["ci_low"]) <= float(g["ci_high"]) <= 1.0, g
        else:
            assert g["ci_low"] == g["ci_high"] == "" and g["note"] == "no spread in 2 runs"
    comparisons = list(csv.DictReader(open(out / "comparisons.csv")))
    assert comparisons and not any("better" in c["verdict"] for c in comparisons)
    assert all(-1.0 <= float(c["ci_low"]) <= float(c["ci_high"]) <= 1.0 for c in comparisons if c["ci_low"])
    md = (out / "report.md").read_text()
    for label in ("model.reduction=4", "model.reduction=16"):
        assert md.count(f"- `{label}`, 2 runs: its intervals are not informative") == 1, md
    assert "no spread in 2 runs" in md and "clipped to [0, 1]" in md
    assert result["groups"] and all(0 <= r["ci_low"] <= 1 for r in result["groups"] if r["ci_low"] == r["ci_low"])
