"""The summary numbers of a run, computed from its metrics rows (live or read back from CSV)."""
from __future__ import annotations

import statistics

from aprelu_exp.metrics import TRAIN_IMAGES_PER_S, VAL_ACC, VAL_ACC_ARTICLE

BEST_OF = (VAL_ACC, VAL_ACC_ARTICLE)


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def metrics_summary(rows: list[dict]) -> dict:
    if not rows:
        return {"epochs_completed": 0, "final": {}, "best": {}, "train_images_per_s_median": None}
    last = rows[-1]
    final = {k: _num(v) for k, v in last.items() if k != "epoch" and _num(v) is not None}
    final["epoch"] = int(float(last["epoch"]))
    best = {}
    for key in BEST_OF:
        scored = [(_num(r.get(key)), int(float(r["epoch"]))) for r in rows if _num(r.get(key)) is not None]
        if scored:
            value = max(v for v, _ in scored)
            best[key] = {"value": value, "epoch": next(e for v, e in scored if v == value)}
    speeds = [_num(r.get(TRAIN_IMAGES_PER_S)) for r in rows]
    speeds = [s for s in speeds if s is not None]
    return {"epochs_completed": len(rows), "final": final, "best": best,
            "train_images_per_s_median": statistics.median(speeds) if speeds else None}
