"""scripts/ci_figures.py: what `.ci/run` printed, read into the figures docs/performance.md tables."""
from __future__ import annotations

import importlib.util
import json

from test_cli import REPO


def _script():
    spec = importlib.util.spec_from_file_location("ci_figures", REPO / "scripts" / "ci_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _session(summary: str, durations: list[str]) -> str:
    return ("============================= test session starts ==============================\n"
            "platform linux\n....\n============================= slowest durations ==============================\n"
            + "\n".join(durations) + f"\n=========== {summary} ============\n")


LOG = ("CPU: AMD EPYC; vector level AVX2; AVX-512 no; AVX512_BF16 no\n"
       + _session("3 passed, 1 skipped in 12.40s", ["9.01s call     tests/test_a.py::test_x[1]",
                                                   "0.50s setup    tests/test_a.py::test_x[1]"])
       + "\n=== -m slow ===\n" + _session("2 passed, 600 deselected in 100.61s (0:01:40)",
                                         ["80.00s call     tests/test_s.py::test_y"])
       + "\n=== -m cluster ===\n" + _session("1 failed, 1 passed in 50.00s", ["40.00s call     tests/test_c.py::test_z"])
       + "\nCI phases, wall time (logs in /tmp/x):\n"
         "  set-up (.venv, the package, test tools)              94 s\n"
         "  default suite (bash scripts/test.sh)                 15 s\n"
         "  cluster start (beside set-up and default suite)      20 s\n"
         "  -m slow                                             103 s\n"
         "  -m cluster                                           52 s\n"
         "  whole .ci/run                                       270 s\n\nreal 4m30s\n")


def test_a_ci_log_becomes_phases_and_durations(tmp_path):
    log = tmp_path / "ci.log"
    log.write_text(LOG)
    out = tmp_path / "after"
    assert _script().main([str(log), str(out), "--commit", "abc1234", "--date", "2026-12-08"]) == 0
    data = json.loads((out / "phases.json").read_text())
    assert data["machine"] == "AMD EPYC, AVX2" and data["commit"] == "abc1234" and data["date"] == "2026-12-08"
    assert data["phases"] == {"setup": 94, "default": 15, "cluster_start": 20, "slow": 103, "cluster": 52, "total": 270}
    assert data["counts"] == {"default": "3 passed, 1 skipped", "slow": "2 passed, 600 deselected",
                              "cluster": "1 failed, 1 passed"}
    assert (out / "default.durations.txt").read_text().splitlines() == [
        "9.01s call     tests/test_a.py::test_x[1]", "0.50s setup    tests/test_a.py::test_x[1]"]
    assert (out / "cluster.durations.txt").read_text().strip() == "40.00s call     tests/test_c.py::test_z"


def test_an_older_log_without_a_phase_table_takes_pytests_seconds(tmp_path):
    log = tmp_path / "ci.log"
    log.write_text(LOG.split("\nCI phases")[0])
    out = tmp_path / "before"
    assert _script().main([str(log), str(out), "--commit", "c7d3026", "--total-s", "300"]) == 0
    phases = json.loads((out / "phases.json").read_text())["phases"]
    assert phases == {"default": 12, "slow": 101, "cluster": 50, "total": 300, "setup": 300 - 12 - 101 - 50}


def test_a_log_cut_short_is_refused(tmp_path, capsys):
    log = tmp_path / "ci.log"
    log.write_text(LOG.split("\n=== -m cluster")[0])
    assert _script().main([str(log), str(tmp_path / "x"), "--commit", "c"]) == 2
    assert "holds 2 pytest sessions, not the 3" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
