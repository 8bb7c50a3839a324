"""Timed windows: rates as medians over windows, contenders interleaved so that a slow spell of
a shared machine hits all of them alike."""
from __future__ import annotations

import statistics
import time

import torch


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
