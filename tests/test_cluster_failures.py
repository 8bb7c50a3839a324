"""What SLURM does to a running job, done for real on the single-node cluster of
scripts/local_cluster.sh: a preemption (a job of a higher partition tier takes the CPUs: SIGTERM,
a grace time, SIGKILL, requeue) and a node failure (the node's daemon and every process of its jobs
die at once, no signal handled; the controller finds the node gone and requeues the job). Either
way the job starts again in its own run directory, goes on from its last checkpoint, and ends with
the metrics and weights of the same job never disturbed; the sweep it belongs to finishes and its
report lists the job once.

The job is a one-job sweep of four epochs (1,000 images each) through submitit; its twin runs under
the basic launcher at the same time. (Preemption by submitit's own signal, USR2: test_cluster.py.)"""
from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from cluster import REPO, TINY, job_fields, metrics, slurm_env, start_cli, wait_for, weights
from aprelu_exp.runs.rundir import read_status

JOB = ["-m", "seed=0", *[o for o in TINY if not o.startswith("data.train_subset=")], "trainer.max_epochs=4",
       "data.train_subset=1000"]


def _start_now_when_requeued(job_id: str, env: dict) -> bool:
    """SLURM holds a requeued job back for about two minutes (its BeginTime); start it at once."""
    fields = job_fields(job_id, env)
    if fields.get("JobState") == "PENDING" and fields.get("Reason") == "BeginTime":
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env, check=True)
    return int(fields.get("Restarts", 0)) >= 1 and fields.get("JobState") in ("PENDING", "RUNNING", "COMPLETED")


def _disturbedjob_fields(tmp_path: Path, cli_env: dict, disturb) -> tuple[Path, str, str]:
    """The SLURM job and its twin; `disturb(job_id, env)` is called once the job has checkpointed its
    first epoch. Returns the job's run directory, its SLURM job ID and its submitit log."""
    env = slurm_env(cli_env)
    sweep, twin_log, log = tmp_path / "slurm", tmp_path / "twin.log", tmp_path / "sweep.log"
    twin = start_cli([*JOB, f"run_root={tmp_path / 'runs'}", f"hydra.sweep.dir={tmp_path / 'twin'}"], env, twin_log)
    proc = start_cli([*JOB, "hydra/launcher=submitit_slurm", f"run_root={tmp_path / 'runs'}",
                      f"hydra.sweep.dir={sweep}"], env, log)
    run, job_id = sweep / "0_record_16", None
    try:
        wait_for("the job's first checkpoint", (run / "checkpoints" / "last.ckpt").is_file, 300, proc, log)
        (job_id,) = [p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]  # one job: no array
        disturb(job_id, env)
        wait_for("the requeued job", lambda: _start_now_when_requeued(job_id, env), 300, proc, log)
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
        assert twin.wait(timeout=300) == 0, twin_log.read_text()[-3000:]
    finally:
        for p in (proc, twin):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        if job_id:
            subprocess.run(["scancel", job_id.split("_")[0]], env=env)
    fields = job_fields(job_id, env)
    assert fields["JobState"] == "COMPLETED" and fields["Restarts"] == "1", fields
    job_log = "".join(p.read_text() for p in sorted((sweep / ".submitit" / job_id).glob("*_log.*")))
    assert f"{run} already holds a checkpoint: continuing that run" in job_log, job_log[-3000:]

    twin_run = tmp_path / "twin" / "0_record_16"
    assert read_status(run)["status"] == "finished"
    assert metrics(run) == metrics(twin_run) and [r["epoch"] for r in metrics(run)] == ["1", "2", "3", "4"]
    theirs = weights(twin_run)
    assert all(torch.equal(value, theirs[key]) for key, value in weights(run).items())
    assert len((sweep / "runs.csv").read_text().splitlines()) == 2  # the header and the job, once
    return run, job_id, job_log


@pytest.mark.cluster
def test_a_job_preempted_by_slurm_stops_cleanly_requeues_itself_and_goes_on(cli_env, tmp_path):
    def preempt(job_id: str, env: dict) -> None:
        # A job of the higher-tier partition asking for every CPU of the node: SLURM preempts ours.
        urgent = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "-p", "urgent",
                                 f"--cpus-per-task={os.cpu_count()}", "--wrap", "sleep 2"], env=env,
                                capture_output=True, text=True, check=True).stdout.strip()
        wait_for("SLURM to preempt the job", lambda: job_fields(job_id, env).get("PreemptTime", "None") != "None"
                 or int(job_fields(job_id, env).get("Restarts", 0)) >= 1, 120)
        # the urgent job gets the CPUs: the preemption did its work
        wait_for("the urgent job to run", lambda: job_fields(urgent, env).get("JobState") in ("RUNNING", "COMPLETED"),
                 120)

    run, job_id, job_log = _disturbedjob_fields(tmp_path, cli_env, preempt)
    # SIGTERM came (the grace time's signal, not submitit's USR2), the run stopped at a clean point
    # and requeued its job at once instead of waiting out the grace time to be killed.
    said = re.search(r"preempted by SLURM \(SIGTERM during epoch (\d); checkpoints/last.ckpt holds epoch (\d), "
                     r"the last completed\): job (\S+) is requeued and goes on from its last checkpoint", job_log)
    assert said and said.group(3) == job_id and int(said.group(2)) >= 1, job_log[-3000:]
    assert "SIGUSR2" not in job_log


def _node_fails(job_id: str, env: dict) -> None:
    """The node dies: its slurmd and every process of its jobs get SIGKILL (nothing runs a handler);
    SLURM's controller marks the node down once it stops answering (SlurmdTimeout) and requeues the
    job; then the node comes back."""
    subprocess.run(["bash", "scripts/local_cluster.sh", "node-fail"], cwd=REPO, env=env, check=True)
    wait_for("the controller to requeue the job of the failed node",
             lambda: int(job_fields(job_id, env).get("Restarts", 0)) >= 1, 180)
    subprocess.run(["bash", "scripts/local_cluster.sh", "node-return"], cwd=REPO, env=env, check=True)


@pytest.mark.cluster
def test_a_job_on_a_node_that_fails_is_requeued_and_goes_on(cli_env, tmp_path):
    run, job_id, job_log = _disturbedjob_fields(tmp_path, cli_env, _node_fails)
    # Nothing in the job saw it coming: no stop line; the lock and the `running` status its process
    # left were taken over by the job's next attempt.
    assert "interrupted:" not in job_log and "preempted by SLURM" not in job_log, job_log[-3000:]
    assert "which has ended; taking it over" in job_log, job_log[-3000:]
