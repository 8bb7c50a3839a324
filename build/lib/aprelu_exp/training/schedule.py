"""The learning-rate schedules (the `schedule` group's targets) and what a run trains: the article's
step schedule with its proportional scaling to a shorter budget, and a cosine with linear warm-up.

Keras' scheduler multiplies the lr by gamma at every 0-based epoch that is a positive multiple
of ``every`` (record 16: 1500 of 5000), so epochs [0, 1500) train at lr, [1500, 3000) at lr*0.1...
"""
from __future__ import annotations

import bisect
import inspect
import math
from dataclasses import dataclass, field
from typing import Sequence

from omegaconf import DictConfig
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from aprelu_exp.errors import UserError


def step_milestones(full_epochs: int, every: int) -> list[int]:
    """0-based epochs at which the lr is multiplied, for a run of ``full_epochs``."""
    if every <= 0:
        return []
    return list(range(every, full_epochs, every))


def scale_milestones(milestones: Sequence[int], full_epochs: int, budget_epochs: int) -> list[int]:
    """Place each milestone at the same fraction of a ``budget_epochs`` run.

    5000 epochs with x0.1 at 1500/3000/4500 become x0.1 at 15/30/45 for a 50-epoch budget.
    Milestones that round to epoch 0 or collide are kept in order (the lr then drops twice at once),
    so the total decay of the full schedule is preserved.
    """
    if budget_epochs == full_epochs:
        return list(milestones)
    return [max(1, round(m * budget_epochs / full_epochs)) for m in milestones]


def step_factor(epoch: int, milestones: Sequence[int], gamma: float) -> float:
    return gamma ** bisect.bisect_right(list(milestones), epoch)


class KerasStepLR(LambdaLR):
    """The article's schedule: lr x gamma at every 0-based epoch that is a positive multiple of
    ``every`` of a run of ``epochs``; with ``budget`` the milestones keep their fractions of it."""

    def __init__(self, optimizer: Optimizer, epochs: int = 5000, every: int = 1500, gamma: float = 0.1,
                 budget: int | None = None):
        if epochs < 1 or every < 0 or gamma <= 0:
            raise ValueError(f"schedule: epochs={epochs}, every={every}, gamma={gamma}; give epochs >= 1, "
                             f"every >= 0 (0: constant lr) and gamma > 0.")
        milestones = step_milestones(epochs, every)
        self.milestones = scale_milestones(milestones, epochs, budget) if budget else milestones
        self.gamma = gamma
        super().__init__(optimizer, self.factor)

    def factor(self, epoch: int) -> float:
        return step_factor(epoch, self.milestones, self.gamma)

    def describe(self) -> dict:
        return {"milestones": list(self.milestones), "gamma": self.gamma}


class WarmupCosineLR(LambdaLR):
    """A linear warm-up over ``warmup_epochs`` (from lr / warmup_epochs up to lr), then a cosine
    from lr down to lr x ``min_factor`` at the end of ``epochs``; ``budget`` compresses both."""

    def __init__(self, optimizer: Optimizer, epochs: int = 200, warmup_epochs: int = 0, min_factor: float = 0.0,
                 budget: int | None = None):
        if epochs < 1 or not 0 <= warmup_epochs < epochs or not 0 <= min_factor <= 1:
            raise ValueError(f"schedule: epochs={epochs}, warmup_epochs={warmup_epochs}, min_factor={min_factor}; "
                             f"give epochs >= 1, 0 <= warmup_epochs < epochs and 0 <= min_factor <= 1.")
        length = budget or epochs
        self.length = length
        self.warmup = round(warmup_epochs * length / epochs) if budget else warmup_epochs
        self.min_factor = min_factor
        super().__init__(optimizer, self.factor)

    def factor(self, epoch: int) -> float:
        if epoch < self.warmup:
            return (epoch + 1) / self.warmup
        span = max(self.length - self.warmup, 1)
        progress = min(epoch - self.warmup, span) / span
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    def describe(self) -> dict:
        return {"warmup_epochs": self.warmup, "cosine_epochs": self.length - self.warmup,
                "min_factor": self.min_factor}


def scales_to_budget(target) -> bool:
    """Whether a schedule can be compressed into `budget=N` epochs (it takes a `budget` argument)."""
    return "budget" in inspect.signature(target).parameters


@dataclass
class SchedulePlan:
    full_epochs: int  # the schedule's own length
    max_epochs: int  # what this run trains
    budget: int | None
    shape: dict = field(default_factory=dict)  # the schedule's own description (milestones, warm-up)

    def as_dict(self) -> dict:
        return {
            "full_epochs": self.full_epochs,
            "max_epochs": self.max_epochs,
            "budget": self.budget,
            **self.shape,
            "kind": "budget" if self.budget else (
                "full" if self.max_epochs >= self.full_epochs else "truncated"),
        }


def plan_schedule(cfg: DictConfig, schedule: LRScheduler | None = None) -> SchedulePlan:
    """What a run trains: the schedule's own length, cut to `trainer.max_epochs`, or compressed into
    `budget`; ``schedule`` (the built scheduler) adds its shape (e.g. the milestones used)."""
    s = cfg.schedule
    if cfg.trainer.max_epochs is None:
        raise UserError(f"schedule ({s.get('_target_')}) declares no `epochs`; give the run's length with "
                        f"trainer.max_epochs=N.")
    max_epochs = int(cfg.trainer.max_epochs)
    full = int(s.epochs) if "epochs" in s else max_epochs
    shape = schedule.describe() if hasattr(schedule, "describe") else {}
    budget = cfg.get("budget")
    if budget is not None:
        if int(budget) < 1:
            raise UserError(f"budget={budget} is below one epoch; give budget=N with N >= 1 "
                            f"(the record's full schedule is {full} epochs).")
        return SchedulePlan(full, int(budget), int(budget), shape)
    if max_epochs < 1:
        raise UserError(f"trainer.max_epochs={max_epochs}; train at least one epoch.")
    return SchedulePlan(full, max_epochs, None, shape)
