"""Which app a sweeper sweeps. The project's sweepers are Hydra plugins (hydra_plugins/, found by
every Hydra app on this Python path), so `hydra/sweeper=replicates` or `=optuna` may run under any
app. What only the project has (its run directories, status files and preflight, the trial
reporter, the record's name in folder names) is used only where the config is the project's."""
from __future__ import annotations

from omegaconf import DictConfig

# Keys every aprelu-exp config has (config_schema.RootSchema) and a plain Hydra app has no reason to:
# together they say the jobs are this project's runs.
PROJECT_KEYS = ("record", "run_root", "trial")


def is_project_app(cfg: DictConfig) -> bool:
    return all(key in cfg for key in PROJECT_KEYS)
