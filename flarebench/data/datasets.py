"""Datasets by name: the ``dataset`` part kind (base.py: the contract; one file per built-in, ``@register``).

Built-ins: ``mnist-embedded`` (default, shipped, offline), ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``
(torchvision files under ``--data-root``), ``shakespeare`` (shipped, natural clients by role).
"""

from __future__ import annotations

from ..errors import DataError
from ..methods.registry import make_part
from .base import Dataset, DataSpec


def dataset_spec(name: str, params: dict | None = None) -> DataSpec | None:
    """What dataset ``name`` (with ``params``) holds, without loading it; None where only loading tells."""
    return make_part("dataset", name, params).spec()


def dataset_shape(name: str, params: dict | None = None) -> tuple[tuple[int, ...], int]:
    """``(input_shape, num_classes)`` of dataset ``name`` without reading its files (ConfigError if unknown)."""
    spec = dataset_spec(name, params)
    if spec is None:
        raise DataError(f"dataset {name} knows its shape only once loaded (load_dataset(...).spec)")
    return spec.input_shape, spec.num_classes


def load_dataset(name: str, root: str, download: bool = False, seed: int = 0, params: dict | None = None) -> Dataset:
    """Dataset part ``name`` loaded (CPU tensors) and checked (:meth:`Dataset.validate`)."""
    return make_part("dataset", name, params).load(root, download, seed).validate()


__all__ = ["Dataset", "DataSpec", "dataset_spec", "dataset_shape", "load_dataset"]
