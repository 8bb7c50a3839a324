"""The job's side of a search: it re-opens its trial in the study's storage, reports the objective
after every epoch and stops early when the study's pruner says so.

This is what lets a search prune across processes: the sweeper only asks and tells, while each job
(in this process, a joblib worker or a SLURM task) talks to the shared storage itself."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import pytorch_lightning as pl
from omegaconf import DictConfig

from aprelu_exp.errors import UserError

log = logging.getLogger(__name__)
PRUNER_ATTR = "pruner"  # study user attribute: the pruner's config, so jobs build the same one


@dataclass
class TrialLink:
    study: str
    storage: str
    number: int
    metric: str


def trial_link(cfg: DictConfig) -> TrialLink | None:
    t = cfg.get("trial")
    if not t or t.get("number") is None:
        return None
    missing = [k for k in ("study", "storage", "metric") if t.get(k) in (None, "")]
    if missing:
        raise UserError(f"trial.number is set but trial.{', trial.'.join(missing)} is not: the trial "
                        f"keys are written by the search sweeper (hydra/sweeper=optuna); leave them all null "
                        f"for a run outside a search.")
    return TrialLink(str(t.study), str(t.storage), int(t.number), str(t.metric))


def build_pruner(spec: dict | None):
    import optuna
    from hydra.utils import instantiate

    if not spec:
        return optuna.pruners.NopPruner()
    return instantiate(spec)


class TrialReporter(pl.Callback):
    """After each epoch's metrics row: report the objective to the trial, ask the pruner."""

    def __init__(self, link: TrialLink, recorder):
        import optuna

        from aprelu_exp.search.storage import open_storage

        self.link = link
        self.recorder = recorder
        self.pruned_note: str | None = None
        storage = open_storage(link.storage)
        try:
            study_id = storage.get_study_id_from_name(link.study)
        except KeyError:
            raise UserError(f"trial.study={link.study!r} is not in {link.storage}; this job belongs "
                            f"to a search whose storage is gone or moved.") from None
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, link.number)
        except KeyError:
            raise UserError(f"trial.number={link.number} is not a trial of study {link.study!r} in "
                            f"{link.storage}.") from None
        spec = storage.get_study_user_attrs(study_id).get(PRUNER_ATTR)
        self.study = optuna.load_study(study_name=link.study, storage=storage, pruner=build_pruner(spec))
        self.trial = optuna.trial.Trial(self.study, trial_id)
        state = storage.get_trial(trial_id).state
        self.active = not state.is_finished()
        if not self.active:
            log.warning("trial %d of study %s is already %s; this run does not report to it.",
                        link.number, link.study, state.name.lower())

    def on_train_epoch_end(self, trainer, pl_module):
        if not self.active or not self.recorder.rows:
            return
        # After the last epoch there is nothing left to save: the trial completes with its value.
        limit = trainer.max_epochs
        last = limit is not None and limit > 0 and trainer.current_epoch + 1 >= limit
        note = self._report(ask_pruner=not last) if trainer.is_global_zero else None
        # Every DDP rank must stop at the same epoch: rank 0 decides for all.
        note = trainer.strategy.broadcast(note, src=0)
        if note:
            self.pruned_note = note
            trainer.should_stop = True

    def _report(self, ask_pruner: bool) -> str | None:
        row = self.recorder.rows[-1]
        value = row.get(self.link.metric)
        if value is None or not math.isfinite(float(value)):
            return None  # a non-finite loss stops the run on its own; the sweeper records it failed
        self.trial.report(float(value), step=int(row["epoch"]))
        if not ask_pruner or not self.trial.should_prune():
            return None
        note = (f"pruned by {type(self.study.pruner).__name__} after epoch {int(row['epoch']) + 1} "
                f"({self.link.metric} {float(value):.4f}), trial {self.link.number} of study {self.link.study}")
        log.info("%s", note)
        return note
