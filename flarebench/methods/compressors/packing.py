"""Bits packed where they are computed, and unpacked a chunk at a time: bool tensors <-> MSB-first bytes.

Packed bits are a uint8 numpy array on the host, ``ceil(n / 8)`` bytes, bit i in byte ``i // 8`` at
``7 - i % 8`` (MSB first), the last byte zero-padded: the wire's layout (wire/frame.py ``bits``), so a
payload of packed bits is written and read without repacking.
"""

from __future__ import annotations

import numpy as np
import torch

from ... import jit
from .topk import CHUNK, numpy_scan

_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def pack_bits(bits: torch.Tensor) -> np.ndarray:
    """bool ``[n]`` (any device) -> uint8 ``[ceil(n / 8)]`` on the host, MSB first, zero-padded (packed where the bits
    are, ``CHUNK`` bits at a time: no full-size temporary)."""
    n = bits.numel()
    b = bits.reshape(-1).view(torch.uint8)  # a bool is one byte, 0 or 1
    weights = torch.tensor(_WEIGHTS, dtype=torch.uint8, device=b.device)
    out = torch.empty(-(-n // 8), dtype=torch.uint8, device=b.device)
    whole = n - n % 8
    for a in range(0, whole, CHUNK):
        e = min(a + CHUNK, whole)
        torch.sum(b[a:e].view(-1, 8) * weights, dim=1, dtype=torch.uint8, out=out[a // 8 : e // 8])
    if whole < n:
        tail = torch.zeros(8, dtype=torch.uint8, device=b.device)
        tail[: n - whole] = b[whole:]
        out[-1] = (tail * weights).sum(dtype=torch.uint8)
    return out.cpu().numpy()


def pack_nonnegative(x: torch.Tensor) -> np.ndarray:
    """float ``[n]`` (any device) -> the packed bits of ``x >= 0`` (-0.0 counts as >= 0, NaN does not). On the CPU
    with numpy (a compare into one reused chunk buffer, then packbits: about 2x faster than torch's compare into a
    fresh mask); on another device :func:`pack_bits` there, so only the packed bytes cross to the host."""
    if not numpy_scan(x):
        return pack_bits(x >= 0)
    flat = x.detach().reshape(-1).contiguous().numpy()
    n = flat.shape[0]
    out = np.empty(-(-n // 8), dtype=np.uint8)
    mask = np.empty(min(n, CHUNK), dtype=np.bool_)
    for a in range(0, n, CHUNK):  # CHUNK is a multiple of 8: every chunk starts on a byte
        m = np.greater_equal(flat[a : a + CHUNK], 0, out=mask[: min(CHUNK, n - a)])
        out[a // 8 : a // 8 + -(-m.shape[0] // 8)] = np.packbits(m)
    return out


def unpack_range(bits: np.ndarray, a: int, b: int, device=None) -> torch.Tensor:
    """uint8 0/1 ``[b - a]`` on ``device``: bits ``a .. b - 1`` of packed ``bits`` (numpy's unpackbits for the CPU;
    for another device the bytes are copied there and unpacked by shifts)."""
    lo, hi = a // 8, -(-b // 8)
    if torch.device(device or "cpu").type == "cpu" and jit.HOST_KERNELS:
        return torch.from_numpy(np.unpackbits(bits[lo:hi])[a - 8 * lo : b - 8 * lo])
    chunk = torch.from_numpy(bits[lo:hi]).to(device)
    shifts = torch.arange(7, -1, -1, device=device, dtype=torch.uint8)
    return ((chunk[:, None] >> shifts) & 1).reshape(-1)[a - 8 * lo : b - 8 * lo]


def count_ones(bits: np.ndarray, a: int, b: int) -> int:
    """How many of bits ``a .. b - 1`` of packed ``bits`` are 1 (a popcount table over the whole bytes, the two
    partial bytes unpacked)."""
    if b <= a:
        return 0
    lo, hi = -(-a // 8), b // 8  # whole bytes inside [a, b)
    if lo >= hi:
        return int(unpack_range(bits, a, b).sum())
    return int(_POPCOUNT[bits[lo:hi]].sum()) + int(unpack_range(bits, a, 8 * lo).sum()) + int(unpack_range(bits, 8 * hi, b).sum())


__all__ = ["pack_bits", "pack_nonnegative", "unpack_range", "count_ones"]
