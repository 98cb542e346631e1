"""Whole messages: header validation, auto choice, honest bits in real runs, bounds, sparse downlink."""

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flarebench import load_run, run, setup
from flarebench.errors import ConfigError, DecodeError
from flarebench.flat import Layout
from flarebench.methods.compressors import tensor_k
from flarebench.methods.compressors.topk import TopK
from flarebench.methods.registry import PartContext, RoundContext
from flarebench.models import build_model
from flarebench.wire import POSITION_CODECS, Message, WireFormat
from flarebench.wire.bounds import log2_binom, random_positions
from flarebench.wire.downlink import message_to_dense, update_message
from flarebench.wire.encoder import write_varint
from flarebench.wire.message import SPARSE

SIZES = (800, 32, 51200, 64, 9, 1)


def sparse_msg(sizes=SIZES, density=0.01, seed=0):
    counts = [tensor_k(n, density) for n in sizes]
    idx = torch.cat([torch.from_numpy(random_positions(n, k, seed + t)) for t, (n, k) in enumerate(zip(sizes, counts))])
    return Message.sparse(sizes, counts, idx, torch.randn(sum(counts), generator=torch.Generator().manual_seed(seed)))


def messages():
    g = torch.Generator().manual_seed(1)
    return [
        sparse_msg(),
        sparse_msg(density=0.9),
        Message.sparse(SIZES, [0] * len(SIZES), torch.zeros(0, dtype=torch.int64), torch.zeros(0)),
        Message.dense(SIZES, torch.randn(sum(SIZES), generator=g)),
        Message.seeded(SIZES, [tensor_k(n, 0.01) for n in SIZES], 12345, torch.randn(sum(tensor_k(n, 0.01) for n in SIZES), generator=g)),
    ]


@pytest.mark.parametrize("encoding", ["auto", *sorted(POSITION_CODECS)])
@pytest.mark.parametrize("value_codec", ["fp32", "fp16", "bf16", "sign+scale"])
def test_message_round_trip(encoding, value_codec):
    wire = WireFormat(SIZES, encoding, value_codec)
    for msg in messages():
        enc = wire.encode(msg)
        got = wire.decode(enc.data)
        assert (got.kind, got.sizes, got.counts, got.seed) == (msg.kind, msg.sizes, msg.counts, msg.seed)
        if msg.indices is not None:
            assert torch.equal(got.indices, msg.indices)
        if value_codec == "fp32":
            assert torch.equal(got.values, msg.values)
        assert enc.bits == 8 * len(enc.data)


def test_auto_picks_the_smallest_real_encoding():
    for density in [1e-4, 1e-3, 1e-2, 0.3, 0.9, 1.0]:
        msg = sparse_msg(density=density)
        auto = WireFormat(SIZES, "auto").encode(msg)
        sizes = {name: len(WireFormat(SIZES, name).encode(msg).data) for name in POSITION_CODECS}
        assert len(auto.data) == min(sizes.values())
        assert sizes[auto.position_codec] == len(auto.data)


# ---------------------------------------------------------------- malformed input
@functools.lru_cache(maxsize=1)
def valid_bytes():
    wire = WireFormat(SIZES, "auto", "fp32")
    return wire, [wire.encode(m).data for m in messages()] + [WireFormat(SIZES, "golomb", "sign+scale").encode(sparse_msg()).data]


def test_every_proper_prefix_and_every_extension_is_rejected():
    wire, datas = valid_bytes()
    for data in datas:  # every cut inside the first and last 300 bytes (headers, codec streams' ends)
        for cut in sorted(set(range(min(300, len(data)))) | set(range(max(0, len(data) - 300), len(data)))):
            with pytest.raises(DecodeError):
                wire.decode(data[:cut])
        with pytest.raises(DecodeError):
            wire.decode(data + b"\x00")


def header(kind=0, codec=5, counts=None):
    """The lean frame byte, then the k_t varints (counts travel: WireFormat(SIZES) knows none)."""
    h = bytearray([16 * kind + codec])
    for k in counts if counts is not None else [1] * len(SIZES):
        h += write_varint(k)
    return bytes(h)


@pytest.mark.parametrize("data", [
    b"", bytes([0x30]), bytes([0xFC, 0x30]),  # empty, unknown kind, another compressor's payload tag
    bytes([0x13]) + b"\x00" * (4 * sum(SIZES)),  # a dense message with a position codec id
    header(codec=9) + b"\x00" * 64, header(kind=2, codec=3),
    header(counts=[n + 1 for n in SIZES]),  # k > n
    header() + b"\xff" * 11,  # a varint that never ends
    header(counts=[2**40] * len(SIZES)), header(counts=[1] * (len(SIZES) - 1)),  # huge k, truncated counts
    header() + b"\x00" * 3,  # values alone need more than the message has
    header(kind=1, codec=0)[:1] + b"\x00" * (4 * sum(SIZES) - 1),  # dense, one byte short
    header(kind=2, codec=0) + b"\x00" * 7,  # seeded, truncated inside the seed
])
def test_malformed_headers_raise_decode_error(data):
    with pytest.raises(DecodeError):
        WireFormat(SIZES).decode(data)


def test_known_counts_do_not_travel_and_foreign_kinds_are_refused():
    msg = sparse_msg()
    lean = WireFormat(SIZES, "golomb", counts=msg.counts, kinds=(SPARSE,))
    full = WireFormat(SIZES, "golomb")
    data = lean.encode(msg).data
    assert len(full.encode(msg).data) - len(data) == sum(len(write_varint(k)) for k in msg.counts)
    got = lean.decode(data)
    assert got.counts == msg.counts and torch.equal(got.indices, msg.indices) and torch.equal(got.values, msg.values)
    for other in messages()[3:]:  # dense and seeded messages: not what this format sends
        with pytest.raises(DecodeError, match="sends only sparse"):
            lean.decode(full.encode(other).data)
    with pytest.raises(ValueError):
        lean.encode(sparse_msg(density=0.9))  # other counts than the ones both sides know: a sender's bug


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzzed_messages_raise_only_decode_error(data):
    wire, datas = valid_bytes()
    base = bytearray(data.draw(st.sampled_from(datas)))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        at = data.draw(st.integers(0, max(0, len(base) - 1)))
        if op == "flip" and base:
            base[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and base:
            base[at] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del base[at:]
        else:
            base[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        msg = wire.decode(bytes(base))
    except DecodeError:
        return
    assert msg.sizes == SIZES and len(msg.values) == sum(msg.counts)
    if msg.indices is not None:
        assert len(msg.indices) == sum(msg.counts)


BIG = (10_000_000, 5_000_000)


@pytest.mark.parametrize("kind,codec", [(0, c.id) for c in POSITION_CODECS.values()] + [(1, 0), (2, 0)])
def test_a_header_claiming_huge_k_allocates_nothing_from_it(kind, codec):
    """A 100-byte message that claims k = n = 15M entries: DecodeError, and well under 1 MB allocated
    (decoding it for real would need hundreds of MB); numpy's buffers are traced by tracemalloc."""
    import tracemalloc

    h = bytearray([16 * kind + codec])
    if kind != 1:
        for n in BIG:
            h += write_varint(n)
    data = bytes(h) + (b"\x00" * 8 if kind == 2 else b"") + b"\x01" * 80
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            WireFormat(BIG, "auto").decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_decode_error(data):
    try:
        WireFormat(SIZES).decode(data)
    except DecodeError:
        pass


# ---------------------------------------------------------------- bounds
def test_golomb_within_2_percent_of_the_bound_at_density_1e3():
    n, k = 10**6, 1000
    bound = log2_binom(n, k)
    for seed in range(3):
        bits = 8 * len(POSITION_CODECS["golomb"].encode([random_positions(n, k, seed)], (n,)))
        assert bits <= 1.02 * bound, (seed, bits / bound)


def test_cnn_uplink_message_within_5_percent_of_its_bound():
    torch.manual_seed(0)
    layout = Layout.of(build_model("cnn", (1, 28, 28), 10))
    assert layout.num_params == 582_026
    comp = TopK(PartContext(layout, 1, sparsity=0.999))
    (msg,) = comp.compress(torch.randn(1, layout.num_params), RoundContext(0, [0]))
    wire = WireFormat(layout.sizes, "auto", "fp32")
    enc = wire.encode(msg)
    bound = wire.bound_bits(msg)
    expected = sum(log2_binom(n, k) for n, k in zip(layout.sizes, msg.counts)) + 32 * msg.nnz
    assert bound == pytest.approx(expected)
    assert enc.bits <= 1.05 * bound, enc.bits / bound
    assert torch.equal(wire.decode(enc.data).indices, msg.indices)


# ---------------------------------------------------------------- runs
@pytest.mark.parametrize("method,value_codec", [("topk-ef", "fp32"), ("flare", "sign+scale"), ("randk", "bf16"), ("none", "fp32")])
def test_counted_bits_are_the_encoded_bytes_in_a_run(tiny_config, method, value_codec):
    s = setup(tiny_config(method=method, sparsity=0.99, params={"compressor": {"value_codec": value_codec}}, rounds=2, engine="sequential"))
    fed = s.federation
    comp = fed.parts.compressor
    for r in range(2):
        stats = fed.run_round(r)
        assert stats.messages and stats.uplink_bits == sum(8 * len(data) for data in stats.messages)
        received = [comp.decode(data) for data in stats.messages]
        floor = sum(comp.wire.values.payload_bits(m.counts)
                    + (sum(log2_binom(n, k) for n, k in zip(m.sizes, m.counts)) if m.indices is not None else 0)
                    for m in received)
        assert stats.uplink_bound_bits == pytest.approx(floor)
        if value_codec == "sign+scale":  # the server sees sign * scale; |value| is constant per tensor
            for m in received:
                for vals in torch.split(m.values, list(m.counts)):
                    assert vals.abs().unique().numel() <= 1


def test_sparse_downlink_keeps_every_client_in_sync(tiny_config):
    s = setup(tiny_config(method="topk-ef", sparsity=0.99, downlink="sparse", clients_per_round=2, rounds=3, engine="sequential"))
    fed = s.federation
    for r in range(3):
        w_before = fed.w.clone()
        stats = fed.run_round(r)
        enc = stats.broadcast
        assert enc is not None and stats.downlink_bits == fed.cfg.clients * 8 * len(enc.data)  # to every client
        applied = message_to_dense(fed.server.downlink.wire.decode(enc.data), s.layout.num_params)
        # a client that holds w_before and applies the broadcast holds exactly the server's model
        assert torch.equal(w_before + fed.cfg.server_lr * applied, fed.w)
        assert applied.count_nonzero() <= 2 * sum(fed.parts.compressor.counts)
    assert stats.downlink_bits < 32 * s.layout.num_params * 2  # far below the dense model per participant


def test_update_message_round_trip():
    v = torch.zeros(sum(SIZES))
    v[[0, 5, 900, 51000, 52104]] = torch.tensor([1.0, -2.0, 3.0, 4.0, 5.0])
    msg = update_message(SIZES, v)
    assert msg.counts == (2, 0, 2, 0, 1, 0)  # tensors start at 0, 800, 832, 52032, 52096, 52105
    assert torch.equal(message_to_dense(msg, sum(SIZES)), v)
    full = torch.arange(1, sum(SIZES) + 1, dtype=torch.float32)
    assert update_message(SIZES, full).is_dense


def test_metrics_csv_has_the_bound_and_downlink_options(tiny_config):
    rec = load_run(run(tiny_config(method="topk-ef", sparsity=0.99, downlink="sparse", name="b", engine="sequential")).path)
    m = rec.metrics
    assert m["uplink_bound_bits"].iloc[0] == 0 and (m["uplink_bound_bits"].iloc[1:] > 0).all()
    # no order asserted between uplink_bits and the bound: real top-k positions cluster (e.g. MNIST border
    # pixels never move), so gap codes can beat log2 C(n,k), the floor for uniformly random positions
    assert (m["downlink_bits"].iloc[1:] > 0).all() and rec.meta["config"]["downlink"] == "sparse"
    with pytest.raises(ConfigError, match="downlink"):
        tiny_config(downlink="multicast")
    assert math.isfinite(float(m["uplink_bound_bits"].iloc[-1]))
