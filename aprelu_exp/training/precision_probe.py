"""perf=fast's measurement: which of fp32 and bf16 trains the configured network faster on this
machine, decided by a short probe and remembered.

The AVX512_BF16 flag alone does not promise a faster bf16: on an Intel Xeon with it (and no AMX)
bf16 trained at 0.86x fp32's speed (results/2026-12-02_bench_intel). So where bf16 is not emulated,
perf=fast times a few training steps of the configured network (compiled where the run compiles)
in each precision, interleaved, on one synthetic batch, and trains in the faster. The answer is
kept in the user's cache folder per device model, torch version and compile switch, so only the
first perf=fast run of a machine pays the probe (a few seconds, plus bf16's compilation).
"""
from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from aprelu_exp.runs.user_cache import cache_dir
from aprelu_exp.training.build import build_module, build_net
from aprelu_exp.training.precision import LIGHTNING_PRECISION, cpu_model
from aprelu_exp.training.speed import interleaved_rates, precision_context, training_step_fn

FP32, BF16 = LIGHTNING_PRECISION["32"], LIGHTNING_PRECISION["bf16"]
CACHE_FILE = "precision_probe.json"
# bf16 rounds differently from the article's fp32, so it must win clearly: a few timed steps on a
# shared machine scatter by a few per cent, and a tie keeps fp32.
BF16_MUST_BEAT = 1.05
WINDOWS, STEPS = 3, 2  # timed windows per precision, training steps per window


def device_model(device_type: str) -> str:
    return torch.cuda.get_device_name() if device_type == "cuda" else cpu_model()


def cache_key(model: str, torch_version: str, compiled: bool) -> str:
    return f"{model} | torch {torch_version} | {'compiled' if compiled else 'eager'}"


def decide(fp32_rate: float, bf16_rate: float) -> dict:
    """The choice from two measured training rates (images/s), both kept, and the sentence that
    says it."""
    choice = BF16 if bf16_rate >= BF16_MUST_BEAT * fp32_rate else FP32
    name = "bf16" if choice == BF16 else "fp32"
    return {"choice": choice, "probed": True, "rates": {FP32: fp32_rate, BF16: bf16_rate},
            "why": f"perf=fast chose {name} ({choice}): training measured {fp32_rate:,.0f} images/s in fp32, "
                   f"{bf16_rate:,.0f} in bf16 ({bf16_rate / fp32_rate:.2f}x; bf16 must reach "
                   f"{BF16_MUST_BEAT:.2f}x)"}


def read_cache(key: str, folder: Path | None = None) -> dict | None:
    try:
        entry = json.loads((Path(folder or cache_dir()) / CACHE_FILE).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None  # none yet, or unreadable: probe again and rewrite it
    return entry if isinstance(entry, dict) and entry.get("choice") in (FP32, BF16) else None


def write_cache(key: str, entry: dict, folder: Path | None = None) -> Path | None:
    """Add one answer to the cache file (atomically: concurrent runs each leave a whole file).
    A folder that cannot be written costs a probe next time, never the run."""
    path = Path(folder or cache_dir()) / CACHE_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            found = json.loads(path.read_text())
            found = found if isinstance(found, dict) else {}
        except (OSError, ValueError):
            found = {}
        found[key] = entry
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(found, indent=2) + "\n")
        os.replace(tmp, path)
        return path
    except OSError:
        return None


def measure(cfg: DictConfig, device: torch.device, compile_net: bool, channels_last: bool,
            windows: int = WINDOWS, steps: int = STEPS) -> dict:
    """Training images/s of the configured network in fp32 and bf16 (medians of interleaved
    windows), on one synthetic batch of the configured size. The global RNG is left as it was:
    the run's own network is built after it and must start from the weights its seed gives."""
    bs = int(cfg.data.batch_size)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(bs, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (bs,), generator=g).to(device)
    contenders = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for p in (FP32, BF16):
            ctx = precision_context(device, p)
            module = build_module(cfg, build_net(cfg), {"compile": compile_net, "channels_last": channels_last})
            contenders[p] = (training_step_fn(module, (x, y), device, ctx, warmup=2)[0], ctx)
        found = interleaved_rates(contenders, bs, windows, steps, device)
    return {p: r["median"] for p, r in found.items()}


def probe(device_type: str, cfg: DictConfig, compile_net: bool, channels_last: bool,
          folder: Path | None = None, measure_fn=measure) -> dict:
    """The cached answer for this device, torch and compile switch, else a fresh probe (written to
    the cache). What it returns goes into summary.json as perf.fast."""
    key = cache_key(device_model(device_type), torch.__version__, compile_net)
    entry = read_cache(key, folder)
    if entry is not None:
        return {**entry, "cached": True, "cache": str(Path(folder or cache_dir()) / CACHE_FILE)}
    started = time.perf_counter()
    rates = measure_fn(cfg, torch.device(device_type), compile_net, channels_last)
    entry = {**decide(rates[FP32], rates[BF16]), "key": key, "probe_s": round(time.perf_counter() - started, 2),
             "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "network": {"record": str(cfg.record.name), "batch_size": int(cfg.data.batch_size)}}
    path = write_cache(key, entry, folder)
    return {**entry, "cached": False, "cache": str(path) if path else None}
