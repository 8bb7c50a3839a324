"""The search's heartbeats (search/heartbeat.py) against the installed Optuna, through its public
storage API only: a trial the sweeper still beats for stays running, one it stopped beating for is
failed after the grace period and queued again."""
import time

import optuna
import pytest
from optuna.trial import TrialState

from aprelu_exp.search.heartbeat import Heartbeats, fail_stale, heartbeat_settings
from aprelu_exp.search.storage import open_storage

# Optuna's notices about its experimental heartbeat API, which the search's commands filter
# (heartbeat.py) and pytest shows again in each test.
pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")]


def test_a_trial_without_beats_is_failed_and_queued_again(tmp_path):
    settings = {"heartbeat_interval": 1, "grace_period": 2, "retry_failed": 1}
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat=heartbeat_settings(settings))
    study = optuna.create_study(study_name="s", storage=storage)
    beats = Heartbeats(storage, study)
    kept, dropped = study.ask(), study.ask()
    beats.beat(kept)
    beats.beat(dropped)
    assert beats.trial_ids == {storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name("s"), n) for n in (0, 1)}
    beats.done(dropped)  # as if its sweeper had died: no beat for it any more
    time.sleep(3.2)
    fail_stale(study, storage)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states == {0: TrialState.RUNNING, 1: TrialState.FAIL, 2: TrialState.WAITING}


def test_no_heartbeat_without_a_database(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 'studies.log'}", heartbeat=None)
    study = optuna.create_study(study_name="s", storage=storage)
    beats = Heartbeats(storage, study)
    trial = study.ask()
    beats.beat(trial)
    fail_stale(study, storage)
    assert not beats.enabled and beats.trial_ids == set() and study.trials[0].state == TrialState.RUNNING
