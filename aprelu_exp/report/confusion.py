"""A confusion-matrix figure: one panel per evaluation mode, class names on both axes, each cell's
count written in it and coloured by its share of the true class's images (so a class with few
images reads as clearly as one with many)."""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np


def confusion_png(panels: Sequence[tuple[str, np.ndarray]], classes: Sequence[str], title: str) -> bytes:
    """The figure as PNG bytes (written by the caller, atomically). ``panels``: (panel title, counts
    with row = true class, column = predicted class)."""
    # deferred: matplotlib (heavy) loads only when plotting
    import matplotlib

    matplotlib.use("Agg")
    # deferred: matplotlib (heavy) loads only when plotting
    import matplotlib.pyplot as plt

    n = len(classes)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels) + 1.2, 6.6), layout="constrained",
                             squeeze=False)
    image = None
    for ax, (name, counts) in zip(axes.flat, panels):
        counts = np.asarray(counts)
        totals = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.55 else "black")
        right = np.diag(counts)
        ax.set_yticks(range(n), [f"{c} ({r}/{t})" for c, r, t in zip(classes, right, totals[:, 0])], fontsize=8)
        ax.set_xticks(range(n), classes, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class (right / images)")
        ax.set_title(name, fontsize=9)
    fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label="share of the true class's images")
    fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
