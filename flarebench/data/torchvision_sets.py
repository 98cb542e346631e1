"""``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``: torchvision's files under ``--data-root`` (``--download``
fetches them where a network exists). Images float32 ``[N, C, H, W]`` normalised per channel; labels int64 ``[N]``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..methods.registry import register
from .base import Dataset, DatasetPart, DataSpec
from .images import CIFAR10_STATS, CIFAR100_STATS, FASHION_STATS, MNIST_STATS, normalise

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


class TorchvisionSet(DatasetPart):
    """One torchvision dataset (``name``), normalised with ``stats`` (per-channel mean, std)."""

    stats: tuple = ()

    def load(self, root: str, download: bool, seed: int) -> Dataset:
        train, test = _torchvision(self.name, root, download)
        xtr, ytr = _tv_tensor(train)
        xte, yte = _tv_tensor(test)
        return Dataset(self.name, normalise(xtr, *self.stats), ytr, normalise(xte, *self.stats), yte, self.data_spec.num_classes)


@register
class Mnist(TorchvisionSet):
    name = "mnist"
    summary = "MNIST, 60,000 train / 10,000 test (torchvision files under --data-root)"
    data_spec = DataSpec((1, 28, 28), 10)
    stats = MNIST_STATS


@register
class FashionMnist(TorchvisionSet):
    name = "fashion-mnist"
    summary = "Fashion-MNIST, 60,000 train / 10,000 test (torchvision files under --data-root)"
    data_spec = DataSpec((1, 28, 28), 10)
    stats = FASHION_STATS


@register
class Cifar10(TorchvisionSet):
    name = "cifar10"
    summary = "CIFAR-10, 50,000 train / 10,000 test (torchvision files under --data-root)"
    data_spec = DataSpec((3, 32, 32), 10)
    stats = CIFAR10_STATS


@register
class Cifar100(TorchvisionSet):
    name = "cifar100"
    summary = "CIFAR-100, 50,000 train / 10,000 test (torchvision files under --data-root)"
    data_spec = DataSpec((3, 32, 32), 100)
    stats = CIFAR100_STATS
