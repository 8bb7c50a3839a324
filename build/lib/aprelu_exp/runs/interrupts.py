"""Stopping a run on request: Ctrl-C (SIGINT), `kill`/SLURM preemption/container stop (SIGTERM).

The first signal stops the run at the next batch boundary: the epoch in progress is abandoned,
`checkpoints/last.ckpt` keeps the last completed epoch, status.json says `interrupted` with the
signal, and the CLI prints the resume command and exits with 128 + the signal number (130, 143).
A second signal stops the process at once, after marking the run interrupted.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

import pytorch_lightning as pl

HANDLED = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    return {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}.get(signum, signal.Signals(signum).name)


class RunInterrupted(Exception):
    """Raised at a batch boundary after a stop signal."""

    def __init__(self, signum: int):
        super().__init__(signal_name(signum))
        self.signum = signum
        self.exit_code = 128 + signum


class StopOnSignal(pl.Callback):
    """Installs SIGINT/SIGTERM handlers for the duration of a fit (main thread only). Lightning
    adds its own SIGTERM handler on top and keeps calling this one."""

    def __init__(self, on_hard_stop: Callable[[int], None]):
        self.received: int | None = None
        self.on_hard_stop = on_hard_stop
        self._previous: dict = {}

    def install(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
            print(f"\n{signal_name(signum)}: stopping after this batch; the last completed epoch's "
                  f"checkpoint is kept (send it again to stop at once).", file=sys.stderr, flush=True)
            return
        try:
            self.on_hard_stop(signum)
        finally:
            os._exit(128 + signum)

    def _check(self) -> None:
        if self.received is not None:
            raise RunInterrupted(self.received)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._check()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._check()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._check()
