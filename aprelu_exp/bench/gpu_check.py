"""`python -m aprelu_exp.bench.gpu_check [--out DIR] [--cpu-sized] [--budget-s S]` (what
`bash scripts/gpu_check.sh` runs): everything the project needs to know about its GPU path, in one
command that fits the few minutes a lent GPU gives (under 10 minutes in all).

Steps, each a child process time-boxed on its own (a step that hangs or fails costs its own box,
and its error is recorded; the next step still runs), each within what is left of the budget:

1. the bench with trainer=gpu, fp32 and bf16, compiled as now (torch.compile's default mode);
2. the same with CUDA graphs (perf.compile_mode=reduce-overhead), where that works;
3. a 20-epoch record-16 run (budget=20: the whole schedule compressed): images/s, epoch time, accuracy;
4. 1, 2, 4 and 8 runs at once on the one GPU: their summed training images/s;
5. packing (bench/packed.py): N = 1, 4, 16 and 64 runs of record 16 as one packed network against
   N solo networks in turn and (up to 16) N processes: summed images/s and the hours a 5000-epoch
   record 16 takes per run at each N.

Everything lands in DIR (default results/<date>_gpu/): each step's log, the bench JSONs, the run
directories, and `gpu_check.json` + `gpu_check.md` with every step's result or error. Without CUDA
(or with --cpu-sized) it runs a CPU-sized version of the same steps (tiny subsets, 1-2 epochs, 1 and
2 runs at once, not compiled), so that the command is known to work before a GPU arrives.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BUDGET_S = 570  # under 10 minutes, with room for the start-up and the summary


@dataclass
class Plan:
    """What each step runs in one size: the overrides and time boxes (seconds)."""

    name: str
    trainer: list[str]
    bench_args: list[str]
    bench_s: int
    run_overrides: list[str]
    run_s: int
    concurrent: tuple[int, ...]
    concurrent_overrides: list[str]
    concurrent_s: dict[int, int] = field(default_factory=dict)
    packed_args: list[str] = field(default_factory=list)
    packed_s: int = 0


GPU = Plan(
    name="gpu", trainer=["trainer=gpu"],
    bench_args=["--windows", "3", "--steps", "4", "--epoch-subset", "5000", "--eval-images", "2000"], bench_s=95,
    run_overrides=["budget=20"], run_s=110,
    concurrent=(1, 2, 4, 8), concurrent_overrides=["data.train_subset=20000", "trainer.max_epochs=3"],
    concurrent_s={1: 30, 2: 30, 4: 40, 8: 55},
    packed_args=["--runs", "1,4,16,64", "--max-processes", "16", "--steps", "5", "--windows", "3"], packed_s=100)
CPU = Plan(
    name="cpu-sized", trainer=["perf.compile=false"],
    bench_args=["data.test_subset=100", "--precisions", "32", "--windows", "1", "--steps", "1", "--epoch-subset", "100",
                "--epoch-test-subset", "100", "--eval-images", "100"], bench_s=480,
    run_overrides=["budget=2", "data.train_subset=300", "data.test_subset=200"], run_s=360,
    concurrent=(1, 2), concurrent_overrides=["data.train_subset=200", "data.test_subset=100", "trainer.max_epochs=1"],
    # Generous: a shared 2-core machine ran the bench step 7x slower than a quiet one.
    concurrent_s={1: 300, 2: 360},
    packed_args=["data.batch_size=20", "--runs", "1,2", "--steps", "1", "--windows", "1", "--warmup", "1"],
    packed_s=300)
# Every run of the check: no progress bar (the logs are files), CSV metrics only.
QUIET = ["trainer.enable_progress_bar=false", "logger=csv"]


class Clock:
    def __init__(self, budget_s: float):
        self.end = time.monotonic() + budget_s

    def box(self, wanted: float) -> float:
        return max(0.0, min(wanted, self.end - time.monotonic()))


def _stop(proc: subprocess.Popen) -> None:
    """The step's whole process group (torch.compile's workers too), TERM then KILL."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def run_steps(commands: list[list[str]], logs: list[Path], timeout: float, cwd: Path) -> list[dict]:
    """Start the commands at once; each runs until it ends or the shared time box does."""
    started = time.monotonic()
    procs = []
    for cmd, log in zip(commands, logs):
        with open(log, "w") as fh:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            procs.append(subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True))
    out = []
    for proc, log in zip(procs, logs):
        try:
            rc = proc.wait(timeout=max(0.0, started + timeout - time.monotonic()))
            timed_out = False
        except subprocess.TimeoutExpired:
            _stop(proc)
            rc, timed_out = None, True
        out.append({"rc": rc, "timed_out": timed_out, "wall_s": round(time.monotonic() - started, 1),
                    "log": str(log)})
    return out


def _tail(log: str, n: int = 6) -> str:
    try:
        return "\n".join(Path(log).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _outcome(done: dict, box: float) -> dict:
    if box <= 0:
        return {"ok": False, "error": "not run: the check's time budget was spent"}
    if done["timed_out"]:
        return {"ok": False, "error": f"timed out after {box:.0f} s", "log_tail": _tail(done["log"])}
    if done["rc"] != 0:
        return {"ok": False, "error": f"exit status {done['rc']}", "log_tail": _tail(done["log"])}
    return {"ok": True}


def _bench_figures(path: Path) -> dict:
    r = json.loads(path.read_text())
    by = {p: {"train_images_per_s": b["train_images_per_s"]["median"],
              "eval_images_per_s_standard": b["eval_images_per_s_standard"]["median"],
              "end_to_end_epoch_s": b["epoch"]["end_to_end_epoch_s"], "warmup_s": b["warmup_s"]}
          for p, b in r["by_precision"].items()}
    return {"by_precision": by, "device": r["environment"]["device_name"], "perf": r["perf"],
            "fast_probe": (r.get("fast_probe") or {}).get("why"), "bench_wall_s": r["bench_wall_s"]}


def _run_figures(run_root: Path) -> dict:
    (summary,) = list(run_root.rglob("summary.json"))
    s = json.loads(summary.read_text())
    final = s["final"]
    return {"run_dir": str(summary.parent), "status": s["status"], "epochs": s["epochs_completed"],
            "train_images_per_s": final["train_images_per_s"], "epoch_time_s": final["epoch_time_s"],
            "train_images_per_s_median": s["train_images_per_s_median"], "val_acc": final["val_acc"],
            "val_acc_article": final["val_acc_article"], "wall_time_s": s["wall_time_s"],
            "precision": s["perf"]["precision"], "compiled": s["perf"]["compile"]}


def check(plan: Plan, out: Path, budget_s: float, python: str = sys.executable) -> dict:
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cwd = Path(__file__).resolve().parents[2]
    clock = Clock(budget_s)
    steps: dict = {}

    def step(name: str, commands: list[list[str]], wanted: float, figures) -> None:
        box = clock.box(wanted)
        logs = [out / f"{name}.log"] if len(commands) == 1 else [out / f"{name}_{i}.log" for i in range(len(commands))]
        done = run_steps(commands, logs, box, cwd) if box > 0 else [{"rc": None, "timed_out": False, "log": ""}]
        found = {"box_s": round(box), "wall_s": max(d.get("wall_s", 0) for d in done), "logs": [d["log"] for d in done]}
        outcomes = [_outcome(d, box) for d in done]
        failed = [o for o in outcomes if not o["ok"]]
        found.update(failed[0] if failed else {"ok": True})
        if not failed:
            try:
                found["result"] = figures()
            except Exception as exc:  # noqa: BLE001 - the check records every step's error and goes on
                found.update(ok=False, error=f"finished, but its results could not be read: {exc!r}")
        steps[name] = found
        print(f"{name}: {'ok' if found['ok'] else found['error']} ({found['wall_s']} s)", flush=True)

    bench = [python, "-m", "aprelu_exp.bench", *plan.trainer]
    # CPU-sized, both benches run eager (perf.compile=false): the steps are checked there, not the speed.
    for name, extra in (("bench_compiled", []), ("bench_cudagraphs", ["perf.compile_mode=reduce-overhead"])):
        path = out / f"{name}.json"
        step(name, [[*bench, *extra, *plan.bench_args, "--out", str(path)]], plan.bench_s,
             lambda path=path: _bench_figures(path))

    runs = out / "runs"
    step("record16_run",
         [[python, "-m", "aprelu_exp", *plan.trainer, *plan.run_overrides, *QUIET, f"run_root={runs / 'record16'}"]],
         plan.run_s, lambda: _run_figures(runs / "record16"))

    for n in plan.concurrent:
        roots = [runs / f"concurrent_{n}" / f"run_{i}" for i in range(n)]
        commands = [[python, "-m", "aprelu_exp", *plan.trainer, *plan.concurrent_overrides, *QUIET, f"seed={i}",
                     f"run_root={root}"] for i, root in enumerate(roots)]

        def summed(roots=roots):
            each = [_run_figures(root) for root in roots]
            return {"runs": n, "summed_train_images_per_s": sum(e["train_images_per_s"] for e in each),
                    "each_train_images_per_s": [e["train_images_per_s"] for e in each]}

        step(f"concurrent_{n}", commands, plan.concurrent_s[n], summed)

    path = out / "bench_packed.json"
    step("packed", [[python, "-m", "aprelu_exp.bench", "packed", *plan.trainer, *plan.packed_args, "--out", str(path)]],
         plan.packed_s, lambda: json.loads(path.read_text()))
    return steps


def write_report(out: Path, plan: Plan, steps: dict, started: str, wall_s: float, env: dict) -> None:
    report = {"plan": plan.name, "started": started, "wall_s": round(wall_s, 1), "environment": env, "steps": steps}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# GPU check ({plan.name}), {started}, {wall_s:.0f} s", "", f"device: {env.get('device')}", "",
             "| step | outcome | wall s | figures |", "|---|---|---|---|"]
    for name, s in steps.items():
        lines.append(f"| {name} | {'ok' if s['ok'] else 'FAILED: ' + s['error']} | {s['wall_s']} | "
                     f"{figures_cell(s.get('result'))} |")
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def figures_cell(result: dict | None) -> str:
    if not result:
        return ""
    if "by_precision" in result:
        return "; ".join(f"{p}: train {b['train_images_per_s']:,.0f} img/s, epoch {b['end_to_end_epoch_s']:.1f} s"
                         for p, b in result["by_precision"].items())
    if result.get("kind") == "bench_packed":
        return "; ".join(f"N={n}: packed {r['packed']['summed_images_per_s']:,.0f} img/s"
                         + (f" ({r['packed_over_processes']:.2f}x N processes)" if "packed_over_processes" in r else "")
                         + f", 5000-epoch record 16 {r['packed']['record16_5000_epochs_h_per_run']:,.1f} h per run"
                         for n, r in result["runs"].items() if "packed" in r)
    if "summed_train_images_per_s" in result:
        return f"summed train {result['summed_train_images_per_s']:,.0f} img/s over {result['runs']} runs"
    return (f"{result['epochs']} epochs, train {result['train_images_per_s']:,.0f} img/s, epoch "
            f"{result['epoch_time_s']:.1f} s, val_acc {result['val_acc']:.4f} ({result['precision']})")


def environment() -> dict:
    import torch  # deferred: the check's own process only starts the steps

    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    env["device"] = torch.cuda.get_device_name() if env["cuda_available"] else "cpu"
    try:
        env["nvidia_smi"] = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        env["nvidia_smi"] = None
    return env


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m aprelu_exp.bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="default results/<date>_gpu (CPU-sized: results/<date>_gpu_cpu-sized)")
    parser.add_argument("--cpu-sized", action="store_true", help="the CPU-sized version even where CUDA exists")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"the whole check's time (default {BUDGET_S} s on a GPU; the CPU-sized one unbounded)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    env = environment()
    plan = CPU if args.cpu_sized or not env["cuda_available"] else GPU
    budget = args.budget_s or (BUDGET_S if plan is GPU else 3600)
    date = started[:10]
    out = args.out or Path("results") / (f"{date}_gpu" if plan is GPU else f"{date}_gpu_cpu-sized")
    print(f"GPU check ({plan.name}) on {env['device']}, budget {budget:.0f} s, writing {out}", flush=True)
    steps = check(plan, out, budget)
    write_report(out, plan, steps, started, time.monotonic() - t0, env)
    print(f"written: {out / 'gpu_check.md'}, {out / 'gpu_check.json'}")
    return 0 if all(s["ok"] for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
