"""A user's stop at every moment of a run: Ctrl-C (SIGINT to the process group, as a terminal sends
it) and SIGTERM, each at start-up, the data check, the run directory just taken, compiling, a
training batch, validation, a checkpoint write and the final report. Every moment is found from the
run's own progress (tests/stop_moments.py), never from a sleep.

What must hold at each: exit status 130 / 143, one line on stderr and no traceback, status.json
`interrupted` (or no directory at all when the run had not taken one), the last completed epoch's
checkpoint whole and named in the status, nothing half-written left behind; after a stopped compile
the same compiled run works again with the same compile cache, and a kernel library damaged in that
cache is rebuilt."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import stop_moments as sm
from aprelu_exp.runs.rundir import read_status
from aprelu_exp.training.compile_cache import damaged_libraries

SMALL = ["data.test_subset=100", "trainer.enable_progress_bar=false", "logger=none"]
EAGER = [*SMALL, "data.train_subset=500", "trainer.max_epochs=2"]
# A one-block ReLU network: its compile is the same mechanism as record 16's at a fraction of the cost.
COMPILED = [*SMALL, "data.train_subset=200", "trainer.max_epochs=1", "perf.compile=true", "model/activation=relu",
            "model.stages=[{blocks:1,channels:16,downsample:false}]"]
SIGNALS = [signal.SIGINT, signal.SIGTERM]

# (moment, when it has come, where the run is told to wait for the signal, last.ckpt's epoch after)
MOMENTS = [
    ("start-up", sm.importing_torch, None, None),
    ("data check", sm.checking_data, None, None),
    ("run directory taken", sm.run_directory_taken, None, None),
    ("training batch", sm.second_epoch_training, None, 0),
    ("validation", sm.paused, "validation", 0),
    ("checkpoint write", sm.paused, "checkpoint", 1),  # the write in progress finishes, then the stop
    ("final report", sm.paused, "report", 1),
]


def _one_line_no_traceback(stopped: sm.Stopped) -> str:
    lines = [ln for ln in stopped.after_signal.splitlines() if ln.strip()]
    assert len(lines) == 1, stopped.after_signal
    assert "Traceback" not in stopped.stderr
    return lines[0]


def _check_stopped_run(stopped: sm.Stopped, kept: int | None) -> None:
    signum = stopped.signum
    assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
    line = _one_line_no_traceback(stopped)
    (run,) = stopped.dirs
    status = read_status(run)
    assert status["status"] == "interrupted" and signal.Signals(signum).name in status["error"]
    assert "config.yaml" in {p.name for p in run.iterdir()}
    assert not (run / "run.lock").exists()
    assert not [p for p in run.rglob("*.tmp")], "a half-written file was left"
    ckpt = run / "checkpoints" / "last.ckpt"
    if kept is None:
        assert not ckpt.exists() and "holds no epoch yet" in status["error"]
        return
    assert f"resume={run}" in line
    # Lightning's checkpoint counts epochs from 0; everything a person reads counts from 1.
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] == kept
    assert f"epoch {kept + 1}, the last completed" in status["error"]
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= kept + 1
    assert all(r["val_acc"] for r in rows), "a metrics row was cut short"


@pytest.mark.slow
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("moment,ready,pause,kept", MOMENTS, ids=[m[0] for m in MOMENTS])
def test_a_stop_at_any_moment_ends_the_run_cleanly(moment, ready, pause, kept, signum, cli_env, tmp_path):
    stopped = sm.stop_at(moment, ready, EAGER, cli_env, tmp_path / "runs", signum, cwd=tmp_path, pause=pause,
                         exit_s=60)
    print(sm.HEADER + "\n" + stopped.row())
    if moment in ("start-up", "data check"):
        # Before the run took its directory: one line, and no directory left (Hydra's included).
        assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
        _one_line_no_traceback(stopped)
        assert stopped.dirs == [] and not [p for p in (tmp_path / "runs").rglob("*") if p.is_dir()]
        return
    _check_stopped_run(stopped, kept)


@pytest.mark.slow
def test_a_stop_while_compiling_leaves_a_cache_the_next_run_uses(cli_env, tmp_path):
    """Ctrl-C and SIGTERM while the C++ compiler runs (it gets the signal too); then the same
    compiled run with the same cache; then a kernel library of that cache emptied and another cut
    short, as an interrupted compile leaves them: the run rebuilds them and finishes."""
    cache = tmp_path / "inductor"
    env = {**cli_env, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    for signum in SIGNALS:
        stopped = sm.stop_at("compiling", sm.compiling, COMPILED, env, tmp_path / signal.Signals(signum).name,
                             signum, cwd=tmp_path, exit_s=60)
        print(sm.HEADER + "\n" + stopped.row())
        _check_stopped_run(stopped, None)

    def run_again(root: Path) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, "-m", "aprelu_exp", f"run_root={root}", *COMPILED], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        (run,) = sm.run_dirs(root)
        assert json.loads((run / "summary.json").read_text())["status"] == "finished"
        return out

    run_again(tmp_path / "again")
    libraries = sorted(cache.rglob("*.main.so"))
    assert len(libraries) >= 2 and not damaged_libraries(cache)
    libraries[0].write_bytes(b"")
    libraries[1].write_bytes(libraries[1].read_bytes()[:4096])
    assert damaged_libraries(cache) == sorted(libraries[:2])
    out = run_again(tmp_path / "damaged")
    warnings = [ln for ln in (out.stdout + out.stderr).splitlines() if "damaged kernel" in ln]
    assert len(warnings) == 1 and str(cache) in warnings[0]
    assert not damaged_libraries(cache) and all(p.stat().st_size > 4096 for p in libraries[:2])
