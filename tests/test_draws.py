"""The quantizers' counter-based draws (methods/compressors/draws.py): the same numbers from the compiled kernels,
from torch on any device and from SplitMix64's definition; and the fused CPU kernels send what the torch path does."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

from flarebench import jit
from flarebench.flat import Layout
from flarebench.methods.compressors import draws
from flarebench.methods.registry import PartContext, RoundContext, part_class

MASK = (1 << 64) - 1


def splitmix64(key: int, i: int) -> int:
    """The definition (Python integers): SplitMix64's output function at Weyl-sequence step i + 1 from ``key``."""
    z = (key + (i + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


@numba.njit
def compiled(key, start, stop):
    u = np.empty(stop - start, dtype=np.float32)
    z = np.empty(stop - start, dtype=np.uint64)
    for i in range(start, stop):
        u[i - start] = draws.uniform(key, i)
        z[i - start] = draws.mix(key, i)
    return u, z


@pytest.mark.parametrize("key", [0, 1, 2**62 + 12345, 2**63 - 1])
def test_compiled_torch_and_the_definition_agree(key):
    start, stop = 2**31 - 50, 2**31 + 50  # entry indices past int32
    u, z = compiled(np.uint64(key), start, stop)
    want = [splitmix64(key, i) for i in range(start, stop)]
    assert z.tolist() == want
    assert u.tolist() == [(w >> 40) * 2.0**-24 for w in want]
    assert torch.equal(draws.torch_uniforms(key, start, stop, "cpu"), torch.from_numpy(u))
    assert draws.torch_bits(key, start, stop, "cpu", 41).tolist() == [w >> 41 for w in want]


def test_uniforms_look_uniform_and_independent_across_clients():
    """1M draws of one key: mean, variance and 16-bin counts of a uniform (chi-square, 15 dof, p ~ 1e-6 cut); two
    consecutive keys' draws at the same entries are uncorrelated."""
    u = draws.torch_uniforms(7, 0, 1 << 20, "cpu").double()
    assert abs(u.mean() - 0.5) < 5 * (1 / 12 / u.numel()) ** 0.5
    assert abs(u.var() - 1 / 12) < 1e-3
    counts = torch.bincount((u * 16).long(), minlength=16).double()
    chi2 = float(((counts - u.numel() / 16) ** 2 / (u.numel() / 16)).sum())
    assert chi2 < 50, chi2
    w = draws.torch_uniforms(8, 0, 1 << 20, "cpu").double()
    assert abs(float(torch.corrcoef(torch.stack([u, w]))[0, 1])) < 5 / u.numel() ** 0.5


@pytest.mark.parametrize("name,params", [("terngrad", {}), ("terngrad", {"clip": 2.5}), ("qsgd", {}),
                                         ("qsgd", {"norm": "max", "levels": 1, "bucket": 7}),
                                         ("qsgd", {"levels": 1000, "bucket": 64}), ("natural", {})])
def test_fused_kernels_send_the_torch_paths_bytes(name, params):
    """The CPU's compiled pass and the torch path (a GPU's) give the same message and reconstruction, on ordinary
    entries, tiny ones (subnormal norms: the division path), zeros, infinities, NaN of either sign and an empty
    tensor."""
    from flarebench.methods.registry import resolve_params

    layout = Layout.from_shapes([(7, 5), (3,), (0,), (4000,), (6, 2, 3), (300, 30)])  # (0,): an empty tensor
    comp = part_class("compressor", name)(PartContext(layout, 3, seed=0), **resolve_params("compressor", name, params))
    v = torch.randn(3, layout.num_params, generator=torch.Generator().manual_seed(0))
    v[1] *= 1e-40
    v[2, :35] = 0.0
    negative_nan = torch.tensor([-0x400000], dtype=torch.int32).view(torch.float32)  # 0xFFC00000: what 0/0 gives on x86
    v[2, 100:105] = torch.tensor([float("inf"), -float("inf"), float("nan"), float(negative_nan), 3.0])
    ctx = RoundContext(3, [1, 4, 9], seed=7)
    sent = {}
    for host in (True, False):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(jit, "HOST_KERNELS", host)
            data = [comp.encode(p) for p in comp.compress(v, ctx)]
            sent[host] = data, [comp.decompress(comp.decode(d)) for d in data]
    assert sent[True][0] == sent[False][0]
    assert all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(sent[True][1], sent[False][1]))  # NaN too


def test_terngrad_clip_past_float32_range_does_not_overflow():
    """c sigma above float32's largest value (huge entries, or a huge c): no clip, no overflow error."""
    from flarebench.methods.registry import resolve_params

    layout = Layout.from_shapes([(2,)])
    for clip, v in ((2.5, [3e38, -3e38]), (1e30, [1e10, -1e10])):
        comp = part_class("compressor", "terngrad")(PartContext(layout, 1), **resolve_params("compressor", "terngrad",
                                                                                               {"clip": clip}))
        (p,) = comp.compress(torch.tensor([v]), RoundContext(0, [0], seed=1))
        assert p.scales.tolist() == [pytest.approx(abs(v[0]), rel=1e-6)]
