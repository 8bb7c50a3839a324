"""A search shared through a PostgreSQL server (hydra.sweeper.storage=postgresql://...), the one of
scripts/local_cluster.sh: several sweepers on one study, a sweeper killed mid-trial, a database that
refuses. The tests that need the server are marked `cluster` and skip where it is not up."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from aprelu_exp.search.heartbeat import retry_callback
from cluster import REPO, postgres_url, start_cli, wait_for

TINY = ["data.train_subset=200", "data.test_subset=100", "logger=none", "trainer.enable_progress_bar=false",
        "hydra/sweeper/pruner=none", "model.reduction=choice(4,8,16)"]


def search(url: str, study: str, root, *extra: str) -> list[str]:
    return ["-m", "hydra/sweeper=optuna", *TINY, f"hydra.sweeper.storage={url}",
            f"hydra.sweeper.study_name={study}", f"run_root={root}", *extra]


def env_for(cli_env) -> dict:
    return {**cli_env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def finish(proc, log, timeout=400) -> None:
    try:
        assert proc.wait(timeout=timeout) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.cluster
def test_two_sweepers_share_one_study_and_a_third_continues_its_numbering(cli_env, tmp_path):
    # the password from the environment (libpq's PGPASSWORD), as docs/cluster.md advises: the URL is
    # passed to every job and shows in logs and configs
    full, study = make_url(postgres_url()), f"shared-{uuid.uuid4().hex[:8]}"
    url = f"{full.drivername}://{full.username}@{full.host}:{full.port}/{full.database}"
    env = {**env_for(cli_env), "PGPASSWORD": full.password}
    logs = [tmp_path / f"machine{i}.log" for i in (0, 1)]
    procs = [start_cli(search(url, study, tmp_path / "machine0", "trainer.max_epochs=1", "hydra.sweeper.n_trials=2",
                              "hydra.sweeper.sampler.seed=0"), env, logs[0]),
             start_cli(search(url, study, tmp_path / "machine1", "trainer.max_epochs=1", "hydra.sweeper.n_trials=2",
                              "hydra.sweeper.sampler.seed=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1"),
                       env, logs[1])]
    for proc, log in zip(procs, logs):
        finish(proc, log)
    trials = optuna.load_study(study_name=study, storage=full.render_as_string(hide_password=False)).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]           # none lost, none duplicated
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4     # none left RUNNING
    assert {os.path.basename(t.user_attrs["run_dir"].split("/multirun/")[0]) for t in trials} == {"machine0", "machine1"}

    log = tmp_path / "machine2.log"
    finish(start_cli(search(url, study, tmp_path / "machine2", "trainer.max_epochs=1", "hydra.sweeper.n_trials=1",
                            "hydra.sweeper.sampler.seed=2"), env, log), log)
    trials = optuna.load_study(study_name=study, storage=full.render_as_string(hide_password=False)).trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4] and trials[4].state == TrialState.COMPLETE
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".log", ".yaml", ".json", ".md", ".csv"):
            assert full.password not in path.read_text(errors="replace"), path


@pytest.mark.cluster
def test_a_killed_sweepers_trial_is_failed_after_its_grace_period_and_retried(cli_env, tmp_path):
    url, study = postgres_url(), f"killed-{uuid.uuid4().hex[:8]}"
    env = env_for(cli_env)
    beat = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]
    log = tmp_path / "killed.log"
    proc = start_cli(search(url, study, tmp_path / "a", "trainer.max_epochs=20", "hydra.sweeper.n_trials=1", *beat),
                     env, log)
    try:
        def running():
            try:
                trials = optuna.load_study(study_name=study, storage=url).trials
            except KeyError:
                return False
            return trials and trials[0].state == TrialState.RUNNING and trials[0].user_attrs.get("overrides")
        wait_for("the trial running", running, 300, proc, log)
        time.sleep(2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)   # the sweeper and its job, mid-trial
    proc.wait()
    (left,) = optuna.load_study(study_name=study, storage=url).trials
    assert left.state == TrialState.RUNNING   # what a dead sweeper leaves; nobody else can tell
    time.sleep(4)                              # past the grace period

    log = tmp_path / "next.log"
    finish(start_cli(search(url, study, tmp_path / "b", "trainer.max_epochs=1", "hydra.sweeper.n_trials=1", *beat),
                     env, log), log)
    trials = optuna.load_study(study_name=study, storage=url).trials
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.FAIL), (1, TrialState.COMPLETE)]
    assert retry_callback().retried_trial_number(trials[1]) == 0   # the same point, asked again
    assert trials[1].params == trials[0].params
    assert "had no heartbeat" in log.read_text()


def _refused(url: str, cli_env, tmp_path) -> str:
    out = subprocess.run([sys.executable, "-m", "aprelu_exp", *search(url, "x", tmp_path / "runs", "trainer.max_epochs=1",
                                                                      "hydra.sweeper.n_trials=1")],
                         env=env_for(cli_env), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    (paragraph,) = out.stderr.strip().splitlines()
    assert paragraph.startswith("error: ") and "Traceback" not in out.stderr
    assert not (tmp_path / "runs" / "multirun").exists()    # before any trial: no sweep directory
    return paragraph


@pytest.mark.slow
def test_a_database_that_refuses_the_connection_is_named_without_its_password(cli_env, tmp_path):
    paragraph = _refused("postgresql://aprelu:s3cret-pw@127.0.0.1:1/aprelu_test", cli_env, tmp_path)
    assert "postgresql://aprelu:***@127.0.0.1:1/aprelu_test" in paragraph and "s3cret-pw" not in paragraph
    assert "refused" in paragraph.lower(), paragraph


@pytest.mark.cluster
def test_a_wrong_password_is_refused_before_any_trial(cli_env, tmp_path):
    url = make_url(postgres_url()).set(password="not-the-password")
    paragraph = _refused(url.render_as_string(hide_password=False), cli_env, tmp_path)
    assert url.render_as_string(hide_password=True) in paragraph and "not-the-password" not in paragraph
    assert "password authentication failed" in paragraph, paragraph
