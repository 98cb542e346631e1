"""Split a training set into clients: each client is an int64 index tensor into ``y_train``.

- ``contiguous``: the paper's split: client i gets samples ``[i*n, (i+1)*n)`` in dataset order.
- ``iid``: a seeded random permutation, cut into equal slices.
- ``dirichlet``: per class, client proportions ~ Dir(alpha) (Hsu et al. 2019); small alpha = skewed.
- ``shards``: McMahan et al. 2017: sort by label, cut into 2 shards per client, deal them at random.
- ``natural``: the dataset's own owners (e.g. Shakespeare speakers), where it has them.

``n`` (samples per client) is ``samples_per_client`` if given, else ``len(train) // clients``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import ConfigError


def _per_client(num_samples: int, clients: int, samples_per_client: int | None) -> int:
    n = num_samples // clients if samples_per_client is None else samples_per_client
    if n < 1 or n * clients > num_samples:
        raise ConfigError(
            f"cannot give {clients} clients {n} samples each from a training set of {num_samples}"
        )
    return n


def contiguous(labels: torch.Tensor, clients: int, n: int, rng: np.random.Generator, **_) -> list[torch.Tensor]:
    return [torch.arange(i * n, (i + 1) * n) for i in range(clients)]


def iid(labels: torch.Tensor, clients: int, n: int, rng: np.random.Generator, **_) -> list[torch.Tensor]:
    perm = torch.from_numpy(rng.permutation(len(labels)))
    return [perm[i * n : (i + 1) * n].sort().values for i in range(clients)]


def dirichlet(labels: torch.Tensor, clients: int, n: int, rng: np.random.Generator, alpha: float = 0.5, **_) -> list[torch.Tensor]:
    """Per class c, draw p_c ~ Dir(alpha * 1_clients) and deal class c's samples in those proportions.

    Uses ``clients * n`` samples in total; client sizes are unequal (that is the point).
    Every client gets at least one sample.
    """
    y = labels.cpu().numpy()
    pool = rng.permutation(len(y))[: clients * n]
    owners: list[list[int]] = [[] for _ in range(clients)]
    for c in np.unique(y[pool]):
        idx = pool[y[pool] == c]
        p = rng.dirichlet(np.full(clients, alpha))
        cuts = (np.cumsum(p) * len(idx)).astype(np.int64)[:-1]
        for i, part in enumerate(np.split(idx, cuts)):
            owners[i].extend(part.tolist())
    # no empty client: move one sample from the largest client
    for i in range(clients):
        if not owners[i]:
            j = max(range(clients), key=lambda k: len(owners[k]))
            owners[i].append(owners[j].pop())
    return [torch.tensor(sorted(o), dtype=torch.int64) for o in owners]


def shards(labels: torch.Tensor, clients: int, n: int, rng: np.random.Generator, shards_per_client: int = 2, **_) -> list[torch.Tensor]:
    """Sort ``clients * n`` samples by label, cut into ``2 * clients`` shards, deal 2 per client."""
    y = labels.cpu().numpy()[: clients * n]
    order = np.argsort(y, kind="stable")
    pieces = np.array_split(order, clients * shards_per_client)
    deal = rng.permutation(len(pieces))
    return [
        torch.from_numpy(np.sort(np.concatenate([pieces[j] for j in deal[i * shards_per_client : (i + 1) * shards_per_client]])))
        for i in range(clients)
    ]


PARTITIONS: dict[str, Callable[..., list[torch.Tensor]]] = {
    "contiguous": contiguous,
    "iid": iid,
    "dirichlet": dirichlet,
    "shards": shards,
    "natural": None,  # handled in partition(): the dataset's own owners
}


def partition(
    labels: torch.Tensor,
    name: str,
    clients: int,
    seed: int,
    samples_per_client: int | None = None,
    dirichlet_alpha: float = 0.5,
    natural: list[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Client index tensors (int64, sorted) for partition ``name``; deterministic in ``seed``."""
    if name not in PARTITIONS:
        raise ConfigError(f"unknown partition '{name}' (choose from: {', '.join(sorted(PARTITIONS))})")
    if name == "natural":
        if natural is None:
            raise ConfigError("partition 'natural' needs a dataset with its own clients (e.g. shakespeare)")
        if clients > len(natural):
            raise ConfigError(f"the dataset has {len(natural)} natural clients, fewer than clients={clients}")
        chosen = natural[:clients]
        if samples_per_client is not None:
            chosen = [c[:samples_per_client] for c in chosen]
        return chosen
    n = _per_client(len(labels), clients, samples_per_client)
    rng = np.random.default_rng(seed)
    return PARTITIONS[name](labels, clients, n, rng, alpha=dirichlet_alpha)
