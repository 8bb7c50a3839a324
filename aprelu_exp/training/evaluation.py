"""The test set, evaluated once at the end of a run, in both validation modes (and, for the evaluate
command, any set of images through the same code, predictions counted in a confusion matrix).

With `data.val_split` the run validates (and picks best.ckpt, a search its trials) on held-out
training images, so the test set has judged nothing yet: it is evaluated here, with the last epoch's
weights, through the module's own `evaluate_logits`. Without a split validation already was the test
set (the article's protocol), and the last epoch's validation metrics are the test metrics."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch

from aprelu_exp.data.cifar10 import CLASSES
from aprelu_exp.metrics import TEST_ACC, TEST_ACC_ARTICLE, TEST_LOSS, TEST_LOSS_ARTICLE, VAL_ACC, VAL_ACC_ARTICLE, VAL_LOSS, VAL_LOSS_ARTICLE
from aprelu_exp.runs.lifecycle import EndsRunEarly
from aprelu_exp.training.module import ARTICLE, STANDARD

# metric name -> (evaluation mode, loss or accuracy, the validation column it mirrors)
TEST_METRICS = {
    TEST_LOSS: (STANDARD, 0, VAL_LOSS),
    TEST_ACC: (STANDARD, 1, VAL_ACC),
    TEST_LOSS_ARTICLE: (ARTICLE, 0, VAL_LOSS_ARTICLE),
    TEST_ACC_ARTICLE: (ARTICLE, 1, VAL_ACC_ARTICLE),
}


@dataclass
class ModeResult:
    """One evaluation mode over a whole set: the image-weighted mean loss and the confusion matrix
    (counts; row = true class, column = predicted class)."""

    loss: float
    confusion: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.confusion.sum())

    def per_class_accuracy(self) -> np.ndarray:
        """Each true class's share of its images predicted right (NaN for a class with no image)."""
        counts = self.confusion.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diag(self.confusion) / counts


@torch.no_grad()
def evaluate_modes(module, loaders, num_classes: int) -> list[ModeResult]:
    """Each of `loaders` (index STANDARD and ARTICLE, as `test_dataloader` gives them) through the
    module's own `evaluate_logits`: the loss averaged over images as Lightning's epoch logging
    averages the per-batch losses, and every prediction counted."""
    was_training = module.training
    module.eval()
    results = []
    try:
        for mode, loader in enumerate(loaders):
            loss_sum, confusion = 0.0, torch.zeros(num_classes * num_classes, dtype=torch.int64)
            for x, y in loader:
                x, y = x.to(module.device), y.to(module.device)
                loss, logits = module.evaluate_logits(x, y, mode)
                loss_sum += float(loss) * int(y.shape[0])
                confusion += torch.bincount((y * num_classes + logits.argmax(1)).cpu(),
                                            minlength=num_classes * num_classes)
            confusion = confusion.view(num_classes, num_classes).numpy()
            results.append(ModeResult(loss_sum / int(confusion.sum()), confusion))
    finally:
        module.train(was_training)
    return results


def evaluate_loaders(module, loaders, num_classes: int = len(CLASSES)) -> dict[str, float]:
    """The test metrics over `loaders` (index STANDARD and ARTICLE)."""
    results = evaluate_modes(module, loaders, num_classes)
    return {name: (results[mode].loss, results[mode].accuracy)[part] for name, (mode, part, _) in TEST_METRICS.items()}


class TestSetEvaluation(pl.Callback):
    """At the end of a run that finished (not pruned, not stopped): the test metrics into
    `facts["test"]` (summary.json, which RunRecord writes next) and to every logger, at the last
    epoch's step."""

    def __init__(self, datamodule, facts: dict, recorder):
        self.datamodule, self.facts, self.recorder = datamodule, facts, recorder

    def on_fit_end(self, trainer, pl_module):
        ended_early = any(isinstance(cb, EndsRunEarly) and cb.early_end for cb in trainer.callbacks)
        if trainer.interrupted or ended_early or not self.recorder.rows:
            return
        last = self.recorder.rows[-1]
        if self.datamodule.split() is None:
            metrics = {name: last.get(column) for name, (_, _, column) in TEST_METRICS.items()}
            source = "the last epoch's validation, which is the test set (no data.val_split)"
        else:
            metrics = evaluate_loaders(pl_module, self.datamodule.test_dataloader())
            source = "the test set, evaluated once with the last epoch's weights"
        self.facts["test"] = {**metrics, "epoch": int(last["epoch"]), "images": len(self.datamodule.test_y),
                              "source": source}
        if trainer.is_global_zero:
            for lg in trainer.loggers:
                lg.log_metrics({k: v for k, v in metrics.items() if v is not None}, step=int(last["epoch"]))
