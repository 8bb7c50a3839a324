"""`records replay`: the tuning log trained again as one multirun (records x seeds) and judged step by
step. The statistics are checked against scipy.stats' paired t-test, a Holm adjustment and P(A > B)
computed here by hand from the runs' own summaries; the picture by its size; the resume by counting
run directories and comparing files; the refusals by their exit status and by nothing written."""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from itertools import product
from pathlib import Path

import pytest
from scipy import stats

from aprelu_exp.compose import compose_record
from aprelu_exp.records.lineage import lineage
from aprelu_exp.records.replay import choose_records, estimate_times, plan_replay
from aprelu_exp.training.measured_rates import RATES_FILE, network_multiply_adds
from inprocess import run_cli, run_module

THREE = ["record_14", "record_15", "record_16"]
TINY = ["budget=2", "data.train_subset=300", "data.test_subset=200", "logger=none",
        "trainer.enable_progress_bar=false"]


def _replay(args, env, cwd):
    return run_module("aprelu_exp.records", ["replay", *args], env=env, cwd=cwd)


def _folder(root: Path) -> Path:
    (folder,) = Path(root).glob("replay-*")
    return folder


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _runs(folder: Path) -> list[Path]:
    return sorted(p.parent for p in folder.glob("*/config.yaml"))


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def _final(run: Path, key: str = "val_acc_article") -> tuple[str, int, float]:
    summary = json.loads((run / "summary.json").read_text())
    return summary["record"]["name"], int(summary["seed"]), float(summary["final"][key])


def _holm(p: list[float]) -> list[float]:
    """Holm's step-down adjustment, written out: sort, multiply the i-th smallest by m - i, make monotone."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


@pytest.fixture(scope="module")
def replayed(cifar_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    env = {**os.environ, "APRELU_DATA_ROOT": str(cifar_root)}
    done = _replay([*THREE, "--seeds", "2", *TINY, f"run_root={root}"], env, root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, env, done


# -- which records a replay trains --------------------------------------------------------------------

def test_the_records_a_replay_trains():
    recs = lineage()
    assert choose_records([], recs) == ["record_01", "record_14", "record_15", "record_16", "github_final",
                                        "record_17"]
    # A chain starts at its first record: record_14's parent is not trained.
    assert choose_records(THREE, recs) == THREE
    assert choose_records(["record_16", "record_14", "record_15"], recs) == THREE  # lineage order
    # One record alone, or records whose first is no ancestor of the rest: each parent comes along.
    assert choose_records(["record_16"], recs) == ["record_15", "record_16"]
    assert choose_records(["github_final", "record_17"], recs) == ["record_16", "github_final", "record_17"]
    assert choose_records(["record_14", "record_16"], recs) == THREE
    fake = {"a": {"parent": None}, "b": {"parent": "a"}, "c": {"parent": "b"}, "d": {"parent": "a"}}
    assert choose_records(["c", "d"], fake) == ["a", "b", "c", "d"]


def test_multiply_adds_equal_a_count_on_the_built_network():
    """Against forward hooks on the real module: every conv's output size x its kernel x its input
    channels, every dense layer's weights."""
    import torch

    from aprelu_exp.training.build import build_net

    for name, extra in [(r, []) for r in lineage()] + [("record_16", ["model.shortcut=projection"]),
                                                        ("record_16", ["model/activation=aprelu_shared"]),
                                                        ("record_16", ["model/activation=dyrelu_b"])]:
        cfg = compose_record(name, extra)
        net, total = build_net(cfg), 0

        def hook(module, inputs, output):
            nonlocal total
            if isinstance(module, torch.nn.Conv2d):
                total += output[0].numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            elif isinstance(module, torch.nn.Linear):
                total += module.in_features * module.out_features

        for m in net.modules():
            m.register_forward_hook(hook)
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, 3, 32, 32))
        assert network_multiply_adds(cfg.model) == total, (name, extra)


def test_the_plans_estimate_is_the_bench_rate_scaled_by_arithmetic(tmp_path, monkeypatch):
    replay = plan_replay(["record_16"], 3, 0, ["budget=4", "data.train_subset=1000", "data.val_split=200",
                                               "data.test_subset=200"],
                         "final_val_acc_article")
    from aprelu_exp.records import replay as module
    from aprelu_exp.runs.rundir import cpu_model_name

    monkeypatch.setattr(module, "run_device_of", lambda cfg: ("cpu", cpu_model_name() or "x"))
    monkeypatch.setenv("APRELU_CACHE_DIR", str(tmp_path))
    macs16 = network_multiply_adds(replay.configs["record_16"].model)
    (tmp_path / RATES_FILE).write_text(json.dumps({f"cpu:{cpu_model_name() or 'x'}": {
        "date": "2026-12-07", "commit": "c", "record": "record_16", "macs_per_image": macs16,
        "by_precision": {"32-true": {"train_s_per_image": 0.001, "eval_s_per_image": 0.0002}}}}))
    times = estimate_times(replay)
    # record_16 at the bench's own arithmetic: 4 epochs x (800 images x 1 ms + 2 x 200 x 0.2 ms),
    # then the test set (200 images, both modes) once.
    assert times["per_run"]["record_16"] == pytest.approx(4 * (0.8 + 0.08) + 2 * 200 * 0.0002)
    scale = network_multiply_adds(replay.configs["record_15"].model) / macs16
    assert times["per_run"]["record_15"] == pytest.approx(scale * (4 * (0.8 + 0.08) + 0.08))
    assert "about" in times["summary"] and "2026-12-07" in times["summary"]


# -- bad input: one paragraph, exit 2, nothing written ------------------------------------------------

@pytest.mark.parametrize("args, said", [
    (["record_61", "--seeds", "3"], "no record named 'record_61'; did you mean record_17 or record_16"),
    (["record_16", "--seeds", "1"], "no interval"),
    (["record_16", "--seeds", "3", "model.reduction=4"], "model.reduction is what record_16's step changed"),
    (["record_16", "--seeds", "3", "layout=wide"], "layout=wide would set model.stages"),
    (["record_16", "--seeds", "3", "experiment=record_15"], "the replay trains the records it is given"),
    (["record_16", "--seeds", "3", "seed=4"], "--seeds N"),
], ids=["unknown-record", "one-seed", "architecture-key", "layout", "experiment", "seed"])
def test_bad_input_is_refused_before_anything_trains(args, said, tmp_path, cli_env):
    done = _replay([*args, f"run_root={tmp_path / 'runs'}"], cli_env, tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert said in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


def test_resume_of_a_folder_no_replay_wrote_is_refused(tmp_path, cli_env):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    done = _replay(["--resume", str(sweep)], cli_env, tmp_path)
    assert done.returncode == 2 and "holds no replay.json" in done.stderr
    assert f"python -m aprelu_exp -m resume={sweep}" in done.stderr  # what that folder is continued with
    assert sorted(p.name for p in sweep.iterdir()) == ["multirun.yaml"]
    done = _replay(["--resume", str(tmp_path / "none")], cli_env, tmp_path)
    assert done.returncode == 2 and "no such folder" in done.stderr


# -- a real replay -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_replay_of_three_records_and_its_statistics(replayed):
    root, env, done = replayed
    folder = _folder(root)
    runs = _runs(folder)
    assert len(runs) == 6
    rows = _csv(folder / "replay.csv")
    assert [r["record"] for r in rows] == THREE and all(r["n"] == "2" for r in rows)
    assert rows[2]["article"] == "0.889" and rows[2]["article_epoch"] == "3345"
    assert rows[0]["article"] == rows[1]["article"] == ""
    # From the runs' own summaries: scipy's paired t-test per step, Holm by hand over the two steps,
    # P(record > parent) over all pairs of runs (ties half).
    final = {(rec, seed): v for rec, seed, v in map(_final, runs)}
    p_values, p_better = [], []
    for parent, child in zip(THREE, THREE[1:]):
        a, b = [final[(child, s)] for s in (0, 1)], [final[(parent, s)] for s in (0, 1)]
        p_values.append(stats.ttest_rel(a, b).pvalue)
        p_better.append(sum((x > y) + 0.5 * (x == y) for x, y in product(a, b)) / 4)
        row = rows[THREE.index(child)]
        assert float(row["diff_vs_parent"]) == pytest.approx(sum(a) / 2 - sum(b) / 2, abs=1e-12)
        assert float(row["mean"]) == pytest.approx(sum(a) / 2, abs=1e-12)
    for row, p, holm, better in zip(rows[1:], p_values, _holm(p_values), p_better):
        if math.isnan(p):  # both seeds moved by the same amount: no test
            assert row["p_value"] == "" and row["p_holm"] == ""
        else:
            assert float(row["p_value"]) == pytest.approx(p, rel=1e-9)
            assert float(row["p_holm"]) == pytest.approx(holm, rel=1e-9)
        assert float(row["p_better_vs_parent"]) == pytest.approx(better)
        assert row["verdict"].startswith("not detectable at n=2")  # no verdict below 3 seeds
    assert _png_size(folder / "replay.png") == (1000, 550)
    md = (folder / "replay.md").read_text()
    assert "What the budget means" in md and "not comparable" in md and "![the replay](replay.png)" in md
    for rec in THREE:
        assert rec in md


@pytest.mark.slow
def test_the_same_command_again_trains_nothing(replayed):
    root, env, first = replayed
    folder = _folder(root)
    before = {p: (p / "metrics.csv").stat().st_mtime_ns for p in _runs(folder)}
    tables = {f: (folder / f).read_bytes() for f in ("replay.csv", "replay.md")}
    again = _replay([*THREE, "--seeds", "2", *TINY, f"run_root={root}"], env, root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "6 of 6 already done" in again.stdout
    assert [p.name for p in root.glob("replay-*")] == [folder.name]
    assert {p: (p / "metrics.csv").stat().st_mtime_ns for p in _runs(folder)} == before
    assert {f: (folder / f).read_bytes() for f in tables} == tables
    # The main command's sweep resume of the folder writes the replay's tables as well.
    (folder / "replay.csv").unlink()
    resumed = run_cli(["-m", f"resume={folder}"], env=env, cwd=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (folder / "replay.csv").read_bytes() == tables["replay.csv"]
    plan = _replay([*THREE, "--seeds", "2", *TINY, f"run_root={root}", "--plan"], env, root)
    assert plan.returncode == 0 and "6 of 6 already done" in plan.stdout and plan.stdout.count(": done") == 6


def _start(args, env, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aprelu_exp.records", "replay", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(path_glob, root: Path, proc: subprocess.Popen, timeout: float = 600) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = sorted(Path(root).glob(path_glob))
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"{path_glob} never appeared: {proc.communicate()[1][-3000:] if proc.poll() is not None else ''}")


@pytest.mark.slow
def test_a_killed_replay_resumes_without_training_a_run_twice(replayed, tmp_path):
    reference_root, env, _ = replayed
    root = tmp_path / "root"
    args = [*THREE, "--seeds", "2", *TINY, f"run_root={root}"]
    proc = _start(args, env, tmp_path)
    # Killed once the third run (record_15, seed 0) has its first epoch's checkpoint: two runs are
    # finished, the third is in its second epoch, three have not started.
    _wait_for("replay-*/2_record_15/checkpoints/last.ckpt", root, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    folder = _folder(root)
    kept = {p: ((p / "metrics.csv").read_bytes(), (p / "metrics.csv").stat().st_mtime_ns)
            for p in _runs(folder) if json.loads((p / "status.json").read_text())["status"] == "finished"}
    assert len(kept) >= 2 and not (folder / "replay.csv").exists()
    again = _replay(args, env, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"going on with {folder}" in again.stdout
    for p, fingerprint in kept.items():  # finished before the kill: not trained again
        assert ((p / "metrics.csv").read_bytes(), (p / "metrics.csv").stat().st_mtime_ns) == fingerprint
    assert len(_runs(folder)) == 6
    assert (folder / "replay.csv").read_bytes() == (_folder(reference_root) / "replay.csv").read_bytes()


@pytest.mark.slow
def test_a_replay_stopped_by_sigterm_says_how_to_go_on(cli_env, tmp_path):
    """SIGTERM to the replay command alone (`kill PID`): it hands the stop to its sweep, which stops
    cleanly, and ends with the line naming the same command and the sweep resume."""
    root = tmp_path / "root"
    args = ["record_16", "--seeds", "2", *TINY, f"run_root={root}"]
    proc = _start(args, cli_env, tmp_path)
    _wait_for("replay-*/0_record_15/checkpoints/last.ckpt", root, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    folder = _folder(root)
    assert f"replay stopped by SIGTERM: {folder}" in err and "Traceback" not in err
    assert "Continue with: python -m aprelu_exp.records replay record_16 --seeds 2" in err
    assert f"python -m aprelu_exp -m resume={folder}" in err
    status = json.loads((folder / "0_record_15" / "status.json").read_text())
    assert status["status"] == "interrupted" and "SIGTERM" in status["error"]
