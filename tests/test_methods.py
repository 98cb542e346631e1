"""Method parts in isolation: top-k/random-k, the EF invariant, FLARE's regularizer by hand."""

import math

import pytest
import torch

from flarebench.engine.seeds import derive
from flarebench.flat import Layout, Segment
from flarebench.methods.compressors import tensor_k
from flarebench.methods.compressors.identity import Identity
from flarebench.methods.compressors.randk import RandK
from flarebench.methods.compressors.topk import TopK
from flarebench.methods.memory import ResidualMemory
from flarebench.methods.registry import PartContext, RoundContext
from flarebench.methods.regularizers import FlareRegularizer, ProxRegularizer, percentile_mask, tau_schedule


def layout_of(*sizes):
    return Layout.from_shapes(sizes)


def ctx_of(layout, density=1.0, clients=1):
    return PartContext(layout, clients, sparsity=1.0 - density)


def test_tensor_k_rules():
    assert tensor_k(582_026 - 57, 0.001) == round(0.001 * (582_026 - 57))
    assert tensor_k(10, 0.001) == 1  # at least one entry per tensor
    assert tensor_k(800, 0.001) == 1
    assert tensor_k(524_288, 0.00001) == 5
    assert tensor_k(524_288, 0.00001, "reference") == 6  # round(n R) + 1
    assert tensor_k(10, 0.5, "reference") == 6
    assert tensor_k(3, 0.99, "reference") == 3  # capped at n


def test_topk_keeps_largest_per_tensor():
    layout = layout_of(6, 4)
    v = torch.tensor([[0.1, -5.0, 0.3, 2.0, -0.2, 0.0, 1.0, -3.0, 0.5, 0.2]])
    comp = TopK(ctx_of(layout, 2 / 6), rounding="round")
    assert comp.counts == (2, 1)
    (msg,) = comp.compress(v, RoundContext(0, [0]))
    assert msg.split_indices()[0].tolist() == [1, 3] and msg.split_indices()[1].tolist() == [1]
    dense = comp.decompress(msg)
    assert dense.tolist() == [0, -5.0, 0, 2.0, 0, 0, 0, -3.0, 0, 0]


def test_ef_invariant_sent_plus_residual_equals_update_plus_old_residual():
    torch.manual_seed(0)
    layout = layout_of(50, 7, 300)
    mem = ResidualMemory(ctx_of(layout))
    acc = torch.zeros(5, layout.num_params)  # the backend's store of every client's state
    comp = TopK(ctx_of(layout, 0.1))
    for r in range(4):
        ids = [0, 2, 3] if r % 2 else [1, 2, 4]
        d = torch.randn(len(ids), layout.num_params)
        state = {"acc": acc[ids].clone()}
        old = state["acc"].clone()
        v = mem.compensate(d, state, None)
        msgs = comp.compress(v, RoundContext(r, ids))
        sent = torch.stack([comp.decompress(comp.decode(comp.encode(m))) for m in msgs])
        mem.update(v, sent, state, None)
        acc[ids] = state["acc"]
        torch.testing.assert_close(sent + mem.residual(state), d + old, rtol=0, atol=0)
        assert int((sent != 0).sum()) == len(ids) * sum(comp.counts)


def test_randk_server_rebuilds_exact_update_from_values_and_seed():
    layout = layout_of(1000, 10, 257)
    comp = RandK(ctx_of(layout, 0.05))
    v = torch.randn(2, layout.num_params)
    ctx = RoundContext(3, [5, 9], seed=123)
    msgs = comp.compress(v, ctx)
    server = RandK(ctx_of(layout, 0.05))  # a separate object: shares only the config
    for row, k, msg in zip(v, range(2), msgs):
        data = comp.encode(msg)
        assert msg.indices is None and msg.seed == ctx.seed_for(k, "randk")  # positions never go on the wire
        got = server.decompress(server.decode(data))
        expected = torch.zeros_like(row)
        for t, (seg, kt) in enumerate(zip(layout.segments, comp.counts)):  # tensor t: randperm of its own generator
            g = torch.Generator().manual_seed(derive(msg.seed, "randk", t))
            pos = torch.randperm(seg.numel, generator=g)[:kt] + seg.start
            expected[pos] = row[pos]
        assert torch.equal(got, expected)
        # values + seed only: header + 8-byte seed + 4 bytes per value
        assert len(data) < 4 * msg.nnz + 8 + 32


def test_identity_is_dense():
    layout = layout_of(5, 3)
    (msg,) = Identity(ctx_of(layout)).compress(torch.arange(8.0).view(1, 8), RoundContext(0, [0]))
    assert msg.is_dense and msg.nnz == 8


def test_percentile_mask_nearest():
    layout = layout_of(5, 4)
    acc = torch.tensor([[0.5, -3.0, 1.0, 0.1, 2.0, 4.0, -4.0, 1.0, 0.0]])
    # tensor 0: |acc| sorted = [0.1, 0.5, 1.0, 2.0, 3.0]; nearest 50th pct: index round(0.5*4)=2 -> 1.0
    # tensor 1: sorted = [0.0, 1.0, 4.0, 4.0]; index round(0.5*3)=round(1.5)=2 -> 4.0; nothing is > 4.0
    mask = percentile_mask(acc, layout, 50)
    assert mask.tolist() == [[False, True, False, False, True, False, False, False, False]]


def test_flare_regularizer_hand_computed():
    layout = layout_of(5, 4)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 0.0, 0.0, 0.0])
    acc = torch.tensor([[0.5, -3.0, 1.0, 0.1, 2.0, 4.0, -4.0, 1.0, 0.0]])
    reg = FlareRegularizer(ctx_of(layout), tau0=0.05, decay=1.1, steps=1, percentile=50)
    anchor = reg.anchor(w, acc, round_idx=2, num_clients=1)
    assert anchor.tau == pytest.approx(0.05 / 1.1**3)  # tau0 / c^(r+1), r counted from 0
    assert anchor.steps == 1 and anchor.active(0) and not anchor.active(1)
    theta = torch.tensor([1.5, 0.0, 3.0, 4.0, 6.0, 1.0, 1.0, 1.0, 1.0])
    # masked entries: index 1 (target 2 - 3 = -1, theta 0 -> |1|) and index 4 (target 7, theta 6 -> |1|)
    expected = 0.05 / 1.1**3 * (1.0 + 1.0)
    got = reg.penalty(theta, anchor.target[0], anchor.weight[0], anchor.tau)
    assert got.item() == pytest.approx(expected)


def test_prox_regularizer_and_schedule():
    w = torch.tensor([1.0, -1.0])
    reg = ProxRegularizer(ctx_of(layout_of(2)), tau0=0.5, decay=2.0)
    a = reg.anchor(w, None, round_idx=0, num_clients=3)
    assert a.tau == 0.25 and a.steps is None and a.target.shape == (3, 2)
    assert reg.penalty(torch.tensor([2.0, 1.0]), a.target[0], None, a.tau).item() == pytest.approx(0.25 * (1 + 4))
    assert tau_schedule(1.0, 1.0, 100) == 1.0
    assert math.isclose(tau_schedule(0.05, 1.01, 0), 0.05 / 1.01)
    assert tau_schedule(0.05, 1.1, 7446) > 0 and tau_schedule(0.05, 1.1, 7447) == 0.0  # 1.1^7448 overflows: the limit
