"""Where the project's configs live and how every tool composes them: the same tree, resolvers and
overrides as `python -m aprelu_exp`, with Hydra's composition errors turned into UserError."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from aprelu_exp import config_schema  # noqa: F401  (registers the typed schemas)
from aprelu_exp.errors import UserError
from aprelu_exp.runs.rundir import unique_suffix

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def register_resolvers() -> None:
    """`${uid:}` in run directory names (one value per process, see runs.rundir.unique_suffix)."""
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", unique_suffix, use_cache=True)


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The composed root config for these overrides, as the main command would build it."""
    register_resolvers()
    overrides = [str(o) for o in overrides]
    try:
        if GlobalHydra.instance().is_initialized():
            # Inside a running Hydra app (a sweep callback): it already searches this conf dir.
            return compose("config", overrides=overrides)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        message = " ".join(str(exc).split())
        raise UserError(f"{message} (overrides: {' '.join(overrides) or 'none'}). `python -m aprelu_exp "
                        f"--help` lists the config groups and their options, `python -m aprelu_exp "
                        f"--cfg job` every key with its value.") from None
