"""Third-party notices nobody using this tool can act on are filtered, in a command's own process and
in a joblib worker's; actionable ones stay."""
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from lightning_fabric.plugins.environments import SLURMEnvironment

from aprelu_exp.console.noise import SLURM_JOB_VARIABLES, quiet_third_party

SRUN_HINT = "The `srun` command is available on your system but is not used"


def _fake_srun(tmp_path: Path) -> Path:
    """A directory holding an executable `srun`, as a cluster's login node has on its PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    return bin_dir


def _warnings_of_lightnings_srun_check() -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()  # not the test run's own filters (pyproject's filterwarnings)
        warnings.simplefilter("always")
        quiet_third_party()
        SLURMEnvironment._validate_srun_used()  # what Lightning's Trainer runs when it starts
    return [str(w.message) for w in caught]


def test_the_srun_hint_is_filtered_outside_a_slurm_job_and_kept_inside_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{_fake_srun(tmp_path)}:/usr/bin:/bin")
    for name in SLURM_JOB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not any(SRUN_HINT in m for m in _warnings_of_lightnings_srun_check())
    # Inside an allocation (salloc's shell, an sbatch script) a process not started by srun is
    # what the hint is about: it stays.
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")
    assert any(SRUN_HINT in m for m in _warnings_of_lightnings_srun_check())


@pytest.mark.slow
def test_joblib_jobs_print_no_third_party_notices(tmp_path, cli_env):
    # Each job runs in a loky worker process that never ran the command's start-up.
    env = {k: v for k, v in cli_env.items() if k not in SLURM_JOB_VARIABLES}
    env["PATH"] = f"{_fake_srun(tmp_path)}:{env.get('PATH', '/usr/bin:/bin')}"
    out = subprocess.run([sys.executable, "-m", "aprelu_exp", "-m", "hydra/launcher=joblib",
                          "hydra.launcher.n_jobs=2", "seed=0,1", f"run_root={tmp_path / 'runs'}",
                          "data.train_subset=200", "data.test_subset=100", "trainer.max_epochs=1", "logger=none"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("epoch 1/1 | ") == 2  # both jobs trained and said so
    shown = out.stdout + out.stderr
    for notice in (SRUN_HINT, "LeafSpec", "litlogger"):
        assert notice not in shown, notice
