"""Sweeps through a real SLURM (sbatch, srun, submitit; no mock of either) on the single-node cluster
of scripts/local_cluster.sh: the jobs' metrics equal the basic launcher's, a preempted job is
requeued and goes on from its checkpoint, a failing job reads failed. Marked `cluster` (CI runs
them after starting the cluster); without a cluster they skip, saying how to start one."""
from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from cluster import REPO, TINY, job_fields, metrics, slurm_env, start_cli, wait_for, weights
from aprelu_exp.runs.rundir import read_status

def report_rows(sweep: Path) -> list[dict]:
    with (sweep / "runs.csv").open() as f:
        return list(csv.DictReader(f))


def job_dir(sweep: Path, activation: str) -> Path:
    (run,) = [r["run"] for r in report_rows(sweep) if r["model/activation"] == activation]
    return sweep / run


@pytest.mark.cluster
def test_slurm_sweep_equals_the_basic_one_and_a_preempted_job_goes_on(cli_env, tmp_path):
    env = slurm_env(cli_env)
    sweep = ["-m", "model/activation=aprelu,relu", *TINY, "trainer.max_epochs=2", f"run_root={tmp_path / 'runs'}"]
    basic_log, slurm_log = tmp_path / "basic.log", tmp_path / "slurm.log"
    basic = start_cli([*sweep, f"hydra.sweep.dir={tmp_path / 'basic'}"], env, basic_log)
    slurm_dir = tmp_path / "slurm"
    slurm = start_cli([*sweep, f"hydra.sweep.dir={slurm_dir}", "hydra/launcher=submitit_slurm"], env, slurm_log)
    try:
        # job #0 (aprelu): once its first epoch is checkpointed, preempt it the way submitit handles
        # it: USR2 to the job's tasks (the signal submitit asks SLURM to send before a time limit,
        # `--signal USR2@...`, and the one its own preemption helper sends after SIGTERM); submitit
        # pickles the launcher's call and requeues the job with `scontrol requeue`.
        run0 = slurm_dir / "0_record_16"
        wait_for("the SLURM job's first checkpoint", (run0 / "checkpoints" / "last.ckpt").is_file, 300, slurm, slurm_log)
        (job_id,) = [p.name for p in (slurm_dir / ".submitit").iterdir() if p.name.endswith("_0")]
        subprocess.run(["scancel", "--signal=USR2", job_id], env=env, check=True)
        # SLURM makes a requeued job eligible 121 s later (EligibleTime, measured here); start it now
        wait_for("the requeue", lambda: job_fields(job_id, env).get("JobState") == "PENDING"
                 and job_fields(job_id, env).get("Restarts") == "1", 120, slurm, slurm_log)
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env, check=True)
        assert slurm.wait(timeout=400) == 0, slurm_log.read_text()[-3000:]
        assert basic.wait(timeout=300) == 0, basic_log.read_text()[-3000:]
    finally:
        for proc in (basic, slurm):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    out = slurm_log.read_text()

    # requeued by SLURM (its own count), continued in the same run directory from its checkpoint
    job = job_fields(job_id, env)
    assert job["Restarts"] == "1" and job["JobState"] == "COMPLETED", job
    job_log = "".join(p.read_text() for p in sorted((slurm_dir / ".submitit" / job_id).glob("*_log.*")))
    assert "Caught signal SIGUSR2" in job_log and "this job is preempted" in job_log, job_log[-3000:]
    assert f"{run0} already holds a checkpoint: continuing that run" in job_log, job_log[-3000:]

    rows = report_rows(slurm_dir)
    assert sorted(r["model/activation"] for r in rows) == ["aprelu", "relu"]   # each job once
    assert {r["status"] for r in rows} == {"finished"}
    with (slurm_dir / "groups.csv").open() as f:
        assert {g["group"] for g in csv.DictReader(f)} == {"model/activation=aprelu", "model/activation=relu"}
    for activation in ("aprelu", "relu"):
        mine, reference = job_dir(slurm_dir, activation), job_dir(tmp_path / "basic", activation)
        assert read_status(mine)["status"] == "finished"
        assert metrics(mine) == metrics(reference) and len(metrics(mine)) == 2, activation
        theirs = weights(reference)
        for key, value in weights(mine).items():
            assert torch.equal(value, theirs[key]), (activation, key)

    # each submitit warning printed once (submitit's two handlers and Hydra's printed it three times);
    # this cluster keeps no accounting, so submitit warns that sacct fails at each status call
    calls = re.findall(r"(Call #\d+) - Bypassing sacct error", out)
    assert calls, out[-3000:]
    assert Counter(calls).most_common(1)[0][1] == 1, out[-3000:]


@pytest.mark.cluster
def test_a_failing_job_reads_failed_and_the_other_finishes(cli_env, tmp_path):
    env = slurm_env(cli_env)
    sweep_dir, log = tmp_path / "sweep", tmp_path / "sweep.log"
    # model.reduction=1000 is larger than the stages' channels: refused inside its job
    proc = start_cli(["-m", "hydra/launcher=submitit_slurm", "model.reduction=16,1000", *TINY,
                      "trainer.max_epochs=1", f"run_root={tmp_path / 'runs'}", f"hydra.sweep.dir={sweep_dir}"], env, log)
    try:
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    rows = {r["model.reduction"]: r for r in report_rows(sweep_dir)}
    assert rows["16"]["status"] == "finished"
    assert rows["1000"]["status"] == "failed" and "reduction" in rows["1000"]["error"], rows["1000"]


@pytest.mark.slow
def test_the_slurm_launcher_without_sbatch_is_refused_before_anything_is_written(cli_env, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**cli_env, "PATH": str(empty), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "aprelu_exp", "-m", "hydra/launcher=submitit_slurm",
                          "model/activation=aprelu,relu", f"run_root={tmp_path / 'runs'}"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    (paragraph,) = out.stderr.strip().splitlines()
    assert paragraph.startswith("error: ") and "sbatch" in paragraph and "PATH" in paragraph
    assert "Traceback" not in out.stderr and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_job_started_again_without_a_checkpoint_keeps_no_stale_metrics_row(cli_env, tmp_path):
    """A requeued job whose first attempt was stopped between epoch 1's metrics row and that epoch's
    checkpoint (seen on SLURM) starts afresh in its directory: epoch 1 is in metrics.csv once."""
    from inprocess import run_cli

    run = tmp_path / "run"
    run.mkdir()
    stale = "epoch,lr,train_loss\n1,0.1,9.5\n"   # what the first attempt left: a row, no checkpoint
    (run / "metrics.csv").write_text(stale)
    out = run_cli([f"hydra.run.dir={run}", f"run_root={tmp_path}", *TINY, "trainer.max_epochs=1"], cli_env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == ["1"] and rows[0]["train_loss"] != "9.5", rows


def _slurm_job_logs(sweep: Path) -> list[Path]:
    """The job logs submitit wrote: one per SLURM job that ran."""
    return sorted((sweep / ".submitit").glob("*/*_log.out"))


@pytest.mark.cluster
def test_a_search_runs_its_trials_as_slurm_jobs(cli_env, tmp_path):
    """`hydra/sweeper=optuna` with the submitit launcher: each trial is a SLURM job, and the study
    holds each trial's value as the job's own metrics.csv has it."""
    import optuna

    env = slurm_env(cli_env)
    log = tmp_path / "search.log"
    proc = start_cli(["-m", "hydra/sweeper=optuna", "hydra/launcher=submitit_slurm", *TINY, "budget=1",
                      f"run_root={tmp_path / 'runs'}", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
                      "model.reduction=choice(4,8)"], env, log)
    try:
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (sweep,) = (tmp_path / "runs" / "multirun").iterdir()
    assert len(_slurm_job_logs(sweep)) == 2, list(sweep.rglob("*"))
    storage = f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    runs = sorted(p.parent for p in sweep.rglob("metrics.csv"))
    assert len(runs) == 2
    values = sorted(float(metrics(run)[-1]["val_acc_article"]) for run in runs)
    assert sorted(t.value for t in study.trials) == pytest.approx(values, abs=1e-6)
    assert {t.params["model.reduction"] for t in study.trials} <= {4, 8}
    assert len(report_rows(sweep)) == 2


@pytest.mark.cluster
def test_a_confirmation_trains_both_sides_as_slurm_jobs(cli_env, tmp_path):
    """`records confirm ... hydra/launcher=submitit_slurm`: both sides' seeds run as SLURM jobs and
    are compared; at two seeds a side there is no verdict (exit 1) and the record file is untouched."""
    env = slurm_env(cli_env)
    mine = tmp_path / "my_conf"
    (mine / "experiment").mkdir(parents=True)
    record = mine / "experiment" / "record_tslurm.yaml"
    text = ("# @package _global_\ndefaults:\n- record_16\n- _self_\n\nrecord:\n  name: record_tslurm\n"
            "  parent: record_16\n  provenance: searched\n  source: test\n  change: relu\nmodel:\n  activation: relu\n")
    record.write_text(text)
    out = subprocess.run([sys.executable, "-m", "aprelu_exp.records", "--config-dir", str(mine), "confirm",
                          "record_tslurm", "--seeds", "2", *TINY, "trainer.max_epochs=1",
                          "hydra/launcher=submitit_slurm"], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "no verdict (n=2 < 3 runs per group)" in out.stderr
    (confirm_dir,) = (tmp_path / "runs" / "confirm").iterdir()
    for side in ("parent", "candidate"):
        assert len(_slurm_job_logs(confirm_dir / side)) == 2, side
        finished = [p for p in (confirm_dir / side).iterdir() if (p / "summary.json").is_file()]
        assert len(finished) == 2 and all(read_status(p)["status"] == "finished" for p in finished), side
    assert "record_tslurm,record_16," in (confirm_dir / "report" / "comparisons.csv").read_text()
    assert record.read_text() == text


@pytest.mark.cluster
def test_ddp_across_two_slurm_tasks_equals_lightnings_own_ddp(cli_env, tmp_path):
    """`trainer=ddp_cpu hydra.launcher.tasks_per_node=2`: SLURM starts the job's two tasks, Lightning
    takes them as the two DDP ranks (SLURM_PROCID), and only rank 0 writes the run. Its metrics and
    weights equal the same run under Lightning's own launcher (which starts the second process
    itself); the two run one after the other, each on both cores."""
    env = slurm_env(cli_env)
    run = [*TINY, "trainer=ddp_cpu", "seed=0", "trainer.max_epochs=2", "data.train_subset=400",
           f"run_root={tmp_path / 'runs'}"]
    sweep, log = tmp_path / "slurm", tmp_path / "slurm.log"
    proc = start_cli(["-m", *run, "hydra/launcher=submitit_slurm", "hydra.launcher.tasks_per_node=2",
                      f"hydra.sweep.dir={sweep}"], env, log)
    try:
        assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    reference = tmp_path / "lightning"
    out = subprocess.run([sys.executable, "-m", "aprelu_exp", *run, f"hydra.run.dir={reference}"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]

    (job,) = [p for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    logs = {rank: "".join(p.read_text() for p in sorted(job.glob(f"*_{rank}_log.*"))) for rank in (0, 1)}
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1] and "GLOBAL_RANK: 0, MEMBER: 1/2" in logs[0], logs[1][-2000:]
    # a rank other than 0 that took the run's lock would be refused ("is in use") or take it over
    assert "run.lock" not in logs[0] + logs[1] and "is in use" not in logs[0] + logs[1], logs[1][-2000:]
    mine = sweep / "0_record_16"
    assert read_status(mine)["status"] == "finished"
    assert metrics(mine) == metrics(reference) and len(metrics(mine)) == 2
    theirs = weights(reference)
    assert all(torch.equal(value, theirs[key]) for key, value in weights(mine).items())
