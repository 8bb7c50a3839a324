"""The article's learning-rate schedule and its proportional scaling to a shorter budget.

Keras' scheduler multiplies the lr by gamma at every 0-based epoch that is a positive multiple
of ``every`` (record 16: 1500 of 5000), so epochs [0, 1500) train at lr, [1500, 3000) at lr*0.1...
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Sequence

from omegaconf import DictConfig

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


@dataclass
class SchedulePlan:
    full_epochs: int  # the record's schedule length
    max_epochs: int  # what this run trains
    milestones: list[int]
    budget: int | None

    def as_dict(self) -> dict:
        return {
            "full_epochs": self.full_epochs,
            "max_epochs": self.max_epochs,
            "budget": self.budget,
            "milestones": self.milestones,
            "kind": "budget" if self.budget else (
                "full" if self.max_epochs >= self.full_epochs else "truncated"),
        }


def plan_schedule(cfg: DictConfig) -> SchedulePlan:
    """What a run trains: the record's schedule, cut to `trainer.max_epochs`, or scaled to `budget`."""
    s = cfg.schedule
    full = int(s.epochs)
    milestones = step_milestones(full, int(s.every))
    budget = cfg.get("budget")
    if budget is not None:
        if int(budget) < 1:
            raise UserError(f"budget={budget} is below one epoch; give budget=N with N >= 1 "
                            f"(the record's full schedule is {full} epochs).")
        return SchedulePlan(full, int(budget), scale_milestones(milestones, full, int(budget)), int(budget))
    max_epochs = int(cfg.trainer.max_epochs)
    if max_epochs < 1:
        raise UserError(f"trainer.max_epochs={max_epochs}; train at least one epoch.")
    return SchedulePlan(full, max_epochs, milestones, None)
