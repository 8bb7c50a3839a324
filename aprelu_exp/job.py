"""What one job of `aprelu-exp` does once Hydra has composed its config: refuse what cannot run,
train in the run directory (or continue a run), and turn every way a run can end into its status,
its message and its exit code. Imported only when a job starts (torch and Lightning load here)."""
from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from aprelu_exp.metrics import VAL_ACC
from aprelu_exp.errors import UserError
from aprelu_exp.report.build import build_report
from aprelu_exp.runs.callbacks import NonFiniteLossError
from aprelu_exp.console.noise import quiet_third_party
from aprelu_exp.overrides import refuse_contradictions
from aprelu_exp.runs.stop import RunInterrupted
from aprelu_exp.console.stop_command import stopped_line
from aprelu_exp.runs.resume import resume_config
from aprelu_exp.runs.slurm_job import being_preempted_for_requeue, current_job, requeue_this_job
from aprelu_exp.runs.rundir import discard_unstarted, launched_as_global_zero, read_status, write_status
from aprelu_exp.train import train

log = logging.getLogger("aprelu_exp")
quiet_third_party()
# Lightning, imported before Hydra set up logging, printed its lines plain; imported here, after it,
# they would carry Hydra's timestamped format. Plain, as Lightning prints them elsewhere.
_lightning_log = logging.getLogger("pytorch_lightning")
if not _lightning_log.handlers:
    _lightning_log.addHandler(logging.StreamHandler())
    _lightning_log.propagate = False


def run_job(cfg: DictConfig) -> float | None:
    """One job of `aprelu-exp`: a run, or one point of a sweep, in the directory Hydra gave it."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        launcher = str(hc.launcher.get("_target_", ""))
        if multirun and "ddp" in str(cfg.trainer.get("strategy", "")) and "submitit" not in launcher:
            raise UserError(
                "trainer.strategy=ddp inside a Hydra multirun (-m) is refused: Lightning's DDP "
                "launcher re-runs the command line per device, which would re-launch the sweep. "
                "Run each DDP job as its own command, or sweep with the submitit launcher "
                "(hydra/launcher=submitit_slurm, one task per GPU) and trainer.strategy=ddp there.")
        if not multirun and int(cfg.get("replicates") or 1) != 1:
            raise UserError(f"replicates={cfg.replicates} asks for {cfg.replicates} runs (one per seed); "
                            f"that is a sweep: add -m (python -m aprelu_exp -m ... replicates="
                            f"{cfg.replicates}).")
        refuse_contradictions(list(hc.overrides.task))
        if cfg.get("resume"):
            fresh_dir = run_dir
            cfg, run_dir = resume_config(cfg, list(hc.overrides.task))
            discard_unstarted(fresh_dir)
        elif (run_dir / "checkpoints" / "last.ckpt").is_file():
            # The same job started again in its own directory: a SLURM job requeued after
            # preemption (submitit), or a fixed hydra.run.dir. It goes on from its last epoch.
            log.warning("%s already holds a checkpoint: continuing that run (requeued job).", run_dir)
            cfg.resume = str(run_dir)
        summary = train(cfg, run_dir)
    except RunInterrupted as exc:
        if launched_as_global_zero():
            sweep_dir = Path(hc.sweep.dir) if multirun else None
            line, requeued = stopped_line(exc, run_dir, sweep_dir=sweep_dir), False
            if exc.signum == signal.SIGTERM and being_preempted_for_requeue():
                # SLURM's preemption: SIGTERM, then SIGKILL after the grace time, and only a job
                # still running then is requeued. This one has stopped cleanly; it requeues itself.
                # The requeue sends the job SIGTERM again, which must not cut this short.
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                problem = requeue_this_job()
                requeued = problem is None
                if requeued:
                    note = read_status(run_dir).get("error") or str(exc)
                    line = (f"preempted by SLURM ({note}): job {current_job()} is requeued and goes on from "
                            f"its last checkpoint when SLURM starts it again.")
                else:
                    line = f"preempted by SLURM; the job could not be requeued ({problem}). {line}"
            print(line, file=sys.stderr, flush=True)
            if multirun and not requeued:
                # The sweep stops here; its report still lists every job, this one as interrupted.
                build_report([sweep_dir], sweep_dir, title=f"Sweep {sweep_dir.name} (interrupted)")
        exc.reported = True
        raise  # the command's wrapper (command_stops_cleanly) ends the process: 128 + the signal
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if multirun:
            # The job stays in the sweep (with its overrides) as a failed row of the report.
            if launched_as_global_zero():
                run_dir.mkdir(parents=True, exist_ok=True)
                write_status(run_dir, "failed", str(exc))
            return None
        if launched_as_global_zero():
            discard_unstarted(run_dir)
        sys.exit(UserError.exit_code)
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if multirun:
            return None
        sys.exit(3)
    except Exception as exc:
        if multirun:
            # One failed job must not end the sweep; its status.json says why (written here where
            # it failed before its run directory was taken: a job without one is no run to a report).
            if launched_as_global_zero() and read_status(run_dir).get("status") == "unknown":
                run_dir.mkdir(parents=True, exist_ok=True)
                write_status(run_dir, "failed", f"{type(exc).__name__}: {exc}")
            log.exception("job %s failed; the sweep continues", hc.job.num)
            return None
        raise
    return summary.get("final", {}).get(VAL_ACC)


