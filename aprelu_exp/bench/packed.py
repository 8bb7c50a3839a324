"""`python -m aprelu_exp.bench packed [overrides] --runs 1,4,16 [--out FILE.json]`: what packing N
runs of one network shape into one (model/packed.py) buys on this device, against the two ways the
project runs N runs today, in one invocation on one machine:

* packed: one process steps the packed network (N runs fused: grouped convolutions, BatchNorm over
  N*C channels, batched dense layers), each run with its own batch;
* solo, in turn: one process steps the N solo networks one after the other (what a packed run
  costs without fusion: the same work in N times the launches);
* processes: N processes at once, each stepping one solo network (what `hydra/launcher=joblib`
  does), timed over the same window after every one has warmed up.

Each step is a training step (forward, cross entropy, backward, the config's optimizer: the
article's SGD with Nesterov momentum for the records) on fixed random batches of `data.batch_size` images per run; images/s is summed over the N
runs (median of the windows). From it: the hours a 5000-epoch record 16 (50,000 training images an
epoch, validation not counted) takes per run when N run at once this way. fp32, eager; on CUDA also
`--bf16` (autocast), as the fast path trains there.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from aprelu_exp import config_schema  # noqa: F401
from aprelu_exp.compose import compose_config
from aprelu_exp.errors import run_command
from aprelu_exp.model.packed import PackedResNet, pack_inputs
from aprelu_exp.runs.rundir import cpu_model_name, git_commit, git_dirty
from aprelu_exp.training.build import build_net, build_optimization
from aprelu_exp.training.precision import run_device
from aprelu_exp.training.speed import rates, summarise as rate_summary, sync

ARTICLE_EPOCHS = 5000
EPOCH_IMAGES = 50_000
MODES = ("packed", "solo", "processes")


def parse_args(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m aprelu_exp.bench packed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides (experiment=record_15, trainer=gpu, ...)")
    p.add_argument("--runs", default="1,4", help="the numbers of runs N to measure, comma-separated (default 1,4)")
    p.add_argument("--steps", type=int, default=5, help="training steps per window (default 5)")
    p.add_argument("--windows", type=int, default=3, help="timed windows; the median counts (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--modes", default=",".join(MODES), help=f"which of {', '.join(MODES)} (default all)")
    p.add_argument("--max-processes", type=int, default=64,
                   help="measure the processes mode only up to this N (64 processes each hold a CUDA context)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA), as the fast path trains there")
    p.add_argument("--out", type=Path, help="also write the figures as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one process of the `processes` mode
    p.add_argument("--go-file", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.runs = [int(n) for n in str(args.runs).split(",") if n.strip()]
    except ValueError:
        p.error(f"--runs {args.runs}: give numbers of runs separated by commas, e.g. --runs 1,4,16")
    if not args.runs or min(args.runs) < 1:
        p.error("--runs: every number of runs must be 1 or more")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown:
        p.error(f"--modes {','.join(unknown)}: choose from {', '.join(MODES)}")
    return args


class Stepper:
    """One training step of N runs, packed or one network after another."""

    def __init__(self, cfg, n: int, packed: bool, device: torch.device, bf16: bool, seed: int = 0):
        nets = []
        for i in range(n):
            torch.manual_seed(seed + i)
            nets.append(build_net(cfg))
        self.packed = packed
        self.models = [PackedResNet(nets).to(device)] if packed else [net.to(device) for net in nets]
        optimizer, _ = build_optimization(cfg)  # the config's own optimizer, as a run builds it
        self.optims = [optimizer(m.parameters()) for m in self.models]
        g = torch.Generator().manual_seed(seed)
        b = int(cfg.data.batch_size)
        self.x = torch.randn(n, b, 3, 32, 32, generator=g).to(device)
        self.y = torch.randint(0, 10, (n, b), generator=g).to(device)
        self.n, self.device, self.bf16 = n, device, bf16
        self.images_per_step = n * b

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def step(self) -> None:
        if self.packed:
            (model,), (opt,) = self.models, self.optims
            opt.zero_grad(set_to_none=True)
            with self._autocast():
                out = model(pack_inputs(self.x))  # (B, N, classes)
            # Each run's own mean loss; their sum's gradient is each run's gradient.
            loss = F.cross_entropy(out.float().permute(0, 2, 1), self.y.t(), reduction="none").mean(0).sum()
            loss.backward()
            opt.step()
            return
        for i, (model, opt) in enumerate(zip(self.models, self.optims)):
            opt.zero_grad(set_to_none=True)
            with self._autocast():
                out = model(self.x[i])
            F.cross_entropy(out.float(), self.y[i]).backward()
            opt.step()


def timed_rates(stepper: Stepper, steps: int, windows: int, warmup: int) -> list[float]:
    """The summed images/s of each timed window, after `warmup` untimed steps."""
    for _ in range(warmup):
        stepper.step()
    return [rates(stepper.step, stepper.images_per_step, 1, steps, stepper.device)["median"] for _ in range(windows)]


def worker(cfg, args) -> int:
    """One of N processes: warm up, say so, wait for the common start, time, print the rates."""
    device = run_device(cfg)
    stepper = Stepper(cfg, 1, packed=False, device=device, bf16=args.bf16, seed=int(cfg.seed))
    for _ in range(args.warmup):
        stepper.step()
    sync(device)
    print("ready", flush=True)
    while not args.go_file.exists():
        time.sleep(0.01)
    windows = timed_rates(stepper, args.steps, args.windows, 0)
    print(json.dumps({"rates": windows}), flush=True)
    return 0


def processes_rates(args, n: int) -> list[float]:
    """N worker processes started together; the summed rate of each window (windows line up because
    every worker starts its first window on the same go signal and runs the same steps)."""
    threads = max(1, (os.cpu_count() or 1) // n)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        cmd = [sys.executable, "-m", "aprelu_exp.bench", "packed", "--worker", "--go-file", str(go),
               "--steps", str(args.steps), "--windows", str(args.windows), "--warmup", str(args.warmup),
               *(["--bf16"] if args.bf16 else [])]
        procs = [subprocess.Popen([*cmd, *args.overrides, f"seed={i}"], stdout=subprocess.PIPE, text=True, env=env)
                 for i in range(n)]
        try:
            for proc in procs:
                line = proc.stdout.readline()
                if line.strip() != "ready":
                    raise RuntimeError(f"a bench worker did not start (it printed {line!r}); "
                                       f"run it alone: {' '.join(cmd)}")
            go.touch()
            per_worker = []
            for proc in procs:
                out, _ = proc.communicate(timeout=3600)
                if proc.returncode != 0:
                    raise RuntimeError(f"a bench worker failed (exit status {proc.returncode})")
                per_worker.append(json.loads(out.strip().splitlines()[-1])["rates"])
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
    return [sum(ws) for ws in zip(*per_worker)]


def summarise(windows: list[float], n: int) -> dict:
    found = rate_summary(windows)
    per_run = found["median"] / n
    return {"summed_images_per_s": round(found["median"], 1), "min": round(found["min"], 1),
            "max": round(found["max"], 1),
            "per_run_images_per_s": round(per_run, 1),
            "record16_5000_epochs_h_per_run": round(ARTICLE_EPOCHS * EPOCH_IMAGES / per_run / 3600, 1)}


def bench_packed(args) -> int:
    cfg = compose_config(args.overrides)
    if args.worker:
        return worker(cfg, args)
    device = run_device(cfg)
    t0 = time.monotonic()
    results: dict = {}
    for n in args.runs:
        results[n] = {}
        for mode in args.modes:
            if mode == "processes" and n > args.max_processes:
                continue
            if mode == "processes":
                windows = processes_rates(args, n)
            else:
                stepper = Stepper(cfg, n, packed=mode == "packed", device=device, bf16=args.bf16)
                windows = timed_rates(stepper, args.steps, args.windows, args.warmup)
                del stepper
            results[n][mode] = summarise(windows, n)
            print(f"N={n:<3} {mode:<9} {results[n][mode]['summed_images_per_s']:>10,.0f} img/s summed "
                  f"({results[n][mode]['per_run_images_per_s']:,.0f} per run; a 5000-epoch record 16: "
                  f"{results[n][mode]['record16_5000_epochs_h_per_run']:,.1f} h per run)", flush=True)
        if "packed" in results[n] and "processes" in results[n]:
            results[n]["packed_over_processes"] = round(
                results[n]["packed"]["summed_images_per_s"] / results[n]["processes"]["summed_images_per_s"], 2)
        if "packed" in results[n] and "solo" in results[n]:
            results[n]["packed_over_solo"] = round(
                results[n]["packed"]["summed_images_per_s"] / results[n]["solo"]["summed_images_per_s"], 2)
    report = {"kind": "bench_packed", "overrides": args.overrides, "record": str(cfg.record.name),
              "commit": git_commit(), "git_dirty": git_dirty(),
              "date": time.strftime("%Y-%m-%d", time.gmtime()),
              "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu: {cpu_model_name()}",
              "threads": torch.get_num_threads(), "batch_per_run": int(cfg.data.batch_size),
              "precision": "bf16-autocast" if args.bf16 else "fp32", "steps": args.steps, "windows": args.windows,
              "runs": {str(n): r for n, r in results.items()}, "wall_s": round(time.monotonic() - t0, 1)}
    print_ratios(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"written: {args.out}")
    return 0


def print_ratios(report: dict) -> None:
    print(f"\npacked over the alternatives, summed images/s ({report['device']}, {report['precision']}, "
          f"{report['batch_per_run']} images per run and step; above 1: packing is faster):")
    for n, r in report["runs"].items():
        cells = [f"{label} {r[key]:.2f}x" for key, label in (("packed_over_solo", "over solo in turn"),
                                                             ("packed_over_processes", "over N processes")) if key in r]
        if cells:
            print(f"  N={n}: " + ", ".join(cells))


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_command(lambda: bench_packed(args))
