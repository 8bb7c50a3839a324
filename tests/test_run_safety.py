"""One process per run directory, damaged checkpoints, a full disk, and the run's progress lines."""
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from aprelu_exp.errors import UserError
from aprelu_exp.runs import checkpoint as ckpt_module
from aprelu_exp.runs.rundir import read_status
from aprelu_exp.train import train
import inprocess
from test_cli import run_cli, run_dirs

ONE = ["data.train_subset=200", "data.test_subset=100", "trainer.max_epochs=1"]


def _finished_run(make_cfg, cifar, tmp_path):
    run = tmp_path / "run"
    train(make_cfg(*ONE), run, arrays=cifar)
    return run


def _resume(make_cfg, cifar, run, *extra):
    return train(make_cfg(*ONE, "trainer.max_epochs=2", f"resume={run}", *extra), run, arrays=cifar)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_lock_left_by_a_dead_process_is_taken_over(make_cfg, cifar, tmp_path, caplog):
    run = _finished_run(make_cfg, cifar, tmp_path)
    dead = _dead_pid()
    (run / "run.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead, "since": "then"}))
    with caplog.at_level(logging.WARNING):
        summary = _resume(make_cfg, cifar, run)
    assert summary["status"] == "finished" and summary["epochs_completed"] == 2
    assert any(f"left by process {dead}" in r.getMessage() and "taking it over" in r.getMessage()
               for r in caplog.records)
    assert not (run / "run.lock").exists()


def test_a_run_held_by_a_live_process_is_refused_naming_host_and_pid(make_cfg, cifar, tmp_path):
    run = _finished_run(make_cfg, cifar, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"host": socket.gethostname(), "pid": holder.pid, "since": "now"}
        (run / "run.lock").write_text(json.dumps(lock))
        before = (run / "metrics.csv").read_text()
        with pytest.raises(UserError, match=rf"process {holder.pid} on this host is training in it"):
            _resume(make_cfg, cifar, run)
        assert (run / "metrics.csv").read_text() == before  # nothing touched
        assert json.loads((run / "run.lock").read_text())["pid"] == holder.pid
        lock["host"] = "gpu-node-7"  # another host: its PIDs cannot be checked from here
        (run / "run.lock").write_text(json.dumps(lock))
        with pytest.raises(UserError, match=rf"process {holder.pid} on host gpu-node-7"):
            _resume(make_cfg, cifar, run)
    finally:
        holder.kill()
        holder.wait()


def test_a_truncated_checkpoint_is_refused_naming_it_and_offering_best(make_cfg, cifar, tmp_path):
    run = _finished_run(make_cfg, cifar, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(UserError) as err:
        _resume(make_cfg, cifar, run)
    message = str(err.value)
    assert str(last) in message and "cannot be read" in message
    assert f"resume={run} resume_from=best" in message
    summary = _resume(make_cfg, cifar, run, "resume_from=best")
    assert summary["status"] == "finished" and summary["epochs_completed"] == 2


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(make_cfg, cifar, tmp_path, monkeypatch):
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch", 0) >= 1:
            real_save(obj, f, *args, **kwargs)  # part of the bytes reach the disk, then it is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt_module.torch, "save", save)
    run = tmp_path / "run"
    with pytest.raises(OSError, match="No space left on device"):
        train(make_cfg(*ONE, "trainer.max_epochs=2"), run, arrays=cifar)
    status = read_status(run)
    assert status["status"] == "failed" and "No space left on device" in status["error"]
    kept = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert kept["epoch"] == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_progress_is_one_line_per_epoch_when_stdout_is_not_a_terminal(cli_env, tmp_path):
    out = run_cli([f"run_root={tmp_path}", *ONE, "trainer.max_epochs=2", "logger=none"], cli_env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("epoch ")]
    assert [ln.split(" | ")[0] for ln in lines] == ["epoch 1/2", "epoch 2/2"]
    for ln in lines:
        for part in ("train 0.", "val 0.", "article 0.", "img/s", "elapsed "):
            assert part in ln, (part, ln)
    assert "left ~" in lines[0]
    # No tqdm bar redraws in a log file, and none of the third-party noise a user cannot act on.
    assert "\r" not in out.stdout and "it/s]" not in out.stdout
    assert "LeafSpec" not in out.stderr and "No CUDA runtime" not in out.stderr and "litlogger" not in out.stdout


def _pty(rows: int | None = None, cols: int | None = None) -> tuple[int, int]:
    """A new pseudo-terminal (master, slave); a new one has the size 0 x 0 unless given one."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    if rows is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return master, slave


def _run_on_a_terminal(args, env, cwd, rows=None, cols=None) -> tuple[int, str]:
    """`python -m aprelu_exp ARGS` with its stdout on a pseudo-terminal: exit status, what it showed."""
    master, slave = _pty(rows, cols)
    proc = subprocess.Popen([sys.executable, "-m", "aprelu_exp", *args], cwd=cwd, env=env, stdout=slave,
                            stderr=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_progress_bar_on_a_terminal_shows_the_whole_run(cli_env, tmp_path):
    # A terminal of 40 x 250 characters.
    code, text = _run_on_a_terminal([f"run_root={tmp_path}", *ONE, "trainer.max_epochs=2", "logger=none",
                                     "progress_refresh_rate=1"], cli_env, tmp_path, rows=40, cols=250)
    assert code == 0
    assert "Epoch 1/2" in text and "Epoch 2/2" in text
    assert "elapsed" in text and "left" in text and "article 0." in text and "img/s" in text


@pytest.mark.slow
def test_a_terminal_of_no_size_shows_every_epochs_line(cli_env, tmp_path):
    # `script` started from a non-terminal, some CI consoles, `docker run -t`: a pseudo-terminal
    # of 0 x 0, on which tqdm draws nothing.
    code, text = _run_on_a_terminal([f"run_root={tmp_path}", *ONE, "trainer.max_epochs=2", "logger=none"],
                                    cli_env, tmp_path)
    assert code == 0
    lines = [ln.strip() for ln in text.splitlines() if ln.startswith("epoch ")]
    assert [ln.split(" | ")[0] for ln in lines] == ["epoch 1/2", "epoch 2/2"], text[-3000:]
    assert all("article 0." in ln and "img/s" in ln for ln in lines)


@pytest.mark.parametrize("size, shown", [(None, "EpochLines"), ((40, 20), "EpochLines"),
                                         ((40, 250), "RunProgressBar")])
def test_the_bar_is_drawn_only_on_a_terminal_wide_enough_for_it(size, shown):
    from aprelu_exp.console.progress import run_progress

    master, slave = _pty(*(size or ()))
    try:
        with os.fdopen(os.dup(slave), "w") as terminal:
            assert terminal.isatty()
            assert type(run_progress(3, recorder=None, stream=terminal)).__name__ == shown
    finally:
        os.close(slave)
        os.close(master)


@pytest.mark.slow
def test_a_second_resume_of_a_running_run_is_refused(cli_env, tmp_path):
    args = [f"run_root={tmp_path}", "data.train_subset=1000", "data.test_subset=200", "trainer.max_epochs=20",
            "logger=none"]
    proc = subprocess.Popen([sys.executable, "-m", "aprelu_exp", *args], cwd=tmp_path, env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not any((d / "checkpoints" / "last.ckpt").exists() for d in run_dirs(tmp_path)):
            time.sleep(0.2)
        (run,) = run_dirs(tmp_path)
        second = inprocess.run_cli([f"resume={run}"], cli_env, cwd=tmp_path)
        assert second.returncode == 2
        assert f"process {proc.pid} on this host is training in it" in second.stderr
        assert read_status(run)["status"] == "running"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    assert proc.returncode == 130 and read_status(run)["status"] == "interrupted"


def _start_and_wait_for_a_checkpoint(args, env, root, cwd):
    proc = subprocess.Popen([sys.executable, "-m", "aprelu_exp", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        done = [p for p in root.rglob("last.ckpt")]
        if done:
            return proc, done[0].parents[1]
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    raise AssertionError("no epoch finished")


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once(cli_env, tmp_path):
    # Steps of 1,000 images (about a second each here): the first Ctrl-C waits for the step to end,
    # so the second, 20 ms later, lands while the first is still pending even on a loaded machine
    # (with steps of 100 the first stop could finish before the second came: a flaky test).
    proc, run = _start_and_wait_for_a_checkpoint(
        [f"run_root={tmp_path}", "data.train_subset=4000", "data.test_subset=100", "trainer.max_epochs=5",
         "data.batch_size=1000", "logger=none"], cli_env, tmp_path, tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)  # a loaded 2-core machine takes its time to write the stop; a hang still fails
    assert proc.returncode == 130
    status = read_status(run)
    assert status["status"] == "interrupted" and "twice" in status["error"]
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] >= 0


@pytest.mark.slow
def test_ctrl_c_in_a_sweep_leaves_a_report_with_the_job_interrupted(cli_env, tmp_path):
    import csv

    marker = tmp_path / "paused"  # the first job waits in its second epoch's training steps for the stop
    env = {**cli_env, "APRELU_PAUSE_AT": "training", "APRELU_PAUSE_MARKER": str(marker)}
    proc, run = _start_and_wait_for_a_checkpoint(
        ["-m", f"run_root={tmp_path}", "data.train_subset=1000", "data.test_subset=100", "trainer.max_epochs=4",
         "logger=none", "seed=0,1"], env, tmp_path, tmp_path)
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.stderr.read()[-2000:] if proc.poll() is not None else "no pause"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    (sweep,) = list((tmp_path / "multirun").iterdir())
    # the line names how to go on with the whole sweep, and with this job alone
    assert f"Resume the sweep with: python -m aprelu_exp -m resume={sweep} (this job alone: " in err, err[-2000:]
    assert f"python -m aprelu_exp resume={run})" in err
    table = list(csv.DictReader(open(sweep / "runs.csv")))
    assert [r["status"] for r in table] == ["interrupted"]  # the second job never started
    assert "SIGINT" in table[0]["error"]
