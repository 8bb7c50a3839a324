"""Timed training steps, for the bench and for perf=fast's precision probe: a bare optimizer step of
a module on one fixed batch in a given precision, and rates as medians over timed windows, the
contenders interleaved so that a slow spell of a shared machine hits all of them alike."""
from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rates(fn, images_per_call: int, windows: int, calls: int, device) -> dict:
    found = []
    for _ in range(windows):
        sync(device)
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(device)
        found.append(images_per_call * calls / (time.perf_counter() - t))
    return summarise(found)


def summarise(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "windows": len(values)}


def interleaved_rates(contenders: dict, images: int, windows: int, calls: int, device) -> dict:
    """contenders: name -> (step function, context factory). Each window times every contender
    in turn; the order rotates, since whichever runs first after another pays for its caches."""
    found: dict = {name: [] for name in contenders}
    names = list(contenders)
    for w in range(windows):
        for name in names[w % len(names):] + names[:w % len(names)]:
            fn, ctx = contenders[name]
            with ctx():
                found[name].append(rates(fn, images, 1, calls, device)["median"])
    return {name: summarise(r) for name, r in found.items()}


def precision_context(device, precision: str):
    """What Lightning wraps the training and validation steps in for this precision."""
    if precision.startswith("bf16"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext


def training_step_fn(module, batch, device, ctx, warmup: int = 3) -> tuple:
    """A plain optimizer step of `module` on one fixed batch under `ctx`, after warm-up; returns
    (step, warm-up seconds). The loss is taken in fp32, as the training module does."""
    x, y = batch
    module.to(device).train()
    opt = module.configure_optimizers()["optimizer"]

    def step():
        opt.zero_grad(set_to_none=True)
        with ctx():
            loss = F.cross_entropy(module(x).float(), y)
        loss.backward()
        module.on_before_optimizer_step(opt)  # the Keras L2 gradient
        opt.step()

    t = time.perf_counter()
    for _ in range(warmup):  # compilation, allocator, oneDNN primitive caches
        step()
    sync(device)
    return step, time.perf_counter() - t
