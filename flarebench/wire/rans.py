"""rANS coding of a quantizer's symbols against a per-message model whose table travels (and is counted).

The fast entropy coder (``coder = rans``, the quantizers' default): the same model, table and blocking as
:mod:`.entropy` (``ans``: constriction's coder, 24-bit probabilities), coded by a compiled interleaved rANS
(Duda 2013; 32-bit states with 16-bit words as in Giesen's ``rans_word``, four of them interleaved), about
3-6 ns per block symbol each way on one CPU core where constriction's decoder takes ~35 ns.

Model: the symbols' histogram ``h`` (the table) gives every block symbol ``j`` (``b = block_size(alphabet)``
symbols ``d_1..d_b``) the weight ``W_j = prod_k h[d_k]``; weights are quantized to 16-bit frequencies
``f_j = 1 + floor(W_j (2^16 - m) / sum W) (+1 for the m' largest remainders)`` for the m block symbols with
``W_j > 0`` (exact integer arithmetic, so both sides build the same table on any machine) and 0 for the others,
summing to 2^16. A block then costs ``16 - log2 f_j`` bits: within ~0.5% of the empirical entropy, more
(up to ~5%) when one block symbol has nearly all the mass (TernGrad at under 0.2% non-zero trits), since
every possible block keeps at least 1/2^16. The last block is padded with the smallest present symbol.

Coder: four 32-bit states (initial and final value 2^16), block j uses state j % 4; 16-bit
renormalization. Layout (after the compressor's own fields): the table (:func:`.entropy.write_table`), then
``W`` little-endian uint16 words: the four final states (state 0 to 3, high word first), then the
renormalization words in decoding order. Bits = table + 16 W.

The decoder reads the table, decodes exactly ``ceil(count / b)`` blocks, and raises DecodeError (only) when
the words run out, when words are left over or a state does not end at 2^16, when the padding is not the pad
symbol, or when the decoded symbols' histogram is not the table. What it allocates is sized by ``count``
(the model's, ``ceil(count / b)`` bytes of blocks and the symbols) and the message's own length; unlike
:mod:`.entropy` it cannot refuse a short stream before decoding (a rANS stream of correlated blocks can be
shorter than the product model's entropy), so a forged short stream costs one model-sized allocation and
ends in DecodeError when its words run out.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..errors import DecodeError
from ..jit import njit, on_host
from .entropy import _digits, _occurrences, block_size, blocks_of, histogram, read_table, symbol_dtype, write_table
from .frame import ByteReader, ByteWriter

PRECISION = 16
TOTAL = 1 << PRECISION  # the frequencies' sum
LOW = 1 << 16  # the states' lower bound (and their initial and final value)


# ---------------------------------------------------------------- model
def frequencies(hist: np.ndarray, alphabet: int) -> np.ndarray:
    """The block symbols' 16-bit frequencies (int64 ``[alphabet^b]``, summing to 2^16) from the symbols' histogram."""
    b = block_size(alphabet)
    if b == 1:
        weights = [int(c) for c in hist]
    else:
        h = [int(c) for c in hist]
        weights = [functools.reduce(lambda a, d: a * h[d], row, 1) for row in _digits(alphabet, b).tolist()]
    live = [j for j, wj in enumerate(weights) if wj > 0]
    total = sum(weights[j] for j in live)
    spare = TOTAL - len(live)
    freq = np.zeros(len(weights), dtype=np.int64)
    rems = []
    for j in live:
        q, rem = divmod(weights[j] * spare, total)
        freq[j] = 1 + q
        rems.append((-rem, j))
    for _, j in sorted(rems)[: TOTAL - int(freq.sum())]:  # the largest remainders (lowest symbol first) get +1
        freq[j] += 1
    return freq


def _tables(hist: np.ndarray, alphabet: int):
    """(freq uint32, cum uint32, the decoder's table int64 ``[2^16]``: slot -> symbol | (slot - cum) << 16 | freq << 32)
    for a histogram: ~1 ms, built per message (every message has its own histogram; nothing is cached)."""
    freq = frequencies(hist, alphabet)
    cum = np.concatenate([[0], np.cumsum(freq)[:-1]])
    symbol = np.repeat(np.arange(freq.size, dtype=np.int64), freq)
    table = symbol | (np.arange(TOTAL, dtype=np.int64) - cum[symbol]) << 16 | freq[symbol] << 32
    return freq.astype(np.uint32), cum.astype(np.uint32), table


# ---------------------------------------------------------------- kernels
@njit
def _count(sym, hist):
    """Histogram of ``sym`` into ``hist`` (four partial histograms: a run of one symbol does not wait on itself);
    False, and nothing counted, if a symbol is outside ``[0, len(hist))``."""
    a = hist.size
    for i in range(sym.size):
        if sym[i] < 0 or sym[i] >= a:
            return False
    part = np.zeros((4, a), dtype=np.int64)
    n = sym.size
    whole = n - n % 4
    for i in range(0, whole, 4):
        part[0, sym[i]] += 1
        part[1, sym[i + 1]] += 1
        part[2, sym[i + 2]] += 1
        part[3, sym[i + 3]] += 1
    for i in range(whole, n):
        part[0, sym[i]] += 1
    for k in range(a):
        hist[k] += part[0, k] + part[1, k] + part[2, k] + part[3, k]
    return True


@njit
def _block(sym, alphabet, powers, blocks, block_hist):
    """The full blocks of ``b = len(powers)`` symbols of ``sym`` into ``blocks[:len(sym) // b]`` (block symbol
    ``sum_k sym[jb + k] powers[k]``) and their histogram into ``block_hist`` (one pass; ``powers`` a tuple, so b
    is known when compiling); False if a symbol is outside ``[0, alphabet)`` (``block_hist`` then incomplete)."""
    b = len(powers)
    for j in range(sym.size // b):
        v = 0
        bad = False
        for k in range(b):
            s = sym[j * b + k]
            bad |= (s < 0) | (s >= alphabet)
            v += s * powers[k]
        if bad:
            return False
        blocks[j] = v
        block_hist[v] += 1
    return True


STATES = 4  # interleaved rANS states: block j uses state j % 4


@njit
def _encode(blocks, freq, cum, out):
    """rANS-encode ``blocks`` into the end of ``out`` (uint16, at least ``blocks.size + 2 STATES``); returns where
    the stream starts. Block j goes to state j % 4; blocks are encoded last to first."""
    pos = out.size
    x = np.full(STATES, LOW, dtype=np.int64)
    for j in range(blocks.size - 1, -1, -1):
        k = j % STATES
        s = blocks[j]
        f = np.int64(freq[s])
        xk = x[k]
        if xk >= f << 16:
            pos -= 1
            out[pos] = xk & 0xFFFF
            xk >>= 16
        x[k] = ((xk // f) << PRECISION) + xk % f + cum[s]
    for k in range(STATES - 1, -1, -1):
        out[pos - 1] = x[k] & 0xFFFF
        out[pos - 2] = x[k] >> 16
        pos -= 2
    return pos


@njit
def _take(x, table):
    """Decode one block symbol from state ``x`` with ``table[slot] = symbol | (slot - start) << 16 | freq << 32``:
    (symbol, the state before renormalization)."""
    e = table[x & 0xFFFF]
    return e & 0xFFFF, (e >> 32) * (x >> 16) + ((e >> 16) & 0xFFFF)


@njit
def _refill(x, words, p):
    """Renormalize state ``x`` below 2^16 with word ``p`` (the caller has checked it exists): (x, p)."""
    if x < LOW:
        return (x << 16) | np.int64(words[p]), p + 1
    return x, p


@njit
def _decode(words, table, blocks, block_hist):
    """Decode ``blocks.size`` block symbols from ``words`` into ``blocks``, their histogram into ``block_hist``;
    returns 0, -1 if the words run out, -2 if words are left over or a state does not end at 2^16."""
    nw = words.size
    if nw < 2 * STATES:
        return -1
    x = np.empty(STATES, dtype=np.int64)
    for k in range(STATES):
        x[k] = (np.int64(words[2 * k]) << 16) | np.int64(words[2 * k + 1])
    x0, x1, x2, x3 = x[0], x[1], x[2], x[3]
    p = 2 * STATES
    n = blocks.size
    whole = n - n % STATES
    for j in range(0, whole, STATES):  # four independent chains per step
        s0, x0 = _take(x0, table)
        s1, x1 = _take(x1, table)
        s2, x2 = _take(x2, table)
        s3, x3 = _take(x3, table)
        if p + STATES > nw and (x0 < LOW) + (x1 < LOW) + (x2 < LOW) + (x3 < LOW) > nw - p:
            return -1
        x0, p = _refill(x0, words, p)
        x1, p = _refill(x1, words, p)
        x2, p = _refill(x2, words, p)
        x3, p = _refill(x3, words, p)
        blocks[j] = s0
        blocks[j + 1] = s1
        blocks[j + 2] = s2
        blocks[j + 3] = s3
        block_hist[s0] += 1
        block_hist[s1] += 1
        block_hist[s2] += 1
        block_hist[s3] += 1
    x[0], x[1], x[2], x[3] = x0, x1, x2, x3
    for j in range(whole, n):  # the last n % 4 blocks
        k = j % STATES
        s, xk = _take(x[k], table)
        if xk < LOW:
            if p >= nw:
                return -1
            xk = (xk << 16) | np.int64(words[p])
            p += 1
        x[k] = xk
        blocks[j] = s
        block_hist[s] += 1
    if p != nw:
        return -2
    for k in range(STATES):
        if x[k] != LOW:
            return -2
    return 0


@njit
def _expand(blocks, digits, out, powers):
    """The digits of ``blocks`` (``digits``: block symbol -> its b symbols) into ``out[:count]``; ``b = len(powers)``
    (a tuple, so b is known when compiling)."""
    b = len(powers)
    count = out.size
    whole = min(blocks.size, count // b)
    for j in range(whole):
        s = blocks[j]
        for k in range(b):
            out[j * b + k] = digits[s, k]
    for i in range(whole * b, count):
        out[i] = digits[blocks[whole], i - whole * b]


def _powers(alphabet: int, b: int) -> tuple:
    """``(alphabet^(b-1), ..., alphabet, 1)``: a block symbol's place values."""
    return tuple(alphabet ** (b - 1 - k) for k in range(b))


# ---------------------------------------------------------------- streams
def _host_blocks(symbols: torch.Tensor, alphabet: int) -> tuple[np.ndarray, np.ndarray]:
    """(symbol histogram int64 ``[alphabet]``, block symbols ``[ceil(count / b)]``, the last padded with the
    smallest present symbol). On CPU one compiled pass; elsewhere formed on the device, one byte per block crosses."""
    b = block_size(alphabet)
    x = symbols.reshape(-1)
    if not on_host(x):
        try:
            hist = histogram(x, alphabet)  # a symbol past the alphabet lengthens it, a negative one is refused
        except RuntimeError:
            hist = None
        if hist is None or hist.size != alphabet:
            raise ValueError(f"rans: symbols outside [0, {alphabet})")
        pad = int(np.flatnonzero(hist)[0]) if x.numel() else 0
        return hist, blocks_of(x, alphabet, pad).cpu().numpy()
    sym = x.contiguous().numpy()
    hist = np.zeros(alphabet, dtype=np.int64)
    if b == 1:
        if not _count(sym, hist):
            raise ValueError(f"rans: symbols outside [0, {alphabet})")
        return hist, sym
    blocks = np.empty(-(-sym.size // b), dtype=np.uint8)
    block_hist = np.zeros(alphabet**b, dtype=np.int64)
    tail = sym[sym.size - sym.size % b :]
    if not _block(sym, alphabet, _powers(alphabet, b), blocks, block_hist) or np.any((tail < 0) | (tail >= alphabet)):
        raise ValueError(f"rans: symbols outside [0, {alphabet})")
    hist = block_hist @ _occurrences(alphabet, b) + np.bincount(tail, minlength=alphabet)
    if tail.size:
        pad = int(np.flatnonzero(hist)[0])
        blocks[-1] = functools.reduce(lambda v, d: v * alphabet + d, tail.tolist() + [pad] * (b - tail.size), 0)
    return hist, blocks


def _check_alphabet(alphabet: int) -> None:
    if not 1 <= alphabet <= TOTAL:
        raise ValueError(f"rans codes alphabets of 1 to {TOTAL} symbols, not {alphabet}")


def encode_symbols(w: ByteWriter, symbols: torch.Tensor, alphabet: int) -> None:
    """Append ``symbols`` (an int tensor ``[count]`` in ``[0, alphabet)``, any device) to ``w``."""
    _check_alphabet(alphabet)
    hist, blocks = _host_blocks(symbols, alphabet)
    if write_table(w, hist) <= 1:
        return  # every symbol is the one present
    freq, cum, _ = _tables(hist, alphabet)
    out = np.empty(blocks.size + 2 * STATES, dtype=np.uint16)
    start = _encode(blocks, freq, cum, out)
    w.raw(out[start:].astype("<u2").tobytes())


def decode_symbols(r: ByteReader, count: int, alphabet: int) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: the rest of ``r`` -> symbols ``[count]`` (uint8, or int32 past 256)."""
    _check_alphabet(alphabet)
    hist = read_table(r, count, alphabet)
    dtype = symbol_dtype(alphabet)
    present = np.flatnonzero(hist)
    data = r.raw(r.remaining)
    if present.size <= 1:
        if len(data):
            raise DecodeError(f"{r.what}: bytes after a stream of one symbol")
        return np.full(count, present[0] if present.size else 0, dtype=dtype)
    if not data or len(data) % 2:
        raise DecodeError(f"{r.what}: the rANS stream is not whole 16-bit words")
    b = block_size(alphabet)
    freq, _, table = _tables(hist, alphabet)
    blocks = np.empty(-(-count // b), dtype=np.uint8 if b > 1 else dtype)
    block_hist = np.zeros(freq.size, dtype=np.int64)
    status = _decode(np.frombuffer(data, dtype="<u2"), table, blocks, block_hist)
    if status == -1:
        raise DecodeError(f"{r.what}: the rANS stream ends before symbol {count}")
    if status == -2:
        raise DecodeError(f"{r.what}: the rANS stream does not end where its last symbol does")
    if b == 1:
        out = blocks
    else:
        digits = _digits(alphabet, b)
        out = np.empty(count, dtype=dtype)
        _expand(blocks, digits, out, _powers(alphabet, b))
    nblocks = blocks.size
    last = int(blocks[-1])
    extra = nblocks * b - count
    if extra and np.any(_digits(alphabet, b)[last, b - extra :] != present[0]):
        raise DecodeError(f"{r.what}: the last block's padding is not the pad symbol")
    decoded = block_hist if b == 1 else block_hist @ _occurrences(alphabet, b)
    if extra:
        decoded[present[0]] -= extra
    if not np.array_equal(decoded, hist):
        raise DecodeError(f"{r.what}: the decoded symbols do not match the table")
    return out


__all__ = ["encode_symbols", "decode_symbols", "frequencies", "PRECISION"]
