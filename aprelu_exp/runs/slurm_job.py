"""Which SLURM job a process belongs to, and what SLURM says of jobs. A run directory records the job
that trains in it, so that what it left (a lock, a `running` status) can be judged from any
machine: its process ID means nothing off the node it ran on, the job ID means the same everywhere
the queue can be asked."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Callable, Iterable

# A busy controller answers within seconds; a preempted job has only its grace time for all of it.
QUERY_TIMEOUT_S = 30
PREEMPTED_QUERY_TIMEOUT_S = 5
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


def arrays(job_ids: Iterable[str]) -> list[str]:
    """The jobs as whole array jobs (`12_3` -> `12`): what one scancel or squeue -j names."""
    return sorted({str(job).split("_")[0] for job in job_ids})


def slurm(args: list[str], timeout: float = QUERY_TIMEOUT_S, run: Callable = subprocess.run,
          which: Callable = shutil.which) -> subprocess.CompletedProcess | str:
    """A SLURM command's result, or why it could not be run (not installed here, no answer)."""
    if which(args[0]) is None:
        return f"{args[0]} is not on PATH"
    try:
        return run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"


def said(out: subprocess.CompletedProcess | str) -> str:
    return out if isinstance(out, str) else " ".join((out.stderr or out.stdout).split())


def queued(job_ids: Iterable[str], run: Callable = subprocess.run,
           which: Callable = shutil.which) -> dict[str, str] | None:
    """{job: state} of the given jobs (an array job's ID stands for all its tasks) that SLURM's queue
    still holds (pending, running, requeued, completing: squeue's default states); {} when none
    is; None where squeue cannot be asked (no SLURM here, or its controller does not answer)."""
    ids = sorted({str(j) for j in job_ids if JOB_ID.match(str(j))})
    if not ids:
        return {}
    out = slurm(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(ids)], run=run, which=which)
    if isinstance(out, str):
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


def _fields(kind: str, name: str) -> dict[str, str]:
    out = slurm(["scontrol", "show", kind, "-o", name], timeout=PREEMPTED_QUERY_TIMEOUT_S)
    if isinstance(out, str) or out.returncode != 0:
        return {}
    return dict(token.split("=", 1) for token in out.stdout.split() if "=" in token)


def being_preempted_for_requeue() -> bool:
    """True when SLURM is preempting this process's job and means it to come back: SIGTERM opened
    the grace time (PreemptTime is set while the job still runs; a job cancelled by scancel reads
    CANCELLED with no PreemptTime), the job may be requeued (Requeue=1) and its partition preempts
    by requeueing (PreemptMode REQUEUE, not CANCEL or SUSPEND)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    fields = _fields("job", job)
    if fields.get("JobState") != "RUNNING" or fields.get("PreemptTime", "None") in ("None", "Unknown"):
        return False
    if fields.get("Requeue") != "1":
        return False
    mode = _fields("partition", fields.get("Partition", "")).get("PreemptMode", "")
    return "REQUEUE" in mode.upper()


def requeue_this_job() -> str | None:
    """Put this process's job back in SLURM's queue (as submitit does at its own preemption signal).
    A job that ends by itself during its grace time is recorded as ended, never requeued; this one
    runs again and its run goes on from its last checkpoint. Returns what went wrong, or None."""
    out = slurm(["scontrol", "requeue", os.environ.get("SLURM_JOB_ID", "")], timeout=PREEMPTED_QUERY_TIMEOUT_S)
    return said(out) if isinstance(out, str) or out.returncode != 0 else None
