"""The project's sweepers are Hydra plugins: any Hydra app can select them, so they pass Hydra's own
sweeper suites (hydra.test_utils.launcher_common_tests, as Hydra's plugins test themselves) on
Hydra's test app (hydra.test_utils.a_module: no seed, no record, no run_root; its task returns 100).
The fixtures (hydra_sweep_runner, hydra_restore_singletons) come from Hydra's pytest plugin."""
from __future__ import annotations

import pytest
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite, LauncherTestSuite

# Hydra's test app leaves hydra.job.chdir unset, as Hydra's own suites do; the notice is theirs.
pytestmark = pytest.mark.filterwarnings("ignore:Future Hydra versions will no longer change working directory")

REPLICATES = ["hydra/sweeper=replicates"]


@pytest.mark.parametrize("launcher_name, overrides", [("basic", REPLICATES)])
class TestReplicatesSweeper(LauncherTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides", [("basic", [*REPLICATES, "hydra.sweeper.max_batch_size=2"])])
class TestReplicatesSweeperBatches(BatchedSweeperTestSuite):
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
