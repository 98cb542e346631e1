"""``mnist-embedded`` (the default dataset): the official MNIST *test* set (10,000 images) shipped in the package,
md5-checked, split by a fixed permutation into 8,000 client-training and 2,000 test images. A stand-in that
works offline; use ``mnist`` for the real 60k/10k split. Images float32 ``[N, 1, 28, 28]`` normalised.
"""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources

import numpy as np
import torch

from ..errors import DataError
from ..methods.registry import register
from .base import Dataset, DatasetPart, DataSpec
from .images import MNIST_STATS, normalise, read_idx

EMBEDDED_MD5 = {
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
EMBEDDED_TRAIN = 8000  # of the 10,000 shipped images; the other 2,000 are the test set
EMBEDDED_SPLIT_SEED = 20231221  # fixed: the split never depends on the run's seed


@register
class MnistEmbedded(DatasetPart):
    """The package's MNIST test set, split 8,000 train / 2,000 test by a fixed permutation (not the run's seed)."""

    name = "mnist-embedded"
    summary = "MNIST's 10,000 test images shipped in the package: 8,000 train / 2,000 test (offline stand-in)"
    data_spec = DataSpec((1, 28, 28), 10)

    def load(self, root: str, download: bool, seed: int) -> Dataset:
        arrays = {}
        base = resources.files("flarebench.data") / "assets" / "mnist"
        for fname, md5 in EMBEDDED_MD5.items():
            try:
                raw_gz = (base / fname).read_bytes()
            except FileNotFoundError:
                raise DataError(f"embedded MNIST file {fname} is missing from the package; reinstall flarebench") from None
            if hashlib.md5(raw_gz).hexdigest() != md5:
                raise DataError(f"embedded MNIST file {fname} fails its md5 check; reinstall flarebench")
            arrays[fname] = read_idx(gzip.decompress(raw_gz))
        images = torch.from_numpy(arrays["t10k-images-idx3-ubyte.gz"].copy()).unsqueeze(1)
        labels = torch.from_numpy(arrays["t10k-labels-idx1-ubyte.gz"].astype(np.int64))
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(EMBEDDED_SPLIT_SEED))
        tr, te = perm[:EMBEDDED_TRAIN].sort().values, perm[EMBEDDED_TRAIN:].sort().values
        x = normalise(images, *MNIST_STATS)
        return Dataset("mnist-embedded", x[tr], labels[tr], x[te], labels[te], 10)
