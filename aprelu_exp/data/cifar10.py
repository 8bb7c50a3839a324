"""The official CIFAR-10 binary files: locate, verify by digest, download on request, read with numpy.

Nothing here unpickles anything, and nothing is written into the data root except by an explicit
download (``data.download=true`` with the files absent).
"""
from __future__ import annotations

import contextlib

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision.datasets.utils import download_and_extract_archive

from aprelu_exp.errors import UserError

SUBDIR = "cifar-10-batches-bin"
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILES = ["test_batch.bin"]
RECORD_BYTES = 1 + 3 * 32 * 32
FILE_BYTES = 10_000 * RECORD_BYTES
# The official files' SHA-256 (the dataset's home page publishes MD5s of the archive only; these are
# the digests of the six files inside cifar-10-binary.tar.gz).
SHA256 = {
    "data_batch_1.bin": "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    "data_batch_2.bin": "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    "data_batch_3.bin": "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    "data_batch_4.bin": "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    "data_batch_5.bin": "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    "test_batch.bin": "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
}
# The class of each label, 0 to 9 (batches.meta.txt beside the binary files, in this order).
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ENV_VAR = "APRELU_DATA_ROOT"


class DataError(UserError):
    """The data set is absent, incomplete or altered; the message names the file and the fix."""


@dataclass
class CIFAR10Arrays:
    train_images: np.ndarray  # (50000, 3, 32, 32) uint8
    train_labels: np.ndarray  # (50000,) int64
    test_images: np.ndarray
    test_labels: np.ndarray
    digests: dict[str, str]
    root: str = ""


def resolve_root(root: str | os.PathLike | None) -> Path:
    """Config value first, then $APRELU_DATA_ROOT, then ./data."""
    if root not in (None, ""):
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path("data")


def _fix(root: Path) -> str:
    return (f"Restore the official files in {root / SUBDIR} (delete the folder and run with "
            f"data.download=true where a network exists, or unpack cifar-10-binary.tar.gz there), "
            f"or point data.root / ${ENV_VAR} at a folder that holds {SUBDIR}/.")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def missing_files(root: Path) -> list[str]:
    return [n for n in TRAIN_FILES + TEST_FILES if not (root / SUBDIR / n).is_file()]


def verify(root: str | os.PathLike, check_digests: bool = True) -> dict[str, str]:
    """Check presence, size and (optionally) SHA-256 of the six files; returns their digests."""
    root = Path(root)
    digests = {}
    for name in TRAIN_FILES + TEST_FILES:
        path = root / SUBDIR / name
        if not path.is_file():
            raise DataError(f"CIFAR-10 file {path}: {name} is missing. {_fix(root)}")
        size = path.stat().st_size
        if size != FILE_BYTES:
            raise DataError(f"CIFAR-10 file {path}: {name} has {size} bytes, the official file has "
                            f"{FILE_BYTES} (truncated or not the binary version). {_fix(root)}")
        if check_digests:
            digest = _sha256(path)
            if digest != SHA256[name]:
                raise DataError(f"CIFAR-10 file {path}: {name} has SHA-256 {digest[:16]}..., not the "
                                f"official {SHA256[name][:16]}...: the file was altered. {_fix(root)}")
            digests[name] = digest
        else:
            digests[name] = "unverified"
    return digests


def download(root: Path) -> None:
    """Fetch and unpack the official binary archive into ``root`` (checked by its MD5). A failed
    download leaves no folder behind that it made (an empty data/ would look like a data root)."""
    made = [p for p in (Path(root), *Path(root).parents) if not p.exists()]
    try:
        download_and_extract_archive(ARCHIVE_URL, download_root=str(root), md5=ARCHIVE_MD5)
    except Exception as exc:  # no network, proxy, disk full: one clear message
        for folder in made:  # deepest first; a folder holding anything else stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise DataError(f"CIFAR-10 is not in {root / SUBDIR} and downloading {ARCHIVE_URL} failed "
                        f"({type(exc).__name__}: {exc}). {_fix(root)}") from None


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    return raw[:, 1:].reshape(-1, 3, 32, 32).copy(), raw[:, 0].astype(np.int64)


def load_cifar10(root: str | os.PathLike | None = None, download_if_missing: bool = True,
                 verify_digests: bool = True) -> CIFAR10Arrays:
    root = resolve_root(root)
    absent = missing_files(root)
    if absent and download_if_missing and len(absent) == len(TRAIN_FILES + TEST_FILES):
        # Only a wholly absent data set is downloaded: a partial or damaged one is the user's to fix.
        download(root)
    digests = verify(root, verify_digests)
    train = [_read(root / SUBDIR / n) for n in TRAIN_FILES]
    test_x, test_y = _read(root / SUBDIR / TEST_FILES[0])
    return CIFAR10Arrays(
        train_images=np.concatenate([x for x, _ in train]),
        train_labels=np.concatenate([y for _, y in train]),
        test_images=test_x, test_labels=test_y, digests=digests, root=str(root))
