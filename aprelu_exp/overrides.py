"""Command-line overrides that cannot both hold: refused, never resolved silently one way."""
from __future__ import annotations

from aprelu_exp.errors import UserError

# (key, key, why they contradict)
CONTRADICTIONS = (
    ("budget", "trainer.max_epochs",
     "budget=N trains N epochs with the record's lr milestones scaled into them; trainer.max_epochs=N "
     "trains the first N epochs of the record's own schedule. Give one of the two"),
)


def _given(overrides: list[str]) -> dict[str, str]:
    """key -> value of the `key=value` overrides (`+key=`, `++key=` included; deletions left out)."""
    out = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if sep and not key.startswith("~"):
            out[key.lstrip("+")] = value
    return out


def _set(value: str | None) -> bool:
    """A value that holds by itself (a value wrong on its own, budget=0, is reported as such first)."""
    try:
        return value is not None and int(value) >= 1
    except ValueError:
        return False


def refuse_contradictions(overrides: list[str]) -> None:
    given = _given(overrides)
    for a, b, why in CONTRADICTIONS:
        if _set(given.get(a)) and _set(given.get(b)):
            raise UserError(f"{a}={given[a]} and {b}={given[b]} contradict each other: {why}.")
