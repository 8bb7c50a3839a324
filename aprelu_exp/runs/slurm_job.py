"""Which SLURM job a process belongs to, and which jobs SLURM's queue still holds. A run directory
records the job that trains in it, so that what it left (a lock, a `running` status) can be judged
from any machine: its process ID means nothing off the node it ran on, the job ID means the same
everywhere the queue can be asked."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Callable, Iterable

QUERY_TIMEOUT_S = 30
JOB_ID = re.compile(r"^\d+(_\d+)?$")  # a job, or one task of an array job (submitit's `<array>_<task>`)


def current_job() -> str | None:
    """This process's SLURM job as squeue and scancel name it: `<array>_<task>` for a task of an
    array job (how submitit submits a sweep), else the job ID; None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def attempt() -> int:
    """How many times SLURM has started this job before (SLURM_RESTART_COUNT, set once it is
    requeued): a requeued job's attempt is greater than that of the attempt before it."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def queued(job_ids: Iterable[str], run: Callable = subprocess.run) -> dict[str, str] | None:
    """{job: state} of the given jobs (an array job's ID stands for all its tasks) that SLURM's queue
    still holds (pending, running, requeued, completing: squeue's default states); {} when none
    is; None where squeue cannot be asked (no SLURM here, or its controller does not answer)."""
    ids = sorted({str(j) for j in job_ids if JOB_ID.match(str(j))})
    if not ids:
        return {}
    if shutil.which("squeue") is None:
        return None
    try:
        out = run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(ids)], capture_output=True, text=True,
                  timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        # Every ID unknown to the controller (ended longer ago than its MinJobAge): none is queued.
        return {} if "Invalid job id" in (out.stderr or "") else None
    wanted = set(ids)
    states = {}
    for line in out.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        if job in wanted or job.split("_")[0] in wanted:
            states[job] = state
    return states


def job_has_ended(job: str | None) -> bool:
    """True only when SLURM says so: the job is no longer in its queue."""
    if not job:
        return False
    states = queued([job])
    return states is not None and not states


def _job_fields(job: str, run: Callable = subprocess.run) -> dict[str, str]:
    if shutil.which("scontrol") is None:
        return {}
    try:
        out = run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return dict(token.split("=", 1) for token in out.stdout.split() if "=" in token) if out.returncode == 0 else {}


def being_preempted() -> bool:
    """True when SLURM is preempting this process's job: its SIGTERM opened the grace time
    (PreemptTime is set while the job still runs), SIGKILL follows. A job cancelled by scancel
    reads CANCELLED with no PreemptTime."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    fields = _job_fields(job)
    return fields.get("JobState") == "RUNNING" and fields.get("PreemptTime", "None") not in ("None", "Unknown")


def requeue_this_job() -> str | None:
    """Put this process's job back in SLURM's queue (as submitit does at its own preemption signal).
    A job that ends by itself during its grace time is recorded as ended, never requeued; this one
    runs again and its run goes on from its last checkpoint. Returns what went wrong, or None."""
    job = os.environ.get("SLURM_JOB_ID")
    try:
        out = subprocess.run(["scontrol", "requeue", job or ""], capture_output=True, text=True,
                             timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if out.returncode == 0 else " ".join((out.stderr or out.stdout).split())
