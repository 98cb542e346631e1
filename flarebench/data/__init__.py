"""Datasets (in-memory tensors, the ``dataset`` part kind) and their split into clients (``partition`` parts)."""

from .base import Dataset, DatasetPart, DataSpec, as_dataset, natural_from_ids
from .datasets import dataset_spec, load_dataset
from .partition import partition

__all__ = ["Dataset", "DatasetPart", "DataSpec", "as_dataset", "natural_from_ids", "dataset_spec", "load_dataset", "partition"]
