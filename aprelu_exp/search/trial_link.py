"""The job's side of a search: it re-opens its trial in the study's storage, reports the objective
after every epoch and stops early when the study's pruner says so.

This is what lets a search prune across processes: the sweeper only asks and tells, while each job
(in this process, a joblib worker or a SLURM task) talks to the shared storage itself."""
from __future__ import annotations

import logging
import math

import optuna
from hydra.utils import instantiate

from aprelu_exp.errors import UserError
from aprelu_exp.runs.callbacks import EpochRecorder
from aprelu_exp.runs.lifecycle import EndsRunEarly
from aprelu_exp.search.storage import open_storage

log = logging.getLogger(__name__)
PRUNER_ATTR = "pruner"  # study user attribute: the pruner's config, so jobs build the same one


def build_pruner(spec: dict | None):
    if not spec:
        return optuna.pruners.NopPruner()
    return instantiate(spec)


class TrialReporter(EndsRunEarly):
    """After each epoch's metrics row: report the objective to the trial, ask the pruner. The search
    sweeper selects it for its jobs (`callbacks=trial_reporter`, with the `trial` keys it sets)."""

    def __init__(self, study: str | None, storage: str | None, number: int | None, metric: str | None):
        missing = [k for k, v in (("study", study), ("storage", storage), ("number", number), ("metric", metric))
                   if v in (None, "")]
        if missing:
            raise UserError(f"callbacks=trial_reporter needs trial.{', trial.'.join(missing)}: the trial keys are "
                            f"written by the search sweeper (hydra/sweeper=optuna); a run outside a search "
                            f"leaves them null and uses no trial reporter.")
        self.study_name, self.storage_name = str(study), str(storage)
        self.number, self.metric = int(number), str(metric)
        storage = open_storage(self.storage_name)
        try:
            study_id = storage.get_study_id_from_name(self.study_name)
        except KeyError:
            raise UserError(f"trial.study={self.study_name!r} is not in {self.storage_name}; this job belongs "
                            f"to a search whose storage is gone or moved.") from None
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        except KeyError:
            raise UserError(f"trial.number={self.number} is not a trial of study {self.study_name!r} in "
                            f"{self.storage_name}.") from None
        spec = storage.get_study_user_attrs(study_id).get(PRUNER_ATTR)
        self.study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=build_pruner(spec))
        self.trial = optuna.trial.Trial(self.study, trial_id)
        state = storage.get_trial(trial_id).state
        self.active = not state.is_finished()
        if not self.active:
            log.warning("trial %d of study %s is already %s; this run does not report to it.",
                        self.number, self.study_name, state.name.lower())

    def on_train_epoch_end(self, trainer, pl_module):
        recorder = next(cb for cb in trainer.callbacks if isinstance(cb, EpochRecorder))
        if not self.active or not recorder.rows:
            return
        # After the last epoch there is nothing left to save: the trial completes with its value.
        limit = trainer.max_epochs
        last = limit is not None and limit > 0 and trainer.current_epoch + 1 >= limit
        note = self._report(recorder.rows[-1], ask_pruner=not last) if trainer.is_global_zero else None
        # Every DDP rank must stop at the same epoch: rank 0 decides for all.
        note = trainer.strategy.broadcast(note, src=0)
        if note:
            self.early_end = ("pruned", note)
            trainer.should_stop = True

    def _report(self, row: dict, ask_pruner: bool) -> str | None:
        value = row.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return None  # a non-finite loss stops the run on its own; the sweeper records it failed
        self.trial.report(float(value), step=int(row["epoch"]))
        if not ask_pruner or not self.trial.should_prune():
            return None
        note = (f"pruned by {type(self.study.pruner).__name__} after epoch {int(row['epoch'])} "
                f"({self.metric} {float(value):.4f}), trial {self.number} of study {self.study_name}")
        log.info("%s", note)
        return note
