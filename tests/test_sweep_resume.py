"""A whole sweep resumed: `python -m aprelu_exp -m resume=<sweep dir>` after the sweep was killed
(SIGKILL to its process group, jobs included) goes on with it. Finished jobs are not trained again
(their metrics.csv byte for byte and mtime the same), the interrupted job continues from its
checkpoint, the job that never started runs, and every job's metrics and the sweep's report equal
those of the same sweep run without interruption; under the basic launcher, joblib and replicates=N.
A finished sweep resumed trains nothing and says so. Where the sweep is killed is found from its
files (the pause marker of aprelu_exp/runs/moments.py, the checkpoints), never from a sleep.

The 2x2 sweep is `trainer.max_epochs=1,2` x two seeds: the one-epoch jobs (#0, #1) finish without
pausing (a run pauses from its second epoch on), job #2 pauses in its second epoch and is killed
there with its first epoch's checkpoint, job #3 has not started."""
from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import stop_moments as sm
from aprelu_exp.metrics import TIMINGS

TINY = ["data.train_subset=200", "data.test_subset=100", "logger=none", "trainer.enable_progress_bar=false"]
GRID = ["trainer.max_epochs=1,2", *TINY]
SEEDS = ["seed=0,1"]  # the replicates variant gives the same seeds with replicates=2
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
MULTIRUN = ["-m"]  # last: argparse takes no overrides after a flag
# Columns a repeat cannot reproduce: how long it took.
VARYING = {*TIMINGS, "wall_time_s", "train_images_per_s"}


def _cli(args: list[str], env: dict, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aprelu_exp", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _sweep(root: Path) -> Path:
    (sweep,) = (root / "multirun").iterdir()
    return sweep


def _job(sweep: Path, num: int) -> Path:
    (job,) = sweep.glob(f"{num}_*")
    return job


def _rows(path: Path, drop=frozenset()) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k not in VARYING | set(drop)} for r in csv.DictReader(fh)]


def _fingerprint(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def _group_gone(pgid: int) -> bool:
    deadline = time.monotonic() + 30
    while sm.group_commands(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not sm.group_commands(pgid)


def _uninterrupted(args: list[str], cifar_root: Path, tmp_path_factory) -> Path:
    import os

    root = tmp_path_factory.mktemp("reference")
    env = {**os.environ, "APRELU_DATA_ROOT": str(cifar_root), "PYTHONUNBUFFERED": "1"}
    out = _cli([f"run_root={root}", *args, *MULTIRUN], env, root)
    assert out.returncode == 0, out.stderr[-3000:]
    return _sweep(root)


@pytest.fixture(scope="module")
def reference(cifar_root, tmp_path_factory):
    """The same sweep, never interrupted (basic launcher)."""
    return _uninterrupted([*GRID, *SEEDS], cifar_root, tmp_path_factory)


@pytest.fixture(scope="module")
def joblib_reference(cifar_root, tmp_path_factory):
    """The joblib sweep, never interrupted: its workers train with fewer threads each, so its sums
    differ from the basic launcher's in the last bits."""
    return _uninterrupted([*GRID, *SEEDS, *JOBLIB], cifar_root, tmp_path_factory)


def _kill_and_resume(args: list[str], ready, cli_env: dict, tmp_path: Path, reference: Path,
                     report_drop=frozenset(), both_continue=False) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path / "runs"
    stopped = sm.stop_at("job 2, epoch 2", ready, [*args, *MULTIRUN], cli_env, root, signal.SIGKILL, cwd=tmp_path,
                         pause="validation")
    assert stopped.returncode == -signal.SIGKILL
    assert _group_gone(stopped.pid), "a job of the killed sweep lives on"
    sweep = _sweep(root)
    finished = {n: _fingerprint(_job(sweep, n) / "metrics.csv") for n in (0, 1)}
    epoch_1 = (_job(sweep, 2) / "metrics.csv").read_text().splitlines()[:2]  # header and epoch 1, with timings

    out = _cli(["-m", f"resume={sweep}"], cli_env, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    said = [ln for ln in out.stdout.splitlines() if ln.startswith("resuming sweep")]
    expected = f"resuming sweep {sweep} (4 jobs): jobs #0, #1: finished, not trained again; " + (
        "jobs #2, #3: from the last checkpoint" if both_continue else
        "job #2: from the last checkpoint; "
        "job #3: from the start (never started, or stopped before a first checkpoint)")
    assert said == [expected], out.stdout[-3000:]
    # Not trained twice: the finished jobs' files untouched, job 2's first epoch kept as it was
    # measured (its timings could not repeat), the second trained once.
    assert {n: _fingerprint(_job(sweep, n) / "metrics.csv") for n in (0, 1)} == finished
    assert (_job(sweep, 2) / "metrics.csv").read_text().splitlines()[:2] == epoch_1
    for n in range(4):
        job, twin = _job(sweep, n), _job(reference, n)
        assert _rows(job / "metrics.csv") == _rows(twin / "metrics.csv"), job
        assert [int(r["epoch"]) for r in _rows(job / "metrics.csv")] == list(range(1, 1 + n // 2 + 1))
    assert _rows(sweep / "runs.csv", report_drop) == _rows(reference / "runs.csv", report_drop)
    assert _rows(sweep / "groups.csv") == _rows(reference / "groups.csv")
    return sweep, out


@pytest.mark.slow
def test_a_killed_sweep_resumes_and_a_finished_one_trains_nothing(reference, cli_env, tmp_path):
    sweep, _ = _kill_and_resume([*GRID, *SEEDS], sm.paused, cli_env, tmp_path, reference)
    kept = {p: _fingerprint(p) for p in sweep.glob("*/metrics.csv")}
    out = _cli(["-m", f"resume={sweep}"], cli_env, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"sweep {sweep}: all 4 jobs had finished; nothing to train" in out.stdout
    assert "Launching" not in out.stdout + out.stderr
    assert {p: _fingerprint(p) for p in sweep.glob("*/metrics.csv")} == kept


@pytest.mark.slow
def test_a_killed_joblib_sweep_resumes(joblib_reference, cli_env, tmp_path):
    def both_paused(w: sm.Watch) -> bool:
        # Jobs 2 and 3 run side by side; each with its first checkpoint is in its second epoch and
        # cannot leave it (it pauses at validation until a signal comes).
        return sm.paused(w) and sum((d / "checkpoints" / "last.ckpt").exists()
                                    for d in w.dirs() if d.name[0] in "23") == 2

    sweep, out = _kill_and_resume([*GRID, *SEEDS, *JOBLIB], both_paused, cli_env, tmp_path, joblib_reference,
                                  both_continue=True)
    assert "Joblib" in out.stdout + out.stderr  # the sweep's own launcher, taken from its multirun.yaml


@pytest.mark.slow
def test_a_killed_sweep_of_replicates_resumes(reference, cli_env, tmp_path):
    # The same runs as the reference, named by replicates=2 instead of a seed sweep.
    _kill_and_resume([*GRID, "replicates=2"], sm.paused, cli_env, tmp_path, reference,
                     report_drop={"overrides", "replicates"})


# -- bad input: refused in one paragraph, exit 2, nothing written -----------------------------------

@pytest.fixture(scope="module")
def failed_sweep(cifar_root, tmp_path_factory):
    """A real sweep of one job, quick because its job is refused (budget and max_epochs contradict)."""
    import os

    root = tmp_path_factory.mktemp("failed")
    env = {**os.environ, "APRELU_DATA_ROOT": str(cifar_root)}
    out = _cli(["-m", f"run_root={root}", "budget=1", "trainer.max_epochs=1", *TINY], env, root)
    assert out.returncode == 1 and "every job of the sweep failed" in out.stderr, out.stderr[-3000:]
    return _sweep(root)


def _tree(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def _refused(args: list[str], env: dict, cwd: Path) -> str:
    before = _tree(cwd)
    out = _cli(args, env, cwd)
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    (line,) = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert line.startswith("error: ") and "Traceback" not in out.stderr
    assert _tree(cwd) == before, "a refused resume wrote something"
    return line


@pytest.mark.slow
@pytest.mark.parametrize("extra,said", [
    (["trainer.max_epochs=3"], "trainer.max_epochs=3 contradicts the sweep's own trainer.max_epochs=1"),
    (["model.reduction=4"], "model.reduction=4 is not among the sweep's own overrides"),
    (["hydra.sweep.subdir=x"], "hydra.sweep.subdir=x is not among the sweep's own overrides"),
])
def test_a_sweep_resume_that_changes_the_sweep_is_refused(failed_sweep, cli_env, extra, said):
    line = _refused(["-m", f"resume={failed_sweep}", *extra], cli_env, failed_sweep.parent.parent)
    assert said in line and "start a new sweep" in line


def test_resume_of_a_folder_that_is_no_sweep_is_refused(cli_env, tmp_path):
    (tmp_path / "notes").mkdir()
    line = _refused(["-m", f"resume={tmp_path / 'notes'}"], cli_env, tmp_path)
    assert "holds no multirun.yaml, so it is no sweep" in line and "-m resume=runs/multirun/<sweep>" in line
    line = _refused(["-m", f"resume={tmp_path / 'absent'}"], cli_env, tmp_path)
    assert "no such directory" in line


@pytest.mark.slow
def test_resume_of_a_job_or_a_sweep_without_m_names_the_command(failed_sweep, cli_env, tmp_path):
    job = _job(failed_sweep, 0)
    line = _refused(["-m", f"resume={job}"], cli_env, failed_sweep.parent.parent)
    assert f"is one job of the sweep {failed_sweep}" in line and f"-m resume={failed_sweep}`" in line
    # Without -m a sweep is no run to continue: the way to continue it is named.
    line = _refused([f"resume={failed_sweep}", f"run_root={tmp_path}"], cli_env, tmp_path)
    assert f"is a sweep: continue it with -m: `python -m aprelu_exp -m resume={failed_sweep}`" in line


# -- the plan, from job directories as a sweep leaves them -------------------------------------------

def test_launches_skip_finished_jobs_and_keep_the_numbering():
    from aprelu_exp.sweep.resume import SweepPlan

    plan = SweepPlan(Path("s"), ["kept", "continue", "kept", "start", "again"])
    assert plan.blocks(5) == [(1, 2), (3, 5)]  # job #1 alone, then #3 and #4 numbered from 3
    assert plan.blocks(1) == [(1, 2), (3, 4), (4, 5)]
    assert SweepPlan(Path("s"), ["start"] * 3).blocks(2) == [(0, 2), (2, 3)]
    assert SweepPlan(Path("s"), ["kept"] * 2).blocks(2) == []


def test_a_job_still_training_refuses_the_resume(tmp_path):
    from omegaconf import OmegaConf

    from aprelu_exp.errors import UserError
    from aprelu_exp.runs.lock import RunLock
    from aprelu_exp.runs.rundir import write_status
    from aprelu_exp.sweep.resume import sweep_plan

    jobs = [["seed=0"], ["seed=1"]]
    for num, overrides in enumerate(jobs):
        job = tmp_path / f"{num}_record_16"
        (job / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    assert sweep_plan(tmp_path, jobs).states == ["start", "start"]
    write_status(tmp_path / "0_record_16", "finished")
    lock = RunLock(tmp_path / "1_record_16").acquire()  # this live process trains job 1
    write_status(tmp_path / "1_record_16", "running")
    with pytest.raises(UserError, match=r"job #1 of the sweep .* is still running: process \d+"):
        sweep_plan(tmp_path, jobs)
    lock.release()  # a job stopped by Ctrl-C: no lock, status interrupted
    write_status(tmp_path / "1_record_16", "interrupted")
    assert sweep_plan(tmp_path, jobs).states == ["kept", "start"]
