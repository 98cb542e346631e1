"""``tensors``: a data set in one file, ``.npz`` (numpy) or ``.pt`` (torch), holding arrays named
``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``client_ids``.

- ``x_*``: ``[N, ...]`` features, images ``[N, C, H, W]`` or token ids ``[N, T]``; any float dtype is read
  as float32 (values as stored: normalise before saving), integers as int64 token ids. uint8 images are
  refused (scale them first: flarebench does not guess a normalisation).
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
from .validate import as_tensor

REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def read_arrays(path: Path) -> dict:
    """``{name: array or tensor}`` from a ``.npz`` or ``.pt`` file; DataError if unreadable."""
    if not path.is_file():
        raise DataError(f"tensors: {path} is not a file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        if path.suffix == ".pt":
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(obj, dict):
                raise DataError(f"tensors: {path} holds a {type(obj).__name__}, not a dict of named tensors")
            return obj
    except DataError:
        raise
    except (OSError, ValueError, RuntimeError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"tensors: {path} is not a readable {path.suffix} file ({' '.join(str(e).split())[:120]})") from None
    except Exception as e:  # torch's unpickler refuses anything but tensors with its own error types
        raise DataError(f"tensors: {path} cannot be loaded safely ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    raise DataError(f"tensors: {path} must end in .npz or .pt")


def client_indices(ids, n_train: int, where: str) -> list[torch.Tensor]:
    """Per-sample owner ids ``[N_train]`` -> one sorted int64 index tensor per distinct id (ids in sorted order)."""
    arr = ids.numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    if arr.ndim != 1 or len(arr) != n_train:
        raise DataError(f"{where}: client_ids must be [N_train] = [{n_train}], got shape {list(arr.shape)}")
    if arr.dtype.kind not in "iuU":
        raise DataError(f"{where}: client_ids must be integers or strings, got {arr.dtype}")
    _, owner = np.unique(arr, return_inverse=True)
    order = np.argsort(owner, kind="stable")
    bounds = np.cumsum([0] + np.bincount(owner).tolist())
    return [torch.from_numpy(order[a:b].astype(np.int64)) for a, b in zip(bounds[:-1], bounds[1:])]


def load_tensors(path: str, num_classes: int = 0):
    """The data set in file ``path`` (see the module docstring) as a Dataset."""
    from .datasets import Dataset

    file = Path(path).expanduser()
    where = f"tensors: {file}"
    arrays = read_arrays(file)
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)} (has: {', '.join(sorted(arrays)) or 'nothing'})")
    t = {k: as_tensor(arrays[k], k, where, k[0]) for k in REQUIRED}
    scalar = [k for k in REQUIRED if t[k].dim() == 0]
    if scalar:
        raise DataError(f"{where}: {scalar[0]} is a single number, not an array [N, ...]")
    natural = client_indices(arrays["client_ids"], len(t["x_train"]), where) if "client_ids" in arrays else None
    if num_classes == 0 and t["y_train"].numel() and t["y_test"].numel():
        num_classes = int(max(t["y_train"].max(), t["y_test"].max())) + 1
    return Dataset("tensors", t["x_train"], t["y_train"], t["x_test"], t["y_test"], num_classes, natural)


__all__ = ["load_tensors", "read_arrays", "client_indices"]
