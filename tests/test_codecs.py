"""Position and value codecs: round trips (hypothesis), exact size estimates, fuzzed decoders."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flarebench.errors import DecodeError
from flarebench.wire.bitstream import pack_unary, pack_varwidth, read_unary, read_varwidth
from flarebench.wire.bounds import random_positions
from flarebench.methods.compressors.quantizer import CODERS
from flarebench.wire.codecs import (
    ENUMERATIVE_MAX_K, POSITION_CODECS, POSITION_CODECS_BY_ID, VALUE_CODECS, VALUE_CODECS_BY_ID, rice_parameter,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_ids_are_stable():
    assert {c.name: c.id for c in POSITION_CODECS.values()} == {
        "raw32": 0, "minwidth": 1, "bitmap": 2, "elias-gamma": 3, "elias-delta": 4, "golomb": 5, "enumerative": 6}
    assert {c.name: c.id for c in VALUE_CODECS.values()} == {"fp32": 0, "fp16": 1, "bf16": 2, "sign+scale": 3}
    assert len(POSITION_CODECS_BY_ID) == 7 and len(VALUE_CODECS_BY_ID) == 4


@st.composite
def tensor(draw, max_n=10**6, allow_empty=True):
    """(n, k, seed): sizes 1..1e6 (0 if allowed), k from {0, 1, n, random}."""
    n = draw(st.integers(0 if allow_empty else 1, max_n) | st.sampled_from([1, 2, 3, 1000, max_n]))
    kind = draw(st.sampled_from(["one", "all", "rand", "sparse", "zero"] if allow_empty else ["one", "all", "rand", "sparse"]))
    k = {"one": min(1, n), "all": n, "zero": 0,
         "rand": draw(st.integers(0, n)), "sparse": min(n, max(1, n // 1000))}[kind]
    return n, k, draw(st.integers(0, 2**31))


def positions_for(tensors):
    return [random_positions(n, k, s) if k else np.zeros(0, np.int64) for n, k, s in tensors]


@FAST
@given(st.lists(tensor(), min_size=0, max_size=4), st.sampled_from(sorted(POSITION_CODECS)))
def test_position_round_trip_and_exact_size(tensors, name):
    codec = POSITION_CODECS[name]
    sizes, counts = tuple(t[0] for t in tensors), tuple(t[1] for t in tensors)
    assume(codec.applicable(sizes, counts))  # enumerative: at most ENUMERATIVE_MAX_K entries
    pos = positions_for(tensors)
    data = codec.encode(pos, sizes)
    assert len(data) == codec.nbytes(pos, sizes)  # what auto uses to choose is the real size
    assert len(data) * 8 - codec.nbits(pos, sizes) in range(0, 8)
    out = codec.decode(data, sizes, counts)
    assert len(out) == len(pos)
    for a, b in zip(pos, out):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(POSITION_CODECS))
@pytest.mark.parametrize("n,k", [(1, 1), (7, 7), (1000, 1), (1000, 1000), (10**6, 1), (10**6, 10**6), (10**6, 999)])
def test_position_round_trip_extremes(name, n, k):
    pos = [random_positions(n, k, 1), np.zeros(0, np.int64), np.array([n - 1])]
    sizes, counts = (n, 5, n), (k, 0, 1)
    codec = POSITION_CODECS[name]
    if not codec.applicable(sizes, counts):  # only enumerative refuses, and only above its documented limit
        assert name == "enumerative" and k + 1 > ENUMERATIVE_MAX_K
        return
    out = codec.decode(codec.encode(pos, sizes), sizes, counts)
    for a, b in zip(pos, out):
        np.testing.assert_array_equal(a, b)


def test_gap_codes_have_their_textbook_lengths():
    # one tensor, positions giving gaps x = 1, 2, 3, 4, 1000
    pos = [np.cumsum([1, 2, 3, 4, 1000]) - 1]
    sizes = (2000,)
    gamma = sum(2 * int(np.floor(np.log2(x))) + 1 for x in [1, 2, 3, 4, 1000])
    assert POSITION_CODECS["elias-gamma"].nbits(pos, sizes) == gamma == 1 + 3 + 3 + 5 + 19
    delta = lambda x: int(np.floor(np.log2(x))) + 2 * int(np.floor(np.log2(np.floor(np.log2(x)) + 1))) + 1  # noqa: E731
    assert POSITION_CODECS["elias-delta"].nbits(pos, sizes) == sum(delta(x) for x in [1, 2, 3, 4, 1000])
    m = rice_parameter(5, 2000)
    rice = sum((x - 1) // 2**m + 1 + m for x in [1, 2, 3, 4, 1000])
    assert POSITION_CODECS["golomb"].nbits(pos, sizes) == rice


def test_rice_parameter_follows_stc():
    # b* = 1 + floor(log2(ln(phi - 1) / ln(1 - p)))
    assert rice_parameter(1000, 10**6) == 9 and rice_parameter(10**4, 10**6) == 6
    assert rice_parameter(5, 10) == 0 and rice_parameter(10, 10) == 0 and rice_parameter(1, 1) == 0


def test_bitstream_helpers_round_trip():
    rng = np.random.default_rng(0)
    widths = rng.integers(0, 63, size=500)
    values = rng.integers(0, 2**62, size=500, dtype=np.int64) & ((np.int64(1) << widths) - 1)
    bits = np.concatenate([pack_unary(widths), pack_varwidth(values, widths)])
    q, at = read_unary(bits, 0, widths.size)
    got, end = read_varwidth(bits, at, q)
    np.testing.assert_array_equal(q, widths)
    np.testing.assert_array_equal(got.astype(np.int64), values)
    assert end == bits.size


# ---------------------------------------------------------------- values
@FAST
@given(st.lists(st.integers(0, 3000), min_size=0, max_size=4), st.integers(0, 2**31))
def test_value_codecs_round_trip(counts, seed):
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal(sum(counts)) * rng.choice([1e-3, 1.0, 100.0])).astype(np.float32)
    for name, codec in VALUE_CODECS.items():
        data = codec.encode(v, counts)
        assert len(data) == codec.nbytes(counts)
        out = codec.decode(data, counts)
        assert out.dtype == np.float32 and out.shape == v.shape
        if name == "fp32":
            np.testing.assert_array_equal(out, v)
        elif name == "fp16":
            np.testing.assert_array_equal(out, v.astype(np.float16).astype(np.float32))
        elif name == "bf16":
            ref = torch.from_numpy(v).to(torch.bfloat16).float().numpy()
            np.testing.assert_array_equal(out, ref)
        else:  # sign * mean |v| per tensor
            start = 0
            for k in counts:
                seg, got = v[start : start + k], out[start : start + k]
                if k:
                    scale = np.float32(np.abs(seg.astype(np.float64)).mean())
                    np.testing.assert_array_equal(got, np.where(seg < 0, -scale, scale))
                start += k


def test_sign_scale_costs_one_bit_per_value_plus_a_scale_per_tensor():
    c = VALUE_CODECS["sign+scale"]
    assert c.payload_bits((1000, 0, 3)) == 1003 + 2 * 32
    assert c.nbytes((1000, 0, 3)) == 8 + 126
    assert VALUE_CODECS["bf16"].nbytes((10, 3)) == 26


# ---------------------------------------------------------------- fuzz: only DecodeError
def _valid(out, sizes, counts):
    return all(len(p) == k and (k == 0 or (p[0] >= 0 and p[-1] < n and np.all(np.diff(p) > 0)))
               for p, n, k in zip(out, sizes, counts))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 60)), max_size=4),
       st.sampled_from(sorted(POSITION_CODECS)))
def test_position_decoders_on_random_bytes(data, tensors, name):
    sizes = tuple(n for n, _ in tensors)
    counts = tuple(min(n, k) for n, k in tensors)
    try:
        out = POSITION_CODECS[name].decode(data, sizes, counts)
    except DecodeError:
        return
    assert _valid(out, sizes, counts)


@settings(max_examples=150, deadline=None)
@given(tensor(max_n=20000, allow_empty=False), st.sampled_from(sorted(POSITION_CODECS)), st.data())
def test_position_decoders_on_truncated_and_flipped_bytes(t, name, data):
    n, k, seed = t
    codec, sizes, counts = POSITION_CODECS[name], (n,), (k,)
    assume(codec.applicable(sizes, counts))
    enc = codec.encode(positions_for([t]), sizes)
    if enc:
        cut = data.draw(st.integers(0, len(enc) - 1))
        with pytest.raises(DecodeError):  # the last byte always holds field bits: a proper prefix never decodes
            codec.decode(enc[:cut], sizes, counts)
        at = data.draw(st.integers(0, len(enc) - 1))
        flipped = bytearray(enc)
        flipped[at] ^= 1 << data.draw(st.integers(0, 7))
        try:
            assert _valid(codec.decode(bytes(flipped), sizes, counts), sizes, counts)
        except DecodeError:
            pass
    with pytest.raises(DecodeError):
        codec.decode(enc + b"\x00", sizes, counts)  # a whole extra byte is never padding


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100), st.lists(st.integers(0, 300), max_size=4), st.sampled_from(sorted(VALUE_CODECS)))
def test_value_decoders_on_random_bytes(data, counts, name):
    try:
        out = VALUE_CODECS[name].decode(data, tuple(counts))
    except DecodeError:
        return
    assert out.shape == (sum(counts),)


@pytest.mark.parametrize("name", ["minwidth", "bitmap", "elias-gamma", "elias-delta", "golomb", "enumerative"])
def test_non_zero_padding_is_rejected(name):
    """One stream, one set of bytes: a set padding bit is malformed, not an alternative encoding."""
    codec, n = POSITION_CODECS[name], 1003
    for seed in range(20):
        pos = [random_positions(n, 7, seed)]
        if codec.nbits(pos, (n,)) % 8:
            data = bytearray(codec.encode(pos, (n,)))
            data[-1] |= 1
            with pytest.raises(DecodeError, match="padding"):
                codec.decode(bytes(data), (n,), (7,))
            return
    pytest.fail("no draw with padding")


# ---------------------------------------------------------------- the quantizers' entropy coders (wire/entropy.py, wire/rans.py)
CODER_SLACK = {"ans": (1.01, 64), "rans": (1.06, 128)}  # (factor on the floor, bits): rans flushes 4 32-bit states


def symbol_draws(alphabet, count, seed, skew):
    rng = np.random.default_rng(seed)
    p = rng.random(alphabet) ** (1 + 20 * skew)
    return rng.choice(alphabet, size=count, p=p / p.sum())


def coded(coder, symbols, alphabet) -> bytes:
    from flarebench.wire.frame import ByteWriter

    w = ByteWriter()
    CODERS[coder].encode_symbols(w, torch.from_numpy(symbols), alphabet)
    return w.getvalue()


@FAST
@pytest.mark.parametrize("coder", sorted(CODER_SLACK))
@given(st.integers(1, 600), st.integers(0, 3000), st.integers(0, 2**31), st.floats(0.0, 1.0))
def test_entropy_coder_round_trip_and_floor(coder, alphabet, count, seed, skew):
    """Any alphabet (blocks of 1-8 symbols) and count: exact round trip; bits >= the empirical-entropy floor,
    and within the coder's factor + the table + its fixed cost of it (ans: 1%; rans, 16-bit model: 6% at worst,
    when one block symbol has nearly all the mass); a word more or less is refused."""
    from flarebench.wire.bounds import empirical_entropy_bits
    from flarebench.wire.frame import ByteReader

    symbols = symbol_draws(alphabet, count, seed, skew)
    data = coded(coder, symbols, alphabet)
    out = CODERS[coder].decode_symbols(ByteReader(data, "t"), count, alphabet)
    np.testing.assert_array_equal(out, symbols)
    hist = np.bincount(symbols, minlength=alphabet)
    floor = empirical_entropy_bits(hist)
    table = 8 * ((alphabet + 7) // 8) + sum(8 * (int(c).bit_length() // 7 + 1) for c in hist[hist > 0])
    factor, fixed = CODER_SLACK[coder]
    assert floor <= 8 * len(data) <= factor * floor + table + fixed
    with pytest.raises(DecodeError):
        CODERS[coder].decode_symbols(ByteReader(data + b"\x00" * 4, "t"), count, alphabet)
    if np.unique(symbols).size > 1:
        with pytest.raises(DecodeError):
            CODERS[coder].decode_symbols(ByteReader(data[:-2], "t"), count, alphabet)


@FAST
@given(st.sampled_from([2, 3, 5, 15, 255, 300]), st.integers(2, 3000), st.integers(0, 2**31), st.floats(0.0, 1.0),
       st.data())
def test_rans_decoder_on_damaged_streams(alphabet, count, seed, skew, data):
    """A flipped, dropped or inserted byte anywhere in a rANS stream: DecodeError, or (a flip that keeps the table's
    counts and the states' ends) some ``count`` symbols of the right histogram; never another exception."""
    from flarebench.wire import rans
    from flarebench.wire.frame import ByteReader

    symbols = symbol_draws(alphabet, count, seed, skew)
    good = coded("rans", symbols, alphabet)
    at = data.draw(st.integers(0, len(good) - 1))
    edit = data.draw(st.sampled_from(["flip", "drop", "insert"]))
    if edit == "flip":
        bad = good[:at] + bytes([good[at] ^ data.draw(st.integers(1, 255))]) + good[at + 1 :]
    elif edit == "drop":
        bad = good[:at] + good[at + 1 :]
    else:
        bad = good[:at] + bytes([data.draw(st.integers(0, 255))]) + good[at:]
    try:
        out = rans.decode_symbols(ByteReader(bad, "t"), count, alphabet)
    except DecodeError:
        return
    assert out.shape == (count,) and int(out.max()) < alphabet


@pytest.mark.parametrize("alphabet", [3, 15, 255])
def test_rans_device_path_sends_the_host_paths_bytes(alphabet, monkeypatch):
    """Blocks formed by torch on the update's device (as on a GPU) and by the compiled host pass: the same bytes."""
    from flarebench import jit

    symbols = symbol_draws(alphabet, 10_007, 1, 0.3).astype(np.uint8)
    host = coded("rans", symbols, alphabet)
    monkeypatch.setattr(jit, "HOST_KERNELS", False)
    assert coded("rans", symbols, alphabet) == host


def test_rans_frequencies_are_16_bit_and_exact():
    """Frequencies sum to 2^16, are >= 1 exactly where a block can occur, and follow the weights (integer arithmetic:
    the same table on every machine)."""
    from flarebench.wire.rans import frequencies

    f = frequencies(np.array([5, 0, 3]), 3)  # blocks of 5 trits: 3^5 = 243 block symbols
    digits = (np.arange(243)[:, None] // 3 ** np.arange(4, -1, -1)) % 3
    live = ~(digits == 1).any(axis=1)
    assert f.sum() == 2**16 and (f[live] >= 1).all() and (f[~live] == 0).all()
    assert f[0] > f[2] > f[242]  # 00000 (5^5) > 00002 (5^4 3) > 22222 (3^5)
    g = frequencies(np.array([1, 10**6]), 2)  # blocks of 8 bits, one symbol almost never
    assert g.sum() == 2**16 and g.min() >= 1 and g[255] == 2**16 - 255


@pytest.mark.parametrize("alphabet,bad", [(3, 3), (255, 255), (15, -1)])
def test_rans_encoder_refuses_symbols_outside_the_alphabet(alphabet, bad):
    """The compiled pass checks every symbol (no index outside the tables): ValueError, for a caller's bug."""
    from flarebench.wire import rans
    from flarebench.wire.frame import ByteWriter

    from flarebench import jit

    symbols = np.zeros(1001, dtype=np.int16)
    symbols[500] = bad
    for host in (True, False):  # the compiled pass, and the device path's (torch) check
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(jit, "HOST_KERNELS", host)
            with pytest.raises(ValueError, match="outside"):
                rans.encode_symbols(ByteWriter(), torch.from_numpy(symbols), alphabet)
