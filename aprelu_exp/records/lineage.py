"""The records' lineage, and a record or a run directory's config by name for the records command."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from aprelu_exp.compose import compose_record, record_file, record_names
from aprelu_exp.config_schema import RecordSchema
from aprelu_exp.errors import UserError
from aprelu_exp.runs.rundir import find_config

RECORD_KEYS = tuple(RecordSchema.__dataclass_fields__)


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
    """Every record's metadata, keyed by name, as its own file states it (read, not composed: a
    composition costs about a second, and a child would inherit its parent's evidence)."""
    out = {}
    for name in record_names():
        rec = OmegaConf.load(record_file(name)).get("record") or {}
        out[name] = {**dict.fromkeys(RECORD_KEYS), **OmegaConf.to_container(rec, resolve=True)}
    return out


def lineage_order(records: dict[str, dict]) -> list[str]:
    """The records as `records list` draws them: each root (a record whose parent is no record),
    then its children depth first, siblings by name."""
    children: dict[str | None, list[str]] = {}
    for name, rec in records.items():
        children.setdefault(rec.get("parent"), []).append(name)
    roots = sorted(n for n, r in records.items() if not r.get("parent") or r.get("parent") not in records)
    order: list[str] = []

    def walk(name: str) -> None:
        order.append(name)
        for child in sorted(children.get(name, [])):
            walk(child)

    for root in roots:
        walk(root)
    return order
