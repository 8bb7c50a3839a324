"""`hydra/sweeper=replicates` (the project's default): Hydra's grid sweep (`a=1,2 b=x,y` runs every
combination; `range(...)` and other discrete sweeps too), plus `replicates=N`, which runs every point
with N seeds (seed, seed+1, ..., seed+N-1), and, for the project's runs, `-m resume=<sweep dir>`.
Built on Hydra's public Sweeper interface and override parser only. Under an app without a
`replicates` key it is Hydra's basic sweeper (tests/test_sweeper_suites.py runs Hydra's own suites)."""

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


@dataclass
class ReplicatesSweeperConf:
    _target_: str = "hydra_plugins.aprelu_replicates_sweeper.ReplicatesSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="replicates", node=ReplicatesSweeperConf,
                             provider="aprelu_exp")


def grid(overrides) -> List[List[str]]:
    """Every job's overrides: the cartesian product of each key's values, in the order given."""
    axes: Dict[str, List[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise ValueError(f"{o.input_line}: the replicates sweeper takes lists and ranges "
                                 f"(a=1,2 or a=range(1,4)), not intervals; a search (hydra/sweeper=optuna) "
                                 f"samples intervals.")
            axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            axes[key] = [f"{key}={o.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*axes.values())]


class ReplicatesSweeper(Sweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None):
        self.max_batch_size = max_batch_size
        self.params = params or {}
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        # Imported when a sweep runs, not when Hydra scans its plugins (which every command does).
        from aprelu_exp.errors import UserError
        from aprelu_exp.sweep.replicates import seed_sweep
        from aprelu_exp.sweep.app import is_project_app
        from aprelu_exp.sweep.resume import SWEEP_FILE, SweepPlan, sweep_plan

        sweep_dir = Path(self.config.hydra.sweep.dir)
        project = is_project_app(self.config)
        try:
            arguments = seed_sweep(self.config, [f"{k}={v}" for k, v in self.params.items()] + list(arguments))
            parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
            jobs = grid(parser.parse_overrides(arguments))
            # A sweep launched into its own directory again (-m resume=DIR) goes on with it: the
            # jobs keep their numbers; finished ones are not launched, the others decide from their
            # directories (aprelu_exp.job: continue from the checkpoint, or start). Another app's
            # jobs leave no status to go by: they all run, as under Hydra's basic sweeper.
            plan = sweep_plan(sweep_dir, jobs) if project else SweepPlan(sweep_dir, ["start"] * len(jobs))
        except (UserError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(UserError.exit_code)
        resumed = project and (sweep_dir / SWEEP_FILE).is_file()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if resumed:
            print(plan.summary(), flush=True)  # the sweep's own multirun.yaml stays its record
        else:
            OmegaConf.save(self.config, sweep_dir / SWEEP_FILE)
        size = self.max_batch_size if self.max_batch_size and self.max_batch_size > 0 else len(jobs)
        returns = []
        for start, end in plan.blocks(size):
            batch = jobs[start:end]
            self.validate_batch_is_legal(batch)
            returns.append(self.launcher.launch(batch, initial_job_idx=start))
        return returns
