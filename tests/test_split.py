"""The held-out validation split: which images it holds, that a run validates on them and evaluates
the test set once at the end, the epoch axis of every logger, and resume's refusal of another split."""
import json

import numpy as np
import pytest
import torch

from aprelu_exp.data.datamodule import CIFAR10DataModule
from aprelu_exp.errors import UserError
from aprelu_exp.train import train
from inprocess import run_module

SPLIT = ("data.train_subset=500", "data.test_subset=200", "data.val_split=100", "trainer.max_epochs=1")


def test_the_split_is_stratified_disjoint_and_fixed_by_its_own_seed(cifar):
    dm = CIFAR10DataModule(arrays=cifar, train_subset=2000, val_split=500, split_seed=0, seed=0)
    dm.setup()
    train_idx, val_idx = dm.train_indices, dm.val_indices
    assert len(val_idx) == 500 and len(train_idx) == 1500
    assert not set(train_idx) & set(val_idx) and sorted({*train_idx, *val_idx}) == list(range(2000))
    # Stratified: each class gives its share of the 500, by its count among the first 2000 images.
    counts = np.bincount(cifar.train_labels[:2000], minlength=10)
    assert np.abs(np.bincount(cifar.train_labels[val_idx], minlength=10) - counts / 4).max() < 1
    # Validation loaders hold exactly those training images, in both modes; no test image among them.
    test_images = {x.tobytes() for x in cifar.test_images}
    for loader in dm.val_dataloader():
        assert torch.equal(loader.images, torch.from_numpy(cifar.train_images[val_idx]))
        assert torch.equal(loader.labels, torch.from_numpy(cifar.train_labels[val_idx]))
        assert not any(x.tobytes() in test_images for x in loader.images.numpy())
    for loader in dm.test_dataloader():
        assert torch.equal(loader.images, torch.from_numpy(cifar.test_images))
    assert torch.equal(dm._tensors["train"][0], torch.from_numpy(cifar.train_images[train_idx]))
    # The run's seed does not move it; the split's own seed does.
    other_run = CIFAR10DataModule(arrays=cifar, train_subset=2000, val_split=500, split_seed=0, seed=7)
    other_split = CIFAR10DataModule(arrays=cifar, train_subset=2000, val_split=500, split_seed=1, seed=0)
    assert np.array_equal(other_run.val_indices, val_idx)
    assert not np.array_equal(other_split.val_indices, val_idx)
    # Without a split, validation is the test set (the article's protocol).
    plain = CIFAR10DataModule(arrays=cifar, train_subset=2000)
    plain.setup()
    assert len(plain.val_indices) == 0 and len(plain.train_indices) == 2000
    assert torch.equal(plain.val_dataloader()[0].images, torch.from_numpy(cifar.test_images))


def _accuracy(net, images, labels, mean) -> float:
    """Standard-mode accuracy computed here, apart from the module: running BN statistics, x/255 - mean."""
    net.eval()
    with torch.no_grad():
        x = torch.from_numpy(images).float() / 255.0 - mean
        return float((net(x).argmax(1) == torch.from_numpy(labels).long()).float().mean())


def test_a_run_with_a_split_validates_on_training_images_and_tests_once(make_cfg, cifar, tmp_path):
    from aprelu_exp.training.build import build_net

    cfg = make_cfg(*SPLIT, "logger=tensorboard")
    run = tmp_path / "run"
    train(cfg, run, arrays=cifar)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["split"] == {"val_split": 100, "split_seed": 0}
    assert (summary["num_train"], summary["num_val"], summary["num_test"]) == (400, 100, 200)
    test = summary["test"]
    assert {"test_acc", "test_acc_article", "test_loss", "test_loss_article"} <= set(test) and test["epoch"] == 1
    # Both numbers, recomputed from the saved weights with a plain forward pass: validation on the
    # 100 held-out training images, test on the 200 test images.
    net = build_net(cfg)
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
    dm = CIFAR10DataModule(arrays=cifar, train_subset=500, test_subset=200, val_split=100)
    dm.prepare()
    mean = dm.scalar_mean  # the 400 images trained on, not the held-out ones
    assert mean == pytest.approx(cifar.train_images[dm.train_indices].mean(dtype=np.float64) / 255)
    val = _accuracy(net, cifar.train_images[dm.val_indices], cifar.train_labels[dm.val_indices], mean)
    assert summary["final"]["val_acc"] == pytest.approx(val, abs=1e-6)
    plain_test = _accuracy(net, cifar.test_images[:200], cifar.test_labels[:200], mean)
    assert test["test_acc"] == pytest.approx(plain_test, abs=1e-6)
    # `evaluate` of the same checkpoint, through the command: the split's val_* as metrics.csv has
    # them and the same test numbers, kept beside the run.
    out = run_module("aprelu_exp.evaluate", [run, "ckpt=last", "--device", "cpu"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "held-out split (data.val_split=100 data.split_seed=0), 100 training images: val_acc " in out.stdout
    assert "test set, 200 images: test_acc " in out.stdout
    again = json.loads((run / "eval" / "last.json").read_text())
    assert again["split"] == {"val_split": 100, "split_seed": 0} and again["images"] == {"val": 100, "test": 200}
    for key in ("test_acc", "test_acc_article", "test_loss", "test_loss_article"):
        assert again[key] == pytest.approx(test[key], abs=1e-6), key
    for key in ("val_acc", "val_acc_article"):
        assert again[key] == pytest.approx(summary["final"][key], abs=1e-6), key
    assert again["test_acc"] == pytest.approx(plain_test, abs=1e-6)
    assert again["val_acc"] == pytest.approx(val, abs=1e-6)
    assert sum(map(sum, again["confusion"]["val_acc"])) == 100 and sum(map(sum, again["confusion"]["test_acc"])) == 200
    # TensorBoard's x-axis is the epoch, from 1, for the epoch's metrics and the test metrics alike.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    for tag in ("val_acc", "train_loss", "test_acc", "test_acc_article"):
        assert [e.step for e in events.Scalars(tag)] == [1], tag


def test_without_a_split_the_test_metrics_are_the_last_validation(make_cfg, cifar, tmp_path):
    run = tmp_path / "run"
    train(make_cfg("data.train_subset=300", "data.test_subset=100"), run, arrays=cifar)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["split"] is None and summary["num_val"] == 0
    final, test = summary["final"], summary["test"]
    assert (test["test_acc"], test["test_acc_article"], test["test_loss"], test["test_loss_article"]) == \
        (final["val_acc"], final["val_acc_article"], final["val_loss"], final["val_loss_article"])
    assert "no data.val_split" in test["source"]


def test_resume_refuses_a_checkpoint_of_another_split(make_cfg, cifar, tmp_path):
    run = tmp_path / "run"
    train(make_cfg(*SPLIT), run, arrays=cifar)
    for other, said in (("data.val_split=200", "data.val_split=200 data.split_seed=0"),
                        ("data.split_seed=1", "data.val_split=100 data.split_seed=1"),
                        ("data.val_split=null", "no held-out split")):
        with pytest.raises(UserError) as err:
            train(make_cfg(*SPLIT, other, "trainer.max_epochs=2", f"resume={run}"), run, arrays=cifar)
        assert "was trained with data.val_split=100 data.split_seed=0" in str(err.value)
        assert said in str(err.value) and "start a new run" in str(err.value)
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 1  # untouched
