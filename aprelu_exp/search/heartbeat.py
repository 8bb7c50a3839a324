"""Trials of a sweeper that died: the sweeper beats for the trials it has asked (in its process,
whatever launcher runs their jobs), and every sweeper of the study fails a trial whose beat is older
than the grace period before it asks new ones. Optuna does both inside `study.optimize`; the search
asks and tells itself (search/loop.py), so it does them here with Optuna's public storage API, on
the storage object the search opened (search/storage.py open_storage; a Study does not hand out its
own), naming trials by their study and number. A failed stale trial is retried once (Optuna's retry
callback): the next trial asked is a copy of it."""
from __future__ import annotations

import inspect
import logging
import threading
import time
import warnings

import optuna

log = logging.getLogger("aprelu_exp.search")


# Optuna marks its heartbeat arguments and retry callback experimental; the search relies on them as
# documented here, and a user cannot act on the notice.
for _what in ("Argument ``heartbeat_interval``", "Argument ``grace_period``", "Argument ``failed_trial_callback``",
              "Argument ``heartbeat_stale_trial_callback``",
              "RetryHeartbeatStaleTrialCallback", r"optuna\.storages\._heartbeat\.fail_stale_trials"):
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, message=_what)
# study.ask warns that heartbeats belong to study.optimize; this module is what beats outside it.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def heartbeat_settings(settings) -> dict:
    """RDBStorage's arguments from hydra.sweeper.{heartbeat_interval, grace_period, retry_failed};
    none where heartbeat_interval is null."""
    interval = settings.get("heartbeat_interval")
    if interval in (None, 0):
        return {}
    grace = settings.get("grace_period")
    retries = settings.get("retry_failed")
    return {"heartbeat_interval": int(interval), "grace_period": None if grace is None else int(grace),
            _callback_argument(): retry_callback()(max_retry=None if retries is None else int(retries))}


def _callback_argument() -> str:
    """RDBStorage's name for it: heartbeat_stale_trial_callback from Optuna 4.9 on, failed_trial_callback before."""
    params = inspect.signature(optuna.storages.RDBStorage).parameters
    return "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"


def retry_callback():
    """Optuna's callback that queues a stale trial again: RetryHeartbeatStaleTrialCallback from 4.9
    on (marked experimental there), RetryFailedTrialCallback before (deprecated since)."""
    return getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback


def beats_enabled(storage) -> bool:
    return getattr(storage, "get_heartbeat_interval", lambda: None)() is not None


def fail_stale(study, storage) -> None:
    """Fail the study's trials whose sweeper stopped beating; `storage` is the study's own."""
    if not beats_enabled(storage):
        return
    before = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    retried = (getattr(storage, "get_heartbeat_stale_trial_callback", None) or storage.get_failed_trial_callback)()
    optuna.storages.fail_stale_trials(study)
    failed = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))}
    for number in sorted(before & failed):
        log.warning("trial %d of study %s had no heartbeat for longer than its grace period (its sweeper "
                    "died): marked failed%s", number, study.study_name,
                    ", and queued again" if retried else "")


class Heartbeats:
    """A daemon thread that records a beat for each trial the sweeper has asked and not yet told,
    every heartbeat interval, for as long as the sweeper's process lives."""

    def __init__(self, storage, study):
        self.storage = storage
        self.enabled = beats_enabled(self.storage)
        self.study_id = storage.get_study_id_from_name(study.study_name) if self.enabled else None
        self.trial_ids: set[int] = set()
        self._lock = threading.Lock()
        if self.enabled:
            threading.Thread(target=self._loop, name="trial-heartbeats", daemon=True).start()

    def id_of(self, trial) -> int:
        # The storage's id of a trial, from public API: Trial and FrozenTrial keep theirs private.
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)

    def beat(self, trial) -> None:
        if not self.enabled:
            return
        trial_id = self.id_of(trial)
        with self._lock:
            self.trial_ids.add(trial_id)
        self.storage.record_heartbeat(trial_id)

    def done(self, trial) -> None:
        if not self.enabled:
            return
        trial_id = self.id_of(trial)
        with self._lock:
            self.trial_ids.discard(trial_id)

    def _loop(self) -> None:
        interval = self.storage.get_heartbeat_interval()
        while True:
            time.sleep(interval)
            with self._lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # noqa: BLE001  (a lost beat only lets another sweeper take it over)
                    log.warning("could not record trial %d's heartbeat: %s", trial_id, exc)
