"""A real Lightning epoch (loader, augmentation, training, both evaluations) on a subset."""
from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from aprelu_exp.metrics import EPOCH_TIME, EVAL_TIME, TRAIN_TIME
from aprelu_exp.bench.training import full_run_switches
from aprelu_exp.runs.rundir import read_metrics_rows
from aprelu_exp.train import train


def measured_epoch(cfg, arrays, subset: int, test_subset: int, precision: str) -> dict:
    """Two Lightning epochs of `cfg` in `precision` (a perf.precision value) on `subset` training
    and `test_subset` test images; the second is the measurement (the first carries compilation
    and warm-up), its training and evaluation times scaled to the full training and test sets."""
    c = cfg.copy()
    OmegaConf.set_struct(c, False)
    c.perf.precision = precision
    c.data.train_subset = subset
    num_test = len(arrays.test_labels)
    used_test = min(num_test, test_subset, int(c.data.test_subset or num_test))
    c.data.test_subset = used_test
    c.budget = None
    c.trainer.max_epochs = 2
    c.trainer.enable_progress_bar = False
    c.trainer.enable_model_summary = False
    c.logger = None
    # The fast-path decision is the one a full-length run of this config gets, not a 2-epoch one's.
    for key, value in full_run_switches(c, len(arrays.train_labels)).items():
        if key in ("compile", "channels_last") and str(c.perf[key]) == "auto":
            c.perf[key] = str(value).lower()
    with tempfile.TemporaryDirectory() as tmp:
        s = train(c, Path(tmp), arrays=arrays)
        rows = read_metrics_rows(Path(tmp))
    first, row = rows[0], rows[-1]
    train_full = float(row[TRAIN_TIME]) * len(arrays.train_labels) / subset
    eval_full = float(row[EVAL_TIME]) * num_test / used_test
    return {"train_subset": subset, "train_time_s_measured": float(row[TRAIN_TIME]),
            "test_subset": used_test, "eval_time_s_measured": float(row[EVAL_TIME]),
            "train_time_s_full": train_full, EVAL_TIME: eval_full,
            "end_to_end_epoch_s": train_full + eval_full,
            "first_epoch_s": float(first[EPOCH_TIME]), "perf": s["perf"],
            "note": "second of two epochs; the first (first_epoch_s) includes compilation/warm-up"}
