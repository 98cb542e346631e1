"""The ``dataset`` part kind and the in-memory :class:`Dataset` every dataset part loads.

A :class:`Dataset` is train/test tensors, in memory (and on the run's device), so batching is indexing:

- ``x_*``: float32 ``[N, *input_shape]`` (images ``[N, C, H, W]`` normalised per channel, or vectors ``[N, F]``),
  or int64 token ids ``[N, T]``;
- ``y_*``: int64 labels ``[N]`` in ``[0, num_classes)``, or for tokens ``[N, T]`` next-token targets;
- ``natural_clients``: optional; where the data has owners (speakers, LEAF users), one int64 index tensor
  into ``x_train`` per owner (partition ``natural`` uses them). :func:`natural_from_ids` makes them from a
  per-sample client id ``[N]``.

Contract of a :class:`DatasetPart` (``flarebench.data`` modules, ``@register``; or a user reference):

- ``spec()`` -> :class:`DataSpec` ``(input_shape, num_classes, inputs, natural)`` WITHOUT loading the data
  (from parameters, or at most a file header), so configs are checked and parameter counts known before
  anything is read; None when it cannot be known before loading (checked after loading instead);
- ``load(root, download, seed)`` -> :class:`Dataset` on the CPU. ``root``: the run's ``--data-root`` (expand
  ``~`` yourself); ``download``: whether fetching over the network is allowed; ``seed``: the run seed (for
  generated data; a fixed train/test split should not depend on it). Missing or corrupt files raise
  :class:`~flarebench.errors.DataError` with one line saying where to put them.

Whatever a part returns is checked once by :meth:`Dataset.validate` (dtypes, shapes, finite inputs, labels in
range, non-empty natural clients) before the run starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError
from ..methods.registry import WorldPart


@dataclass(frozen=True)
class DataSpec:
    """What a model is built for: one sample's ``input_shape`` (no batch dimension), ``num_classes``,
    ``inputs`` (``images`` float32 [C, H, W] | ``vectors`` float32 [F] | ``tokens`` int64 [T], per-position
    targets) and whether the data has ``natural`` clients."""

    input_shape: tuple[int, ...]
    num_classes: int
    inputs: str = "images"
    natural: bool = False

    @staticmethod
    def of(x: torch.Tensor, num_classes: int, natural: bool = False) -> "DataSpec":
        """The spec of inputs ``x`` ``[N, ...]``: tokens if integer, images if ``[N, C, H, W]``, else vectors."""
        shape = tuple(x.shape[1:])
        inputs = "tokens" if not x.is_floating_point() else "images" if len(shape) == 3 else "vectors"
        return DataSpec(shape, int(num_classes), inputs, natural)


@dataclass
class Dataset:
    """Train/test tensors (see the module docstring for dtypes and shapes)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    natural_clients: list[torch.Tensor] | None = None  # per-owner int64 train indices, where the data has owners

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def spec(self) -> DataSpec:
        return DataSpec.of(self.x_train, self.num_classes, self.natural_clients is not None)

    def to(self, device) -> "Dataset":
        return Dataset(self.name, self.x_train.to(device), self.y_train.to(device), self.x_test.to(device),
                       self.y_test.to(device), self.num_classes, self.natural_clients)

    def validate(self) -> "Dataset":
        """This dataset, or DataError (one line naming it and the tensor) for tensors a run cannot use
        (:func:`flarebench.data.validate.validate` lists the rules)."""
        from .validate import validate

        validate(self)
        return self


def as_dataset(result, name: str, num_classes: int | None = None) -> Dataset:
    """What a dataset function returned, as a :class:`Dataset` (converted once; checked later by
    :meth:`Dataset.validate`). Accepted: a Dataset; a dict or a tuple ``(x_train, y_train, x_test, y_test)``
    with an optional 5th ``client_ids`` ``[N_train]`` (dict keys of those names, and optional ``num_classes``),
    tensors or numpy arrays; or ``(train, test)`` torch ``Dataset``s of ``(x, y)`` samples (read once, stacked).
    Floating inputs become float32, integer inputs and labels int64. ``num_classes``: from the data
    (largest label + 1) where not given. DataError (one line) for anything else."""
    if isinstance(result, Dataset):
        return result
    if isinstance(result, dict):
        keys = ("x_train", "y_train", "x_test", "y_test")
        missing = [k for k in keys if k not in result]
        if missing:
            raise DataError(f"dataset {name} returned a dict without {', '.join(missing)}")
        num_classes = result.get("num_classes", num_classes)
        result = tuple(result[k] for k in keys) + ((result["client_ids"],) if result.get("client_ids") is not None else ())
    if isinstance(result, (tuple, list)) and len(result) == 2 and all(isinstance(d, torch.utils.data.Dataset) for d in result):
        result = (*_stack(result[0], name, "train"), *_stack(result[1], name, "test"))
    if not isinstance(result, (tuple, list)) or len(result) not in (4, 5):
        raise DataError(f"dataset {name} must return a flarebench Dataset, (x_train, y_train, x_test, y_test[, client_ids]) "
                        f"or (train, test) torch Datasets; got {type(result).__name__}")
    try:
        x_tr, y_tr, x_te, y_te, *ids = (torch.as_tensor(a) for a in result)
    except (TypeError, ValueError, RuntimeError) as e:
        raise DataError(f"dataset {name}: its arrays cannot be tensors ({type(e).__name__}: {e})") from None
    x_tr, x_te = _inputs(x_tr), _inputs(x_te)
    y_tr, y_te = (y.long() if not y.is_floating_point() and not y.is_complex() else y for y in (y_tr, y_te))
    if num_classes is None:
        num_classes = int(max(y_tr.max(), y_te.max())) + 1 if len(y_tr) and len(y_te) and not y_tr.is_floating_point() else 0
    natural = natural_from_ids(ids[0]) if ids else None
    if ids and len(ids[0]) != len(x_tr):
        raise DataError(f"dataset {name}: client_ids has {len(ids[0])} entries for {len(x_tr)} training samples")
    return Dataset(name, x_tr, y_tr, x_te, y_te, int(num_classes), natural)


def _inputs(x: torch.Tensor) -> torch.Tensor:
    if x.is_floating_point():
        return x.float()
    return x.long() if x.dtype not in (torch.bool,) and not x.is_complex() else x


def _stack(ds, name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A torch Dataset of ``(x, y)`` samples, read once, as ``(x [N, ...], y [N])``."""
    try:
        samples = [ds[i] for i in range(len(ds))]
        return torch.stack([torch.as_tensor(s[0]) for s in samples]), torch.as_tensor([int(s[1]) for s in samples])
    except Exception as e:
        raise DataError(f"dataset {name}: its {split} torch Dataset cannot be read as (x, y) samples ({type(e).__name__}: {e})") from None


def natural_from_ids(client_ids: torch.Tensor) -> list[torch.Tensor]:
    """Per-sample client ids ``[N]`` (any integers) -> one sorted int64 index tensor per client, in
    increasing id order (client ``i`` of partition ``natural`` is the ``i``-th smallest id)."""
    ids = torch.as_tensor(client_ids).reshape(-1)
    order = torch.argsort(ids, stable=True)
    _, counts = torch.unique_consecutive(ids[order], return_counts=True)
    return [part.sort().values for part in torch.split(order, counts.tolist())]


class DatasetPart(WorldPart):
    """Base of every dataset part: ``spec()`` and ``load(root, download, seed)`` (contract: module docstring)."""

    kind = "dataset"
    data_spec: DataSpec | None = None  # declared on the class where the shape is fixed; spec() returns it

    def spec(self) -> DataSpec | None:
        return self.data_spec

    def load(self, root: str, download: bool, seed: int) -> Dataset:
        raise NotImplementedError


__all__ = ["Dataset", "DataSpec", "DatasetPart", "as_dataset", "natural_from_ids"]
