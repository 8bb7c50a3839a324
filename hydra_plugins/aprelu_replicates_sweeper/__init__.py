"""`hydra/sweeper=replicates` (the project's default): Hydra's basic sweeper, plus `replicates=N`,
which runs every point of the sweep with N seeds (seed, seed+1, ..., seed+N-1)."""

import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class ReplicatesSweeperConf:
    _target_: str = "hydra_plugins.aprelu_replicates_sweeper.ReplicatesSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="replicates", node=ReplicatesSweeperConf,
                             provider="aprelu_exp")


class ReplicatesSweeper(BasicSweeper):
    def sweep(self, arguments: List[str]) -> Any:
        # Imported when a sweep runs, not when Hydra scans its plugins (which every command does).
        from aprelu_exp.errors import UserError
        from aprelu_exp.runs.replicates import seed_sweep

        try:
            arguments = seed_sweep(self.config, arguments)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(UserError.exit_code)
        return super().sweep(arguments)
