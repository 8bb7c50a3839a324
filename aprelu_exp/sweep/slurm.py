"""The submitit SLURM launcher, checked and quietened in the sweeper's process (a Hydra callback):
a sweep sent to SLURM from a machine that cannot reach it is refused before anything is written, and
submitit's messages are printed once, through Hydra's logging."""
from __future__ import annotations

import shutil
import subprocess
import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from aprelu_exp.errors import UserError

SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
SLURM_TOOLS = ("sbatch", "srun")  # submitit submits with sbatch and starts each task with srun
PING_TIMEOUT_S = 30


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
        if not uses_slurm(config):
            return
        try:
            check_slurm_reachable()
        except UserError as exc:
            # Hydra turns a callback's exception into a warning and goes on; this must stop the sweep.
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(UserError.exit_code)
        print_submitit_once()
