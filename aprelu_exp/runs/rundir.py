"""Run-directory files and the facts a run records about where it ran."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

from aprelu_exp.runs.slurm_job import current_job
from aprelu_exp.runs.stop import stop_requests

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.json"
# pruned: a search's pruner stopped the run early (its epochs are complete and kept; not a failure).
STATES = ("running", "finished", "failed", "interrupted", "pruned")
PACKAGES = ("torch", "torchvision", "pytorch-lightning", "hydra-core", "omegaconf", "numpy")


def unique_suffix() -> str:
    """Random bits for run-directory names: clock resolution alone cannot keep them apart."""
    return secrets.token_hex(3)


def launched_as_global_zero() -> bool:
    """True in the process a user started (or rank 0 of a launched job). Lightning's DDP launcher
    re-runs the command with LOCAL_RANK/NODE_RANK set, and SLURM starts one process per task of a
    job with SLURM_PROCID (the tasks of one job are the DDP ranks of one run); only rank 0 writes
    run files."""
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w", newline: str | None = None):
    """Open a temporary file beside `path`; when the block ends without error, fsync it and rename it
    over `path`. A crash or a failed write (a full disk) leaves the previous file whole, never a
    truncated one; the temporary file is removed either way. A stop signal waits for the write."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with stop_requests.deferred():  # a user's stop lets the write finish, then stops the run
        try:
            with open(tmp, mode, **({} if "b" in mode else {"newline": newline})) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as fh:
        fh.write(text)


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


# The checkout holding conf/ and, by default, runs/ (the commands run from it).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
RELATIVE_NOTE = "relative to the project root"


def recorded_path(path: Path) -> str:
    """A path as a record or a report states it, so that it leads back to what it names: relative
    to the project root when inside it (a record is read in other clones of the project), else
    absolute (`run_root=/scratch/x/runs` lies outside every clone)."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(resolved)


RUN_ROOT_NOTE = "relative to run_root"
ELSEWHERE_NOTE = "outside the project and run_root: only its name is recorded"


def shared_path(path: Path, run_root: Path | str) -> tuple[str, str]:
    """A path as a committed record states it, and the note to write after it: a record is read on
    other machines, so it holds no machine's path. Inside the project relative to its root, under
    run_root relative to it (`run_root=/scratch/x/runs` differs from machine to machine), elsewhere
    by its name alone; the run folder (search.json, the trials' attributes) keeps the full path."""
    resolved = Path(path).resolve()
    for base, note in ((PROJECT_ROOT, RELATIVE_NOTE), (Path(run_root).resolve(), RUN_ROOT_NOTE)):
        try:
            return str(resolved.relative_to(base)), f" ({note})"
        except ValueError:
            continue
    return resolved.name, f" ({ELSEWHERE_NOTE})"


def read_metrics_rows(run_dir: Path) -> list[dict]:
    """The complete rows of a run directory's metrics.csv (EpochRecorder writes it), as strings. A
    row being written by a live run may be cut short: only complete ones are kept."""
    f = Path(run_dir) / METRICS_FILE
    if not f.exists():
        return []
    with open(f, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("epoch") not in (None, "") and None not in r.values()]
    if rows and rows[0]["epoch"] == "0":  # written before epochs counted from 1 (no run starts at 0 now)
        for r in rows:
            r["epoch"] = str(int(r["epoch"]) + 1)
    return rows


def find_config(run_dir: Path) -> Path | None:
    """A run directory's config: its resolved config.yaml, else Hydra's copy (a run that died before
    writing its own)."""
    for candidate in (Path(run_dir) / CONFIG_FILE, Path(run_dir) / ".hydra" / "config.yaml"):
        if candidate.is_file():
            return candidate
    return None


def write_status(run_dir: Path, state: str, error: str | None = None) -> None:
    assert state in STATES, state
    job = current_job()
    write_json_atomic(Path(run_dir) / STATUS_FILE, {
        "status": state, "error": error, "pid": os.getpid(), "host": socket.gethostname(),
        **({"slurm_job": job} if job else {}), "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def read_status(run_dir: Path) -> dict:
    """The run's state. A run that says "running" on this host but whose process is gone was
    killed without a chance to say so (SIGKILL, power loss): it is reported as interrupted."""
    path = Path(run_dir) / STATUS_FILE
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        return {"status": "unknown", "error": None}
    except json.JSONDecodeError:
        return {"status": "unknown", "error": f"{path} is not valid JSON"}
    if status.get("status") == "running" and status.get("host") == socket.gethostname():
        pid = status.get("pid")
        if isinstance(pid, int) and not pid_alive(pid):
            status = {**status, "status": "interrupted",
                      "error": status.get("error") or f"process {pid} ended without reporting (killed?)"}
    return status


def discard_unstarted(run_dir: Path) -> None:
    """Remove a run directory that holds nothing but Hydra's bookkeeping: bad input must not leave
    a folder that looks like a run. A directory with metrics or checkpoints is never touched."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    if (run_dir / METRICS_FILE).exists() or (run_dir / "checkpoints").exists():
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    # The date folder Hydra made for it, if now empty.
    try:
        run_dir.parent.rmdir()
    except OSError:
        pass


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> str | None:
    return _git("rev-parse", "HEAD")


def git_dirty() -> bool:
    """Whether tracked files differ from the commit (untracked ones do not count)."""
    return bool(_git("status", "--porcelain", "--untracked-files=no"))


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment(device=None) -> dict:
    # deferred: reading run directories (report, records) needs no torch
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    info = {
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "packages": {name: _version(name) for name in PACKAGES},
    }
    model = cpu_model_name()
    if model and device.type == "cpu":
        info["device_name"] = model
    return info


def cpu_model_name() -> str | None:
    """The CPU's model as /proc/cpuinfo names it (None where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        return None
