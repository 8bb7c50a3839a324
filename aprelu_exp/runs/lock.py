"""One process per run directory: a lock file naming the host and PID that train in it, and the
SLURM job where there is one (a job may be requeued onto another node; only SLURM knows whether a
job on another node still runs)."""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from aprelu_exp.errors import UserError
from aprelu_exp.runs.rundir import pid_alive
from aprelu_exp.runs.slurm_job import attempt, current_job, job_has_ended

log = logging.getLogger(__name__)
LOCK_FILE = "run.lock"


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def acquire(self) -> "RunLock":
        """Take the lock, or refuse (UserError) while another live process holds it. A lock left by
        a process that is gone (same host) is taken over with a note."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": current_job(),
                           "slurm_attempt": attempt(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(mine + "\n")
            self.held = True
            return self
        raise UserError(f"could not take the lock {self.path}; another process keeps taking it.")

    def _take_over_if_stale(self) -> None:
        holder = read_holder(self.path)
        host, pid = holder.get("host"), holder.get("pid")
        if not host or pid is None:
            raise UserError(f"{self.path} exists but cannot be read; if no process trains in "
                            f"{self.path.parent}, delete it and try again.")
        gone = holder_gone(holder)
        if gone:
            log.warning("run lock %s was left by %s, which has ended; taking it over.", self.path, gone)
            self.path.unlink(missing_ok=True)
            return
        raise UserError(f"{self.path.parent} is in use: {holder_named(holder)} is training in it (lock "
                        f"{self.path}, since {holder.get('since')}). Wait for it to finish or {stop_hint(holder)}, "
                        f"then resume; if that process is gone, delete the lock file.")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def read_holder(path: Path) -> dict:
    try:
        holder = json.loads(Path(path).read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def holder_gone(holder: dict) -> str | None:
    """How we know the process a lock (or a `running` status) names has ended, or None while it may
    still train: its PID is gone on this host; it was an earlier attempt of this very SLURM job (a
    requeued job, perhaps on another node: SLURM runs one attempt at a time, and counts them); or
    SLURM's queue no longer holds its job."""
    host, pid, job = holder.get("host"), holder.get("pid"), holder.get("slurm_job")
    if job and job == current_job() and int(holder.get("slurm_attempt") or 0) < attempt():
        return f"an earlier attempt of this SLURM job ({job}, requeued)"
    if host == socket.gethostname() and isinstance(pid, int):
        return None if pid_alive(pid) else f"process {pid}"  # this host knows better than any queue
    if job and job_has_ended(job):
        return f"SLURM job {job} (no longer in SLURM's queue)"
    return None


def holder_named(holder: dict) -> str:
    where = "this host" if holder.get("host") == socket.gethostname() else f"host {holder.get('host')}"
    job = holder.get("slurm_job")
    return f"process {holder.get('pid')} on {where}" + (f" (SLURM job {job})" if job else "")


def stop_hint(holder: dict) -> str:
    job = holder.get("slurm_job")
    if job:
        return f"stop it (`scancel {job}`: it stops at its next step and keeps its last checkpoint)"
    return f"stop it (Ctrl-C, or kill {holder.get('pid')})"
