"""Stop a real run (`python -m aprelu_exp` in its own process group) at a named moment, as a
terminal's Ctrl-C or `kill` would, and collect what the user meets.

Each moment is found from the run's own progress, never from a sleep: the libraries it maps, the
files it holds open, the files it writes, the C++ compiler among its children, or the marker it
writes where it is told to pause (APRELU_PAUSE_AT, see aprelu_exp/runs/moments.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

# What the C++ compiler driver starts; any of them in the run's process group means inductor compiles.
COMPILERS = {"cc1plus", "cc1", "g++", "gcc", "c++", "cc", "as", "ld", "collect2", "x86_64-linux-gnu-g++"}


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in Path(root).rglob(".hydra"))


def _proc_text(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_text(errors="replace")
    except OSError:
        return ""


def group_commands(pgid: int) -> set[str]:
    """The command names of the live processes in a process group."""
    names = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_text(int(entry.name), "stat")
        if ")" not in stat:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            names.add(comm)
    return names


def open_files(pid: int) -> list[str]:
    out = []
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return out
    for fd in fds:
        try:
            out.append(os.readlink(fd))
        except OSError:
            pass
    return out


@dataclass
class Watch:
    """What the waiting loop can see of a live run."""

    proc: subprocess.Popen
    root: Path
    marker: Path

    def dirs(self) -> list[Path]:
        return run_dirs(self.root)

    def taken(self) -> list[Path]:
        return [d for d in self.dirs() if (d / "status.json").exists()]


def importing_torch(w: Watch) -> bool:
    # The command loads torch when its job starts, after Hydra made the job's directory (.hydra/
    # only): the run has not taken it yet.
    return "libtorch" in _proc_text(w.proc.pid, "maps") and not w.taken()


def checking_data(w: Watch) -> bool:
    return any("cifar-10-batches-bin" in f for f in open_files(w.proc.pid))


def run_directory_taken(w: Watch) -> bool:
    return bool(w.taken())


def compiling(w: Watch) -> bool:
    return bool(group_commands(w.proc.pid) & COMPILERS)


def second_epoch_training(w: Watch) -> bool:
    """After the first epoch's last.ckpt is written (its last act) the next epoch's batches run."""
    return any((d / "checkpoints" / "last.ckpt").exists() for d in w.taken())


def paused(w: Watch) -> bool:
    return w.marker.exists()


@dataclass
class Stopped:
    moment: str
    signum: int
    returncode: int | None
    seconds: float | None  # from the signal to the process's exit
    stdout: str
    stderr: str
    dirs: list[Path]
    status: dict = field(default_factory=dict)
    last_epoch: int | None = None
    pid: int | None = None  # the command's, which led its own process group

    @property
    def after_signal(self) -> str:
        """stderr from the signal on (what the user sees after pressing Ctrl-C)."""
        return self.stderr.split("\x00SIGNAL\x00", 1)[-1]

    def row(self) -> str:
        lines = [ln for ln in self.after_signal.splitlines() if ln.strip()]
        status = self.status.get("status", "-")
        return (f"| {self.moment} | {signal.Signals(self.signum).name} | {self.returncode} | "
                f"{'%.1f' % self.seconds if self.seconds is not None else 'no exit'} | {len(lines)} | "
                f"{'yes' if 'Traceback' in self.after_signal else 'no'} | {status} | {len(self.dirs)} | "
                f"{self.last_epoch if self.last_epoch is not None else '-'} |")


def stop_at(moment: str, ready, args: list[str], env: dict, root: Path, signum: int, cwd: Path,
            pause: str | None = None, wait_s: float = 600, exit_s: float = 120) -> Stopped:
    """Start the run, wait until `ready(watch)` holds, send `signum` to its process group, and
    collect what it left. The stderr text carries a NUL-delimited mark where the signal went."""
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f".paused-{moment}"
    env = dict(env)
    if pause:
        env.update(APRELU_PAUSE_AT=pause, APRELU_PAUSE_MARKER=str(marker))
    out_f, err_f = open(root / f".{moment}.out", "w+"), open(root / f".{moment}.err", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "aprelu_exp", f"run_root={root}", *args], cwd=cwd, env=env,
                            stdout=out_f, stderr=err_f, text=True, start_new_session=True,
                            # As from a terminal: a shell's background job would start it with SIGINT ignored.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    watch = Watch(proc, root, marker)
    deadline = time.monotonic() + wait_s
    try:
        while not ready(watch):
            if proc.poll() is not None:
                raise AssertionError(f"the run ended (exit {proc.returncode}) before the moment {moment}:\n"
                                     + Path(err_f.name).read_text()[-3000:])
            if time.monotonic() > deadline:
                raise AssertionError(f"the moment {moment} never came")
            time.sleep(0.005)
        err_f.flush()
        signalled_at = len(Path(err_f.name).read_text())
        os.killpg(proc.pid, signum)
        sent = time.monotonic()
        try:
            proc.wait(timeout=exit_s)
            seconds = time.monotonic() - sent
        except subprocess.TimeoutExpired:
            seconds = None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out_f.close()
        err_f.close()
    err = Path(err_f.name).read_text()
    stopped = Stopped(moment, signum, proc.returncode, seconds, Path(out_f.name).read_text(),
                      err[:signalled_at] + "\x00SIGNAL\x00" + err[signalled_at:], run_dirs(root), pid=proc.pid)
    for d in stopped.dirs:
        if (d / "status.json").exists():
            stopped.status = json.loads((d / "status.json").read_text())
        ckpt = d / "checkpoints" / "last.ckpt"
        if ckpt.exists():
            stopped.last_epoch = int(torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"])
    return stopped


HEADER = ("| moment | signal | exit | s to exit | stderr lines after | traceback | status | run dirs | "
          "last.ckpt epoch |\n|---|---|---|---|---|---|---|---|---|")
