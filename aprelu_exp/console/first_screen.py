"""The block a run prints as it starts: where it writes, which record, how many epochs with which
lr milestones, how much data, on what device, in which precision, compiled or not. The expected end
follows after the first epoch (runs/progress.py).

Lightning's start-up notes that this block replaces or that do not apply to these runs are dropped:
the GPU/TPU availability lines (the block names the device) and the warning that an epoch has
fewer batches than `log_every_n_steps` (every metric of this module is logged once per epoch, so
the interval changes nothing). The model table is off in conf/trainer (its FLOPs column reads 0 for
this network); the block gives the parameter count instead.
"""
from __future__ import annotations

import sys
import warnings

import pytorch_lightning as pl

from aprelu_exp.runs.rundir import environment

NOT_APPLICABLE_INFO = ("GPU available:", "TPU available:")
RANK_ZERO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")
NOT_APPLICABLE_WARNINGS = (r"The number of training batches \(\d+\) is smaller than the logging interval",)


def _not_applicable(record) -> bool:
    return not record.getMessage().startswith(NOT_APPLICABLE_INFO)


def quiet_lightning_start() -> None:
    import logging

    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _not_applicable not in logger.filters:
            logger.addFilter(_not_applicable)
    for message in NOT_APPLICABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def _epochs_line(schedule: dict, gamma: float) -> str:
    kind, n, full = schedule["kind"], schedule["max_epochs"], schedule["full_epochs"]
    what = {"full": f"{n} (the record's full schedule)",
            "truncated": f"{n} of the record's {full} (truncated: its schedule cut short)",
            "budget": f"{n} (budget: the record's {full}-epoch schedule compressed)"}[kind]
    if "milestones" not in schedule:  # a schedule of another shape (cosine): what it says of itself
        shape = ", ".join(f"{k} {v}" for k, v in schedule.items() if k not in ("kind", "max_epochs", "full_epochs",
                                                                              "budget"))
        return f"{what}; {shape or 'the schedule of its own'}"
    gamma = schedule.get("gamma", gamma)
    within = [m for m in schedule["milestones"] if m < n]
    if not schedule["milestones"]:
        lr = "constant lr"
    elif within:
        lr = f"lr x{gamma:g} after epochs {', '.join(str(m) for m in schedule['milestones'])}"
        if len(within) < len(schedule["milestones"]):
            lr += f" ({len(within)} within this run)"
    else:
        lr = f"lr milestones {', '.join(str(m) for m in schedule['milestones'])}, none within this run"
    return f"{what}; {lr}"


def plan_block(facts: dict, device, precision: str, gamma: float) -> str:
    record = facts["record"]
    perf = facts["perf"]
    parent = f" (parent {record['parent']})" if record.get("parent") else ""
    device_name = environment(device)["device_name"]
    rows = [
        ("run", facts["run_dir"]),
        ("record", f"{record['name']}{parent}"),
        ("epochs", _epochs_line(facts["schedule"], gamma)),
        ("data", f"train {facts['num_train']}, validation {facts.get('num_val') or facts['num_test']} "
                 + (f"(held-out training images, {facts['split']})" if facts.get("split")
                    else "(the CIFAR-10 test images, as in the article)") + f", test {facts['num_test']}"),
        ("device", f"{device} ({device_name}); precision {precision}; "
                   f"{'compiled (torch.compile)' if perf['compile'] else 'not compiled'}; "
                   f"{facts['parameters']:,} parameters"),
    ]
    fast = perf.get("fast")
    if fast:  # perf=fast: what it chose and why, said once
        how = (f"; answer cached in {fast['cache']}" if fast.get("cached")
               else f"; probed in {fast['probe_s']:.1f} s" if fast.get("probed") else "")
        rows.append(("fast", fast["why"] + how))
    return "\n".join(f"{k:<7} {v}" for k, v in rows)


class FirstScreen(pl.Callback):
    def __init__(self, facts: dict, gamma: float, stream=None):
        self.facts, self.gamma, self.stream = facts, float(gamma), stream

    def on_fit_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            print(plan_block(self.facts, trainer.strategy.root_device, str(trainer.precision), self.gamma),
                  file=self.stream or sys.stdout, flush=True)
