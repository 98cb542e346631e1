"""One check for every dataset, built-in or the user's: :func:`validate` raises one DataError line naming
the first problem it finds, before anything is trained or written.

What a :class:`~flarebench.data.base.Dataset` must be:

- ``x_train``, ``x_test``: ``[N, ...]`` with at least one feature dimension and the same per-sample shape;
  float32 (images, features: finite, no NaN or inf) or int64 (token ids >= 0; in ``[0, num_classes)``
  where ``y`` holds next-token targets of the same shape: inputs and targets share one vocabulary);
- ``y_train``, ``y_test``: int64 class ids in ``[0, num_classes)``, ``[N]`` (one label per sample) or
  ``[N, T]`` (one per position of a token sequence ``x`` ``[N, T]``), as many rows as ``x``;
- both splits non-empty; ``num_classes`` >= 2;
- ``natural_clients`` (if any): a non-empty list of 1-D int64 index tensors into the training set,
  each non-empty and in range.

:meth:`Dataset.validate` calls it on what every dataset part (built-in, plug-in or import reference) loads.
"""

from __future__ import annotations

import torch

from ..errors import DataError


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def validate(data) -> None:
    """DataError (one line, naming the dataset and the tensor) unless ``data`` is usable; see the module docstring."""
    where = f"dataset {data.name}"
    for split in ("train", "test"):
        _check_split(getattr(data, f"x_{split}"), getattr(data, f"y_{split}"), split, where)
    if data.x_test.shape[1:] != data.x_train.shape[1:] or data.x_test.dtype != data.x_train.dtype:
        raise DataError(f"{where}: x_test samples are {_dtype(data.x_test)} {list(data.x_test.shape[1:])} but x_train's are "
                        f"{_dtype(data.x_train)} {list(data.x_train.shape[1:])}")
    if data.y_test.dim() != data.y_train.dim():
        raise DataError(f"{where}: y_test is {data.y_test.dim()}-D but y_train is {data.y_train.dim()}-D")
    if not isinstance(data.num_classes, int) or isinstance(data.num_classes, bool) or data.num_classes < 2:
        raise DataError(f"{where}: num_classes must be an integer >= 2, got {data.num_classes!r}")
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if x.dtype == torch.int64 and y.shape == x.shape:  # next-token targets: inputs and targets share the vocabulary
            _in_range(x, f"x_{split}", data.num_classes, where, "token ids")
        _in_range(y, f"y_{split}", data.num_classes, where, "labels")
    _check_clients(data.natural_clients, len(data.x_train), where)


def _check_split(x, y, split: str, where: str) -> None:
    """Types, shapes, dtypes, lengths and finiteness of one split (labels' range: :func:`validate`)."""
    for name, t in ((f"x_{split}", x), (f"y_{split}", y)):
        if not isinstance(t, torch.Tensor):
            raise DataError(f"{where}: {name} must be a torch tensor, got {type(t).__name__}")
    if x.dim() < 2:
        raise DataError(f"{where}: x_{split} must be [N, ...] with at least one feature dimension, got shape {list(x.shape)}")
    if len(x) == 0:
        raise DataError(f"{where}: the {split} split is empty")
    if x.dtype not in (torch.float32, torch.int64):
        raise DataError(f"{where}: x_{split} must be float32 (features) or int64 (token ids), got {_dtype(x)}")
    if y.dtype != torch.int64:
        raise DataError(f"{where}: y_{split} must be int64 class ids, got {_dtype(y)}")
    if y.dim() == 0 or len(y) != len(x):
        raise DataError(f"{where}: x_{split} has {len(x)} samples but y_{split} has {len(y) if y.dim() else 0}")
    if y.dim() != 1 and not (y.dim() == 2 and x.dim() == 2 and y.shape == x.shape):
        raise DataError(f"{where}: y_{split} must be [N] (or [N, T] next-token targets of x [N, T]), got shape {list(y.shape)}")
    if x.dtype == torch.float32:
        bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)
        if bad.any():
            first = int(bad.nonzero()[0])
            raise DataError(f"{where}: x_{split} has NaN or infinite values in {int(bad.sum())} samples (first: sample {first})")
    elif int(x.min()) < 0:
        raise DataError(f"{where}: x_{split} has negative token ids (min {int(x.min())})")


def _in_range(t: torch.Tensor, name: str, num_classes: int, where: str, what: str) -> None:
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"{where}: {name} has {what} outside [0, {num_classes}): min {lo}, max {hi}")


def _check_clients(clients, n_train: int, where: str) -> None:
    if clients is None:
        return
    if not isinstance(clients, (list, tuple)) or not clients:
        raise DataError(f"{where}: natural_clients must be a non-empty list of index tensors")
    for i, idx in enumerate(clients):
        if not isinstance(idx, torch.Tensor) or idx.dim() != 1 or idx.dtype != torch.int64:
            raise DataError(f"{where}: natural client {i} must be a 1-D int64 index tensor into the training set")
        if idx.numel() == 0:
            raise DataError(f"{where}: natural client {i} has no training samples")
        if int(idx.min()) < 0 or int(idx.max()) >= n_train:
            raise DataError(f"{where}: natural client {i} indexes outside the training set [0, {n_train})")


__all__ = ["validate"]
