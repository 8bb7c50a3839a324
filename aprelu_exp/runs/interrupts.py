"""The Lightning side of a user's stop (runs/stop.py holds the signals themselves).

A stop raises where the run is, at once; `checkpoints/last.ckpt` keeps the last completed epoch,
status.json says `interrupted` with the signal, and the CLI prints one line with the resume command
and exits with 128 + the signal number (130, 143).
"""
from __future__ import annotations

import logging

import pytorch_lightning as pl

from aprelu_exp.runs import moments
from aprelu_exp.runs.stop import HANDLED, RunInterrupted, signal_name, stop_requests  # noqa: F401 (re-exported)


# Lightning notes a SIGTERM on stderr ("[rank: 0] Received SIGTERM: 15"); the run's own line says it.
LIGHTNING_SIGNAL_LOGGER = "pytorch_lightning.trainer.connectors.signal_connector"


def _not_a_sigterm_note(record: logging.LogRecord) -> bool:
    return "Received SIGTERM" not in record.getMessage()


class StopOnSignal(pl.Callback):
    """Makes sure the stop signals are handled for the fit (a run started without the CLI), and
    raises a stop at the next batch boundary if code in between swallowed it."""

    def install(self) -> "StopOnSignal":
        logger = logging.getLogger(LIGHTNING_SIGNAL_LOGGER)
        if _not_a_sigterm_note not in logger.filters:
            logger.addFilter(_not_a_sigterm_note)
        if not stop_requests.handling():
            stop_requests.install()
            self._installed = True
        return self

    def restore(self) -> None:
        if getattr(self, "_installed", False):
            stop_requests.restore()
            self._installed = False

    @property
    def received(self) -> int | None:
        return stop_requests.received

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        stop_requests.check()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 1:  # mid-epoch: two steps in, more to come
            moments.reached("training", trainer.current_epoch)
        stop_requests.check()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and dataloader_idx == 0:
            moments.reached("validation", trainer.current_epoch)
        stop_requests.check()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        stop_requests.check()
