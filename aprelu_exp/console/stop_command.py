"""How a command ends when the user stops it: one line, exit status 128 + the signal, and no
directory left that holds nothing of a run."""
from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Callable

from aprelu_exp.runs.rundir import STATUS_FILE, discard_unstarted, launched_as_global_zero, read_status
from aprelu_exp.runs.stop import RunInterrupted, stop_requests


def stopped_line(exc: RunInterrupted, run_dir: Path | None, resume_command: str | None = None,
                 sweep_dir: Path | None = None) -> str:
    """The one line a stopped command prints: what stopped it, what it kept, how to go on (with the
    whole sweep, for a job of one). A run directory not yet taken (nothing but Hydra's bookkeeping)
    is removed."""
    command = resume_command or invoked_as("aprelu_exp")
    sweep = f" Resume the sweep with: {command} -m resume={sweep_dir}" if sweep_dir is not None else ""
    if run_dir is None or not (Path(run_dir) / STATUS_FILE).exists():
        if run_dir is not None and launched_as_global_zero():
            discard_unstarted(run_dir)
        return f"stopped by {exc} before the run started; nothing was kept." + sweep
    note = read_status(run_dir).get("error") or f"{exc}"
    if not (Path(run_dir) / "checkpoints" / "last.ckpt").is_file():
        if sweep:
            return f"interrupted: {note}; this job starts afresh when the sweep goes on.{sweep}"
        return f"interrupted: {note}; {run_dir} keeps its config, start the run again to train it."
    if sweep_dir is not None:
        return (f"interrupted: {note}. Resume the sweep with: {command} -m resume={sweep_dir} (this job "
                f"alone: {command} resume={run_dir})")
    return f"interrupted: {note}. Resume with: {command} resume={run_dir}"


def exit_now(code: int) -> None:
    """End a stopped process without the interpreter's teardown of torch's modules (seconds on a
    busy machine): every file of the run is written whole by now; output is flushed first."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _hydra_run_dir() -> Path | None:
    """The directory Hydra made for the job, when it got that far."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
    except Exception:
        return None


def invoked_as(module: str) -> str:
    """The command as the user typed it, for the line that tells them how to go on: the installed
    script's name, or `python -m <module>`."""
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if not script or script in ("__main__.py", "-m", "-c") or script.endswith(".py"):
        return f"python -m {module}"
    return script


def command_stops_cleanly(module: str) -> Callable:
    """Wrap a command's entry point: a stop anywhere in it (Hydra's start included) ends the
    process with one line on stderr and exit status 128 + the signal, never a traceback."""

    def wrap(entry: Callable) -> Callable:
        @functools.wraps(entry)
        def run(*args, **kwargs):
            stop_requests.install()
            try:
                return entry(*args, **kwargs)
            except (RunInterrupted, KeyboardInterrupt) as exc:
                if isinstance(exc, KeyboardInterrupt):  # a Ctrl-C before the handlers were installed
                    exc = RunInterrupted(signal.SIGINT)
                if not exc.reported:
                    print(stopped_line(exc, _hydra_run_dir(), invoked_as(module)), file=sys.stderr, flush=True)
                exit_now(exc.exit_code)
            finally:
                stop_requests.restore()

        return run

    return wrap
