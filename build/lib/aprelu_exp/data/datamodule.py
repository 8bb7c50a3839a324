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
                 augment: KerasAugmentConfig | None = None, arrays: CIFAR10Arrays | None = None):
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
        self.train_x, self.train_y = a.train_images[:ntr], a.train_labels[:ntr]
        self.test_x, self.test_y = a.test_images[:nte], a.test_labels[:nte]
        self.digests = dict(a.digests)
        self.num_train = ntr
        # Statistics of the training images used, in float64 (the article: one scalar over all pixels).
        self.scalar_mean = float(self.train_x.mean(dtype=np.float64) / 255.0)
        flat = self.train_x.transpose(1, 0, 2, 3).reshape(3, -1)
        self.channel_mean = flat.mean(axis=1, dtype=np.float64) / 255.0
        self.channel_std = np.array([c.std(dtype=np.float64) for c in flat]) / 255.0
        self._prepared = True

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

    def val_dataloader(self) -> list[BatchLoader]:
        # Every rank evaluates the whole test set: the article mode's BN statistics are per batch of
        # 100, so the batches must stay whole; index 0 standard, index 1 article.
        x, y = self._tensors["test"]
        return [BatchLoader(x, y, self.eval_batch_size, self.normaliser()),
                BatchLoader(x, y, self.article_eval_batch_size, self.normaliser())]
