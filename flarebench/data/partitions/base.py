"""The ``partition`` part kind: how the training set is split into clients.

Contract of :meth:`PartitionPart.split` ``(labels, clients, seed, samples_per_client, natural) -> list[Tensor]``:

- ``labels``: ``y_train`` on the CPU, int64 ``[N]`` (or ``[N, T]`` per-position targets for tokens);
- ``clients``: C, the number of clients (``--clients``); ``seed``: the run seed (draw from
  ``numpy.random.default_rng(seed)`` or a generator derived from it: the split is deterministic in it);
- ``samples_per_client``: ``--samples-per-client`` or None (then :func:`samples_each` gives ``N // C``);
- ``natural``: the dataset's natural clients (one int64 index tensor per owner) or None;
- returns C int64 index tensors into ``labels``' rows, each sorted and non-empty; clients may overlap only
  if the partition says so (the built-ins never do).

Parameters (e.g. ``dirichlet``'s ``alpha``) are declared ``params`` (``-p partition.alpha=0.1``, TOML
``[partition]``). ``needs_natural``: the partition needs a dataset with natural clients (checked before
loading, from :class:`~flarebench.data.base.DataSpec`). A partition of ``clients * n`` samples (``iid``,
``contiguous``, ``dirichlet``, ``shards``) subclasses :class:`BudgetedPartition` and implements only ``deal``.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ConfigError
from ...methods.registry import WorldPart


class PartitionPart(WorldPart):
    """Base of every partition part (contract: module docstring)."""

    kind = "partition"
    needs_natural = False

    def split(self, labels: torch.Tensor, clients: int, seed: int, samples_per_client: int | None,
              natural: list[torch.Tensor] | None) -> list[torch.Tensor]:
        raise NotImplementedError


class BudgetedPartition(PartitionPart):
    """A partition that deals ``clients * n`` samples (``n``: :func:`samples_each`) with a numpy generator
    seeded by the run seed: it implements ``deal(labels, clients, n, rng)`` (same return as ``split``)."""

    def split(self, labels, clients, seed, samples_per_client, natural):
        n = samples_each(len(labels), clients, samples_per_client)
        return self.deal(labels, clients, n, np.random.default_rng(seed))

    def deal(self, labels: torch.Tensor, clients: int, n: int, rng: np.random.Generator) -> list[torch.Tensor]:
        raise NotImplementedError


def samples_each(num_samples: int, clients: int, samples_per_client: int | None) -> int:
    """``n``, the samples per client: ``samples_per_client`` if given, else ``num_samples // clients``;
    ConfigError if ``clients * n`` samples do not exist."""
    n = num_samples // clients if samples_per_client is None else samples_per_client
    if n < 1 or n * clients > num_samples:
        raise ConfigError(f"cannot give {clients} clients {n} samples each from a training set of {num_samples}")
    return n


__all__ = ["BudgetedPartition", "PartitionPart", "samples_each"]
