"""Which keys of a run's resolved config are its settings (what it trains) and which only say where
or how it was started or logged: the one list that record diffs, report labels, replicate groups,
a promoted record's search settings and MLflow's params all use."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

# Keys (and override prefixes) that describe where or how a run was started or logged, not what it
# trains.
NON_SETTINGS = ("record.", "replicates", "run_root", "resume", "data.root", "progress_refresh_rate", "trial.", "hydra.",
                "logger", "callbacks", "trainer.enable_progress_bar", "trainer.enable_model_summary")


def is_setting_override(override: str) -> bool:
    """Whether a command-line override (`key=value`, `+key=value`, `group=option`) changes what trains."""
    return not override.lstrip("+~").split("=", 1)[0].startswith(NON_SETTINGS)


def flatten(node: Any, prefix: str = "", index_lists: bool = True) -> dict[str, Any]:
    """Dotted keys with list indices, e.g. ``model.stages[0].channels``; with index_lists=False a
    list stays one value under its own key (``model.stages``)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k), index_lists))
        return out or {prefix: {}}
    if isinstance(node, list) and index_lists:
        out = {}
        for i, v in enumerate(node):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: node}


def settings(cfg: DictConfig, resolve: bool = True) -> dict[str, Any]:
    """The run's settings as dotted keys and resolved values (resolve=False: as written)."""
    data = OmegaConf.to_container(cfg, resolve=resolve)
    data.pop("hydra", None)
    return {k: v for k, v in flatten(data).items() if not k.startswith(NON_SETTINGS)}


def settings_without_seed(cfg: DictConfig) -> tuple:
    """What a run trains, but its seed: runs with equal keys are replicates of one configuration."""
    return tuple(sorted((k, repr(v)) for k, v in settings(cfg).items() if k != "seed"))


MISSING = "<absent>"


def config_diff(a: DictConfig, b: DictConfig) -> list[tuple[str, Any, Any]]:
    """(key, value in a, value in b) for every setting that differs; MISSING where a config lacks it."""
    fa, fb = settings(a), settings(b)
    keys = sorted(set(fa) | set(fb))
    return [(k, fa.get(k, MISSING), fb.get(k, MISSING)) for k in keys if fa.get(k, MISSING) != fb.get(k, MISSING)]
