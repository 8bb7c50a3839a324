"""Where the project's configs live and how every tool composes them: the same tree, resolvers and
overrides as `python -m aprelu_exp`, with Hydra's composition errors turned into UserError; the
records (conf/experiment/*.yaml) by name; config nodes with a `_target_` instantiated."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
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


def record_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def compose_record(name: str, overrides: list[str] | tuple[str, ...] | None = None) -> DictConfig:
    if name not in record_names():
        raise UserError(f"No record named {name!r}; known records: {', '.join(record_names())}. "
                        f"A record is a file conf/experiment/<name>.yaml.")
    return compose_config([f"experiment={name}", *(overrides or [])])


def instantiate_group(group: str, node: DictConfig | None, **kwargs) -> list:
    """Every entry of a config group that names a `_target_` (logger, callbacks), built with Hydra's
    instantiate; its own UserError comes through as it is, any other failure names the entry."""
    built = []
    for name, spec in (node or {}).items():
        if not isinstance(spec, DictConfig) or "_target_" not in spec:
            continue
        try:
            built.append(instantiate(spec, **kwargs))
        except InstantiationException as exc:
            cause = exc.__cause__
            if isinstance(cause, UserError):
                raise cause from None
            raise UserError(f"{group}.{name} ({spec._target_}) could not be built: {cause or exc}. "
                            f"Check its keys with `python -m aprelu_exp --cfg job --package {group}`.") from None
    return built
