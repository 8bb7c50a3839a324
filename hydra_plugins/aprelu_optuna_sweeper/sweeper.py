"""The Sweeper Hydra instantiates for `hydra/sweeper=optuna` (Hydra accepts plugin classes only from
the hydra_plugins namespace); the study is aprelu_exp.search.study, the loop aprelu_exp.search.loop."""

from typing import Any, List, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.aprelu_optuna_sweeper import config  # noqa: F401  (stores the configs)


class OptunaSearchSweeper(Sweeper):
    def __init__(self, objective: DictConfig, sampler: DictConfig, pruner: DictConfig, n_trials: int,
                 n_jobs: int, study_name: Optional[str] = None, storage: Optional[str] = None,
                 params: Optional[DictConfig] = None, probe_points: int = 32,
                 heartbeat_interval: Optional[int] = 60, grace_period: Optional[int] = None,
                 retry_failed: Optional[int] = 1) -> None:
        self.settings = {"objective": objective, "sampler": sampler, "pruner": pruner, "n_trials": n_trials,
                         "n_jobs": n_jobs, "study_name": study_name, "storage": storage,
                         "params": dict(params) if params else None, "probe_points": probe_points,
                         "heartbeat_interval": heartbeat_interval, "grace_period": grace_period,
                         "retry_failed": retry_failed}
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        # Imported when a search runs, not when Hydra scans its plugins (which must stay cheap).
        from aprelu_exp.report.build import build_report
        from aprelu_exp.search.loop import run_search

        return run_search(self, arguments, report=build_report)
