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
