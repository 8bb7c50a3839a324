"""Typed schemas (Hydra structured configs) for every config group.

Each YAML option names its schema first in its defaults list, so Hydra rejects unknown keys and
values of the wrong type while composing, before any run directory exists. Semantic checks that
types cannot express (a width the shortcut cannot join, a reduction larger than the channels) live
next to the code they protect and run before training starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

from aprelu_exp.data.augment import KerasAugmentConfig


@dataclass
class StageSchema:
    blocks: int = 1
    channels: int = 16
    downsample: bool = False


@dataclass
class ModelSchema:
    activation: str = "aprelu"
    stem_channels: int = 16
    stages: List[StageSchema] = field(default_factory=list)
    reduction: int = 16
    num_classes: int = 10
    shortcut: str = "zero_pad"
    tf_same_padding: bool = True
    bn_momentum: float = 0.1
    bn_eps: float = 1e-3
    init: str = "keras"


@dataclass
class DataSchema:
    root: Optional[str] = None
    download: bool = True
    verify_digests: bool = True
    train_subset: Optional[int] = None
    test_subset: Optional[int] = None
    batch_size: int = 100
    eval_batch_size: Any = "auto"  # auto or a positive int, checked in train.eval_batch_size
    article_eval_batch_size: int = 100
    centring: str = "scalar"
    device_resident: str = "auto"
    val_split: Optional[int] = None
    split_seed: int = 0


@dataclass
class KerasAugmentSchema(KerasAugmentConfig):
    # The fields and their defaults are the augmentation's own (one source of truth).
    name: str = "keras"


@dataclass
class NoAugmentSchema:
    name: str = "none"


@dataclass
class OptimSchema:
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    l2: float = 1e-4


@dataclass
class ScheduleSchema:
    epochs: int = 5000
    every: int = 1500
    gamma: float = 0.1


@dataclass
class MLflowLoggerSchema:
    # The `logger` group's entries are Lightning loggers built with instantiate; MLflow's is typed
    # because its keys are this project's.
    _target_: str = "aprelu_exp.runs.mlflow_logger.RunMLFlowLogger"
    tracking_uri: Optional[str] = None  # null: an sqlite store beside the runs (<run_root>/mlflow.db)
    experiment_name: str = "aprelu-exp"
    log_checkpoints: bool = False
    run_root: str = "runs"


@dataclass
class PerfSchema:
    compile: str = "auto"          # auto | true | false
    channels_last: str = "auto"    # auto | true | false
    matmul_precision: str = "high"
    precision: str = "trainer"     # trainer (trainer.precision as set) | bf16 | 32


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
    "model_schema": ModelSchema,
    "data_schema": DataSchema,
    "augment_keras_schema": KerasAugmentSchema,
    "augment_none_schema": NoAugmentSchema,
    "optim_schema": OptimSchema,
    "schedule_schema": ScheduleSchema,
    "mlflow_logger_schema": MLflowLoggerSchema,
    "perf_schema": PerfSchema,
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        cs.store(name=name, node=node)


register_configs()
