"""The CIFAR-10 reader against the official digests and published facts about the data set."""
import shutil

import numpy as np
import pytest
from pathlib import Path

from aprelu_exp.data.cifar10 import SUBDIR, DataError, load_cifar10, resolve_root, verify

# Published facts: the first labels of data_batch_1 and test_batch, per-class counts, and the
# per-channel statistics of the training set.
FIRST_TRAIN_LABELS = [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
FIRST_TEST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
TRAIN_MEAN = (0.4914, 0.4822, 0.4465)
TRAIN_STD = (0.2470, 0.2435, 0.2616)


def test_official_digests_labels_and_statistics(cifar):
    assert cifar.train_images.shape == (50_000, 3, 32, 32) and cifar.train_images.dtype == np.uint8
    assert cifar.test_images.shape == (10_000, 3, 32, 32)
    assert len(cifar.digests) == 6
    assert list(cifar.train_labels[:10]) == FIRST_TRAIN_LABELS
    assert list(cifar.test_labels[:10]) == FIRST_TEST_LABELS
    assert np.bincount(cifar.train_labels).tolist() == [5000] * 10
    assert np.bincount(cifar.test_labels).tolist() == [1000] * 10
    x = cifar.train_images.reshape(50_000, 3, -1) / 255.0
    np.testing.assert_allclose(x.mean(axis=(0, 2)), TRAIN_MEAN, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=(0, 2)), TRAIN_STD, atol=1e-4)


def test_scalar_mean_is_the_mean_of_all_training_pixels(cifar):
    from aprelu_exp.data.datamodule import CIFAR10DataModule

    dm = CIFAR10DataModule(arrays=cifar)
    dm.prepare()
    # Equal-sized channels: the scalar mean is the mean of the three published channel means.
    assert dm.scalar_mean == pytest.approx(sum(TRAIN_MEAN) / 3, abs=1e-4)


@pytest.fixture
def data_copy(cifar_root, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(cifar_root / SUBDIR, dst / SUBDIR)
    return dst


def test_altered_file_is_named(data_copy):
    path = data_copy / SUBDIR / "data_batch_3.bin"
    raw = bytearray(path.read_bytes())
    raw[12345] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="data_batch_3.bin.*altered"):
        verify(data_copy)


def test_truncated_and_missing_files_are_named(data_copy):
    path = data_copy / SUBDIR / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-3073])
    with pytest.raises(DataError, match="test_batch.bin.*truncated"):
        load_cifar10(data_copy, download_if_missing=False)
    path.unlink()
    with pytest.raises(DataError, match="test_batch.bin is missing"):
        load_cifar10(data_copy, download_if_missing=False)


def test_data_root_falls_back_to_env_then_local(monkeypatch, tmp_path):
    monkeypatch.setenv("APRELU_DATA_ROOT", str(tmp_path))
    assert resolve_root(None) == tmp_path
    assert resolve_root("/x/y") == Path("/x/y")  # a root given in the config wins over the environment
    monkeypatch.delenv("APRELU_DATA_ROOT")
    assert str(resolve_root(None)) == "data"


def test_ddp_ranks_split_exactly_the_single_process_batches(cifar):
    """Two ranks' slices, put side by side, are the batches (images, labels and augmentation) a
    single process draws: the global batch and its randomness do not depend on the device count."""
    import torch

    from aprelu_exp.data.augment import KerasAugment, KerasAugmentConfig
    from aprelu_exp.data.datamodule import BatchLoader, Normalise

    x = torch.from_numpy(cifar.train_images[:250])
    y = torch.from_numpy(cifar.train_labels[:250])
    norm = Normalise(torch.tensor(0.47), None)

    def batches(rank, world):
        loader = BatchLoader(x, y, 100, norm, KerasAugment(KerasAugmentConfig()), shuffle=True, seed=5,
                             epoch_fn=lambda: 3, rank=rank, world_size=world)
        return list(loader)

    single, r0, r1 = batches(0, 1), batches(0, 2), batches(1, 2)
    assert len(single) == len(r0) == len(r1) == 3
    for (xs, ys), (x0, y0), (x1, y1) in zip(single, r0, r1):
        assert torch.equal(torch.cat([y0, y1]), ys)
        assert torch.equal(torch.cat([x0, x1]), xs)
    # Another epoch draws another order and other transforms.
    other = list(BatchLoader(x, y, 100, norm, KerasAugment(KerasAugmentConfig()), shuffle=True, seed=5,
                             epoch_fn=lambda: 4))
    assert not torch.equal(other[0][1], single[0][1])


def test_a_failed_download_says_how_to_fix_it_and_leaves_no_folder_it_made(tmp_path, monkeypatch):
    from aprelu_exp.data import cifar10

    def offline(url, download_root, **kwargs):
        Path(download_root).mkdir(parents=True, exist_ok=True)  # as torchvision does before fetching
        raise OSError("Name or service not known")

    monkeypatch.setattr(cifar10, "download_and_extract_archive", offline)
    (tmp_path / "keep").mkdir()
    root = tmp_path / "keep" / "made" / "data"
    with pytest.raises(DataError) as err:
        load_cifar10(root)
    assert "downloading" in str(err.value) and "APRELU_DATA_ROOT" in str(err.value)
    assert not (tmp_path / "keep" / "made").exists() and (tmp_path / "keep").is_dir()
