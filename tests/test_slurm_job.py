"""A run directory names the SLURM job that trains in it, so that what a job on another node left
there is judged by the job, not by a process ID that means nothing here. (Against SLURM's real
queue: tests/test_cluster_resume.py.)"""
from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest

from aprelu_exp.errors import UserError
from aprelu_exp.runs.lock import RunLock
from aprelu_exp.runs.rundir import read_status, write_status
from aprelu_exp.runs.slurm_job import current_job, queued

SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "SLURM_PROCID")


@pytest.fixture
def outside_slurm(monkeypatch):
    for key in SLURM_VARS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_the_job_is_named_as_squeue_names_it(outside_slurm):
    assert current_job() is None
    outside_slurm.setenv("SLURM_JOB_ID", "4711")
    assert current_job() == "4711"
    # a task of an array job (submitit's sweep): its own numeric ID is not what squeue lists
    outside_slurm.setenv("SLURM_ARRAY_JOB_ID", "4700")
    outside_slurm.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert current_job() == "4700_3"


def test_status_and_lock_record_the_job(outside_slurm, tmp_path):
    outside_slurm.setenv("SLURM_ARRAY_JOB_ID", "12")
    outside_slurm.setenv("SLURM_ARRAY_TASK_ID", "0")
    write_status(tmp_path, "running")
    assert read_status(tmp_path)["slurm_job"] == "12_0"
    lock = RunLock(tmp_path).acquire()
    assert json.loads(lock.path.read_text())["slurm_job"] == "12_0"
    lock.release()


def test_only_the_first_task_of_a_slurm_job_writes_the_run(outside_slurm):
    """The tasks of one SLURM job are the DDP ranks of one run (Lightning reads SLURM_PROCID)."""
    from aprelu_exp.runs.rundir import launched_as_global_zero

    assert launched_as_global_zero()
    outside_slurm.setenv("SLURM_PROCID", "1")
    assert not launched_as_global_zero()
    outside_slurm.setenv("SLURM_PROCID", "0")
    assert launched_as_global_zero()


def _left_by(run, host: str, job: str | None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "run.lock").write_text(json.dumps({"host": host, "pid": 4242, "slurm_job": job, "since": "then"}))


def test_a_requeued_job_takes_over_its_earlier_attempts_lock_from_another_node(outside_slurm, tmp_path, caplog):
    """SLURM requeues a preempted job, perhaps onto another node; the lock its first attempt left
    names a host and a PID that cannot be checked from here, but the same job."""
    _left_by(tmp_path, "node-07", "900_1")
    outside_slurm.setenv("SLURM_ARRAY_JOB_ID", "900")
    outside_slurm.setenv("SLURM_ARRAY_TASK_ID", "1")
    outside_slurm.setenv("PATH", str(tmp_path / "no-slurm-here"))  # decided without asking SLURM
    # the same attempt (another task of the job, a DDP rank) never takes it over
    with pytest.raises(UserError, match="is training in it"):
        RunLock(tmp_path).acquire()
    outside_slurm.setenv("SLURM_RESTART_COUNT", "1")  # SLURM counts the attempts of a requeued job
    with caplog.at_level(logging.WARNING):
        lock = RunLock(tmp_path).acquire()
    assert lock.held and "an earlier attempt of this SLURM job (900_1, requeued)" in caplog.text
    lock.release()


def test_a_lock_of_another_nodes_job_is_kept_while_slurm_cannot_be_asked(outside_slurm, tmp_path):
    outside_slurm.setenv("PATH", str(tmp_path / "no-slurm-here"))
    assert queued(["900_1"]) is None
    run = tmp_path / "run"
    _left_by(run, "node-07", "900_1")
    with pytest.raises(UserError, match=r"process 4242 on host node-07 \(SLURM job 900_1\) is training in it"
                                        r".*`scancel 900_1`"):
        RunLock(run).acquire()
    _left_by(run, "node-07", None)  # no job named: only its own host could tell
    with pytest.raises(UserError, match=r"process 4242 on host node-07 is training in it.*kill 4242"):
        RunLock(run).acquire()


def _squeue_says(stdout: str, returncode: int = 0, stderr: str = ""):
    """squeue's answer as captured from SLURM 22.05 (`squeue -h -r -o %i|%T -j ...`)."""
    def run(args, **kwargs):
        assert args[:5] == ["squeue", "-h", "-r", "-o", "%i|%T"] and args[5] == "-j"
        return subprocess.CompletedProcess(args, returncode, stdout, stderr)
    return run


def test_the_queue_is_read_task_by_task_and_an_array_stands_for_its_tasks():
    found = lambda *a, **k: "/usr/bin/squeue"  # noqa: E731
    run = _squeue_says("8_3|PENDING\n8_2|RUNNING\n12|RUNNING\n")
    assert queued(["8"], run=run, which=found) == {"8_3": "PENDING", "8_2": "RUNNING"}
    assert queued(["8_2", "12"], run=run, which=found) == {"8_2": "RUNNING", "12": "RUNNING"}
    # every ID unknown to the controller: none is queued; any other error: the queue cannot be asked
    gone = _squeue_says("", 1, "slurm_load_jobs error: Invalid job id specified")
    assert queued(["99"], run=gone, which=found) == {}
    assert queued(["99"], run=_squeue_says("", 1, "Unable to contact slurm controller"), which=found) is None
    assert queued(["not-a-job", "x_1"], run=run, which=found) == {}  # nothing to ask


def test_submitit_files_name_the_sweeps_jobs(tmp_path):
    from aprelu_exp.sweep.slurm import submitit_root, submitted_jobs

    sweep = tmp_path / "sweep"
    assert submitit_root(None, sweep) == sweep / ".submitit"
    assert submitit_root("${hydra.sweep.dir}/.submitit/%j", sweep) == sweep / ".submitit"  # as multirun.yaml keeps it
    assert submitit_root("/scratch/me/jobs/%j", sweep) == Path("/scratch/me/jobs")
    root = sweep / ".submitit"
    for name in ("8", "8_0", "8_1", "11"):
        (root / name).mkdir(parents=True)
    (root / "8_1" / "8_1_log.out").write_text("")
    (root / "11" / "11_0_log.out").write_text("")  # one job of several tasks (DDP): its folder holds task logs
    (root / "tmp-3f2a").mkdir()                    # submitit's folder before it knows the job ID
    assert submitted_jobs(root) == ["11", "8", "8_0", "8_1"]
    flat = tmp_path / "flat"  # submitit_folder without %j: the files of every job in one folder
    flat.mkdir()
    (flat / "21_submitted.pkl").write_text("")
    (flat / "21_4_log.err").write_text("")
    assert submitted_jobs(flat) == ["21", "21_4"]
    assert submitted_jobs(tmp_path / "absent") == []


def test_a_sweep_jobs_stop_line_names_the_sweeps_resume(tmp_path):
    import signal

    from aprelu_exp.console.stop_command import stopped_line
    from aprelu_exp.runs.stop import RunInterrupted

    run, sweep = tmp_path / "sweep" / "2_record_16", tmp_path / "sweep"
    run.mkdir(parents=True)
    write_status(run, "interrupted", "SIGINT (Ctrl-C) during epoch 1; checkpoints/last.ckpt holds no epoch yet")
    line = stopped_line(RunInterrupted(signal.SIGINT), run, "aprelu-exp", sweep_dir=sweep)
    assert "this job starts afresh when the sweep goes on" in line and line.endswith(f"aprelu-exp -m resume={sweep}")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    line = stopped_line(RunInterrupted(signal.SIGINT), run, "aprelu-exp", sweep_dir=sweep)
    assert f"Resume the sweep with: aprelu-exp -m resume={sweep} (this job alone: aprelu-exp resume={run})" in line
