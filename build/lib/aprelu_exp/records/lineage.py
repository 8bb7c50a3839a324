"""The records' lineage, and a record or a run directory's config by name for the records command."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from aprelu_exp.compose import compose_record, record_names
from aprelu_exp.errors import UserError
from aprelu_exp.runs.rundir import find_config


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


def lineage() -> dict[str, dict]:
    """Every record's metadata, keyed by name, as its composed config states it."""
    out = {}
    for name in record_names():
        rec = OmegaConf.to_container(compose_record(name).record, resolve=True)
        out[name] = rec
    return out
