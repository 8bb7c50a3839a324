"""The local SLURM cluster and PostgreSQL server of scripts/local_cluster.sh, for the tests marked
`cluster`: where they are not up, those tests skip saying how to start them."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("APRELU_CLUSTER_STATE", "/tmp/aprelu-cluster"))
START = "bash scripts/local_cluster.sh start"


def _env_file() -> dict[str, str]:
    env = {}
    path = STATE / "env"
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                key, value = line[len("export "):].split("=", 1)
                env[key] = value
    return env


def slurm_env(base: dict) -> dict:
    """base plus SLURM_CONF of the local cluster; skips the test where the cluster does not answer."""
    extra = _env_file()
    if "SLURM_CONF" not in extra:
        pytest.skip(f"no local SLURM cluster ({STATE}/env missing): start it with `{START}`")
    # one thread per training process: the cores are shared by the jobs and the reference sweep
    env = {**base, **extra, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    try:
        sinfo = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"the local SLURM cluster does not answer ({exc}): start it with `{START}`")
    if sinfo.returncode != 0:
        pytest.skip(f"the local SLURM cluster does not answer ({sinfo.stderr.strip()}): `{START}`")
    return env


def postgres_url() -> str:
    path = STATE / "postgres.url"
    if not path.is_file():
        pytest.skip(f"no local PostgreSQL ({path} missing): start it with `{START}`")
    url = path.read_text().strip()
    try:
        import sqlalchemy

        with sqlalchemy.create_engine(url).connect():
            pass
    except Exception as exc:  # noqa: BLE001  (any reason the server is not there)
        pytest.skip(f"the local PostgreSQL does not answer ({type(exc).__name__}): `{START}`")
    return url


def start_cli(args, env, log: Path) -> subprocess.Popen:
    """`python -m aprelu_exp *args` as its own process group (a test may SIGKILL all of it), its
    stdout and stderr together in log."""
    return subprocess.Popen([sys.executable, "-m", "aprelu_exp", *map(str, args)], env=env, cwd=REPO,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(what: str, check, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log is not None and log.is_file() else ""
    pytest.fail(f"{what}: not seen within {timeout:.0f} s\n{tail}")


TINY = ["data.train_subset=200", "data.test_subset=100", "logger=none", "trainer.deterministic=true",
        "trainer.enable_progress_bar=false"]
# what differs between two identical runs: wall-clock times
TIMES = ("train_time_s", "eval_time_s", "epoch_time_s", "train_images_per_s")


def metrics(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in TIMES} for row in csv.DictReader(f)]


def weights(run: Path) -> dict:
    import torch

    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def job_fields(job_id: str, env: dict) -> dict[str, str]:
    """What `scontrol show job` says of a job, field by field ({} once SLURM has forgotten it)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True).stdout
    return dict(token.split("=", 1) for token in out.split() if "=" in token)
