"""The compressors' fast paths give exactly what the plain computations they replace give.

randk's O(k) draw == torch.randperm's prefix; count-sketch's median network == torch.median, its
chunked unsketch and prefiltered heavy hitters == the whole-vector ones (ties to the lowest positions);
the sign family's one-pass reconstruction == +-1 times the scales.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flarebench.engine.seeds import randperm_prefix
from flarebench.flat import Layout
from flarebench.methods.compressors import count_sketch
from flarebench.methods.compressors.count_sketch import CountSketch, median_of
from flarebench import jit
from flarebench.methods.compressors.topk import CHUNK, below, positions_above
from flarebench.methods.compressors.base import contribution_into
from flarebench.methods.registry import REGISTRY, PartContext, RoundContext, load_parts, part_class
from rounds import one_round

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.integers(1, 300_000), st.integers(0, 2**63 - 1), st.data())
def test_randperm_prefix_is_torch_randperm(n, seed, data):
    k = data.draw(st.sampled_from([1, n, min(n, 3), max(1, n // 100), max(1, int(n**0.5))]))
    want = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]
    assert torch.equal(randperm_prefix(seed, n, k), want)


SPECIAL = [0.0, -0.0, 1.5, -1.5, float("nan"), float("inf"), -float("inf"), 1e-45, -1e-45, 3.4e38]


@FAST
@given(st.sampled_from([0, 1, 15, 16, 17, 5000, CHUNK + 37]), st.sampled_from([-1.0, 0.0, 1e-45, 1.5, 3.0, float("inf"), float("nan")]),
       st.booleans(), st.integers(0, 2**31))
def test_positions_above_is_nonzero_of_the_comparison(n, floor, nan, seed):
    """Across chunk and group edges, with NaN, infinities, signed zeros, subnormals and ties at the floor."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * 2
    if n:
        where = torch.randint(n, (min(n, 40),), generator=g)
        x[where] = torch.tensor(SPECIAL + [floor] * 10 + [-floor] * 10 + SPECIAL)[: where.numel()]
    want = torch.nonzero((x.abs() > floor) | (torch.isnan(x) & nan)).flatten()
    for numpy in (True, False):  # the CPU's numpy scan and the device's torch scan
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(jit, "HOST_KERNELS", numpy)
            assert torch.equal(positions_above(x, floor, nan=nan), want)
            assert torch.equal(positions_above(x, torch.tensor([floor]), nan=nan), want)  # a [1] threshold, as topk's
            if n and floor == floor:
                t = torch.tensor(floor)
                assert torch.equal(positions_above(x, below(t)), torch.nonzero(x.abs() >= t).flatten())


@pytest.mark.parametrize("rows", range(1, 10))
def test_median_of_is_torch_median(rows):
    """Every order of small integers (ties everywhere) for 3 and 5 rows, random values for the others."""
    if rows in (3, 5):
        vals = torch.tensor(list(itertools.product(range(4), repeat=rows)), dtype=torch.float32).T  # [rows, 4^rows]
    else:
        vals = torch.randn(rows, 5000, generator=torch.Generator().manual_seed(rows)).round(decimals=1)
    assert torch.equal(median_of(list(vals)), vals.median(dim=0).values)


def reference_heavy_hitters(cs: CountSketch, table: torch.Tensor, k: int):
    """The whole-vector definition: U(S) by torch.median over rows, top-k of |U(S)|, ties to the lowest positions."""
    codes = cs.codes().long()
    h, s = codes >> 1, 1.0 - 2.0 * (codes & 1).float()
    est = (s * table.gather(1, h)).median(dim=0).values
    mag = est.abs()
    kth = mag.topk(k).values.min()
    above = torch.nonzero(mag > kth).flatten()
    tied = torch.nonzero(mag == kth).flatten()[: k - above.numel()]
    idx = torch.cat([above, tied]).sort().values
    return est, idx


@pytest.mark.parametrize("kind", ["sketch", "ties"])
@pytest.mark.parametrize("rows", [3, 4, 5])
def test_chunked_unsketch_and_heavy_hitters_match_the_definition(monkeypatch, kind, rows):
    monkeypatch.setattr(count_sketch, "CHUNK", 1000)  # several chunks and a partial last one
    layout = Layout.from_shapes([(30, 100), (10,), (2345,)])
    cs = CountSketch(PartContext(layout, 1, sparsity=0.99, seed=5), rows=rows)
    g = torch.Generator().manual_seed(rows)
    v = torch.randn(layout.num_params, generator=g) * torch.rand(layout.num_params, generator=g) ** 6
    table = cs.sketch(v)
    if kind == "ties":  # few distinct cell values: many entries share the k-th |estimate|
        table = table.sign() * (table.abs() > table.abs().median())
    est, want = reference_heavy_hitters(cs, table, cs.k)
    assert torch.equal(cs.estimate(table), est)
    idx, vals = cs.heavy_hitters(table)
    assert torch.equal(idx, want) and torch.equal(vals, est[want])


@pytest.mark.parametrize("name", ["sign", "scaled-sign", "onebit"])
def test_sign_reconstruction_is_the_scaled_signs(name):
    layout = Layout.from_shapes([(7, 5), (3,), (40,)])
    comp = part_class("compressor", name)(PartContext(layout, 1))
    v = torch.randn(1, layout.num_params, generator=torch.Generator().manual_seed(0))
    v[0, :4] = 0.0
    (p,) = comp.compress(v, RoundContext(0, [0]))
    got = comp.decompress(comp.decode(comp.encode(p)))
    pm = p.signs.float() * 2 - 1  # +1 where v >= 0
    want = []
    for block, sc in zip(comp.blocks(pm), p.scales.tolist()):
        if len(sc) == 0:  # sign: +-1
            want.append(block)
        elif len(sc) == 1:  # scaled-sign: +-scale
            want.append(block * sc[0])
        else:  # onebit: mu+ where the bit is 1, mu- where 0
            want.append(torch.where(block > 0, sc[0], sc[1]))
    assert torch.equal(got, torch.cat(want))


def compressor_names() -> list[str]:
    load_parts()
    return sorted(REGISTRY["compressor"])


@pytest.mark.parametrize("name", compressor_names())
def test_reconstruction_into_a_reused_row_is_the_fresh_one_on_both_paths(name):
    """contribution_into a row full of NaN (the last round's leftovers, say) == a fresh contribution, for every
    compressor and both clients of a round, every phase's bytes decoded as the server does; and the CPU's numpy
    scans and the device's torch ones (what a GPU runs, here on the CPU) send the same bytes and rebuild the
    same update."""
    layout = Layout.from_shapes([(7, 5), (3,), (40,), (6, 2, 3)])
    v = torch.randn(2, layout.num_params, generator=torch.Generator().manual_seed(2))
    results = []
    for numpy in (True, False):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(jit, "HOST_KERNELS", numpy)
            comp = part_class("compressor", name)(PartContext(layout, 2, sparsity=0.9, seed=1))
            _, sent, received, broadcasts = one_round(comp, v, RoundContext(0, [3, 5], seed=1))
            rows = torch.full((2, layout.num_params), float("nan"))
            for k in range(2):
                fresh = comp.contribution(received[k], broadcasts)
                got = contribution_into(comp, received[k], broadcasts, rows[k])
                assert got.data_ptr() == rows[k].data_ptr()  # written into the row, not beside it
                assert torch.equal(rows[k], fresh)
            results.append((sent, rows))
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])
