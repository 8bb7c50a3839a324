"""Lightning callbacks that keep the run directory's metrics.csv and stop on a non-finite loss."""
from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from aprelu_exp.metrics import COLUMNS, CURVES, EPOCH_TIME, EVAL_TIME, L2_PENALTY, TIMINGS, TRAIN_IMAGES_PER_S, TRAIN_TIME
from aprelu_exp.runs.rundir import METRICS_FILE, atomic_file, launched_as_global_zero, read_metrics_rows
from aprelu_exp.runs.stop import stop_requests

METRIC_COLUMNS, TIME_COLUMNS = CURVES, TIMINGS
NONFINITE_CHECK_EVERY = 25  # steps between reads of the non-finite flag on a GPU


class NonFiniteLossError(RuntimeError):
    """The training loss became nan or inf: the run stops, its last good checkpoint stays."""


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, int):
        return str(v)
    return repr(float(v))  # repr round-trips: a value read back is the value written


class EpochRecorder(pl.Callback):
    """One metrics.csv row per finished epoch (train + both validation modes), written before the
    epoch's checkpoint, so no checkpoint ever covers an epoch without its row. Epochs count from 1,
    here and on every logger's axis (the `step` logged with each epoch's metrics)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / METRICS_FILE
        self.rows: list[dict] = []
        self._t0 = self._t_val = self._t_val_end = None
        self._lr = None
        self._train_images = 0
        self._finite = self._last_loss = None

    # -- resume -----------------------------------------------------------------------------------
    def load_existing(self, up_to_epoch: int) -> None:
        """Keep the rows of the epochs the checkpoint covers (1 .. up_to_epoch); a row of an epoch
        whose checkpoint was never written (killed in between) is dropped, since that epoch is
        trained again."""
        if not self.path.exists():
            return
        kept = [r for r in read_metrics_rows(self.path.parent) if int(r["epoch"]) <= up_to_epoch]
        self.rows = [{k: (int(v) if k == "epoch" else (float(v) if v != "" else None)) for k, v in r.items()}
                     for r in kept]
        if launched_as_global_zero():
            self._rewrite()

    def _rewrite(self) -> None:
        with atomic_file(self.path, newline="") as fh:
            w = csv.writer(fh)
            w.writerow(COLUMNS)
            for r in self.rows:
                w.writerow([_cell(r.get(c)) for c in COLUMNS])

    def _append(self, row: dict) -> None:
        new = not self.path.exists()
        with stop_requests.deferred(), open(self.path, "a", newline="") as fh:  # a row is written whole
            w = csv.writer(fh)
            if new:
                w.writerow(COLUMNS)
            w.writerow([_cell(row.get(c)) for c in COLUMNS])
            fh.flush()
            os.fsync(fh.fileno())

    # -- hooks ------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer, pl_module):
        self._t0, self._t_val, self._t_val_end = time.perf_counter(), None, None
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]
        self._train_images = 0
        self._finite = self._last_loss = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._last_loss = loss.detach()
            finite = torch.isfinite(self._last_loss)
            self._finite = finite if self._finite is None else self._finite & finite
            # Reading a GPU value waits for the GPU: there the flag is read every few steps (and
            # at the epoch's end, before its checkpoint); on a CPU reading it costs nothing.
            if loss.device.type == "cpu" or (batch_idx + 1) % NONFINITE_CHECK_EVERY == 0:
                self._check_finite(trainer, batch_idx, loss)
        self._train_images += int(batch[1].shape[0]) * trainer.world_size

    def _check_finite(self, trainer, batch_idx, loss) -> None:
        if self._finite is None or bool(self._finite):
            return
        value = float(loss)
        raise NonFiniteLossError(
            f"train_loss became {value if not math.isfinite(value) else 'nan'} in epoch "
            f"{trainer.current_epoch + 1} (by step {batch_idx}); the run stopped and checkpoints/last.ckpt "
            f"keeps the last good epoch. Lower optim.lr or check the data, then start again or resume "
            f"from that checkpoint.")

    def on_validation_epoch_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._t_val = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._t_val_end = time.perf_counter()
            if trainer.loggers:
                # A logged `step` is the loggers' x-axis (Lightning's rule): the epoch, from 1.
                pl_module.log("step", float(trainer.current_epoch + 1), on_step=False, on_epoch=True)

    def on_train_epoch_end(self, trainer, pl_module):
        now = time.perf_counter()
        self._check_finite(trainer, trainer.num_training_batches - 1, self._last_loss)
        metrics = trainer.callback_metrics
        row: dict = {"epoch": trainer.current_epoch + 1, "lr": self._lr}
        for key in METRIC_COLUMNS[2:]:
            v = metrics.get(key)
            row[key] = float(v.item() if isinstance(v, torch.Tensor) else v) if v is not None else None
        # The weights are the ones validation has just judged: the article's val_loss_article
        # holds this penalty, and val_loss_article - l2_penalty is its data loss.
        penalty = getattr(pl_module, L2_PENALTY, None)
        row[L2_PENALTY] = float(penalty()) if callable(penalty) else None
        train_end = self._t_val or now
        row[TRAIN_TIME] = train_end - self._t0
        row[EVAL_TIME] = (self._t_val_end - self._t_val) if self._t_val and self._t_val_end else 0.0
        row[EPOCH_TIME] = now - self._t0
        row[TRAIN_IMAGES_PER_S] = self._train_images / max(row[TRAIN_TIME], 1e-9)
        self.rows.append(row)
        if trainer.is_global_zero:
            self._append(row)
        if trainer.loggers:  # the timings, which only this callback measures, to every logger too
            extra = {c: float(row[c]) for c in (*TIME_COLUMNS, L2_PENALTY) if row[c] is not None}
            pl_module.log_dict({**extra, "step": float(row["epoch"])}, on_step=False, on_epoch=True)

