"""The submitit SLURM launcher, checked and quietened in the sweeper's process (a Hydra callback):
a sweep sent to SLURM from a machine that cannot reach it is refused before anything is written,
submitit's messages are printed once, through Hydra's logging, and a sweep the user stops (Ctrl-C,
SIGTERM) cancels its jobs, which would otherwise train on without it."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from aprelu_exp.console.stop_command import invoked_as
from aprelu_exp.errors import UserError
from aprelu_exp.runs.slurm_job import arrays, queued, said, slurm
from aprelu_exp.runs.stop import RunInterrupted

SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
SLURM_TOOLS = ("sbatch", "srun")  # submitit submits with sbatch and starts each task with srun
SUBMITIT_FOLDER = "${hydra.sweep.dir}/.submitit/%j"  # hydra.launcher.submitit_folder's default
# submitit names its files and folders after the job: 12 (the array), 12_3 (a task), 12_3_log.out
SUBMITTED = re.compile(r"^(\d+)(?:_(\d+))?(?:_|$)")
# How long a stopped sweep waits for its cancelled jobs to leave the queue (a running job stops at its
# next step and writes its status; SLURM's KillWait, 30 s by default, then kills it), and how often
# it asks: one squeue of the array IDs, light on a big controller.
CANCEL_WAIT_S = 120
CANCEL_POLL_S = 5
_submitting: tuple[Path, Path] | None = None  # (sweep directory, submitit's folder) this process submits


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
    answer = slurm(["sinfo", "-h", "-o", "%P"], run=run, which=which)
    problem = said(answer) if isinstance(answer, str) or answer.returncode != 0 else None
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
        sweep_dir = Path(config.hydra.sweep.dir)
        _submitting = sweep_dir, submitit_root(OmegaConf.select(config, "hydra.launcher.submitit_folder"), sweep_dir)


def submitit_root(folder: str | None, sweep_dir: Path) -> Path:
    """The folder under which submitit keeps a sweep's job files, from hydra.launcher.submitit_folder
    (resolved, or as multirun.yaml keeps it, with ${hydra.sweep.dir} in it): the part before %j."""
    folder = str(folder or SUBMITIT_FOLDER).replace("${hydra.sweep.dir}", str(sweep_dir))
    return Path(folder.split("%j", 1)[0].rstrip("/") or ".")


def submitted_jobs(root: Path) -> list[str]:
    """The SLURM jobs whose files submitit keeps under root: a folder per job and per array task
    (`%j` in submitit_folder), or every job's files in root itself. Inside a job's folder `<job>_<n>`
    names the job's n-th task (several tasks: DDP), not a job."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = (SUBMITTED.match(p.name) for p in root.iterdir())
    return sorted({m.group(1) + (f"_{m.group(2)}" if m.group(2) else "") for m in found if m})


def cancel_stopped_sweep(exc: RunInterrupted) -> None:
    """When the user stops a sweep whose jobs run on SLURM: cancel those SLURM still holds (scancel
    sends them SIGTERM, so a running one stops at its next step, keeps its last checkpoint and lists
    itself in the sweep's report), wait until they have left the queue, and say how to go on. Does
    nothing in a process that sent no sweep to SLURM."""
    if _submitting is None:
        return
    sweep_dir, root = _submitting
    jobs = submitted_jobs(root)
    live = queued(jobs)
    # Where the queue cannot be asked, every job of the sweep is cancelled: scancel of an ended job is harmless.
    targets = arrays(live if live is not None else jobs)
    done = "none was left"
    if targets:
        print(f"stopping: cancelling the sweep's SLURM jobs ({' '.join(targets)}) and waiting for them to "
              f"stop (up to {CANCEL_WAIT_S} s; {exc} again leaves at once, the jobs still cancelled)",
              file=sys.stderr, flush=True)
        out = slurm(["scancel", *targets])
        if isinstance(out, str) or out.returncode != 0:
            print(f"interrupted: sweep {sweep_dir} stopped by {exc}, but its SLURM jobs could not be cancelled "
                  f"(scancel: {said(out)}); cancel them with `scancel {' '.join(targets)}`, then resume with: "
                  f"{invoked_as('aprelu_exp')} -m resume={sweep_dir}", file=sys.stderr, flush=True)
            exc.reported = True
            return
        deadline = time.monotonic() + CANCEL_WAIT_S
        while (queued(targets) or {}) and time.monotonic() < deadline:
            time.sleep(CANCEL_POLL_S)
        done = (", ".join(f"{job} ({state.lower()})" for job, state in sorted(live.items())) if live
                else " ".join(targets))
    print(f"interrupted: sweep {sweep_dir} stopped by {exc}; its SLURM jobs were cancelled: {done} (a running "
          f"job keeps its last checkpoint). Resume with: {invoked_as('aprelu_exp')} -m resume={sweep_dir}",
          file=sys.stderr, flush=True)
    exc.reported = True
