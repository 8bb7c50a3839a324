"""In-memory CIFAR-10 for Lightning: uint8 tensors (optionally on the GPU), batches cut by index,
centring and the Keras augmentation applied per batch on the data's device. No worker processes
and no per-image Python: a batch costs one gather and one resampling."""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import pytorch_lightning as pl
import torch

from aprelu_exp.data.augment import KerasAugment, KerasAugmentConfig
from aprelu_exp.data.cifar10 import CIFAR10Arrays, load_cifar10
from aprelu_exp.errors import UserError

CENTRINGS = ("scalar", "per_channel", "none")
SWITCHES = ("auto", "true", "false")


def _class_quotas(counts: np.ndarray, n_held_out: int) -> np.ndarray:
    """Each class's share of ``n_held_out``, in proportion to its count; largest remainders settle
    the rounding, so the shares add up exactly."""
    quota = n_held_out * counts / counts.sum()
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take), kind="stable")[:n_held_out - int(take.sum())]:
        take[i] += 1
    return take


def stratified_split(labels: np.ndarray, n_held_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices), both sorted. Every class gives its share, drawn by
    ``seed`` alone, so the split does not move with the run's seed. A class left without a training
    image is bad input."""
    classes, counts = np.unique(labels, return_counts=True)
    take = _class_quotas(counts, n_held_out)
    if np.any(take >= counts):
        c = int(classes[np.argmax(take >= counts)])
        largest = next(n for n in range(n_held_out - 1, -1, -1) if np.all(_class_quotas(counts, n) < counts))
        raise UserError(f"data.val_split={n_held_out} would leave class {c} without a training image "
                        f"({int(counts[classes == c][0])} of the {len(labels)} training images used are of "
                        f"that class); hold out at most {largest} images here, or use more training images "
                        f"(data.train_subset).")
    rng = np.random.default_rng(seed)
    held = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)])
    held.sort()
    return np.setdiff1d(np.arange(len(labels)), held), held


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    """A seed per (run seed, epoch, stream): an epoch's data order and augmentation depend on
    nothing but these, so a resumed run draws exactly what an uninterrupted one would."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + stream * 104_729) % (2 ** 63 - 1)


class Normalise:
    def __init__(self, mean: torch.Tensor, std: torch.Tensor | None):
        self.mean, self.std = mean, std

    def to(self, device) -> "Normalise":
        return Normalise(self.mean.to(device), None if self.std is None else self.std.to(device))

    def __call__(self, x_u8: torch.Tensor) -> torch.Tensor:
        x = x_u8.float().div_(255.0).sub_(self.mean)
        return x if self.std is None else x.div_(self.std)


class BatchLoader:
    """Batches (x float, y int64) from whole uint8 tensors.

    Under DDP every rank draws the same global permutation and the same augmentation parameters
    for the global batch, then keeps its own slice: the devices together see exactly the batches a
    single process would."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, normalise: Normalise,
                 augment: KerasAugment | None = None, shuffle: bool = False, seed: int = 0,
                 epoch_fn: Callable[[], int] = lambda: 0, rank: int = 0, world_size: int = 1):
        self.images, self.labels = images, labels
        self.batch_size, self.normalise, self.augment = batch_size, normalise.to(images.device), augment
        self.shuffle, self.seed, self.epoch_fn = shuffle, seed, epoch_fn
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self):
        n, dev = len(self.labels), self.images.device
        epoch = self.epoch_fn()
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(self.seed, epoch, 1)))
            order = order.to(dev)
        else:
            order = torch.arange(n, device=dev)
        gen = torch.Generator(device=dev).manual_seed(stream_seed(self.seed, epoch, 2))
        h, w = self.images.shape[-2:]
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            params = self.augment.params(len(idx), h, w, gen) if self.augment else None
            if self.world_size > 1:
                part = torch.tensor_split(torch.arange(len(idx), device=dev), self.world_size)[self.rank]
                idx = idx[part]
                params = params[part] if params is not None else None
            x = self.normalise(self.images[idx])
            if params is not None:
                x = self.augment.apply(x, params)
            yield x, self.labels[idx]


class CIFAR10DataModule(pl.LightningDataModule):
    """The `data` part; its constructor's signature is the one declaration of the `data` settings
    (conf/data/cifar10.yaml gives the defaults). The run passes seed, augment and arrays itself, and
    eval_batch_size resolved (the YAML's `auto` follows the device)."""

    def __init__(self, root: str | None = None, download: bool = True, verify_digests: bool = True,
                 train_subset: int | None = None, test_subset: int | None = None, batch_size: int = 100,
                 eval_batch_size: int | str = 1000, article_eval_batch_size: int = 100, centring: str = "scalar",
                 device_resident: str | bool = "auto", seed: int = 0,
                 augment: KerasAugmentConfig | None = None, arrays: CIFAR10Arrays | None = None,
                 val_split: int | None = None, split_seed: int = 0):
        super().__init__()
        for key, value in (("train_subset", train_subset), ("test_subset", test_subset)):
            if value is not None and int(value) < 1:
                raise ValueError(f"data.{key}={value} must be a positive number of images, or null for all.")
        if centring not in CENTRINGS:
            raise ValueError(f"data.centring must be one of {', '.join(CENTRINGS)} ('scalar' is the "
                             f"article's single training-set mean); got {centring!r}.")
        device_resident = str(device_resident).lower()
        if device_resident not in SWITCHES:
            raise ValueError(f"data.device_resident must be auto, true or false; got {device_resident!r}.")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                           ("article_eval_batch_size", article_eval_batch_size)):
            if int(value) < 1:
                raise ValueError(f"data.{key}={value} must be a positive number of images.")
        if val_split is not None:
            check_val_split(int(val_split), train_subset, int(article_eval_batch_size))
        self.val_split = None if val_split is None else int(val_split)
        self.split_seed = int(split_seed)
        self.root, self.download, self.verify_digests = root, download, verify_digests
        self.train_subset, self.test_subset = train_subset, test_subset
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.article_eval_batch_size = int(article_eval_batch_size)
        self.centring, self.device_resident, self.seed = centring, device_resident, int(seed)
        self.augment = KerasAugment(augment) if augment is not None else None
        self.arrays = arrays
        self._prepared = False

    def state_dict(self) -> dict:
        # Saved in every checkpoint by Lightning: what this data module trained with, as the object
        # holds it (a checkpoint can be checked against a config without trusting the config).
        return {"augment": dataclasses.asdict(self.augment.cfg) if self.augment is not None else None,
                "train_subset": self.train_subset, "batch_size": self.batch_size, "centring": self.centring}

    def load_state_dict(self, state: dict) -> None:
        pass  # nothing to restore: the data and its order follow from the config and the epoch

    # -- data -------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load and verify (raises DataError), cut subsets, compute the centring statistics."""
        if self._prepared:
            return
        a = self.arrays if self.arrays is not None else load_cifar10(self.root, self.download, self.verify_digests)
        ntr = len(a.train_labels) if self.train_subset is None else min(int(self.train_subset), len(a.train_labels))
        nte = len(a.test_labels) if self.test_subset is None else min(int(self.test_subset), len(a.test_labels))
        self._train_indices, self._val_indices = np.arange(ntr), np.arange(0)
        self.train_x, self.train_y = a.train_images[:ntr], a.train_labels[:ntr]  # views, no copy
        if self.val_split is not None:
            self._train_indices, self._val_indices = stratified_split(a.train_labels[:ntr], self.val_split,
                                                                      self.split_seed)
            self.train_x, self.train_y = a.train_images[self._train_indices], a.train_labels[self._train_indices]
        self.val_x, self.val_y = a.train_images[self._val_indices], a.train_labels[self._val_indices]
        self.test_x, self.test_y = a.test_images[:nte], a.test_labels[:nte]
        self.digests = dict(a.digests)
        self.num_train = len(self._train_indices)
        # Statistics of the training images used, in float64 (the article: one scalar over all pixels).
        self.scalar_mean = float(self.train_x.mean(dtype=np.float64) / 255.0)
        flat = self.train_x.transpose(1, 0, 2, 3).reshape(3, -1)
        self.channel_mean = flat.mean(axis=1, dtype=np.float64) / 255.0
        self.channel_std = np.array([c.std(dtype=np.float64) for c in flat]) / 255.0
        self._prepared = True

    @property
    def train_indices(self) -> np.ndarray:
        """Indices into CIFAR-10's training images of the images trained on."""
        self.prepare()
        return self._train_indices

    @property
    def val_indices(self) -> np.ndarray:
        """Indices into CIFAR-10's training images of the held-out validation images (empty without
        data.val_split: validation is then the test set, the article's protocol)."""
        self.prepare()
        return self._val_indices

    def split(self) -> dict | None:
        """The held-out split as the run records it (None: validation is the test set)."""
        if self.val_split is None:
            return None
        return {"val_split": self.val_split, "split_seed": self.split_seed}

    def normaliser(self) -> Normalise:
        if self.centring == "scalar":
            return Normalise(torch.tensor(self.scalar_mean, dtype=torch.float32), None)
        if self.centring == "per_channel":
            return Normalise(torch.tensor(self.channel_mean, dtype=torch.float32).view(3, 1, 1),
                             torch.tensor(self.channel_std, dtype=torch.float32).view(3, 1, 1))
        return Normalise(torch.tensor(0.0), None)

    def data_device(self) -> torch.device:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if self.device_resident == "false" or (self.device_resident == "auto" and device.type != "cuda"):
            return torch.device("cpu")
        return device

    def setup(self, stage: str | None = None) -> None:
        self.prepare()
        dev = self.data_device()
        self._tensors = {
            "train": (torch.from_numpy(self.train_x).to(dev), torch.from_numpy(self.train_y).to(dev)),
            "test": (torch.from_numpy(self.test_x).to(dev), torch.from_numpy(self.test_y).to(dev)),
        }
        if self.val_split is not None:
            self._tensors["val"] = (torch.from_numpy(self.val_x).to(dev), torch.from_numpy(self.val_y).to(dev))

    # -- loaders ----------------------------------------------------------------------------------
    def _rank(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> BatchLoader:
        rank, world = self._rank()
        if self.batch_size % world:
            raise UserError(f"data.batch_size={self.batch_size} is the global batch and must split evenly "
                            f"over {world} devices; choose a multiple of {world}.")
        x, y = self._tensors["train"]
        return BatchLoader(x, y, self.batch_size, self.normaliser(), self.augment, shuffle=True, seed=self.seed,
                           epoch_fn=lambda: self.trainer.current_epoch if self.trainer is not None else 0,
                           rank=rank, world_size=world)

    def _evaluation_loaders(self, part: str) -> list[BatchLoader]:
        # Every rank evaluates the whole set: the article mode's BN statistics are per batch of
        # 100, so the batches must stay whole; index 0 standard, index 1 article.
        x, y = self._tensors[part]
        return [BatchLoader(x, y, self.eval_batch_size, self.normaliser()),
                BatchLoader(x, y, self.article_eval_batch_size, self.normaliser())]

    def val_dataloader(self) -> list[BatchLoader]:
        """The held-out training images with data.val_split, else (the article's protocol) the test set."""
        return self._evaluation_loaders("val" if self.val_split is not None else "test")

    def test_dataloader(self) -> list[BatchLoader]:
        return self._evaluation_loaders("test")


def check_val_split(val_split: int, train_subset: int | None, article_batch: int) -> None:
    """The checks of data.val_split that need no data (the class counts are checked on the data)."""
    available = 50_000 if train_subset is None else int(train_subset)
    if val_split < 1:
        raise UserError(f"data.val_split={val_split} must be a positive number of training images to hold "
                        f"out for validation (5000 is usual), or null to validate on the test set as the "
                        f"article did.")
    if val_split % article_batch:
        raise UserError(f"data.val_split={val_split} must be a multiple of data.article_eval_batch_size="
                        f"{article_batch}: the article's validation mode normalises each batch of "
                        f"{article_batch} with its own statistics, so a smaller last batch would be judged "
                        f"differently; use {max(article_batch, val_split // article_batch * article_batch)}.")
    if val_split >= available:
        raise UserError(f"data.val_split={val_split} leaves no training image (the run uses {available}); "
                        f"hold out fewer, e.g. data.val_split={max(article_batch, available // 10 // article_batch * article_batch)}, "
                        f"or use more training images (data.train_subset).")
