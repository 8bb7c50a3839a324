"""`replicates=N`: every point of a sweep or search run with N seeds, seed .. seed+N-1.

The seed fixes the weights' initialisation, the data order and the augmentation draws; the data
streams depend on nothing but the seed and the epoch (data.datamodule.stream_seed), so two
configurations run with the same seeds see the same batches and their runs pair up.

The sweepers run any Hydra app (sweep/app.py): an app without a `replicates` key runs every point
once, and only an app with a `seed` key can be given more than one replicate."""
from __future__ import annotations

from omegaconf import DictConfig

from aprelu_exp.errors import UserError


def replicate_seeds(cfg: DictConfig) -> list[int | None]:
    """The seeds each point runs with; [seed] (or [None] for an app without `seed`) for one replicate."""
    n = cfg.get("replicates", 1)
    seed = cfg.get("seed")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        example = f"seeds {seed}, {seed + 1}, {seed + 2}" if isinstance(seed, int) else "three seeds"
        raise UserError(f"replicates={n!r}: give the number of seeds per configuration, an integer >= 1 "
                        f"(replicates=3 runs {example}).")
    if n == 1:
        return [seed]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"replicates={n} needs an integer seed to start from (seed=S runs seeds S..S+{n - 1}); "
                        + ("the config has no `seed` key, so nothing tells the runs apart. Add a seed to the "
                           "config, or sweep your own key." if "seed" not in cfg else f"seed is {seed!r}."))
    return [seed + i for i in range(n)]


def seed_sweep(cfg: DictConfig, arguments: list[str]) -> list[str]:
    """The sweep's overrides with the replicates' seeds as one more swept key."""
    seeds = replicate_seeds(cfg)
    if len(seeds) == 1:
        return arguments
    swept = [a for a in arguments if a.split("=", 1)[0].lstrip("+~") == "seed" and ("," in a or "(" in a)]
    if swept:
        raise UserError(f"replicates={len(seeds)} and a seed sweep ({swept[0]}) both ask for seeds; give one: "
                        f"seed=S replicates=N runs seeds S..S+N-1.")
    return [*arguments, "seed=" + ",".join(map(str, seeds))]
