"""The article's reported numbers, shipped with the package, keyed by record."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import yaml

from aprelu_exp.metrics import TRAIN_ACC, TRAIN_LOSS_KERAS, VAL_ACC, VAL_ACC_ARTICLE, VAL_LOSS, VAL_LOSS_ARTICLE

# Which of our metrics columns each article column corresponds to (same evaluation mode).
ARTICLE_TO_RUN = {"loss": TRAIN_LOSS_KERAS, "acc": TRAIN_ACC,
                  VAL_LOSS: VAL_LOSS_ARTICLE, VAL_ACC: VAL_ACC_ARTICLE}


@lru_cache(maxsize=1)
def article_results() -> dict:
    text = resources.files("aprelu_exp.report").joinpath("article_results.yaml").read_text()
    return yaml.safe_load(text)


def reported_epochs(record: str) -> list[dict]:
    """Per-epoch numbers the article logged for a record (empty when it logged none)."""
    return list(article_results().get(record, {}).get("epochs", []))


def reported_accuracy(record: str) -> dict | None:
    """The one accuracy the article reported for a record, as a replay or `records list` sets it
    beside a reproduction: the last logged epoch's val_acc, else the final test accuracy. None where
    it reported none. `mode` is the article's evaluation mode (BatchNorm on batch statistics)."""
    reported = article_results().get(record)
    if not reported:
        return None
    last = (reported.get("epochs") or [None])[-1]
    if last:
        return {"value": float(last[VAL_ACC]), "epoch": int(last["epoch"]), "what": VAL_ACC,
                "mode": reported["eval_mode"]}
    final = reported.get("final")
    if final:
        return {"value": float(final["test_acc"]), "epoch": int(final["epoch"]), "what": "test_acc",
                "mode": reported["eval_mode"]}
    return None
