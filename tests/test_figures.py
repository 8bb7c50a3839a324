"""What a reader sees in the report's figures, read from the rendered pixels and text boxes."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import optuna.visualization.matplotlib as ovm  # noqa: E402

from aprelu_exp.report.collect import RunInfo  # noqa: E402
from aprelu_exp.report.render import plot_curves  # noqa: E402
from aprelu_exp.search.report import readable_log_ticks  # noqa: E402


def _gaps_along(fig, line) -> int:
    """Breaks in the ink along a legend handle's row, between its two end markers."""
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    (x0, y), (x1, _) = line.get_transform().transform(line.get_xydata())[[0, -1]]
    row = pixels.shape[0] - int(round(y))
    margin = 6  # past the end markers (3 pt) at this dpi
    ink = [np.abs(pixels[row - 1:row + 2, x] - 255).sum(axis=1).max() > 120
           for x in range(int(x0) + margin, int(x1) - margin)]
    return sum(1 for a, b in zip(ink, ink[1:]) if a and not b)


def test_dashed_and_dotted_curves_read_so_in_the_legend(tmp_path, monkeypatch):
    rows = [{"epoch": str(e), "train_acc": str(0.3 + 0.1 * e), "val_acc": str(0.25 + 0.1 * e),
             "val_acc_article": str(0.2 + 0.1 * e), "train_loss": "1", "val_loss": "1", "val_loss_article": "1"}
            for e in range(3)]
    run = RunInfo(path=tmp_path / "run", record="record_16", parent="record_15", status="finished", error=None,
                  overrides=[], rows=rows, summary={})
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figures plot_curves draws
    assert plot_curves([run], tmp_path) == ["accuracy.png", "loss.png"]
    (legend,) = figures[0].legends  # one legend beside the panels: groups, then the line styles' key
    gaps = {text.get_text().split(":")[0]: _gaps_along(figures[0], line)
            for text, line in zip(legend.get_texts(), legend.get_lines())}
    assert gaps["solid"] == 0  # train
    assert gaps["dashed"] >= 2  # val_acc: at least three dashes
    assert gaps["dotted"] > gaps["dashed"]  # the article mode: more, shorter breaks
    monkeypatch.undo()
    for fig in figures:
        plt.close(fig)


def _overlapping_labels(ax) -> list[tuple[str, str]]:
    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    labels = [t for t in ax.xaxis.get_ticklabels(minor=False) + ax.xaxis.get_ticklabels(minor=True)
              if t.get_visible() and t.get_text()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels]
    return [(a, b) for i, (a, ba) in enumerate(boxes) for b, bb in boxes[i + 1:] if ba.overlaps(bb)]


def test_the_slice_plots_lr_labels_do_not_overlap():
    # A search's lr over less than a decade, as record 16's neighbourhood searches it (0.02 to 0.3).
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("optim.lr", 0.02, 0.3, log=True)
                   + 0 * t.suggest_categorical("model.reduction", [4, 8, 16]), n_trials=12)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        plain = ovm.plot_slice(study)
        readable = readable_log_ticks(ovm.plot_slice(study))
    lr_plain, lr_readable = (next(a for a in axes.flat if a.get_xscale() == "log") for axes in (plain, readable))
    for axes in (plain, readable):
        axes.flat[0].figure.set_size_inches(10, 5)  # as the report saves it: 4.5 in a panel
    assert _overlapping_labels(lr_plain)  # the default labels minor ticks too, and they collide
    assert _overlapping_labels(lr_readable) == []
    shown = [t.get_text() for t in lr_readable.xaxis.get_ticklabels() if t.get_text()]
    assert {"0.05", "0.1", "0.2"} <= set(shown)
    plt.close("all")
