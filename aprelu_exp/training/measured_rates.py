"""What the bench measured on this machine, kept for estimates (`records replay --plan`): the end-to-end
epoch's seconds per training image and per evaluated image of the network it measured, per
precision, with that network's multiply-adds per image, so that another network's time is scaled
by its arithmetic.

Kept beside perf=fast's probe answers in the user's cache folder (runs/user_cache.py), one entry per
device model; a bench run replaces its device's entry. Reading it needs neither torch nor a GPU."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from aprelu_exp.runs.rundir import write_json_atomic
from aprelu_exp.runs.user_cache import cache_dir

RATES_FILE = "bench_rates.json"
NETWORK = "aprelu_exp.model.resnet.APReLUResNet"
IMAGE = (3, 32, 32)


def device_key(device_type: str, device_name: str) -> str:
    return f"{device_type}:{device_name}"


def network_multiply_adds(model) -> int | None:
    """Multiply-adds of one CIFAR-10 image's forward pass through the project's network, counted
    from its config (`model` node): its convolutions and dense layers, the arithmetic that sets its
    speed. None for another network (a user's own `model._target_`)."""
    if str(model.get("_target_")) != NETWORK:
        return None
    cin, size = int(model.get("in_channels", IMAGE[0])), IMAGE[1]
    stem = int(model.stem_channels)
    total = stem * cin * 9 * size * size
    reduction, act = int(model.reduction), str(model.activation)

    def gate(c: int) -> int:  # the dense layers of one activation's hyper-network
        if act == "aprelu":
            return 2 * c * (c // reduction) + (c // reduction) * c
        if act == "dyrelu_b":
            hidden = max(c // reduction, 1)
            return c * hidden + hidden * 4 * c
        return 2 * 2 + 2 if act == "aprelu_shared" else 0

    cin = stem
    for stage in model.stages:
        for _ in range(int(stage.blocks)):
            cout, stride = int(stage.channels), 2 if stage.downsample else 1
            out = -(-size // stride)
            total += gate(cin) + cout * cin * 9 * out * out + gate(cout) + cout * cout * 9 * out * out
            if model.get("shortcut") == "projection" and (cin != cout or stride > 1):
                total += cout * cin * out * out
            cin, size = cout, out
    return total + gate(cin) + cin * int(model.get("num_classes", 10))


def record_bench(results: dict, macs_per_image: int | None, folder: Path | None = None) -> Path | None:
    """Keep a bench's epoch measurements as this device's rates; returns the file (None when the
    bench measured no epoch, the network cannot be counted, or the folder is not writable)."""
    env = results["environment"]
    by_precision = {}
    for precision, r in results["by_precision"].items():
        epoch = r.get("epoch") or {}
        if epoch.get("train_subset") and epoch.get("test_subset"):
            by_precision[precision] = {
                "train_s_per_image": epoch["train_time_s_measured"] / epoch["train_subset"],
                # each epoch evaluates twice: standard and article mode
                "eval_s_per_image": epoch["eval_time_s_measured"] / (2 * epoch["test_subset"])}
    if not by_precision or not macs_per_image:
        return None
    path = Path(folder or cache_dir()) / RATES_FILE
    entries = _read(path)
    entries[device_key(env["device"].split(":")[0], env["device_name"])] = {
        "date": dt.date.today().isoformat(), "commit": env.get("git_commit"), "record": results["config"]["record"],
        "macs_per_image": int(macs_per_image), "by_precision": by_precision}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, entries)
    except OSError:
        return None
    return path


def read_bench(device_type: str, device_name: str, folder: Path | None = None) -> dict | None:
    return _read(Path(folder or cache_dir()) / RATES_FILE).get(device_key(device_type, device_name))


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
