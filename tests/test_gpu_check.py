"""The GPU check (scripts/gpu_check.sh): its CPU-sized version end to end, so that it cannot rot
before a GPU arrives, and its time boxes."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from aprelu_exp.bench import gpu_check
from test_cli import REPO

STEPS = ["bench_compiled", "bench_cudagraphs", "record16_run", "concurrent_1", "concurrent_2", "packed"]


def test_a_step_past_its_box_is_stopped_with_its_children_and_recorded(tmp_path):
    # A shell that starts a child and waits on it: both must be gone when the box closes.
    pid_file = tmp_path / "child.pid"
    cmd = ["bash", "-c", f"sleep 300 & echo $! > {pid_file}; wait"]
    (done,) = gpu_check.run_steps([cmd], [tmp_path / "slow.log"], timeout=5, cwd=tmp_path)
    assert done["timed_out"] is True and done["rc"] is None
    stat = Path(f"/proc/{int(pid_file.read_text())}/stat")
    # Gone, or a zombie that no init has reaped yet: either way no longer running.
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    assert gpu_check._outcome(done, 5)["error"] == "timed out after 5 s"
    (failed,) = gpu_check.run_steps([["bash", "-c", "echo broken >&2; exit 3"]], [tmp_path / "f.log"], 30, tmp_path)
    outcome = gpu_check._outcome(failed, 30)
    assert outcome["error"] == "exit status 3" and "broken" in outcome["log_tail"]
    assert gpu_check._outcome(failed, 0)["error"].startswith("not run")


def test_the_gpu_plan_fits_in_ten_minutes():
    plan = gpu_check.GPU
    boxes = 2 * plan.bench_s + plan.run_s + sum(plan.concurrent_s[n] for n in plan.concurrent) + plan.packed_s
    assert boxes <= gpu_check.BUDGET_S < 10 * 60
    assert plan.concurrent == (1, 2, 4, 8) and "budget=20" in plan.run_overrides
    assert plan.packed_args[plan.packed_args.index("--runs") + 1] == "1,4,16,64"


@pytest.mark.slow
def test_the_cpu_sized_check_runs_every_step_and_writes_its_files(cli_env, tmp_path):
    out = tmp_path / "check"
    env = {**cli_env, "GPU_CHECK_PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["plan"] == "cpu-sized" and list(report["steps"]) == STEPS
    steps = report["steps"]
    for name in STEPS:
        assert steps[name]["ok"], (name, steps[name])
    for name, mode in (("bench_compiled", "default"), ("bench_cudagraphs", "reduce-overhead")):
        bench = json.loads((out / f"{name}.json").read_text())
        assert bench["perf"]["compile_mode"] == mode and list(bench["by_precision"]) == ["32-true"]
        assert steps[name]["result"]["by_precision"]["32-true"]["train_images_per_s"] == \
            bench["by_precision"]["32-true"]["train_images_per_s"]["median"]
    run = steps["record16_run"]["result"]
    assert run["status"] == "finished" and run["epochs"] == 2 and 0 <= run["val_acc"] <= 1
    for n in (1, 2):
        found = steps[f"concurrent_{n}"]["result"]
        assert found["runs"] == n and len(found["each_train_images_per_s"]) == n
        assert found["summed_train_images_per_s"] == pytest.approx(sum(found["each_train_images_per_s"]))
        assert len(list((out / "runs" / f"concurrent_{n}").rglob("summary.json"))) == n
    packed = steps["packed"]["result"]
    assert packed["kind"] == "bench_packed" and set(packed["runs"]) == {"1", "2"}
    for n, modes in packed["runs"].items():
        assert {"packed", "solo", "processes"} <= set(modes)
        # 5000 epochs of 50,000 images at the per-run rate, in hours
        assert modes["packed"]["record16_5000_epochs_h_per_run"] == pytest.approx(
            5000 * 50_000 / (modes["packed"]["summed_images_per_s"] / int(n)) / 3600, rel=0.01)
    table = (out / "gpu_check.md").read_text()
    assert all(f"| {name} | ok |" in table for name in STEPS)
    assert all((out / f"{name}.log").is_file() for name in STEPS[:3])


def test_the_compile_mode_reaches_torch_compile_and_a_wrong_one_is_refused(make_cfg, monkeypatch):
    from aprelu_exp.errors import UserError
    from aprelu_exp.training import module as module_mod
    from aprelu_exp.training.build import build_module, build_net
    from aprelu_exp.training.precision import perf_switches

    seen = []
    monkeypatch.setattr(module_mod.torch, "compile", lambda net, **kw: seen.append(kw) or net)
    for mode, passed in (("reduce-overhead", "reduce-overhead"), ("default", None)):
        cfg = make_cfg("perf.compile=true", f"perf.compile_mode={mode}")
        build_module(cfg, build_net(cfg), perf_switches(cfg))
        assert seen[-1] == {"dynamic": False, "mode": passed}
    with pytest.raises(UserError, match="perf.compile_mode='cuda-graphs'.*reduce-overhead"):
        perf_switches(make_cfg("perf.compile_mode=cuda-graphs"))
