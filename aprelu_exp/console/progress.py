"""Progress of the whole run, not only of the epoch in hand: epoch N of the run's total, time
elapsed and left for the run, the last epoch's accuracies and throughput. On a terminal it is a
tqdm bar; where stdout is not a terminal (CI, nohup, SLURM logs), or a terminal too narrow for the
bar or of no size at all, it is one line per epoch."""
from __future__ import annotations

import os
import sys
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

from aprelu_exp.metrics import TRAIN_ACC, TRAIN_IMAGES_PER_S, VAL_ACC, VAL_ACC_ARTICLE


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d}d{h:02d}h"
    return f"{h}:{m:02d}:{s:02d}"


class RunClock:
    """Elapsed time of this process's training and the time left for the run's remaining epochs,
    from the mean duration of the epochs finished in this process (a resumed run counts anew)."""

    def __init__(self, total_epochs: int):
        self.total = total_epochs
        self.started = self.first_epoch = None
        self.done_here = 0

    def start(self, epoch: int) -> None:
        self.started, self.first_epoch, self.done_here = time.monotonic(), epoch, 0

    def epoch_done(self) -> None:
        self.done_here += 1

    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started

    def left(self, epochs_completed: int) -> float | None:
        if not self.done_here:
            return None
        return self.elapsed() / self.done_here * max(self.total - epochs_completed, 0)


def _last_row_text(recorder) -> list[str]:
    if not recorder.rows:
        return []
    r = recorder.rows[-1]
    # Accuracies: training, standard validation, the article's validation (batch statistics).
    parts = [f"{label} {r[k]:.4f}" for label, k in (("train", TRAIN_ACC), ("val", VAL_ACC),
                                                    ("article", VAL_ACC_ARTICLE)) if r.get(k) is not None]
    if r.get(TRAIN_IMAGES_PER_S):
        parts.append(f"{r['train_images_per_s']:.0f} img/s")
    return parts


class RunProgressBar(TQDMProgressBar):
    def __init__(self, total_epochs: int, recorder, refresh_rate: int = 10):
        super().__init__(refresh_rate=refresh_rate)
        self.clock, self.recorder = RunClock(total_epochs), recorder

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        self.clock.start(trainer.current_epoch)

    def on_train_epoch_start(self, trainer, pl_module):
        super().on_train_epoch_start(trainer, pl_module)
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{self.clock.total}")

    def on_train_epoch_end(self, trainer, pl_module):
        self.clock.epoch_done()
        super().on_train_epoch_end(trainer, pl_module)

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        left = self.clock.left(trainer.current_epoch + (1 if trainer.fit_loop.epoch_loop.done else 0))
        items["run"] = f"{duration(self.clock.elapsed())} elapsed" + (f" ~{duration(left)} left" if left else "")
        if self.recorder.rows:
            items["last epoch"] = " ".join(_last_row_text(self.recorder))
        return items


class EpochLines(pl.Callback):
    """One line per finished epoch (after its metrics row), for logs that are not a terminal."""

    def __init__(self, total_epochs: int, recorder, stream=None):
        self.clock, self.recorder, self.stream = RunClock(total_epochs), recorder, stream

    def on_train_start(self, trainer, pl_module):
        self.clock.start(trainer.current_epoch)

    def on_train_epoch_end(self, trainer, pl_module):
        self.clock.epoch_done()
        if not trainer.is_global_zero or not self.recorder.rows:
            return
        row = self.recorder.rows[-1]
        done = int(row["epoch"])
        left = self.clock.left(done)
        parts = [f"epoch {done}/{self.clock.total}", *_last_row_text(self.recorder),
                 f"epoch {row['epoch_time_s']:.0f} s", f"elapsed {duration(self.clock.elapsed())}"]
        if left is not None:
            parts.append(f"left ~{duration(left)}")
        print(" | ".join(parts), file=self.stream or sys.stdout, flush=True)


# Narrower than this, tqdm cuts the bar's line down to nothing or to its first figures.
MIN_BAR_COLUMNS = 40


def terminal_columns(stream) -> int:
    """The width of the terminal `stream` writes to; 0 where it is no terminal, or a terminal that
    reports no size (a pseudo-terminal nobody sized: `script` started without a terminal, some CI
    consoles, `docker run -t`), on which tqdm draws an empty line."""
    try:
        return os.get_terminal_size(stream.fileno()).columns if stream.isatty() else 0
    except (AttributeError, ValueError, OSError):
        return 0


def run_progress(total_epochs: int, recorder, refresh_rate: int = 10, stream=None) -> pl.Callback:
    stream = stream or sys.stdout
    if terminal_columns(stream) >= MIN_BAR_COLUMNS:
        return RunProgressBar(total_epochs, recorder, refresh_rate)
    return EpochLines(total_epochs, recorder, stream)
