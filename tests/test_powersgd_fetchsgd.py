"""PowerSGD (two phases, warm start, error feedback) and FetchSGD (count sketch, server-side momentum and error).

Hand-checkable math against numpy, the seam's bit counts, the EF invariant, sketch linearity and
heavy-hitter recovery, bytes round trips (hypothesis), fuzzed decoding, and short learning runs.
"""

from __future__ import annotations

import functools
import math
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import cli

from flarebench.errors import ConfigError, DecodeError
from flarebench.flat import Layout, Segment
from flarebench.methods.aggregation import Aggregator, FetchSGDAggregator
from flarebench.methods.compressors.count_sketch import CountSketch
from flarebench.methods.compressors.powersgd import Factors, PowerSGD, orthonormalise
from flarebench.methods.memory import ResidualMemory
from flarebench.methods.registry import PartContext, RoundContext

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def layout_of(*shapes) -> Layout:
    return Layout.from_shapes(shapes)


def ctx_of(layout, density=1.0, clients=4, seed=0) -> PartContext:
    return PartContext(layout, clients, sparsity=1.0 - density, seed=seed)


def enc_dec(comp, payload):
    return comp.decode(comp.encode(payload))


def powersgd_round(comp, v, weights, ctx, through_bytes=True):
    """One PowerSGD round on the compressor alone: -> (b0, b1, payloads[k] = [P_k, Q_k], update [P])."""
    wire = (lambda p: enc_dec(comp, p)) if through_bytes else (lambda p: p)
    b0 = comp.broadcast(0, [[] for _ in range(v.shape[0])], weights, ctx)
    b0 = None if b0 is None else wire(b0)
    ps = [wire(p) for p in comp.compress_phase(0, v, [b0], ctx)]
    b1 = wire(comp.broadcast(1, [[p] for p in ps], weights, ctx))
    qs = [wire(q) for q in comp.compress_phase(1, v, [b0, b1], ctx)]
    payloads = [[p, q] for p, q in zip(ps, qs)]
    update = Aggregator(ctx_of(comp.layout)).aggregate_payloads(comp, payloads, [b0, b1], weights, list(range(len(ps))), ctx)
    comp.end_round(payloads, [b0, b1], weights, ctx)
    return b0, b1, payloads, update


# ====================================================================== PowerSGD
def test_orthonormalise_is_gram_schmidt():
    p = torch.tensor([[3.0, 1.0], [4.0, 2.0], [0.0, 5.0]])
    out = orthonormalise(p)
    c0 = np.array([3, 4, 0]) / 5
    rest = np.array([1, 2, 5.0]) - (np.array([1, 2, 5.0]) @ c0) * c0
    np.testing.assert_allclose(out[:, 0], c0, rtol=1e-6)
    np.testing.assert_allclose(out[:, 1], rest / np.linalg.norm(rest), rtol=1e-5)
    assert torch.allclose(out.T @ out, torch.eye(2), atol=1e-6)
    assert torch.equal(orthonormalise(torch.zeros(3, 1)), torch.zeros(3, 1))  # a zero column stays zero (eps)


def test_powersgd_rank1_hand_example():
    """Two clients, one 3x2 matrix and a bias, rank 1, warm-start Q = [1, 1]: every number by hand."""
    layout = layout_of((3, 2), (3,))
    comp = PowerSGD(ctx_of(layout, clients=2), rank=1)
    comp.q = torch.tensor([1.0, 1.0])  # the server's warm start
    m1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    m2 = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    v = torch.stack([torch.cat([m1.reshape(-1), torch.tensor([1.0, 2.0, 3.0])]),
                     torch.cat([m2.reshape(-1), torch.tensor([3.0, 2.0, 1.0])])])
    weights = torch.tensor([1.0, 3.0])
    b0, b1, payloads, update = powersgd_round(comp, v, weights, RoundContext(1, [0, 1]))
    assert b0 == Factors("Q-bcast", torch.tensor([1.0, 1.0]))
    # phase 0: P_k = M_k q, then the vectors
    assert payloads[0][0].values.tolist() == [1.0, 1.0, 2.0, 1.0, 2.0, 3.0]
    assert payloads[1][0].values.tolist() == [2.0, 0.0, 2.0, 3.0, 2.0, 1.0]
    # P-bar = (1 [1,1,2] + 3 [2,0,2]) / 4 = [1.75, 0.25, 2]; P-hat = P-bar / ||P-bar||
    p_bar = np.array([1.75, 0.25, 2.0])
    p_hat = p_bar / (np.linalg.norm(p_bar) + 1e-8)
    np.testing.assert_allclose(b1.values.numpy(), p_hat, rtol=1e-6)
    # phase 1: Q_k = M_k^T P-hat
    q1, q2 = m1.numpy().T @ p_hat, m2.numpy().T @ p_hat
    np.testing.assert_allclose(payloads[0][1].values.numpy(), q1, rtol=1e-6)
    np.testing.assert_allclose(payloads[1][1].values.numpy(), q2, rtol=1e-6)
    # update: P-hat (weighted mean Q)^T, and the weighted mean of the vectors
    q_bar = (1 * q1 + 3 * q2) / 4
    expected = np.concatenate([np.outer(p_hat, q_bar).reshape(-1), [2.5, 2.0, 1.5]])
    np.testing.assert_allclose(update.numpy(), expected, rtol=1e-5)
    # the server keeps the weighted mean Q for the next round's warm start
    np.testing.assert_allclose(comp.q.numpy(), q_bar, rtol=1e-6)
    assert comp.broadcast(0, [], weights, RoundContext(2, [0, 1])) == Factors("Q-bcast", comp.q)
    # a client's contribution: P-hat Q_k^T and its own vectors
    c1 = comp.contribution(payloads[0], [b0, b1])
    np.testing.assert_allclose(c1.numpy(), np.concatenate([np.outer(p_hat, q1).reshape(-1), [1, 2, 3]]), rtol=1e-5)


def test_powersgd_shapes_conv_as_out_by_rest_and_rank_capped():
    layout = layout_of((4, 3, 2, 2), (4,), (2, 5), (1, 7), ())
    comp = PowerSGD(ctx_of(layout), rank=3)
    assert [(x.n, x.m, x.r) for x in comp.matrices] == [(4, 12, 3), (2, 5, 2), (1, 7, 1)]
    assert comp.v_size == 5  # the bias [4] and the scalar
    assert comp.sizes == {"P": 4 * 3 + 2 * 2 + 1 + 5, "Q": 12 * 3 + 5 * 2 + 7, "Q-bcast": 12 * 3 + 5 * 2 + 7, "P-hat": 17}


def test_powersgd_round0_q_is_seeded_and_shared_nothing_sent():
    layout = layout_of((6, 5), (6,))
    comp = PowerSGD(ctx_of(layout, seed=7), rank=2)
    ctx = RoundContext(0, [0, 1, 2], seed=7)
    assert comp.broadcast(0, [[], [], []], torch.ones(3), ctx) is None  # nothing to send in round 0
    q_client = comp.seeded_q(RoundContext(0, [2], seed=7))  # another client, other ids: the same Q
    assert torch.equal(q_client, comp.seeded_q(ctx))
    assert not torch.equal(q_client, comp.seeded_q(RoundContext(1, [2], seed=7)))
    v = torch.randn(3, layout.num_params)
    (p,) = comp.compress_phase(0, v[:1], [None], ctx)
    expected = v[0, :30].reshape(6, 5) @ q_client.reshape(5, 2)
    assert torch.allclose(p.values[:12], expected.reshape(-1), atol=1e-6)
    # warm_start = false: every round a fresh seeded Q, never a broadcast
    cold = PowerSGD(ctx_of(layout, seed=7), rank=2, warm_start=False)
    powersgd_round(cold, v, torch.ones(3), ctx)
    assert cold.q is None and cold.broadcast(0, [], torch.ones(3), RoundContext(1, [0], seed=7)) is None


def test_powersgd_warm_start_state_round_trip_and_dead_column_refill():
    layout = layout_of((5, 4))
    comp = PowerSGD(ctx_of(layout), rank=2)
    v = torch.randn(2, 20)
    powersgd_round(comp, v, torch.tensor([1.0, 2.0]), RoundContext(0, [0, 1]))
    other = PowerSGD(ctx_of(layout), rank=2)
    other.load_state_dict(comp.state_dict())
    assert torch.equal(other.q, comp.q)
    # a mean Q with a zero column (all-zero updates) takes that column from the next round's seeded Q
    zero = torch.zeros(2, 20)
    _, _, payloads, update = powersgd_round(comp, zero, torch.ones(2), RoundContext(1, [0, 1]))
    assert torch.equal(update, torch.zeros(20))
    assert torch.equal(comp.q, comp.seeded_q(RoundContext(2, [0, 1])))


def test_powersgd_seam_bits_ef_invariant_and_linear_aggregate(tiny_config):
    """Through the engine (partial participation): bits of every transfer, residual = M_k - P_hat Q_k^T,
    update = P_hat (weighted mean Q)^T, warm start = last round's weighted mean Q."""
    from flarebench.runner import setup

    s = setup(tiny_config(method="powersgd", clients_per_round=3))
    fed, layout = s.federation, s.layout
    comp, server, clients = fed.parts.compressor, fed.server, fed.clients
    P = layout.num_params
    assert (comp.p_size, comp.q_size, comp.v_size) == (100 * 2 + 10 * 2, 784 * 2 + 100 * 2, 110)
    last_q = None
    for r in range(2):
        ids = server.sample_clients(r)
        K = len(ids)
        b0 = server.begin(r, ids)
        states = fed.states.gather(ids)
        rnd = clients.begin(server.w, r, ids, states, b0)
        b1 = server.receive(0, ids, rnd.uplink[0])
        assert server.receive(1, ids, clients.respond(rnd, 1, b1)) is None
        payloads = [server.round.payloads[i] for i in ids]
        clients.end(rnd, states)
        fed.states.scatter(ids, states)
        stats = server.finish()
        weights = fed.client_sizes[ids]
        if r == 0:
            assert b0 is None
        else:  # the warm start: last round's weighted mean Q, sent to each participant
            assert torch.equal(comp.decode(b0).values, last_q)
        p_hat = comp.decode(b1).values
        # bits: phase 0 (P + vectors) + phase 1 (Q) up; dense model + P-hat (+ Q) down, per participant
        assert stats.uplink_bits == K * (8 * (2 + 4 * (comp.p_size + comp.v_size)) + 8 * (2 + 4 * comp.q_size))
        bcast = 8 * (2 + 4 * comp.p_size) + (0 if r == 0 else 8 * (2 + 4 * comp.q_size))
        assert stats.downlink_bits == K * (32 * P + bcast)
        assert stats.uplink_bound_bits == K * 32 * (comp.p_size + comp.v_size + comp.q_size)
        # EF: residual = v_k - P_hat Q_k^T on matrices, 0 on vectors (the vectors travel exactly)
        ph = comp._split(p_hat, "P")
        for k in range(K):
            q_k = comp._split(payloads[k][1].values, "Q")
            sent = torch.zeros(P)
            for x, pt, qt in zip(comp.matrices, ph, q_k):
                sent[x.start : x.start + x.n * x.m] = (pt @ qt.T).reshape(-1)
            for start, n in comp.vectors:
                sent[start : start + n] = rnd.v[k, start : start + n]
            assert torch.allclose(states["memory.acc"][k], rnd.v[k] - sent, atol=1e-6)
            assert torch.allclose(states["memory.acc"][k] + sent, rnd.v[k], atol=1e-6)
        # the update: P_hat (weighted mean Q)^T per matrix, weighted mean of the vectors
        w = weights / weights.sum()
        q_bar = sum(wk * p[1].values for wk, p in zip(w, payloads))
        expected = torch.zeros(P)
        for x, pt, qt in zip(comp.matrices, ph, comp._split(q_bar, "Q")):
            expected[x.start : x.start + x.n * x.m] = (pt @ qt.T).reshape(-1)
        for start, n in comp.vectors:
            expected[start : start + n] = w @ rnd.v[:, start : start + n]
        assert torch.allclose(stats.update, expected, atol=1e-6)
        assert torch.allclose(comp.q, q_bar)
        last_q = comp.q.clone()


def test_powersgd_with_full_participation_follows_the_reference_trajectory():
    """Ours: e_k = M_k - P_hat Q_k^T; the reference code: e_k = M_k - P_hat Qbar^T. With every client in every
    round the updates are the same (numpy re-implementation of the reference's RankKReducer, weighted)."""
    torch.manual_seed(0)
    layout = layout_of((6, 5), (6,), (4, 3, 2))
    P, K, R = layout.num_params, 3, 5
    comp = PowerSGD(ctx_of(layout, clients=K), rank=2)
    memory = ResidualMemory(ctx_of(layout, clients=K))
    state = {"acc": torch.zeros(K, P)}
    weights = torch.tensor([1.0, 2.0, 5.0])
    w = (weights / weights.sum()).numpy().astype(np.float64)
    ref_err = np.zeros((K, P))
    ref_q = None
    for r in range(R):
        d = torch.randn(K, P)
        ctx = RoundContext(r, list(range(K)))
        v = memory.compensate(d, state, ctx)
        b0, b1, payloads, update = powersgd_round(comp, v, weights, ctx)
        memory.update(v, torch.stack([comp.contribution(p, [b0, b1]) for p in payloads]), state, ctx)
        # the reference
        m = d.double().numpy() + ref_err
        out = np.zeros(P)
        qs = comp._split(torch.from_numpy(ref_q), "Q") if ref_q is not None else comp._split(comp.seeded_q(ctx).double(), "Q")
        new_q = []
        for x, q in zip(comp.matrices, qs):
            mk = m[:, x.start : x.start + x.n * x.m].reshape(K, x.n, x.m)
            p_bar = np.einsum("k,knm,mr->nr", w, mk, q.numpy())
            p_hat = orthonormalise(torch.from_numpy(p_bar)).numpy()
            q_bar = np.einsum("k,knm,nr->mr", w, mk, p_hat)
            approx = p_hat @ q_bar.T
            out[x.start : x.start + x.n * x.m] = approx.reshape(-1)
            ref_err[:, x.start : x.start + x.n * x.m] = (mk - approx).reshape(K, -1)
            new_q.append(q_bar.reshape(-1))
        for start, n in comp.vectors:
            out[start : start + n] = w @ m[:, start : start + n]
        ref_q = np.concatenate(new_q)
        np.testing.assert_allclose(update.numpy(), out, rtol=1e-4, atol=1e-5)
    # the per-client residuals differ, their weighted sums do not
    assert not np.allclose(state["acc"].numpy(), ref_err, atol=1e-3)
    np.testing.assert_allclose(w @ state["acc"].double().numpy(), w @ ref_err, atol=1e-4)


shapes = st.lists(
    st.one_of(st.tuples(st.integers(1, 9)), st.tuples(st.integers(1, 9), st.integers(1, 9)),
              st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)), st.just(())),
    min_size=1, max_size=5,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes=shapes, rank=st.integers(1, 4), clients=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_powersgd_bytes_round_trip(shapes, rank, clients, seed):
    layout = layout_of(*shapes)
    comp = PowerSGD(ctx_of(layout, clients=clients), rank=rank)
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(clients, layout.num_params, generator=g)
    weights = torch.rand(clients, generator=g) + 0.1
    for r in range(2):  # round 1 has a warm-start Q broadcast
        ctx = RoundContext(r, list(range(clients)))
        b0, b1, payloads, update = powersgd_round(comp, v, weights, ctx, through_bytes=False)
        for msg in [b1, *(p for pair in payloads for p in pair)] + ([b0] if b0 is not None else []):
            data = comp.encode(msg)
            back = comp.decode(data)
            assert back == msg
            assert 8 * len(data) == 16 + 32 * comp.sizes[msg.kind] == 16 + comp.bound_bits(msg)
            assert comp.bound_bits(msg) <= 8 * len(data) and comp.nnz(msg) == comp.sizes[msg.kind]
        for pair in payloads:
            decoded = [comp.decode(comp.encode(p)) for p in pair]
            assert torch.equal(comp.contribution(decoded, [b0, enc_dec(comp, b1)]), comp.contribution(pair, [b0, b1]))


@functools.lru_cache(maxsize=1)
def valid_powersgd_messages():
    layout = layout_of((4, 3), (4,), (2, 2, 1, 1))
    comp = PowerSGD(ctx_of(layout, clients=2), rank=2)
    b0, b1, payloads, _ = powersgd_round(comp, torch.randn(2, layout.num_params), torch.ones(2), RoundContext(1, [0, 1]))
    comp.q = None
    return comp, [comp.encode(m) for m in (b1, *payloads[0], *payloads[1])]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120), which=st.integers(0, 4), cut=st.integers(0, 200), flips=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 255)), max_size=4))
def test_powersgd_decode_fuzz_raises_decode_error_only(data, which, cut, flips):
    comp, valid = valid_powersgd_messages()
    candidates = [data, b"\xfc" + data, b"\xfc\x50" + data, valid[which][:cut]]
    mutated = bytearray(valid[which])
    for at, x in flips:
        mutated[at % len(mutated)] ^= x
    candidates.append(bytes(mutated))
    for blob in candidates:
        try:
            msg = comp.decode(blob)
        except DecodeError:
            continue
        assert isinstance(msg, Factors) and msg.values.numel() == comp.sizes[msg.kind]


def test_decoders_of_huge_layouts_check_lengths_before_allocating():
    """A short message for a model of 4e8 entries: DecodeError, and no buffer sized by the model."""
    layout = layout_of((20000, 20000), (20000,))
    comp = PowerSGD(ctx_of(layout), rank=4)
    sketch = CountSketch(ctx_of(layout, density=0.01), rows=5)  # hashes are drawn lazily: not by decode
    tracemalloc.start()
    try:
        for blob in (b"\xfc\x50" + b"\x00" * 64, b"\xfc\x53" + b"\x01" * 64):
            with pytest.raises(DecodeError):
                comp.decode(blob)
        with pytest.raises(DecodeError):
            sketch.decode(b"\xfc\x43" + b"\x00" * 64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak


def test_powersgd_learns_tiny_setting(tiny_config):
    """mlp on 4 clients x 200 samples, 25 rounds at the defaults (rank 2, residual memory)."""
    from flarebench import run

    result = run(tiny_config(method="powersgd", rounds=25, eval_every=25))
    assert result.final_accuracy >= 0.75, result.final_accuracy


# ====================================================================== count sketch / FetchSGD
def sketch_of(P=1000, density=0.01, rows=5, columns_per_k=10.0, seed=0, columns_per_entry=0.0) -> CountSketch:
    """A count sketch sized from k alone unless ``columns_per_entry`` says otherwise."""
    return CountSketch(ctx_of(layout_of((P,)), density=density, seed=seed), rows=rows, columns_per_k=columns_per_k,
                       columns_per_entry=columns_per_entry)


def sketch_matrix(cs: CountSketch) -> np.ndarray:
    """The sketch as the explicit linear map A [rows * columns, P] (float64), from the shared hashes."""
    h, s = cs.buckets_signs()
    A = np.zeros((cs.rows, cs.columns, cs.num_params))
    for j in range(cs.rows):
        A[j, h[j].numpy(), np.arange(cs.num_params)] = s[j].numpy()
    return A.reshape(cs.rows * cs.columns, cs.num_params)


def test_count_sketch_sizes_and_hand_example():
    cs = sketch_of(P=1000, density=0.01)
    assert (cs.k, cs.columns, cs.rows) == (10, 100, 5)
    tiny = sketch_of(P=6, density=0.5, rows=2, columns_per_k=1.0)  # k = 3, 3 columns
    h, s = tiny.buckets_signs()
    v = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    expected = torch.zeros(2, 3)
    for j in range(2):
        for i in range(6):
            expected[j, h[j, i]] += s[j, i] * v[i]
    assert torch.equal(tiny.sketch(v), expected)
    # the hashes come from the run seed alone: a second instance (another client, the server) has the same
    assert torch.equal(sketch_of(P=6, density=0.5, rows=2, columns_per_k=1.0).codes(), tiny.codes())
    assert not torch.equal(sketch_of(P=1000, seed=1).codes(), cs.codes())


MAIN_JOB_MLP = ((100, 784), (100,), (10, 100), (10,))  # the main job's mlp on 28 x 28 images: 79,510 entries


@pytest.mark.parametrize("sparsity,k,columns", [(0.999, 80, 6123), (0.99, 795, 7950)])
def test_fetchsgd_preset_sizes_the_main_jobs_sketch(sparsity, k, columns):
    """The preset's sketch on the main job: columns = max(ceil(10 k), ceil(0.077 * 79,510) = 6,123); server momentum off."""
    from flarebench import make_config
    from flarebench.methods.presets import build_parts

    layout = layout_of(*MAIN_JOB_MLP)
    assert layout.num_params == 79510
    parts = build_parts(make_config(method="fetchsgd", sparsity=sparsity), layout)
    cs = parts.compressor
    assert (cs.rows, cs.k, cs.columns) == (5, k, columns)
    assert parts.aggregator.rho == 0.0
    assert 8 * len(cs.encode(cs.sketch(torch.ones(layout.num_params)))) == 16 + 32 * 5 * columns
    paper = build_parts(make_config(method="fetchsgd", sparsity=sparsity, params={"compressor": {"columns_per_entry": 0}}), layout)
    assert paper.compressor.columns == 10 * k  # sized from k alone


def test_count_sketch_size_limits():
    """columns_per_entry is checked when the config is made; a sketch over MAX_CELLS (or MAX_MODELS models) is refused
    by the config check and again when the part is built (library use)."""
    from flarebench import make_config
    from flarebench.methods.compressors.count_sketch import MAX_CELLS

    with pytest.raises(ConfigError, match="columns_per_entry must be >= 0"):
        make_config(method="fetchsgd", params={"compressor": {"columns_per_entry": -0.5}})
    layout = layout_of((1000,))
    CountSketch(ctx_of(layout, density=0.01), rows=4, columns_per_k=1e5)  # 4 x 1M cells: 16 MiB, within 64 MiB
    for params in ({"rows": 4, "columns_per_k": 2e6}, {"rows": 2, "columns_per_entry": MAX_CELLS / 1000.0}):
        with pytest.raises(ConfigError, match="more than 64 times the model"):
            CountSketch(ctx_of(layout, density=0.01), **params)
    big = layout_of((2**23,))  # a model large enough that a sketch within 64 models can pass MAX_CELLS
    CountSketch(ctx_of(big, density=0.01), rows=5, columns_per_k=600.0)  # 5 x 50.3M cells: under the limit
    with pytest.raises(ConfigError, match=f"over {MAX_CELLS:,} cells"):
        CountSketch(ctx_of(big, density=0.01), rows=5, columns_per_k=700.0)  # 5 x 58.7M cells


def test_count_sketch_too_large_is_one_line_before_any_write(capsys, tmp_path):
    code, out, err = cli(capsys, "run", "--method", "fetchsgd", "--rounds", "1", "--clients", "2", "--out", tmp_path / "r",
                         "--name", "big", "-p", "compressor.columns_per_entry=1e6", "-q")
    assert code == 2 and err.count("\n") == 1 and "more than 64 times the model" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "big").exists()


def test_count_sketch_is_linear():
    cs = sketch_of(P=5000, density=0.002)
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-50, 50, (5000,), generator=g).float()  # integers: float sums are exact
    b = torch.randint(-50, 50, (5000,), generator=g).float()
    assert torch.equal(cs.sketch(a) + cs.sketch(b), cs.sketch(a + b))
    assert torch.equal(cs.sketch(3 * a), 3 * cs.sketch(a))
    x, y = torch.randn(2, 5000, generator=g)
    assert torch.allclose(cs.sketch(x) + cs.sketch(y), cs.sketch(x + y), atol=1e-5)
    batch = cs.sketch(torch.stack([x, y]))
    assert torch.equal(batch[0], cs.sketch(x)) and torch.equal(batch[1], cs.sketch(y))
    np.testing.assert_allclose(cs.sketch(x).reshape(-1).numpy(), sketch_matrix(cs) @ x.double().numpy(), atol=1e-4)
    idx = torch.tensor([3, 70, 4999])
    sparse = torch.zeros(5000)
    sparse[idx] = torch.tensor([1.5, -2.0, 0.25])
    assert torch.allclose(cs.sketch_entries(idx, sparse[idx]), cs.sketch(sparse))


def test_count_sketch_recovers_heavy_hitters():
    """k heavy entries over small noise; with c = 100 k columns a light entry shares a bucket with a heavy one
    in a row with probability ~ k / c = 1%, so that happening in 3 of 5 rows (a wrong median) is ~1e-5 per entry."""
    P, k = 20000, 10
    cs = sketch_of(P=P, density=k / P, columns_per_k=100.0)  # 1000 columns, 5 rows
    g = torch.Generator().manual_seed(3)
    v = 0.01 * torch.randn(P, generator=g)
    hot = torch.randperm(P, generator=g)[:k].sort().values
    v[hot] = (5.0 + torch.rand(k, generator=g)) * torch.sign(torch.randn(k, generator=g))
    idx, vals = cs.heavy_hitters(cs.sketch(v))
    assert torch.equal(idx, hot)
    assert torch.allclose(vals, v[hot], atol=0.5)
    dense = cs.decompress(enc_dec(cs, cs.compress(v[None], RoundContext(0, [0]))[0]))
    assert torch.equal(torch.nonzero(dense).flatten(), hot) and torch.equal(dense[hot], vals)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(P=st.integers(1, 3000), density=st.floats(1e-4, 0.5), rows=st.integers(1, 6), cpk=st.floats(0.5, 20),
       clients=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_count_sketch_bytes_round_trip(P, density, rows, cpk, clients, seed):
    cs = CountSketch(ctx_of(layout_of((P,)), density=density, seed=seed % 7), rows=rows, columns_per_k=cpk)
    v = torch.randn(clients, P, generator=torch.Generator().manual_seed(seed))
    for table in cs.compress(v, RoundContext(0, list(range(clients)))):
        data = cs.encode(table)
        back = cs.decode(data)
        assert torch.equal(back, table)
        assert 8 * len(data) == 16 + 32 * rows * cs.columns == 16 + cs.bound_bits(table)
        assert cs.nnz(table) == rows * cs.columns
        assert torch.equal(cs.decompress(back), cs.decompress(table))


@functools.lru_cache(maxsize=1)
def valid_sketch_message():
    cs = sketch_of(P=100, density=0.02, rows=3, columns_per_k=2.0)  # 3 x 4 cells
    return cs, cs.encode(cs.sketch(torch.linspace(-1, 1, 100)))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120), cut=st.integers(0, 100), flips=st.lists(st.tuples(st.integers(0, 100), st.integers(1, 255)), max_size=4))
def test_count_sketch_decode_fuzz_raises_decode_error_only(data, cut, flips):
    cs, valid = valid_sketch_message()
    mutated = bytearray(valid)
    for at, x in flips:
        mutated[at % len(mutated)] ^= x
    for blob in (data, b"\xfc\x43" + data, valid[:cut], bytes(mutated)):
        try:
            table = cs.decode(blob)
        except DecodeError:
            continue
        assert table.shape == (3, 4)  # cells may be any float32, NaN included (values are data)


def fetchsgd_reference(A, k, rho, reset, sketches, weights, rows, columns):
    """Algorithm 1 with the sketch as the explicit matrix A (float64): -> the update of every round."""
    u = np.zeros(A.shape[0])
    e = np.zeros(A.shape[0])
    P = A.shape[1]
    h = [np.argmax(np.abs(A[j * columns : (j + 1) * columns]), axis=0) for j in range(rows)]
    sg = [A[j * columns + h[j], np.arange(P)] for j in range(rows)]
    out = []
    for tables in sketches:
        s = np.einsum("k,kc->c", weights / weights.sum(), tables)
        u = rho * u + s
        e = e + u
        est = np.median(np.stack([sg[j] * e[j * columns + h[j]] for j in range(rows)]), axis=0)
        top = np.argsort(-np.abs(est), kind="stable")[:k]
        delta = np.zeros(P)
        delta[top] = est[top]
        applied = A @ delta
        if reset == "zero":
            e[applied != 0] = 0
            u[applied != 0] = 0
        else:
            e = e - applied
        out.append(delta)
    return out


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_fetchsgd_aggregator_is_algorithm_1(reset):
    P, K = 400, 3
    cs = sketch_of(P=P, density=0.02, rows=3, columns_per_k=4.0)  # k = 8, 32 columns
    agg = FetchSGDAggregator(ctx_of(layout_of((P,))), rho=0.9, reset=reset)
    A = sketch_matrix(cs)
    g = torch.Generator().manual_seed(1)
    weights = torch.tensor([1.0, 2.0, 3.0])
    rounds = [torch.randn(K, P, generator=g) * torch.linspace(0.1, 2, P) for _ in range(4)]
    sketches = [[enc_dec(cs, t) for t in cs.compress(v, RoundContext(r, [0, 1, 2]))] for r, v in enumerate(rounds)]
    ref = fetchsgd_reference(A, cs.k, 0.9, reset, [np.stack([t.reshape(-1).double().numpy() for t in s]) for s in sketches],
                             weights.double().numpy(), cs.rows, cs.columns)
    for r, tables in enumerate(sketches):
        update = agg.aggregate_payloads(cs, [[t] for t in tables], [None], weights, [0, 1, 2], RoundContext(r, [0, 1, 2]))
        assert int((update != 0).sum()) == cs.k
        np.testing.assert_allclose(update.numpy(), ref[r], rtol=1e-4, atol=1e-5)
    other = FetchSGDAggregator(ctx_of(layout_of((P,))), rho=0.9, reset=reset)
    other.load_state_dict(agg.state_dict())
    assert torch.equal(other.u, agg.u) and torch.equal(other.e, agg.e)


def test_fetchsgd_with_an_exact_sketch_is_server_topk_with_momentum_and_error():
    """A sketch with far more columns than entries recovers exactly: FetchSGD = dense server-side top-k
    of the error accumulated from the momentum (reset = subtract). rho = 0.5 and quarter-integer updates keep every
    float exact, so ties (broken towards the lowest position) are the same on both sides."""
    P, K = 30, 2
    cs = sketch_of(P=P, density=0.1, rows=5, columns_per_k=2000.0)  # k = 3, 6000 columns
    agg = FetchSGDAggregator(ctx_of(layout_of((P,))), rho=0.5, reset="subtract")
    g = torch.Generator().manual_seed(2)
    u, e = torch.zeros(P, dtype=torch.float64), torch.zeros(P, dtype=torch.float64)
    for r in range(5):
        v = torch.randint(-20, 20, (K, P), generator=g).float() / 4
        tables = cs.compress(v, RoundContext(r, [0, 1]))
        update = agg.aggregate_payloads(cs, [[t] for t in tables], [None], torch.ones(2), [0, 1], RoundContext(r, [0, 1]))
        u = 0.5 * u + v.double().mean(0)
        e = e + u
        top = torch.from_numpy(np.argsort(-e.abs().numpy(), kind="stable")[:3])
        delta = torch.zeros(P, dtype=torch.float64)
        delta[top] = e[top]
        e = e - delta
        assert torch.equal(update.double(), delta)


def test_fetchsgd_parts_check():
    from flarebench import make_config
    from flarebench.methods.presets import check_combination

    check_combination(make_config(method="fetchsgd"))
    with pytest.raises(ConfigError, match="count-sketch"):
        check_combination(make_config(method="fetchsgd", compressor="topk"))
    with pytest.raises(ConfigError, match="memory none"):
        check_combination(make_config(method="fetchsgd", memory="residual"))


def test_fetchsgd_seam_bits_and_stateless_clients(tiny_config):
    from flarebench.runner import setup

    s = setup(tiny_config(method="fetchsgd", sparsity=0.99, clients_per_round=3))
    fed = s.federation
    cs = fed.parts.compressor
    assert fed.clients.initial_state() == {}  # stateless clients
    stats = fed.run_round(0)
    assert stats.uplink_bits == 3 * (16 + 32 * cs.rows * cs.columns)
    assert stats.nnz == 3 * cs.rows * cs.columns
    assert stats.downlink_bits == 3 * 32 * s.layout.num_params
    assert set(fed.parts.aggregator.state_dict()) == {"u", "e"}


@pytest.mark.parametrize("sparsity", [0.99, 0.999])
def test_fetchsgd_learns_tiny_setting_at_its_defaults(tiny_config, sparsity):
    """mlp on 4 clients x 200 samples, 25 rounds, the preset's defaults: k = 1% of the model (the paper's CIFAR-10
    ratio, 50,000 of 6.5M) and k = 0.1% (80 heavy hitters from 6,123 columns)."""
    from flarebench import run

    result = run(tiny_config(method="fetchsgd", sparsity=sparsity, rounds=25, eval_every=25))
    assert result.final_accuracy >= 0.7, result.final_accuracy


@pytest.mark.parametrize("method,sparsity", [("powersgd", 0.999), ("fetchsgd", 0.99)])
def test_server_state_survives_resume(tiny_config, method, sparsity):
    """Warm-start Q (powersgd) and S_u, S_e (fetchsgd) live in the checkpoint: 2 rounds + 2 resumed = 4 rounds."""
    from flarebench import run

    cfg = tiny_config(method=method, sparsity=sparsity, rounds=2, eval_every=1, samples_per_client=100, name="short")
    run(cfg)
    resumed = run(cfg.replace(rounds=4), resume=cfg.out + "/short")
    straight = run(cfg.replace(rounds=4, name="straight"))
    for a, b in zip(resumed.rows, straight.rows):
        assert (a["test_loss"], a["uplink_bits"], a["downlink_bits"]) == (b["test_loss"], b["uplink_bits"], b["downlink_bits"])
