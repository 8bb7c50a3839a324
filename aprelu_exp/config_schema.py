"""Typed schemas (Hydra structured configs) for the keys that are the project's own: the root keys
(seed, budget, resume, the record's provenance, ...) and the perf switches.

The parts a run trains with (network, data, augmentation, optimizer, schedule, loggers, callbacks,
trainer) have no schema here: each is a `_target_` node whose constructor's signature declares its
settings, checked by aprelu_exp.parts before anything is built. Semantic checks that types cannot
express (a width the shortcut cannot join, a reduction larger than the channels) live next to the
code they protect and run before training starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class PerfSchema:
    compile: str = "auto"          # auto | true | false
    compile_mode: str = "default"  # torch.compile's mode: default | reduce-overhead (CUDA graphs) | ...
    channels_last: str = "auto"    # auto | true | false
    matmul_precision: str = "high"
    precision: str = "trainer"     # trainer (trainer.precision as set) | bf16 | 32 | fast (measured)


@dataclass
class RecordSchema:
    name: str = "custom"
    parent: Optional[str] = None
    provenance: Optional[str] = None
    source: Optional[str] = None
    change: Optional[str] = None
    # How the record was confirmed against its parent (records promote --confirm, records confirm):
    # seeds, both means, the difference with its interval, P(A > B), the settings and the commit.
    evidence: Optional[Dict[str, Any]] = None


@dataclass
class CheckpointSchema:
    monitor: str = "val_acc"


@dataclass
class TrialSchema:
    # Written by the search sweeper (hydra/sweeper=optuna) into each job's overrides; all null in a
    # run outside a search.
    study: Optional[str] = None
    storage: Optional[str] = None
    number: Optional[int] = None
    metric: Optional[str] = None


@dataclass
class RootSchema:
    seed: Optional[int] = 0
    replicates: int = 1
    budget: Optional[int] = None
    resume: Optional[str] = None
    resume_from: str = "last"
    run_root: str = "runs"
    progress_refresh_rate: int = 10
    record: RecordSchema = field(default_factory=RecordSchema)
    checkpoint: CheckpointSchema = field(default_factory=CheckpointSchema)
    trial: TrialSchema = field(default_factory=TrialSchema)
    # Groups are typed by their own schemas; the trainer is Lightning's and keeps its own checks.
    model: Any = None
    data: Any = None
    augment: Any = None
    optim: Any = None
    schedule: Any = None
    trainer: Any = None
    logger: Any = None
    callbacks: Any = None
    perf: Any = None


# Schemas are stored outside every config group, so Hydra's group listing, `--help` and tab
# completion offer only options that compose into a runnable config; each YAML option pulls its
# schema in with `- /<name>@_here_` (an absolute path, into the option's own package).
SCHEMAS = {
    "root_schema": RootSchema,
    "perf_schema": PerfSchema,
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        cs.store(name=name, node=node)


register_configs()
