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

_IDX = "train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz)"


def _torchvision(part: TorchvisionSet, root: str, download: bool) -> tuple:
    """(train, test) torchvision datasets of ``part`` under ``root``; DataError if missing, corrupt, or
    (``download``) not downloadable."""
    import torchvision.datasets as tvd

    name, where, files = part.name, part.where, part.files
    cls = getattr(tvd, part.tv_class)
    root_path = Path(root).expanduser()
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
    """One torchvision dataset: ``torchvision.datasets.<tv_class>``, its files (``files``, in words) under
    ``--data-root``/``where``, normalised with ``stats`` (per-channel mean, std)."""

    stats: tuple = ()
    tv_class = ""
    where = ""
    files = ""

    def load(self, root: str, download: bool, seed: int) -> Dataset:
        train, test = _torchvision(self, root, download)
        xtr, ytr = _tv_tensor(train)
        xte, yte = _tv_tensor(test)
        return Dataset(self.name, normalise(xtr, *self.stats), ytr, normalise(xte, *self.stats), yte, self.data_spec.num_classes)


def _declare(name: str, title: str, sizes: str, spec: DataSpec, stats: tuple, tv_class: str, where: str, files: str) -> type:
    """The registered part ``name``: ``torchvision.datasets.<tv_class>``; ``title`` and ``sizes`` (in words)
    make its one-line summary."""
    attrs = dict(name=name, summary=f"{title}, {sizes} (torchvision files under --data-root)", data_spec=spec, stats=stats,
                 tv_class=tv_class, where=where, files=files, __module__=__name__)
    return register(type(tv_class, (TorchvisionSet,), attrs))


Mnist = _declare("mnist", "MNIST", "60,000 train / 10,000 test", DataSpec((1, 28, 28), 10), MNIST_STATS,
                 "MNIST", "MNIST/raw", _IDX)
FashionMnist = _declare("fashion-mnist", "Fashion-MNIST", "60,000 train / 10,000 test", DataSpec((1, 28, 28), 10),
                        FASHION_STATS, "FashionMNIST", "FashionMNIST/raw", _IDX)
Cifar10 = _declare("cifar10", "CIFAR-10", "50,000 train / 10,000 test", DataSpec((3, 32, 32), 10), CIFAR10_STATS,
                   "CIFAR10", "", "cifar-10-python.tar.gz (or its extracted folder cifar-10-batches-py)")
Cifar100 = _declare("cifar100", "CIFAR-100", "50,000 train / 10,000 test", DataSpec((3, 32, 32), 100), CIFAR100_STATS,
                    "CIFAR100", "", "cifar-100-python.tar.gz (or its extracted folder cifar-100-python)")
