"""The article's learning-rate schedule and its proportional scaling to a shorter budget.

Keras' scheduler multiplies the lr by gamma at every 0-based epoch that is a positive multiple
of ``every`` (record 16: 1500 of 5000), so epochs [0, 1500) train at lr, [1500, 3000) at lr*0.1...
"""
from __future__ import annotations

import bisect
from typing import Sequence


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
