"""Deterministic seeds derived from (run seed, round, client, purpose): no RNG state to carry.

Because every random draw of a round is a pure function of these numbers, a resumed run draws
exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

PURPOSES = {"select": 1, "shuffle": 2, "randk": 3, "round": 4, "init": 5, "compress": 6, "server": 7}


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
