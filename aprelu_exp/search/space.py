"""A search space written in Hydra's override grammar, as Optuna distributions, and back.

`model.reduction=choice(4,8,16)`, `optim.lr=tag(log, interval(0.02, 0.3))`, `range(16, 65, 16)` and
config-group choices (`model/activation=choice(aprelu,relu)`, `layout=choice(record16,wide)`) become
one Optuna distribution each; a trial's values become the override strings its job runs with."""
from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from aprelu_exp.errors import UserError

_BARE = re.compile(r"^[A-Za-z_][\w\-.]*$")


@dataclass
class SearchSpace:
    distributions: dict[str, Any]      # key (as the override names it) -> optuna distribution
    fixed: list[str]                   # overrides every trial runs with (not searched)
    # (key, its fixed override, or None where it is searched), in the order given: a job's overrides
    # keep it, as Hydra's basic sweeper keeps its command line's (`db=mysql,postgresql db.user=x` runs
    # `db=mysql db.user=x`).
    order: list[tuple[str, str | None]] = field(default_factory=list)

    def describe(self) -> dict[str, str]:
        return {k: _describe(d) for k, d in self.distributions.items()}

    def job_overrides(self, params: dict[str, Any]) -> list[str]:
        """A point's overrides: the fixed ones and the point's values, in the order given."""
        if not self.order:
            return self.fixed + as_overrides(params)
        return [line if line is not None else f"{key}={format_value(params[key])}" for key, line in self.order]


def _describe(dist) -> str:
    # deferred: optuna loads only where a study is read
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return "choice(" + ", ".join(format_value(c) for c in dist.choices) + ")"
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        kind = "int " if isinstance(dist, IntDistribution) else ""
        log = "log " if dist.log else ""
        step = f" step {dist.step}" if dist.step not in (None, 1) else ""
        return f"{log}{kind}[{dist.low}, {dist.high}]{step}"
    return repr(dist)


def format_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back unchanged."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if _BARE.match(text) and text.lower() not in ("null", "true", "false", "nan", "inf"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def as_overrides(params: dict[str, Any]) -> list[str]:
    return [f"{key}={format_value(value)}" for key, value in params.items()]


def _check_plain(key: str, values: list) -> None:
    for v in values:
        if isinstance(v, (list, dict)):
            raise UserError(
                f"{key}: Optuna cannot search list or dict values ({v!r}). Search a named choice "
                f"instead: for the network's stages, layout=choice(narrow,record16,wide,deep) "
                f"(conf/layout/), or one entry such as model.stages.0.channels=choice(16,32).")


def _distribution(key: str, override) -> Any:
    # deferred: optuna loads only where a study is read
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep = override.value()
    tags = set(getattr(sweep, "tags", set()) or set())
    log = "log" in tags
    if override.is_choice_sweep():
        values = list(override.sweep_iterator())
        _check_plain(key, values)
        if len(set(map(repr, values))) != len(values):
            raise UserError(f"{key}: choice({', '.join(map(format_value, values))}) repeats a value.")
        return CategoricalDistribution(values)
    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if not values:
            raise UserError(f"{key}: {override.get_value_element_as_str()} is an empty range "
                            f"(range(start, stop, step) stops before stop).")
        if all(isinstance(v, int) for v in values):
            step = values[1] - values[0] if len(values) > 1 else 1
            if log and step != 1:
                raise UserError(f"{key}: a log-scaled int range needs step 1; Optuna cannot combine them.")
            return IntDistribution(values[0], values[-1], step=step, log=log)
        return CategoricalDistribution(values)  # float ranges: the exact listed values
    if override.is_interval_sweep():
        low, high = float(sweep.start), float(sweep.end)
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise UserError(f"{key}: interval({sweep.start}, {sweep.end}) is empty; give low < high.")
        if log and low <= 0:
            raise UserError(f"{key}: tag(log, interval({sweep.start}, {sweep.end})) needs a positive low end.")
        if "int" in tags:
            return IntDistribution(int(math.ceil(low)), int(math.floor(high)), log=log)
        return FloatDistribution(low, high, log=log)
    raise UserError(f"{key}: {override.input_line!r} is not a search dimension Optuna can sample "
                    f"(use choice, range or interval).")


def parse_space(params: dict[str, str] | None, arguments: list[str], config_loader=None,
                allow_empty: bool = False) -> SearchSpace:
    """The sweeper's `params` (a reusable search config) and the command line, the latter winning
    key by key: a sweep expression there (re)defines a dimension, a plain value fixes the key.
    allow_empty: a space without a dimension is one point (another app's sweep of fixed values, as
    Hydra's sweepers take it); the project's search refuses it, as a search of nothing."""
    parser = OverridesParser.create(config_loader=config_loader)
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    try:
        overrides = parser.parse_overrides(lines)
    except OverrideParseException as exc:
        raise UserError(f"cannot read the search's overrides: {exc}") from None
    distributions: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    order: dict[str, None] = {}  # each key where it first appears
    for ov in overrides:
        key = ov.get_key_element()
        order[key] = None
        if ov.is_sweep_override():
            if ov.is_hydra_override():
                raise UserError(f"{key}: hydra.* settings cannot be searched.")
            fixed.pop(key, None)
            distributions[key] = _distribution(key, ov)
        else:
            distributions.pop(key, None)
            fixed[key] = ov.input_line
    if not distributions and not allow_empty:
        raise UserError("the search has no dimension: give at least one key with choice(...), "
                        "range(...) or interval(...), e.g. 'model.reduction=choice(4,8,16)', or a search "
                        "config (search=record_16_neighbourhood).")
    return SearchSpace(distributions, list(fixed.values()), [(k, fixed.get(k)) for k in order])


def corner_points(space: SearchSpace, limit: int, seed: int = 0) -> list[dict[str, Any]]:
    """Points that probe the space before any trial runs: every categorical value, both ends of
    every numeric range, in all combinations (a seeded sample of them when there are too many)."""
    # deferred: optuna loads only where a study is read

    from optuna.distributions import CategoricalDistribution

    axes = []
    for key, dist in space.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            axes.append([(key, v) for v in dist.choices])
        else:
            ends = [dist.low, dist.high]
            axes.append([(key, v) for v in dict.fromkeys(ends)])
    total = math.prod(len(a) for a in axes)
    if total <= limit:
        combos = itertools.product(*axes)
        return [dict(c) for c in combos]
    rng = random.Random(seed)
    return [dict(rng.choice(a) for a in axes) for _ in range(limit)]
