"""`replicates=N`: every point of a sweep or search run with N seeds, seed .. seed+N-1.

The seed fixes the weights' initialisation, the data order and the augmentation draws; the data
streams depend on nothing but the seed and the epoch (data.datamodule.stream_seed), so two
configurations run with the same seeds see the same batches and their runs pair up."""
from __future__ import annotations

from omegaconf import DictConfig

from aprelu_exp.errors import UserError


def replicate_seeds(cfg: DictConfig) -> list[int]:
    n = cfg.get("replicates", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"replicates={n!r}: give the number of seeds per configuration, an integer >= 1 "
                        f"(replicates=3 runs seeds {cfg.seed}, {cfg.seed + 1}, {cfg.seed + 2}).")
    return [int(cfg.seed) + i for i in range(n)]


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
