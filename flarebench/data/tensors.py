"""``tensors``: a data set in one file, ``.npz`` (numpy) or ``.pt`` (torch), holding arrays named
``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``client_ids``.

- ``x_*``: ``[N, ...]`` features, images ``[N, C, H, W]`` or token ids ``[N, T]``; any float dtype is read
  as float32 (values as stored: normalise before saving), other integers as int64 token ids. uint8 inputs
  are refused (raw pixels: scale them to float first; flarebench does not guess a normalisation).
- ``y_*``: integer class ids ``[N]`` (or ``[N, T]`` next-token targets), read as int64.
- ``client_ids`` (optional): ``[N_train]`` integers or strings, the owner of each training sample: the
  natural clients, in sorted order of their ids (client i of partition ``natural`` is the i-th smallest id).
- ``num_classes``: 0 = the largest label in train and test + 1.

``.npz`` files are read with ``allow_pickle=False`` and ``.pt`` files with ``weights_only=True`` (a dict of
tensors or arrays): loading a data file never runs code. ``examples/make_npz_dataset.py`` writes one.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..methods.registry import Param, non_negative, register
from .base import Dataset, DatasetPart, as_dataset

REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def read_arrays(path: Path) -> dict:
    """``{name: array or tensor}`` from a ``.npz`` or ``.pt`` file; DataError if unreadable."""
    if path.suffix not in (".npz", ".pt"):
        raise DataError(f"tensors: {path} must end in .npz or .pt")
    if not path.is_file():
        raise DataError(f"tensors: {path} is not a file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"tensors: {path} is not a readable {path.suffix} file ({' '.join(str(e).split())[:120]})") from None
    except Exception as e:  # torch's restricted unpickler has its own error types for anything but tensors
        raise DataError(f"tensors: {path} cannot be loaded safely ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    if not isinstance(obj, dict):
        raise DataError(f"tensors: {path} holds a {type(obj).__name__}, not a dict of named tensors")
    return obj


def _integer(a) -> bool:
    if isinstance(a, torch.Tensor):
        return not (a.dtype.is_floating_point or a.dtype.is_complex or a.dtype == torch.bool)
    return a.dtype.kind in "iu"


def load_tensors(path: str, num_classes: int = 0) -> Dataset:
    """The data set in file ``path`` (see the module docstring) as a Dataset (checked later by its ``validate``)."""
    file = Path(path).expanduser()
    arrays = read_arrays(file)
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise DataError(f"tensors: {file}: missing {', '.join(missing)} (has: {', '.join(sorted(arrays)) or 'nothing'})")
    for k in (*REQUIRED, "client_ids"):
        if k in arrays and (not hasattr(arrays[k], "dtype") or arrays[k].ndim == 0):
            raise DataError(f"tensors: {file}: {k} is not an array [N, ...] (got {type(arrays[k]).__name__})")
    for k in ("x_train", "x_test"):
        if arrays[k].dtype in (np.uint8, torch.uint8):
            raise DataError(f"tensors: {file}: {k} is uint8; store float32 inputs (e.g. pixels / 255, normalised)")
    for k in ("y_train", "y_test"):
        if not _integer(arrays[k]):
            raise DataError(f"tensors: {file}: {k} must hold integer class ids, got {arrays[k].dtype}")
    ids = arrays.get("client_ids")
    if ids is not None:
        ids = ids.numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
        if ids.dtype.kind not in "iuU":
            raise DataError(f"tensors: {file}: client_ids must be integers or strings, got {ids.dtype}")
        ids = np.unique(ids.reshape(-1), return_inverse=True)[1].reshape(ids.shape)  # ids -> 0..n-1 in sorted order
    arrays = {k: arrays[k] for k in REQUIRED} | ({"client_ids": ids} if ids is not None else {})
    return as_dataset(arrays, "tensors", num_classes or None)


@register
class Tensors(DatasetPart):
    """Your arrays from one ``.npz``/``.pt`` file (module docstring); shape known once loaded."""

    name = "tensors"
    summary = "x_train, y_train, x_test, y_test (and optional client_ids: natural clients) from one .npz or .pt file"
    params = (
        Param("path", str, "", "the .npz or .pt file"),
        Param("num_classes", int, 0, "classes; 0 = the largest label + 1", check=non_negative, rule=">= 0"),
    )

    def load(self, root: str, download: bool, seed: int) -> Dataset:
        if not self.path:
            raise DataError("dataset tensors needs its file: -p dataset.path=FILE.npz (or .pt)")
        return load_tensors(self.path, self.num_classes)


__all__ = ["Tensors", "load_tensors", "read_arrays"]
