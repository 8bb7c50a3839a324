"""One run's life in its directory: taken (a lock, status `running`, the resolved config.yaml),
trained, and ended however it ends (summary.json and status.json say finished, pruned, interrupted
or failed, and why).

`RunRecord` is a Lightning callback, so the files are written inside Lightning's own hooks: when
fit ends (`on_fit_end`) or raises (`on_exception`), before Lightning finalises the loggers. A logger
that keeps a copy of the run (MLflow) reads them in its own `finalize`; at fit start every logger
is given the run's config and facts through `log_hyperparams`.
"""
from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Iterator

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from aprelu_exp.runs import moments
from aprelu_exp.runs.callbacks import EpochRecorder
from aprelu_exp.runs.interrupts import StopOnSignal
from aprelu_exp.runs.lock import RunLock
from aprelu_exp.runs.rundir import (CONFIG_FILE, SUMMARY_FILE, Stopwatch, environment, git_commit,
                                    launched_as_global_zero, read_status, write_json_atomic, write_status,
                                    write_text_atomic)
from aprelu_exp.runs.stop import RunInterrupted, signal_name, stop_requests
from aprelu_exp.runs.summary import metrics_summary


class EndsRunEarly(pl.Callback):
    """A callback that may stop a run before its last epoch for a reason of its own (a search's
    pruner): it sets `early_end` to (status, note) and `trainer.should_stop`; the run then ends with
    that status instead of `finished`."""

    early_end: tuple[str, str] | None = None


@contextlib.contextmanager
def run_directory(cfg: DictConfig, run_dir: Path) -> Iterator[Stopwatch]:
    """Take the run directory for this process (refused while another live process trains in it),
    mark it running and write the resolved config; release it however the block ends. A run that
    ends before its fit could say how (stopped or failed while it was being set up) is marked so
    here: status.json never stays `running` after the process."""
    clock = Stopwatch()
    lock = RunLock(run_dir)
    taken = False
    try:
        if launched_as_global_zero():
            with stop_requests.deferred():  # taken whole: a stop comes after the config is written
                lock.acquire()
                taken = True
                run_dir.mkdir(parents=True, exist_ok=True)
                write_status(run_dir, "running")
                stop_requests.on_hard_stop = lambda signum: write_status(
                    run_dir, "interrupted", f"{signal_name(signum)} twice: stopped at once")
                write_text_atomic(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
        yield clock
    except BaseException as exc:
        if taken and read_status(run_dir).get("status") == "running":
            if isinstance(exc, RunInterrupted) or stop_requests.requested():
                write_status(run_dir, "interrupted", f"{signal_name(stop_requests.received or exc.signum)} "
                                                     f"before the first epoch; checkpoints/last.ckpt holds no epoch yet")
            elif not isinstance(exc, SystemExit):
                write_status(run_dir, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        stop_requests.on_hard_stop = None
        lock.release()


def stop_on_signal(run_dir: Path) -> StopOnSignal:
    """Ctrl-C / SIGTERM stop the run where it is; a second one stops at once, the run marked interrupted."""
    return StopOnSignal()


class RunRecord(pl.Callback):
    """Writes summary.json and status.json when the fit ends, and gives every logger the run's
    config and facts when it starts. `facts` are the summary's fixed part (record, schedule, data,
    switches); `summary` holds what was written (empty on ranks other than 0)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, facts: dict, recorder: EpochRecorder, clock: Stopwatch):
        self.cfg, self.run_dir, self.facts = cfg, Path(run_dir), facts
        self.recorder, self.clock = recorder, clock
        self.summary: dict = {}

    def on_fit_start(self, trainer, pl_module):
        # The epoch last.ckpt holds until this process writes one (a resumed run's).
        self.kept_at_start = self.recorder.rows[-1]["epoch"] if self.recorder.rows else None
        config = OmegaConf.to_container(self.cfg, resolve=True)
        config.pop("hydra", None)
        hparams = {"config": config, "run": {**self.facts, "git_commit": git_commit()}}
        for lg in trainer.loggers:
            lg.log_hyperparams(hparams)

    def on_fit_end(self, trainer, pl_module):
        early = next((cb.early_end for cb in trainer.callbacks if isinstance(cb, EndsRunEarly) and cb.early_end),
                     None)
        if early:
            self._finish(trainer, *early)
        else:
            self._finish(trainer, "interrupted" if trainer.interrupted else "finished", None)

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, (RunInterrupted, SIGTERMException, KeyboardInterrupt)) or stop_requests.requested():
            # A stop arrives as RunInterrupted (never KeyboardInterrupt, which Lightning would turn
            # into exit status 1); whatever else is raised after it (a compiler child killed by the
            # same Ctrl-C) is the stop as well, not a failure. Epochs count from 1 (the checkpoint's
            # own `epoch` from 0).
            saved = getattr(trainer.strategy.checkpoint_io, "saved_epochs", {}).get("last.ckpt")
            kept = int(saved) + 1 if saved is not None else getattr(self, "kept_at_start", None)
            where = ("after the last epoch" if kept is not None and int(kept) >= trainer.max_epochs
                     else f"during epoch {trainer.current_epoch + 1}")
            note = (f"{signal_name(received_signal(trainer, exception))} {where}; checkpoints/last.ckpt holds "
                    + (f"epoch {kept}, the last completed" if kept is not None else "no epoch yet"))
            self._finish(trainer, "interrupted", note)
        else:
            self._finish(trainer, "failed", f"{type(exception).__name__}: {exception}")

    def _finish(self, trainer, state: str, error: str | None) -> None:
        if not trainer.is_global_zero:
            return
        if state == "finished":
            moments.reached("report", trainer.current_epoch)
        self.summary = {"status": state, "error": error, **self.facts, **metrics_summary(self.recorder.rows),
                        "wall_time_s": round(self.clock.elapsed(), 3),
                        "environment": environment(trainer.strategy.root_device)}
        write_json_atomic(self.run_dir / SUMMARY_FILE, self.summary)
        write_status(self.run_dir, state, error)


def received_signal(trainer, exception: BaseException) -> int:
    if isinstance(exception, RunInterrupted):
        return exception.signum
    if isinstance(exception, KeyboardInterrupt):
        return signal.SIGINT
    return stop_requests.received or signal.SIGTERM


def fit(trainer: pl.Trainer, module: pl.LightningModule, datamodule, ckpt_path: Path | None) -> None:
    """trainer.fit with the stop signals handled; a stopped run raises RunInterrupted, whichever
    signal stopped it (its files already say so)."""
    stopper = next(cb for cb in trainer.callbacks if isinstance(cb, StopOnSignal))
    stopper.install()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except BaseException as exc:
        if isinstance(exc, (RunInterrupted, SIGTERMException, KeyboardInterrupt)) or stop_requests.requested():
            raise RunInterrupted(received_signal(trainer, exc)) from None
        raise
    finally:
        stopper.restore()
