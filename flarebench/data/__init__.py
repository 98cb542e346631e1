"""Datasets (in-memory tensors) and their split into clients."""

from .datasets import DATASETS, Dataset, load_dataset
from .partition import PARTITIONS, partition

__all__ = ["DATASETS", "Dataset", "load_dataset", "PARTITIONS", "partition"]
