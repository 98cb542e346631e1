"""Datasets as in-memory tensors: ``Dataset(x_train, y_train, x_test, y_test)``.

Images are float32 ``[N, C, H, W]`` normalised per channel; labels int64 ``[N]``.
Everything lives in memory (and on the run's device), so batching is tensor indexing.

- ``mnist-embedded`` (default): the official MNIST *test* set (10,000 images) shipped in the
  package, md5-checked, split by a fixed permutation into 8,000 client-training and 2,000 test
  images. A stand-in that works offline; use ``mnist`` for the real 60k/10k split.
- ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``: torchvision from ``data_root``.
- ``shakespeare``: tiny Shakespeare by speaking role (shipped; see shakespeare.py); ``x`` and ``y``
  are int64 character ids ``[N, 100]`` and ``natural_clients`` lists the roles.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import DataError
from .shakespeare import SEQ_LEN as SHAKESPEARE_SEQ_LEN
from .shakespeare import VOCAB as SHAKESPEARE_VOCAB
from .shakespeare import load_shakespeare

EMBEDDED_MD5 = {
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
EMBEDDED_TRAIN = 8000  # of the 10,000 shipped images; the other 2,000 are the test set
EMBEDDED_SPLIT_SEED = 20231221  # fixed: the split never depends on the run's seed


@dataclass
class Dataset:
    """Train/test tensors. ``x_*``: float32 ``[N, ...]``; ``y_*``: int64 ``[N]``."""

    name: str
    x_train: torch.Tensor  # float32 images, or int64 token ids [N, T] for text
    y_train: torch.Tensor  # int64 [N], or [N, T] next-token targets for text
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    natural_clients: list[torch.Tensor] | None = None  # per-client train indices where the data has owners

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device) -> "Dataset":
        return Dataset(
            self.name,
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            self.num_classes,
            self.natural_clients,
        )


def _read_idx(raw: bytes) -> np.ndarray:
    """Parse an idx file (big-endian header: magic, dims) into a uint8 array."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError("not an unsigned-byte idx file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError("idx file is truncated")
    return data.reshape(tuple(dims))


def _normalise(images_u8: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> float32 ``(x/255 - mean) / std`` per channel."""
    x = images_u8.float().div_(255.0)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_STATS = ((0.2860,), (0.3530,))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


def load_mnist_embedded(root: str | None = None, download: bool = False) -> Dataset:
    """The package's MNIST test set, split 8,000 train / 2,000 test by a fixed permutation."""
    arrays = {}
    base = resources.files("flarebench.data") / "assets" / "mnist"
    for fname, md5 in EMBEDDED_MD5.items():
        try:
            raw_gz = (base / fname).read_bytes()
        except FileNotFoundError:
            raise DataError(f"embedded MNIST file {fname} is missing from the package; reinstall flarebench") from None
        if hashlib.md5(raw_gz).hexdigest() != md5:
            raise DataError(f"embedded MNIST file {fname} fails its md5 check; reinstall flarebench")
        arrays[fname] = _read_idx(gzip.decompress(raw_gz))
    images = torch.from_numpy(arrays["t10k-images-idx3-ubyte.gz"].copy()).unsqueeze(1)
    labels = torch.from_numpy(arrays["t10k-labels-idx1-ubyte.gz"].astype(np.int64))
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(EMBEDDED_SPLIT_SEED))
    tr, te = perm[:EMBEDDED_TRAIN].sort().values, perm[EMBEDDED_TRAIN:].sort().values
    x = _normalise(images, *MNIST_STATS)
    return Dataset("mnist-embedded", x[tr], labels[tr], x[te], labels[te], 10)


_TV_FILES = {
    "mnist": ("MNIST/raw", "train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz)"),
    "fashion-mnist": ("FashionMNIST/raw", "train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz)"),
    "cifar10": ("", "cifar-10-python.tar.gz (or its extracted folder cifar-10-batches-py)"),
    "cifar100": ("", "cifar-100-python.tar.gz (or its extracted folder cifar-100-python)"),
}


def _torchvision(name: str, root: str, download: bool) -> tuple:
    """(train, test) torchvision datasets; DataError if missing, corrupt, or (``download``) not downloadable."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    root_path = Path(root).expanduser()
    where, files = _TV_FILES[name]
    hint = f"put {files} in {root_path / where}"
    try:
        return cls(str(root_path), train=True), cls(str(root_path), train=False)
    except Exception as e:  # torchvision raises many types (AssertionError, ValueError, ...) on bad files
        if not _not_found(e):
            raise DataError(f"{name} under {root_path / where} is corrupt or unreadable ({_reason(e)}); delete it and re-download") from None
        if not download:
            raise DataError(f"{name} not found under {root_path} ({e.__class__.__name__}); {hint}, or pass --download where a network exists") from None
    created = _first_missing(root_path / where)
    try:
        return cls(str(root_path), train=True, download=True), cls(str(root_path), train=False, download=True)
    except Exception as e:
        if created is not None:  # only what this attempt created: nothing was there before
            shutil.rmtree(created, ignore_errors=True)
        raise DataError(f"downloading {name} to {root_path} failed ({_reason(e)}); check the network, or {hint}") from None


def _not_found(e: Exception) -> bool:
    """Whether torchvision's error says the files are missing (CIFAR: or fail their md5 check)."""
    return isinstance(e, RuntimeError) and str(e).startswith("Dataset not found")


def _reason(e: Exception, n: int = 200) -> str:
    """``Type: message`` on one line, at most ``n`` characters."""
    text = " ".join(f"{type(e).__name__}: {e}".split()).rstrip(":")
    return text if len(text) <= n else text[: n - 3] + "..."


def _first_missing(path: Path) -> Path | None:
    """The outermost directory of ``path`` (or ``path`` itself) that does not exist yet, if any."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing = p
    return missing


def _tv_tensor(ds) -> tuple[torch.Tensor, torch.Tensor]:
    data = ds.data
    data = torch.as_tensor(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
    if data.dim() == 3:  # MNIST-like [N, H, W]
        data = data.unsqueeze(1)
    else:  # CIFAR [N, H, W, C]
        data = data.permute(0, 3, 1, 2).contiguous()
    return data, torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)


def _load_tv(name: str, stats, num_classes: int) -> Callable[[str, bool], Dataset]:
    def load(root: str, download: bool = False) -> Dataset:
        train, test = _torchvision(name, root, download)
        xtr, ytr = _tv_tensor(train)
        xte, yte = _tv_tensor(test)
        return Dataset(name, _normalise(xtr, *stats), ytr, _normalise(xte, *stats), yte, num_classes)

    return load


DATASETS: dict[str, Callable[..., Dataset]] = {
    "mnist-embedded": load_mnist_embedded,
    "mnist": _load_tv("mnist", MNIST_STATS, 10),
    "fashion-mnist": _load_tv("fashion-mnist", FASHION_STATS, 10),
    "cifar10": _load_tv("cifar10", CIFAR10_STATS, 10),
    "cifar100": _load_tv("cifar100", CIFAR100_STATS, 100),
    "shakespeare": load_shakespeare,
}

# (input shape of one sample, classes) per dataset, known without loading it (``--dry-run``)
DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "mnist-embedded": ((1, 28, 28), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "shakespeare": ((SHAKESPEARE_SEQ_LEN,), len(SHAKESPEARE_VOCAB)),
}


def dataset_shape(name: str) -> tuple[tuple[int, ...], int]:
    """``(input_shape, num_classes)`` of dataset ``name`` without reading its files."""
    if name not in DATASET_SHAPES:
        raise DataError(f"unknown dataset '{name}' (choose from: {', '.join(sorted(DATASETS))})")
    return DATASET_SHAPES[name]


def load_dataset(name: str, root: str, download: bool = False) -> Dataset:
    """Load a dataset by name (see DATASETS); missing files -> DataError saying where to put them."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}' (choose from: {', '.join(sorted(DATASETS))})")
    return DATASETS[name](root, download)
