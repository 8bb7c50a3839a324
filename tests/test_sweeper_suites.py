"""The project's sweepers are Hydra plugins: any Hydra app can select them, so they pass Hydra's own
sweeper suites (hydra.test_utils.launcher_common_tests, as Hydra's plugins test themselves) on
Hydra's test app (hydra.test_utils.a_module: no seed, no record, no run_root; its task returns 100).
The fixtures (hydra_sweep_runner, hydra_restore_singletons) come from Hydra's pytest plugin."""
from __future__ import annotations

import optuna
import pytest
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite, LauncherTestSuite
from omegaconf import OmegaConf
from optuna.trial import TrialState

# Hydra's test app leaves hydra.job.chdir unset, as Hydra's own suites do; the notice is theirs. The
# search's commands filter Optuna's notices about its experimental heartbeats; pytest shows them again.
pytestmark = [pytest.mark.filterwarnings("ignore:Future Hydra versions will no longer change working directory"),
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")]

REPLICATES = ["hydra/sweeper=replicates"]
# A grid of Hydra's comma lists, two trials a batch; with no storage an app without run_root keeps
# its study in memory, so nothing is written beside the sweep.
OPTUNA = ["hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_jobs=2"]


@pytest.fixture(autouse=True)
def _hydra_version_base_unset():
    # Hydra's suites expect its compatibility defaults (a job chdirs into its sweep folder, where
    # its log lands): the version base a Hydra process starts with. It is a process-wide singleton
    # that an earlier test's initialize(version_base="1.3") in the same worker leaves set, so each
    # test here starts with it unset and gives the old one back.
    from hydra import version

    held = version.VersionBase.instance()  # a Singleton: constructing one gives back this one
    before = held.getbase()
    held.version_base = version._UNSPECIFIED_
    yield
    held.version_base = before


# Each suite gets a copy: BatchedSweeperTestSuite extends the list it is given.
@pytest.mark.parametrize("launcher_name, overrides", [("basic", [*REPLICATES])])
class TestReplicatesSweeper(LauncherTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides", [("basic", [*REPLICATES, "hydra.sweeper.max_batch_size=2"])])
class TestReplicatesSweeperBatches(BatchedSweeperTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides", [("basic", [*OPTUNA])])
class TestOptunaSweeper(LauncherTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides", [("basic", [*OPTUNA])])
class TestOptunaSweeperBatches(BatchedSweeperTestSuite):
    pass


def _sweep(runner, tmp_path, overrides, task=None):
    return runner(calling_file=None, calling_module="hydra.test_utils.a_module", task_function=task,
                  config_path="configs", config_name="compose", overrides=overrides, temp_dir=tmp_path / "sweep")


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_replicates_use_the_apps_own_seed(hydra_sweep_runner, tmp_path):
    # Not the project's app, but one with `seed` and `replicates`: every point runs with seed..seed+N-1.
    with _sweep(hydra_sweep_runner, tmp_path, [*REPLICATES, "+seed=5", "+replicates=2", "+a=0,1"]) as sweep:
        jobs = [(r.cfg.a, r.cfg.seed) for batch in sweep.returns for r in batch]
    assert jobs == [(0, 5), (0, 6), (1, 5), (1, 6)]


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_replicates_without_a_seed_are_refused(hydra_sweep_runner, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        with _sweep(hydra_sweep_runner, tmp_path, [*REPLICATES, "+replicates=2", "+a=0,1"]):
            pass
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "replicates=2 needs an integer seed" in err and "no `seed` key" in err
    assert not list((tmp_path / "sweep").glob("*/.hydra"))  # no job was started


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_optuna_on_another_app_tells_each_trial_its_return(hydra_sweep_runner, tmp_path, monkeypatch):
    # The objective is what the task returns (as under Hydra's Optuna sweeper): a string fails its
    # trial, the sweep goes on and returns every job. The storage is the one given; nothing lands
    # in the working directory.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    overrides = [*OPTUNA, f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=s",
                 "hydra.sweeper.objective.direction=minimize", "+a=2,1,0", "bar=7"]
    with _sweep(hydra_sweep_runner, tmp_path, overrides, task=lambda c: "no number" if c.a == 1 else 10 + c.a) as sweep:
        assert [r.overrides for batch in sweep.returns for r in batch] == [["+a=2", "bar=7"], ["+a=1", "bar=7"],
                                                                           ["+a=0", "bar=7"]]
        assert [len(batch) for batch in sweep.returns] == [2, 1]
        results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
        assert results.best_params == {"+a": 0} and results.best_value == 10
        assert not (tmp_path / "sweep" / "search.json").exists()  # the project's files, for its runs only
    study = optuna.load_study(study_name="s", storage=storage)
    assert [(t.params, t.state, t.value) for t in study.trials] == [
        ({"+a": 2}, TrialState.COMPLETE, 12), ({"+a": 1}, TrialState.FAIL, None), ({"+a": 0}, TrialState.COMPLETE, 10)]
    assert "no number" in study.trials[1].user_attrs["error"]
    assert list(cwd.iterdir()) == []


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_optuna_on_another_app_samples_intervals(hydra_sweep_runner, tmp_path):
    # Not a grid: Optuna's own sampler draws the trials, as many as n_trials, one job each.
    overrides = ["hydra/sweeper=optuna", "hydra/sweeper/sampler=random", "hydra.sweeper.n_trials=3",
                 "+x=interval(0, 1)"]
    with _sweep(hydra_sweep_runner, tmp_path, overrides, task=lambda c: c.x) as sweep:
        values = [r.return_value for batch in sweep.returns for r in batch]
        assert len(values) == 3 and len(set(values)) == 3 and all(0 <= v <= 1 for v in values)
        assert [r.overrides for batch in sweep.returns for r in batch] == [[f"+x={v!r}"] for v in values]
