"""Compose records (the experiment configs) and compare resolved configs key by key."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aprelu_exp import config_schema  # noqa: F401  (registers the typed schemas)
from aprelu_exp.compose import CONF_DIR, compose_config
from aprelu_exp.errors import UserError
from aprelu_exp.runs.rundir import find_config

# Keys (and override prefixes) that describe where or how a run was started or logged, not what it
# trains: the one list for record diffs, report labels and a promoted record's search settings.
NON_SETTINGS = ("record.", "replicates", "run_root", "resume", "data.root", "progress_refresh_rate", "trial.", "hydra.",
                "logger", "trainer.enable_progress_bar", "trainer.enable_model_summary")


def record_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def compose_record(name: str, overrides: list[str] | None = None) -> DictConfig:
    if name not in record_names():
        raise UserError(f"No record named {name!r}; known records: {', '.join(record_names())}. "
                        f"A record is a file conf/experiment/<name>.yaml.")
    return compose_config([f"experiment={name}", *(overrides or [])])


def load_config(ref: str) -> DictConfig:
    """A record name, or a run directory (its resolved config.yaml)."""
    path = Path(ref)
    if ("/" in ref or ref.startswith(".")) and not path.exists():
        raise UserError(f"{ref}: no such run directory. Give a run directory (runs/<date>/<run>, it holds "
                        f"config.yaml) or a record name ({', '.join(record_names())}).")
    if path.is_dir():
        found = find_config(path)
        if found:
            return OmegaConf.load(found)
        raise UserError(f"{ref} is a directory without config.yaml; give a run directory or a record name.")
    return compose_record(ref)


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


def _settings(cfg: DictConfig) -> dict[str, Any]:
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    return {k: v for k, v in flatten(data).items() if not k.startswith(NON_SETTINGS)}


def settings_without_seed(cfg: DictConfig) -> tuple:
    """What a run trains, but its seed: runs with equal keys are replicates of one configuration."""
    return tuple(sorted((k, repr(v)) for k, v in _settings(cfg).items() if k != "seed"))


MISSING = "<absent>"


def config_diff(a: DictConfig, b: DictConfig) -> list[tuple[str, Any, Any]]:
    fa, fb = _settings(a), _settings(b)
    keys = sorted(set(fa) | set(fb))
    return [(k, fa.get(k, MISSING), fb.get(k, MISSING)) for k in keys if fa.get(k, MISSING) != fb.get(k, MISSING)]


def lineage() -> dict[str, dict]:
    """Every record's metadata, keyed by name, as its composed config states it."""
    out = {}
    for name in record_names():
        rec = OmegaConf.to_container(compose_record(name).record, resolve=True)
        out[name] = rec
    return out
