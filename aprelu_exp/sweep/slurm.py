"""The submitit SLURM launcher, checked and quietened in the sweeper's process (a Hydra callback):
a sweep sent to SLURM from a machine that cannot reach it is refused before anything is written,
submitit's messages are printed once, through Hydra's logging, and a sweep the user stops (Ctrl-C,
SIGTERM) cancels its jobs, which would otherwise train on without it."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from aprelu_exp.console.stop_command import invoked_as
from aprelu_exp.errors import UserError
from aprelu_exp.runs.slurm_job import JOB_ID, queued
from aprelu_exp.runs.stop import RunInterrupted

SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
SLURM_TOOLS = ("sbatch", "srun")  # submitit submits with sbatch and starts each task with srun
PING_TIMEOUT_S = 30
SUBMITIT_DIR = ".submitit"  # the launcher's folder in the sweep directory (submitit_folder's default)
# How long a stopped sweep waits for its cancelled jobs to leave the queue: a running job stops at its
# next step and writes its status (SLURM's KillWait, 30 s by default, then kills it).
CANCEL_WAIT_S = 120
_submitting: Path | None = None  # the sweep directory this process sends to SLURM


def uses_slurm(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.launcher._target_", default="") == SLURM_LAUNCHER


def check_slurm_reachable(which=shutil.which, run=subprocess.run) -> None:
    missing = [tool for tool in SLURM_TOOLS if which(tool) is None]
    if missing:
        raise UserError(
            f"hydra/launcher=submitit_slurm submits every job with SLURM's sbatch, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not on this machine's PATH; nothing was started. Run the "
            f"sweep on a SLURM login node (or put SLURM's commands on PATH and SLURM_CONF in the environment), "
            f"or drop the override to run the jobs here (the basic launcher, or hydra/launcher=joblib).")
    try:
        answer = run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=PING_TIMEOUT_S)
        problem = None if answer.returncode == 0 else " ".join((answer.stderr or answer.stdout).split())
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        raise UserError(
            f"hydra/launcher=submitit_slurm: SLURM's controller does not answer here (sinfo: {problem}); "
            f"nothing was started. Check that slurmctld runs and that SLURM_CONF names its slurm.conf "
            f"(`sinfo` must list a partition), or run the jobs here without the override.")


def print_submitit_once() -> None:
    """submitit configures its logger with two handlers of its own (stdout and stderr) and lets it
    propagate to the root logger Hydra set up: each of its warnings came out three times. In the
    sweeper's process Hydra's handler alone prints them, in Hydra's format."""
    from submitit.core.logger import get_logger  # deferred: importing it configures submitit's logger

    logger = get_logger()
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True


class SlurmLauncherSetup(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        global _submitting
        if not uses_slurm(config):
            return
        try:
            check_slurm_reachable()
        except UserError as exc:
            # Hydra turns a callback's exception into a warning and goes on; this must stop the sweep.
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(UserError.exit_code)
        print_submitit_once()
        _submitting = Path(config.hydra.sweep.dir)


def submitted_jobs(sweep_dir: Path) -> list[str]:
    """The SLURM jobs submitit submitted for a sweep: it keeps a folder per job (and per array)."""
    folder = Path(sweep_dir) / SUBMITIT_DIR
    return sorted(p.name for p in folder.iterdir() if JOB_ID.match(p.name)) if folder.is_dir() else []


def cancel_stopped_sweep(exc: RunInterrupted) -> None:
    """When the user stops a sweep whose jobs run on SLURM: cancel those SLURM still holds (scancel
    sends them SIGTERM, so a running one stops at its next step, keeps its last checkpoint and lists
    itself in the sweep's report), wait until they have left the queue, and say how to go on. Does
    nothing in a process that sent no sweep to SLURM."""
    if _submitting is None:
        return
    live = queued(submitted_jobs(_submitting)) or {}
    if live:
        subprocess.run(["scancel", *sorted({job.split("_")[0] for job in live})], capture_output=True,
                       timeout=PING_TIMEOUT_S)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while (queued(list(live)) or {}) and time.monotonic() < deadline:
            time.sleep(1)
    jobs = ", ".join(f"{job} ({state.lower()})" for job, state in sorted(live.items())) or "none was left"
    print(f"interrupted: sweep {_submitting} stopped by {exc}; its SLURM jobs were cancelled: {jobs} (a running "
          f"job keeps its last checkpoint). Resume with: {invoked_as('aprelu_exp')} -m resume={_submitting}",
          file=sys.stderr, flush=True)
    exc.reported = True
