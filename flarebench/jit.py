"""Compiled CPU kernels: numba's ``njit`` with the options flarebench uses everywhere.

numba (BSD-2) compiles the few loops that numpy and torch cannot express as whole-array operations
without several passes over the data (the rANS coder, the quantizers' fused draw + rounding): on a CPU one
pass over a 14.7M-entry update costs 10-30 ms in torch, so a loop that would take five passes is written
once and compiled. Kernels are cached on disk (``cache=True``: compiled once per machine, not per process)
and release the GIL.
"""

from __future__ import annotations

import numba
import torch

HOST_KERNELS = True  # False: the device (torch) path on the CPU too (tests/test_host_bytes.py counts that path there)


def on_host(x: torch.Tensor) -> bool:
    """Whether work on ``x`` runs in numpy / compiled kernels: on the CPU (the host is the device there) they are
    faster than torch's element-wise passes; on another device the work stays there (torch)."""
    return x.device.type == "cpu" and HOST_KERNELS


def njit(fn):
    """``numba.njit(cache=True, nogil=True)``: a compiled, cached, GIL-free CPU kernel (no fastmath: IEEE results,
    the same as torch's element-wise float32 operations)."""
    return numba.njit(cache=True, nogil=True)(fn)


__all__ = ["njit", "on_host", "HOST_KERNELS"]
