"""Every command-line tool refuses bad input the main command's way: one paragraph naming the fix,
exit status 2, no traceback, nothing written that looks like a result."""
from pathlib import Path

import pytest

from inprocess import run_module


def _refused(out, *fragments: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    text = " ".join(out.stderr.split())
    assert text.startswith("error: "), text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


@pytest.fixture
def empty_data(tmp_path) -> Path:
    root = tmp_path / "no_data"
    root.mkdir()
    return root


def test_bench_without_the_data(empty_data, tmp_path):
    out = run_module("aprelu_exp.bench", [f"data.root={empty_data}", "data.download=false",
                                          "--out", tmp_path / "bench.json"])
    _refused(out, "data_batch_1.bin is missing", "point data.root / $APRELU_DATA_ROOT")
    assert not (tmp_path / "bench.json").exists()


def test_bench_with_an_unknown_override(tmp_path):
    out = run_module("aprelu_exp.bench", ["model.foo=1", "--out", tmp_path / "bench.json"])
    _refused(out, "model.foo is not a key of this config", "--cfg job")
    out = run_module("aprelu_exp.bench", ["experiment=record_99", "--out", tmp_path / "bench.json"])
    _refused(out, "experiment=record_99 is not an option of the config group experiment", "record_16")
    assert not (tmp_path / "bench.json").exists()


def test_records_with_paths_that_are_not_runs(tmp_path):
    _refused(run_module("aprelu_exp.records", ["diff", "record_16", tmp_path]), "without config.yaml")
    _refused(run_module("aprelu_exp.records", ["show", tmp_path / "gone" / "run"]), "no such run directory")
    _refused(run_module("aprelu_exp.records", ["promote", tmp_path, "--name", "record_99"]),
             "neither a search's sweep directory")
    assert not list(Path(__file__).resolve().parents[1].glob("conf/experiment/record_99.yaml"))


def test_report_of_paths_without_runs(tmp_path):
    _refused(run_module("aprelu_exp.report", [tmp_path / "nope", "--out", tmp_path / "r"]),
             "no such run directory")
    (tmp_path / "empty").mkdir()
    _refused(run_module("aprelu_exp.report", [tmp_path / "empty", "--out", tmp_path / "r"]),
             "no run directories under", "Nothing was written")
    assert not (tmp_path / "r").exists()


def test_search_without_a_storage(tmp_path):
    storage = f"sqlite:///{tmp_path / 'none.db'}"
    _refused(run_module("aprelu_exp.search", ["--storage", storage, "list"]), "no study storage at")
    _refused(run_module("aprelu_exp.search", ["--storage", storage, "report", "s", "--out", tmp_path / "o"]),
             "no study storage at", "--storage")
    assert not (tmp_path / "none.db").exists()  # reading never creates a storage
