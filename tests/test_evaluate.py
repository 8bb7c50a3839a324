"""`python -m aprelu_exp.evaluate RUN_DIR [ckpt=...] [data overrides]` on one tiny finished run: its
numbers against the run's own metrics.csv, its per-class accuracy and confusion matrix against the
labels read from the CIFAR-10 binary files and a plain forward pass, its figure, its refusals."""
import copy
import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from inprocess import REPO, run_cli, run_module

TINY = ("data.train_subset=200", "data.test_subset=100", "trainer.max_epochs=1", "logger=none",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false")
RECORD_BYTES = 1 + 3 * 32 * 32  # the binary format: one label byte, then the image


@pytest.fixture(scope="module")
def run(tmp_path_factory, cifar_root):
    """One finished run, trained through the command as a user would."""
    root = tmp_path_factory.mktemp("evaluate") / "runs"
    out = run_cli([*TINY, f"data.root={cifar_root}", f"run_root={root}"])
    assert out.returncode == 0, out.stderr[-2000:]
    (run_dir,) = [p.parent for p in root.glob("*/*/config.yaml")]
    return run_dir


@pytest.fixture(scope="module")
def evaluated(run):
    """`evaluate RUN ckpt=last`, once: (the command's outcome, eval/last.json)."""
    out = evaluate(run, "ckpt=last")
    assert out.returncode == 0, out.stderr[-2000:]
    return out, read_json(run / "eval" / "last.json")


def evaluate(*args):
    return run_module("aprelu_exp.evaluate", [*args, "--device", "cpu"])


def read_json(path):
    def no_nan(name):
        raise AssertionError(f"{path} holds {name}, which is no JSON")

    return json.loads(path.read_text(), parse_constant=no_nan)


def last_row(run_dir) -> dict:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))[-1]


def binary_labels(cifar_root, n):
    """The first n test labels and the class names, straight from the official files."""
    folder = cifar_root / "cifar-10-batches-bin"
    raw = np.fromfile(folder / "test_batch.bin", dtype=np.uint8).reshape(-1, RECORD_BYTES)
    names = (folder / "batches.meta.txt").read_text().split()
    return raw[:n, 0].astype(int), names


def test_evaluating_last_reproduces_the_runs_last_metrics_row(run, evaluated):
    (out, result), row = evaluated, last_row(run)
    assert result["checkpoint"] == "last.ckpt" and result["epoch"] == int(row["epoch"]) == 1
    for name in ("val_acc", "val_acc_article"):  # metrics.csv holds float32 values of n/100
        assert result[name] == pytest.approx(float(row[name]), abs=1e-6), name
    for name in ("val_loss", "val_loss_article"):
        assert result[name] == pytest.approx(float(row[name]), rel=1e-5), name
    # No held-out split: validation was the test set, so the test names carry the same numbers.
    assert result["split"] is None and result["images"] == {"val": 100, "test": 100}
    for name in ("acc", "acc_article", "loss", "loss_article"):
        assert result[f"test_{name}"] == result[f"val_{name}"]
    assert f"test_acc {float(row['val_acc']):.4f}" in out.stdout
    assert str(run / "eval" / "last_confusion.png") in out.stdout


def test_per_class_accuracy_and_confusion_agree_with_the_labels_and_a_plain_forward_pass(run, evaluated, cifar_root):
    from aprelu_exp.training.build import build_net

    result = evaluated[1]
    labels, names = binary_labels(cifar_root, 100)
    assert result["classes"] == names
    counts = np.bincount(labels, minlength=10)
    # The network of last.ckpt, run here apart from the module and the data module: x/255 minus the
    # mean of the 200 training images' pixels (the article's centring), all 100 images in one batch.
    folder = cifar_root / "cifar-10-batches-bin"
    train = np.fromfile(folder / "data_batch_1.bin", dtype=np.uint8).reshape(-1, RECORD_BYTES)[:200, 1:]
    test = np.fromfile(folder / "test_batch.bin", dtype=np.uint8).reshape(-1, RECORD_BYTES)[:100, 1:]
    x = torch.from_numpy(test.reshape(-1, 3, 32, 32)).float() / 255.0 - train.mean(dtype=np.float64) / 255.0
    net = build_net(OmegaConf.load(run / "config.yaml"))
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
    article_net = copy.deepcopy(net).train()  # BatchNorm on the batch's own statistics (one batch of 100)
    with torch.no_grad():
        predictions = {"test_acc": net.eval()(x).argmax(1).numpy(), "test_acc_article": article_net(x).argmax(1).numpy()}
    for name, predicted in predictions.items():
        confusion = np.array(result["confusion"][name])
        expected = np.zeros((10, 10), dtype=int)
        np.add.at(expected, (labels, predicted), 1)
        assert np.array_equal(confusion, expected), name
        # Per class: right / images of that class, the class counted from the binary file's labels.
        right = np.bincount(labels[predicted == labels], minlength=10)
        for i, cls in enumerate(names):
            share = result["per_class_acc"][name][cls]
            assert share is None if counts[i] == 0 else share == pytest.approx(right[i] / counts[i]), (name, cls)
        assert right.sum() / 100 == pytest.approx(result[name])
    assert result["per_class_acc"]["val_acc"] == result["per_class_acc"]["test_acc"]


def test_the_confusion_figure_is_a_png_of_readable_size(run, evaluated):
    from PIL import Image

    path = run / "eval" / "last_confusion.png"
    assert evaluated[1]["figure"] == path.name
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        width, height = img.size
        assert 1000 <= width <= 4000 and 500 <= height <= 2500, img.size  # two panels side by side
        pixels = np.asarray(img.convert("L"))
    # Drawn on: text and cells in many shades, not a blank canvas.
    assert len(np.unique(pixels)) > 50 and (pixels < 100).mean() > 0.005


def test_best_with_data_overrides_writes_where_out_says(run, evaluated, cifar_root, tmp_path):
    out_dir = tmp_path / "elsewhere"
    before = sorted(p.name for p in (run / "eval").iterdir())
    out = evaluate(run, "data.test_subset=50", "--out", out_dir)  # ckpt=best is the default
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(p.name for p in out_dir.iterdir()) == ["best.json", "best_confusion.png"]
    assert sorted(p.name for p in (run / "eval").iterdir()) == before
    result = read_json(out_dir / "best.json")
    labels, _ = binary_labels(cifar_root, 50)
    assert result["checkpoint"] == "best.ckpt" and result["overrides"] == ["data.test_subset=50"]
    assert result["images"]["test"] == 50
    assert np.array_equal(np.array(result["confusion"]["test_acc"]).sum(axis=1), np.bincount(labels, minlength=10))
    # --checkpoint is the same as ckpt= (the next test uses it); two different answers are refused.
    both = evaluate(run, "ckpt=best", "--checkpoint", "last", "--out", out_dir)
    assert both.returncode == 2 and "two checkpoints asked for" in both.stderr


def test_a_checkpoint_written_on_a_gpu_loads_on_the_cpu(run, tmp_path, monkeypatch):
    """A CUDA checkpoint, made here by tagging every tensor's storage cuda:0 as torch.save does on a GPU."""
    copy_dir = tmp_path / "run"
    shutil.copytree(run, copy_dir, ignore=shutil.ignore_patterns("eval"))
    checkpoint = torch.load(copy_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(checkpoint, copy_dir / "checkpoints" / "last.ckpt")
    if not torch.cuda.is_available():  # the file really is a GPU checkpoint: a plain load fails here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(copy_dir / "checkpoints" / "last.ckpt", weights_only=False)
    out = evaluate(copy_dir, "--checkpoint", "last")
    assert out.returncode == 0, out.stderr[-2000:]
    assert read_json(copy_dir / "eval" / "last.json")["val_acc"] == pytest.approx(float(last_row(run)["val_acc"]), abs=1e-6)


def _damaged_copy(run, tmp_path, damage):
    copy_dir = tmp_path / "run"
    shutil.copytree(run, copy_dir, ignore=shutil.ignore_patterns("eval"))
    damage(copy_dir)
    return copy_dir


def _truncate(d):
    ckpt = d / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])


def _widen(d):
    cfg = OmegaConf.load(d / "config.yaml")
    cfg.model.stages[0].channels = 16
    OmegaConf.save(cfg, d / "config.yaml")


@pytest.mark.parametrize("damage, args, said", [
    (lambda d: (d / "checkpoints" / "best.ckpt").unlink(), (), "no checkpoints/best.ckpt there (it holds last.ckpt); evaluate ckpt=last"),
    (_truncate, ("ckpt=last",), "cannot be read"),
    (_widen, ("ckpt=last",), "holds a different network than the config asks for (model.stages[0].channels: checkpoint 32 vs config 16)"),
    (lambda d: None, ("ckpt=first",), "ckpt=first: use best"),
    (lambda d: None, ("data.train_subset=500",), "data.train_subset fixes the images the run trained on"),
    (lambda d: None, ("data.val_split=100",), "data.val_split fixes the images the run trained on"),
    (lambda d: None, ("data.test_subsett=50",), "data.test_subsett is no data setting. Did you mean data.test_subset"),
    (lambda d: None, ("optim.lr=0.1",), "evaluate takes the checkpoint (ckpt=best or ckpt=last) and data overrides"),
    (lambda d: None, ("data.test_subset=0",), "data.test_subset=0 must be a positive number"),
], ids=["missing", "corrupt", "other-network", "bad-ckpt", "train-subset", "val-split", "misspelt", "not-data", "zero"])
def test_refusals_are_one_paragraph_and_write_nothing(run, tmp_path, damage, args, said):
    copy_dir = _damaged_copy(run, tmp_path, damage)
    out = evaluate(copy_dir, *args)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr  # one paragraph
    assert "Traceback" not in out.stderr and said in out.stderr, out.stderr
    assert not (copy_dir / "eval").exists()


def test_a_folder_that_is_no_run_is_refused_naming_the_runs_inside(run, tmp_path):
    empty = evaluate(tmp_path)
    assert empty.returncode == 2 and "is no run directory: there is no config.yaml in it" in empty.stderr
    parent = evaluate(run.parent.parent)  # runs/: holds runs/<date>/<run>
    assert parent.returncode == 2, parent.stderr
    assert f"holds 1 run, e.g. {run}; evaluate one of them" in parent.stderr
    missing = evaluate(tmp_path / "nope")
    assert missing.returncode == 2 and "no such directory" in missing.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_command_in_its_own_process(run, tmp_path, cli_env):
    out = subprocess.run([sys.executable, "-m", "aprelu_exp.evaluate", str(run), "ckpt=last", "--out", str(tmp_path)],
                         capture_output=True, text=True, env=cli_env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert read_json(tmp_path / "last.json")["val_acc_article"] == pytest.approx(
        float(last_row(run)["val_acc_article"]), abs=1e-6)
    bad = subprocess.run([sys.executable, "-m", "aprelu_exp.evaluate", str(tmp_path / "nope")],
                         capture_output=True, text=True, env=cli_env, cwd=REPO, timeout=600)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
