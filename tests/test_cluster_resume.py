"""A sweep on SLURM that is killed or stopped goes on with `-m resume=<sweep dir>`, on the real
single-node cluster of scripts/local_cluster.sh (sbatch, squeue, scancel and submitit; no mock).

SLURM jobs outlive the sweeper that submitted them: while SLURM still holds a job of the sweep
(running or pending) the resume is refused, naming the jobs and `scancel`; once they are gone it
trains what they left, and every job's metrics and weights equal the same sweep's under the basic
launcher. Ctrl-C of the sweeper cancels its jobs (each keeps its last checkpoint) and names the
resume. A lock left by a job on another node is judged by SLURM's queue, not by a process ID.

The sweep is `trainer.max_epochs=1,2` x `seed=0,1`, one job at a time (array_parallelism=1): jobs #0
and #1 finish in one epoch, job #2 pauses in its second epoch (APRELU_PAUSE_AT, after its first
checkpoint) and is stopped there, job #3 is still pending."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cluster import REPO, TIMES, TINY, metrics, slurm_env, start_cli, wait_for, weights
from aprelu_exp.runs.rundir import read_status

GRID = ["trainer.max_epochs=1,2", "seed=0,1", *TINY]
ONE_AT_A_TIME = ["hydra/launcher=submitit_slurm", "hydra.launcher.array_parallelism=1"]
# what a repeat cannot reproduce in a report row: durations and rates
VARYING = {*TIMES, "wall_time_s"}


def _cli(args: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aprelu_exp", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _squeue(env: dict, jobs: list[str]) -> dict[str, str]:
    """{job: state} of the given jobs (or array jobs: each task) that SLURM's queue holds."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(jobs)], env=env, capture_output=True,
                         text=True)
    if out.returncode != 0 and "Invalid job id" in out.stderr:
        return {}  # every one has ended
    assert out.returncode == 0, out.stderr
    return dict(line.split("|") for line in out.stdout.split())


def _arrays(sweep: Path) -> list[str]:
    """The array jobs submitit submitted for the sweep (a folder each, beside one per task)."""
    folder = sweep / ".submitit"
    return sorted(p.name for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def _job(sweep: Path, num: int) -> Path:
    (job,) = sweep.glob(f"{num}_*")
    return job


def _fingerprint(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def _tree(folder: Path) -> dict:
    """Every file's mtime, submitit's own folder left out (its job logs belong to SLURM's jobs)."""
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if ".submitit" not in p.parts}


def _report(sweep: Path) -> list[dict]:
    with (sweep / "runs.csv").open() as f:
        return [{k: v for k, v in r.items() if k not in VARYING} for r in csv.DictReader(f)]


def _paused_sweep(tmp_path: Path, env: dict) -> tuple[subprocess.Popen, Path, Path]:
    """The SLURM sweep, started with job #2 set to pause; returns once #2 waits in its second epoch."""
    marker, log, sweep = tmp_path / "paused", tmp_path / "sweep.log", tmp_path / "slurm"
    paused_env = {**env, "APRELU_PAUSE_AT": "validation", "APRELU_PAUSE_MARKER": str(marker)}
    proc = start_cli(["-m", *GRID, *ONE_AT_A_TIME, f"run_root={tmp_path / 'runs'}", f"hydra.sweep.dir={sweep}"],
                     paused_env, log)
    wait_for("job #2 paused in its second epoch", marker.exists, 400, proc, log)
    return proc, sweep, log


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.cluster
def test_a_killed_slurm_sweep_resumes_once_slurm_holds_none_of_its_jobs(cli_env, tmp_path):
    env = slurm_env(cli_env)
    basic_log = tmp_path / "basic.log"
    basic = start_cli(["-m", *GRID, f"run_root={tmp_path / 'runs'}", f"hydra.sweep.dir={tmp_path / 'basic'}"], env,
                      basic_log)
    proc, sweep, log = _paused_sweep(tmp_path, env)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweeper only: its jobs are SLURM's
        proc.wait(timeout=30)
        wait_for("the killed sweeper's process group to end", lambda: _group_gone(proc.pid), 30)
        (array,) = _arrays(sweep)
        queue = _squeue(env, [array])
        assert sorted(queue.values()) == ["PENDING", "RUNNING"], queue

        # While SLURM holds jobs of the sweep, the resume is refused and writes nothing.
        before = _tree(sweep)
        refused = _cli(["-m", f"resume={sweep}"], env)
        assert refused.returncode == 2, refused.stderr[-3000:]
        (line,) = [ln for ln in refused.stderr.splitlines() if ln.strip()]
        assert line.startswith("error: ") and "SLURM still holds jobs of this sweep" in line, line
        for job, state in queue.items():
            assert f"{job} {state}" in line, line
        assert f"scancel {array}" in line and f"squeue -j {array}" in line, line
        assert _tree(sweep) == before

        # The running job's process killed outright (SIGKILL: no status written, no clean stop; SLURM
        # itself, even with `scancel --signal=KILL`, sends SIGTERM first), then the pending one
        # cancelled.
        (running,) = [job for job, state in queue.items() if state == "RUNNING"]
        os.kill(read_status(_job(sweep, 2))["pid"], signal.SIGKILL)
        wait_for("the killed job to leave", lambda: running not in _squeue(env, [array]), 120)
        subprocess.run(["scancel", array], env=env, check=True)
        wait_for("SLURM to hold none of the sweep's jobs", lambda: not _squeue(env, [array]), 120)
        assert read_status(_job(sweep, 2))["error"].endswith("ended without reporting (killed?)")
        finished = {n: _fingerprint(_job(sweep, n) / "metrics.csv") for n in (0, 1)}
        epoch_1 = (_job(sweep, 2) / "metrics.csv").read_text().splitlines()[:2]
        assert not (_job(sweep, 2) / "summary.json").exists()

        out = _cli(["-m", f"resume={sweep}"], env, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        assert basic.wait(timeout=600) == 0, basic_log.read_text()[-3000:]
    finally:
        for p in (proc, basic):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        subprocess.run(["scancel", *_arrays(sweep)], env=env)
    said = [ln for ln in out.stdout.splitlines() if ln.startswith("resuming sweep")]
    assert said == [f"resuming sweep {sweep} (4 jobs): jobs #0, #1: finished, not trained again; job #2: from the "
                    f"last checkpoint; job #3: from the start (never started, or stopped before a first "
                    f"checkpoint)"], out.stdout[-3000:]
    assert "Submitit 'slurm'" in out.stdout + out.stderr  # the sweep's own launcher, from its multirun.yaml
    # No job trained twice: the finished ones untouched, job #2's first epoch kept as measured.
    assert {n: _fingerprint(_job(sweep, n) / "metrics.csv") for n in (0, 1)} == finished
    assert (_job(sweep, 2) / "metrics.csv").read_text().splitlines()[:2] == epoch_1
    reference = tmp_path / "basic"
    for n in range(4):
        job, twin = _job(sweep, n), _job(reference, n)
        assert read_status(job)["status"] == "finished", n
        assert metrics(job) == metrics(twin) and len(metrics(job)) == 1 + n // 2, n
        theirs = weights(twin)
        assert all(torch.equal(value, theirs[key]) for key, value in weights(job).items()), n
    assert _report(sweep) == _report(reference)


@pytest.mark.cluster
def test_ctrl_c_cancels_a_slurm_sweeps_jobs_and_names_the_resume(cli_env, tmp_path):
    env = slurm_env(cli_env)
    proc, sweep, log = _paused_sweep(tmp_path, env)
    try:
        arrays = _arrays(sweep)
        queue = _squeue(env, arrays)
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=400) == 130, log.read_text()[-3000:]
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["scancel", *_arrays(sweep)], env=env)
    assert not _squeue(env, arrays), "a job of the stopped sweep is still in SLURM's queue"
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("interrupted: ")]
    assert len(lines) == 1, log.read_text()[-3000:]
    for job, state in queue.items():
        assert f"{job} ({state.lower()})" in lines[0], lines[0]
    assert lines[0].endswith(f"Resume with: python -m aprelu_exp -m resume={sweep}"), lines[0]
    assert "Traceback" not in log.read_text()
    assert took < 120, took
    # The running job stopped at a clean point and says so; the report lists it.
    status = read_status(_job(sweep, 2))
    assert status["status"] == "interrupted" and "epoch 1, the last completed" in status["error"], status
    assert [r["status"] for r in _report(sweep)] == ["finished", "finished", "interrupted"]

    out = _cli(["-m", f"resume={sweep}"], env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "job #2: from the last checkpoint; job #3: from the start" in out.stdout, out.stdout[-3000:]
    assert [r["status"] for r in _report(sweep)] == ["finished"] * 4
    assert [len(metrics(_job(sweep, n))) for n in range(4)] == [1, 1, 2, 2]


@pytest.mark.cluster
def test_a_lock_left_by_a_slurm_job_on_another_node_is_judged_by_slurms_queue(cli_env, tmp_path, monkeypatch,
                                                                              caplog):
    """A job directory as a job on another node leaves it when that node fails: status `running`, a
    lock naming a host and PID that mean nothing here, and the SLURM job. While SLURM holds the
    job, a sweep resume and a run in that directory are refused naming `scancel`; once the job has
    left the queue, the directory is continued from its checkpoint and the lock taken over."""
    from omegaconf import OmegaConf

    from aprelu_exp.errors import UserError
    from aprelu_exp.runs.lock import RunLock
    from aprelu_exp.sweep.resume import sweep_plan

    env = slurm_env(cli_env)
    monkeypatch.setenv("SLURM_CONF", env["SLURM_CONF"])
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    job_id = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 300"], env=env, capture_output=True,
                            text=True, check=True).stdout.strip()
    try:
        wait_for("the stand-in job to run", lambda: _squeue(env, [job_id]).get(job_id) == "RUNNING", 60)
        run = tmp_path / "sweep" / "0_record_16"
        (run / ".hydra").mkdir(parents=True)
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.ckpt").write_bytes(b"an epoch")
        OmegaConf.save(OmegaConf.create(["seed=0"]), run / ".hydra" / "overrides.yaml")
        elsewhere = {"host": "node-gone", "pid": 4242, "slurm_job": job_id}
        (run / "status.json").write_text(json.dumps({"status": "running", "error": None, **elsewhere}))
        (run / "run.lock").write_text(json.dumps(elsewhere))

        with pytest.raises(UserError, match=rf"job #0 .* process 4242 on host node-gone \(SLURM job {job_id}\) "
                                            rf"holds it.*`scancel {job_id}`"):
            sweep_plan(tmp_path / "sweep", [["seed=0"]])
        with pytest.raises(UserError, match=rf"is in use: .*SLURM job {job_id}.*`scancel {job_id}`"):
            RunLock(run).acquire()
        subprocess.run(["scancel", job_id], env=env, check=True)
        wait_for("the stand-in job to leave the queue", lambda: job_id not in _squeue(env, [job_id]), 60)
    finally:
        subprocess.run(["scancel", job_id], env=env)
    assert sweep_plan(tmp_path / "sweep", [["seed=0"]]).states == ["continue"]
    with caplog.at_level("WARNING"):
        lock = RunLock(run).acquire()
    assert lock.held and f"SLURM job {job_id} (no longer in SLURM's queue)" in caplog.text
    lock.release()
