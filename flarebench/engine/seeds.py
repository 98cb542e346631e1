"""Deterministic seeds derived from (run seed, round, client, purpose): no RNG state to carry.

Because every random draw of a round is a pure function of these numbers, a resumed run draws
exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
import torch

PURPOSES = {"clients": 1, "shuffle": 2, "randk": 3, "round": 4, "init": 5, "compress": 6, "server": 7}


def purpose_id(purpose: str) -> int:
    """The number of a purpose: fixed for the built-in ones, a CRC-32 of the name for any other."""
    return PURPOSES[purpose] if purpose in PURPOSES else 1000 + zlib.crc32(purpose.encode())


def derive(seed: int, purpose: str, *parts: int) -> int:
    """A 63-bit seed, a hash of ``(seed, purpose, *parts)``."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32, purpose_id(purpose), *[int(p) for p in parts]])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def generator(seed: int, purpose: str, *parts: int) -> torch.Generator:
    """A CPU torch.Generator seeded with :func:`derive` (CPU so draws are the same on every device)."""
    return torch.Generator().manual_seed(derive(seed, purpose, *parts))


def randperm_prefix(seed: int, n: int, k: int) -> torch.Tensor:
    """``torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]`` (int64 ``[k]``, CPU) in O(k).

    torch's CPU randperm is a Fisher-Yates shuffle over mt19937 (seeded with the low 32 bits of ``seed``):
    step i swaps entry i with entry ``i + r_i % (n - i)``, r_i the i-th 32-bit draw, so the first k entries
    are final after k steps; numpy's MT19937 gives the same draws. Checked against torch once per process
    (:func:`_prefix_matches_torch`); where it does not match (another torch), torch.randperm is used.
    """
    if k <= 0:
        return torch.zeros(0, dtype=torch.int64)
    if not _prefix_matches_torch():
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]
    return torch.from_numpy(_fisher_yates_prefix(seed, n, k))


def _fisher_yates_prefix(seed: int, n: int, k: int) -> np.ndarray:
    bits = np.random.MT19937()
    bits.state = {"bit_generator": "MT19937", "state": np.random.RandomState(seed & 0xFFFFFFFF).get_state(legacy=False)["state"]}
    i = np.arange(k, dtype=np.int64)
    z = bits.random_raw(k).astype(np.int64) % (n - i) + i  # the entry step i swaps with
    # no entry is swapped twice and none of the first k is swapped in from later (the usual case for k << sqrt(n)):
    # entry i ends as z_i. Otherwise replay the k swaps (vectorised: _replay_swaps).
    if np.all((z == i) | (z >= k)) and np.unique(z).size == k:
        return z
    return _replay_swaps(z)


def _replay_swaps(z: np.ndarray) -> np.ndarray:
    """The first k entries of ``arange(n)`` after the swaps ``P[a] <-> P[z_a]`` for a = 0 .. k - 1 (``z_a >= a``,
    int64 ``[k]``), without a loop over a. Step a takes ``P[z_a]``, which is ``z_a`` unless an earlier step b wrote
    there (the last such b: ``z_b = z_a``), then it is what position b held at step b: ``V_b``. ``V_b = b`` unless an
    earlier step c < b wrote to position b (``z_c = b``, the last such c), then ``V_b = V_c``: a chain of
    ever-smaller steps to a root r with ``V = r``, followed by pointer doubling (log k passes)."""
    k = z.size
    steps = np.arange(k, dtype=np.int64)
    order = np.lexsort((steps, z))  # by target, then by step
    zs = z[order]
    same = zs[1:] == zs[:-1]
    prev_same = np.full(k, -1, dtype=np.int64)  # the last earlier step with the same target
    prev_same[order[1:][same]] = order[:-1][same]
    keys = zs * (k + 1) + order  # < n (k + 1) <= 2^62
    at = np.searchsorted(keys, steps * (k + 1) + steps, side="left") - 1  # the last (target b, step < b) pair
    hit = np.maximum(at, 0)
    parent = np.where((at >= 0) & (zs[hit] == steps), order[hit], -1)  # the last step c < b with z_c = b
    root = np.where(parent >= 0, parent, steps)
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    return np.where(prev_same >= 0, root[np.maximum(prev_same, 0)], z)


@functools.lru_cache(maxsize=1)
def _prefix_matches_torch() -> bool:
    cases = [(12345, 1000, 40), (2**62 + 5, 70_000, 300), (7, 50, 50)]
    return all(torch.equal(torch.from_numpy(_fisher_yates_prefix(s, n, k)),
                           torch.randperm(n, generator=torch.Generator().manual_seed(s))[:k]) for s, n, k in cases)
