"""Shared fixtures: the real CIFAR-10 (from $APRELU_DATA_ROOT or ../shared/data) and Hydra's
compose API, so in-process tests build configs exactly as the CLI does."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from aprelu_exp import config_schema  # noqa: F401
from aprelu_exp.data.cifar10 import SUBDIR, load_cifar10
from aprelu_exp.compose import CONF_DIR as CONF, register_resolvers

REPO = Path(__file__).resolve().parents[1]
register_resolvers()

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    # The tests stand for a user at a terminal, whose Ctrl-C reaches the command. A suite started in
    # the background (`cmd &` in a script, nohup, some CI runners) inherits SIGINT ignored, and an
    # ignored signal stays ignored across exec: every command the tests start would ignore their
    # Ctrl-C. A handled one is reset to the default at exec, so the commands start as from a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist workers share the cores: one intra-op thread each, in the processes they start
    # too, so that N workers on N cores do not oversubscribe them (2 workers x 2 threads on 2 cores
    # ran the suite slower than one process).
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def probe_cache(tmp_path_factory):
    """perf=fast's answers (training/precision_probe.py) go to a folder of the test session, also
    from the commands the tests start, never into the user's cache."""
    folder = tmp_path_factory.mktemp("aprelu-cache")
    saved = os.environ.get("APRELU_CACHE_DIR")
    os.environ["APRELU_CACHE_DIR"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("APRELU_CACHE_DIR", None)
    else:
        os.environ["APRELU_CACHE_DIR"] = saved


def pytest_report_header(config):
    from aprelu_exp.training.precision import capability_line

    return capability_line()  # which machine a red run came from


def data_root() -> Path:
    for candidate in (os.environ.get("APRELU_DATA_ROOT"), REPO.parent / "shared" / "data", REPO / "data"):
        if candidate and (Path(candidate) / SUBDIR).is_dir():
            return Path(candidate)
    pytest.fail("CIFAR-10 not found: set APRELU_DATA_ROOT to a folder holding cifar-10-batches-bin/")


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    return data_root()


@pytest.fixture(scope="session")
def cifar(cifar_root):
    return load_cifar10(cifar_root, download_if_missing=False)


@pytest.fixture
def make_cfg(cifar_root, tmp_path):
    """compose(overrides) shrunk for tests: a small real subset, CPU, no progress bar."""

    def _make(*overrides: str, small: bool = True):
        base = [f"data.root={cifar_root}", f"run_root={tmp_path / 'runs'}"]
        if small:
            base += ["data.train_subset=500", "data.test_subset=200", "trainer.max_epochs=1",
                     "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
                     "trainer.enable_model_summary=false", "logger=none"]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=base + list(overrides))

    return _make


@pytest.fixture
def cli_env(cifar_root):
    env = dict(os.environ)
    env["APRELU_DATA_ROOT"] = str(cifar_root)
    env["PYTHONUNBUFFERED"] = "1"
    return env
