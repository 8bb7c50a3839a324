"""The sweeper's config (`hydra.sweeper.*`) and its sampler and pruner options, in Hydra's store."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ObjectiveConf:
    metric: str = "val_acc_article"   # any metrics.csv column; the article's metric by default
    direction: str = "maximize"       # maximize | minimize
    reduce: str = "last"              # last (the last epoch's value) | best (the best epoch's)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.aprelu_optuna_sweeper.sweeper.OptunaSearchSweeper"
    # The sampler and pruner stay configs: the search builds them (the grid needs its space, a
    # continued study a shifted seed) and hands the pruner's config to every job.
    _recursive_: bool = False
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    # null: the record's name plus a digest of the space and objective, so the same command
    # continues the same study and another space starts its own.
    study_name: Optional[str] = None
    # null: sqlite under run_root (runs/optuna.db); any SQLAlchemy URL; journal:PATH (shared filesystem)
    storage: Optional[str] = None
    n_trials: int = 20        # new trials per invocation (a continued study keeps its earlier ones)
    n_jobs: int = 1           # trials launched together, through hydra/launcher
    objective: ObjectiveConf = field(default_factory=ObjectiveConf)
    sampler: Any = MISSING
    pruner: Any = MISSING
    # key -> Hydra sweep expression, e.g. model.reduction: choice(4,8,16); the command line adds to
    # and overrides these key by key.
    params: Optional[Dict[str, str]] = None
    probe_points: int = 32    # points of the space checked before any trial (all invalid: refused)
    # A database storage: the sweeper records each running trial's heartbeat every interval (s);
    # a trial whose beat is older than grace_period (null: 2 intervals) belongs to a sweeper that
    # died, and the next sweeper of the study marks it failed and queues it again (retry_failed
    # times at most; null: always). null interval: no heartbeat (such a trial stays RUNNING).
    heartbeat_interval: Optional[int] = 60
    grace_period: Optional[int] = None
    retry_failed: Optional[int] = 1


# Samplers: seeded, so a search repeats. A continued study mixes the seed with its trial count.
SAMPLERS = {
    "tpe": {"_target_": "optuna.samplers.TPESampler", "seed": 0, "n_startup_trials": 5},
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": 0},
    "grid": {"_target_": "optuna.samplers.GridSampler", "seed": 0},  # discrete dimensions only
}
# Pruners: a step is an epoch, counted from 1 (the median pruner judges from the second on). Median by default; successive halving and Hyperband as options;
# threshold stops any trial whose objective is outside [lower, upper].
PRUNERS = {
    "median": {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 2},
    "halving": {"_target_": "optuna.pruners.SuccessiveHalvingPruner", "min_resource": 1, "reduction_factor": 3},
    "hyperband": {"_target_": "optuna.pruners.HyperbandPruner", "min_resource": 1, "reduction_factor": 3},
    "threshold": {"_target_": "optuna.pruners.ThresholdPruner", "lower": None, "upper": None,
                  "n_warmup_steps": 0},
    "none": {"_target_": "optuna.pruners.NopPruner"},
}

cs = ConfigStore.instance()
cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="aprelu_exp")
for _name, _node in SAMPLERS.items():
    cs.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="aprelu_exp")
for _name, _node in PRUNERS.items():
    cs.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="aprelu_exp")
