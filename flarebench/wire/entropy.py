"""Entropy coding of a quantizer's symbols against a per-message model whose table travels (and is counted).

A stream holds ``count`` symbols in ``[0, alphabet)`` (QSGD's signed levels + s, TernGrad's trits + 1,
natural compression's exponents); both sides know ``count`` and ``alphabet`` from the layout and the run's
parameters. The model is the message's own symbol histogram (each symbol an independent draw from it), so
the code reaches ``count * H`` (H: the empirical entropy, the floor the quantizers state) plus the table.

Coding: ``b = block_size(alphabet)`` consecutive symbols (the most whose combinations fit a byte: 5 trits,
2 QSGD levels at s = 7, 1 exponent) form one block symbol ``sum_j x_j alphabet^(b-1-j)``; the blocks go
through an ANS coder (``constriction``'s AnsCoder) under the product of the per-symbol histogram's
probabilities (the same cross-entropy as coding every symbol, b times fewer coder steps; quantized to 24-bit
probabilities, leaky: a combination that does not occur costs nothing measurable). The blocks and their
histogram (hence the symbols') are formed where the symbols are (the update's device), so one byte per
block crosses to the host. The last block is padded with symbol 0.

Layout (after the compressor's own fields): one bit per alphabet symbol (present or not, MSB first, padded
to a byte), the varint count of every present symbol but the last (it follows from ``count``), then the
ANS words (little-endian uint32), the rest of the message (none when one symbol is all there is).
Bits = 8 ceil(alphabet / 8) + table varints + 32 * words, within ~0.1% of ``count * H`` + the table.

The decoder reads the table (counts checked to add up), refuses a stream shorter than the table's entropy
(so a short forged message cannot make it decode ``count`` symbols), wraps the ANS decoder's errors, and checks that
the decoded symbols' histogram is the table and the padding is the pad symbol: DecodeError, and only
DecodeError, on anything inconsistent; what it allocates is sized by ``count`` (the model's), never by
the message.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..errors import DecodeError
from .bounds import empirical_entropy_bits
from .frame import ByteReader, ByteWriter


def block_size(alphabet: int) -> int:
    """Symbols per coded block: the most b <= 8 with alphabet^b <= 256 (1 for alphabets above 16 or below 2)."""
    b = 1
    while alphabet >= 2 and b < 8 and alphabet ** (b + 1) <= 256:
        b += 1
    return b


@functools.lru_cache(maxsize=16)
def _digits(alphabet: int, b: int) -> np.ndarray:
    """uint8 ``[alphabet^b, b]``: block symbol -> its b symbols (most significant first)."""
    codes = np.arange(alphabet**b, dtype=np.int64)[:, None]
    return (codes // alphabet ** np.arange(b - 1, -1, -1, dtype=np.int64) % alphabet).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _occurrences(alphabet: int, b: int) -> np.ndarray:
    """int64 ``[alphabet^b, alphabet]``: how often each symbol occurs in each block symbol."""
    d = _digits(alphabet, b).astype(np.int64)
    return np.stack([(d == a).sum(axis=1) for a in range(alphabet)], axis=1)


def histogram(symbols: torch.Tensor, alphabet: int) -> np.ndarray:
    """int64 ``[alphabet]``: how often each symbol occurs (counted where the symbols are; uint8 without a copy)."""
    x = symbols.reshape(-1)
    if x.dtype not in (torch.uint8, torch.int32, torch.int64):
        x = x.to(torch.int64)
    return torch.bincount(x, minlength=alphabet).cpu().numpy()


def _symbol_histogram(blocks: torch.Tensor, alphabet: int, b: int, extra: int) -> np.ndarray:
    """The symbols' histogram from their blocks' (``extra`` padding symbols 0 removed)."""
    if b == 1:
        return histogram(blocks, alphabet)
    hist = histogram(blocks, alphabet**b) @ _occurrences(alphabet, b)
    hist[0] -= extra
    return hist


def _block_model(hist: np.ndarray, b: int):
    import constriction  # MIT / Apache-2.0 / BSL-1.0; a flarebench dependency (pyproject.toml)

    p = hist / hist.sum()
    probs = np.ones(1)
    for _ in range(b):
        probs = np.outer(probs, p).reshape(-1)
    return constriction.stream.model.Categorical(probs, perfect=False)


def blocks_of(symbols: torch.Tensor, alphabet: int, pad: int = 0) -> torch.Tensor:
    """int symbols ``[count]`` (any device) -> block symbols ``[ceil(count / b)]`` (uint8 if they fit, else int32),
    on the same device; the last block padded with symbol ``pad``. Blocks are formed in uint8 (alphabet^b <= 256:
    no wider copy of the symbols), the short last block apart."""
    b = block_size(alphabet)
    if b == 1:
        return symbols.to(torch.uint8 if alphabet <= 256 else torch.int32)
    x = symbols.reshape(-1).to(torch.uint8)
    whole = x.numel() // b
    tail = x[whole * b :]
    parts = [x[: whole * b].view(whole, b)]
    if tail.numel():
        parts.append(torch.cat([tail, torch.full((b - tail.numel(),), pad, dtype=torch.uint8, device=x.device)]).view(1, b))
    blocks = []
    for part in parts:
        out = part[:, 0].clone()
        for j in range(1, b):
            out.mul_(alphabet).add_(part[:, j])  # < alphabet^b <= 256 at every step
        blocks.append(out)
    return torch.cat(blocks) if len(blocks) > 1 else blocks[0]


def symbol_dtype(alphabet: int):
    """The numpy dtype of decoded symbols: uint8 for alphabets up to 256, else int32."""
    return np.uint8 if alphabet <= 256 else np.int32


def write_table(w: ByteWriter, hist: np.ndarray) -> int:
    """The model's table: one bit per alphabet symbol (present or not, MSB first, padded to a byte), then the
    varint count of every present symbol but the last (it follows from the total). Returns how many are present."""
    present = hist > 0
    w.bits(present.astype(np.uint8))
    for c in hist[present][:-1].tolist():
        w.varint(c)
    return int(present.sum())


def read_table(r: ByteReader, count: int, alphabet: int) -> np.ndarray:
    """Inverse of :func:`write_table` for ``count`` symbols: their histogram, int64 ``[alphabet]``; DecodeError
    unless the counts are positive and add up to ``count`` (no table at all, and no bytes after it, for 0 symbols)."""
    present = np.flatnonzero(r.bits(alphabet))
    hist = np.zeros(alphabet, dtype=np.int64)
    if not count:
        if present.size or r.remaining:
            raise DecodeError(f"{r.what}: symbols in a stream of none")
        return hist
    if not present.size:
        raise DecodeError(f"{r.what}: the symbol table is empty")
    counts = [r.varint(max_value=count) for _ in range(present.size - 1)]
    last = count - sum(counts)
    if last < 1 or min(counts, default=1) < 1:
        raise DecodeError(f"{r.what}: the symbol table's counts do not add up to {count}")
    hist[present] = counts + [last]
    return hist


def encode_symbols(w: ByteWriter, symbols: torch.Tensor, alphabet: int) -> None:
    """Append ``symbols`` (an int tensor ``[count]`` in ``[0, alphabet)``, any device) to ``w``."""
    import constriction

    b = block_size(alphabet)
    blocks = blocks_of(symbols.reshape(-1), alphabet)
    hist = _symbol_histogram(blocks, alphabet, b, -symbols.numel() % b)
    if write_table(w, hist) <= 1:
        return  # every symbol is the one present
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(blocks.cpu().numpy().astype(np.int32), _block_model(hist, b))
    w.raw(coder.get_compressed().astype("<u4").tobytes())


def decode_symbols(r: ByteReader, count: int, alphabet: int) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: the rest of ``r`` -> symbols ``[count]`` (uint8, or int32 past 256)."""
    import constriction

    hist = read_table(r, count, alphabet)
    dtype = symbol_dtype(alphabet)
    if not count:
        return np.zeros(0, dtype=dtype)
    present = np.flatnonzero(hist)
    data = r.raw(r.remaining)
    if present.size == 1:
        if len(data):
            raise DecodeError(f"{r.what}: bytes after a stream of one symbol")
        return np.full(count, present[0], dtype=dtype)
    if not data or len(data) % 4:
        raise DecodeError(f"{r.what}: the ANS stream is not whole 32-bit words")
    if 32 * (len(data) // 4) < 0.999 * empirical_entropy_bits(hist) - 64:  # no code goes below it: refused
        raise DecodeError(f"{r.what}: {len(data)} bytes cannot hold {count} symbols of this table")  # before decoding
    b = block_size(alphabet)
    nblocks = -(-count // b)
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        blocks = coder.decode(_block_model(hist, b), nblocks)
        empty = coder.is_empty()
    except Exception as e:  # constriction's errors on a corrupt stream (several types): the message is malformed
        raise DecodeError(f"{r.what}: the ANS stream is corrupt ({type(e).__name__})") from None
    if not empty:
        raise DecodeError(f"{r.what}: words left in the ANS stream after the last symbol")
    extra = nblocks * b - count
    if extra and np.any(_digits(alphabet, b)[blocks[-1], b - extra :]):
        raise DecodeError(f"{r.what}: the last block's padding is not symbol 0")
    if not np.array_equal(_symbol_histogram(torch.from_numpy(blocks), alphabet, b, extra), hist):
        raise DecodeError(f"{r.what}: the decoded symbols do not match the table")
    if b == 1:
        return blocks.astype(dtype)
    return np.take(_digits(alphabet, b), blocks, axis=0).reshape(-1)[:count]  # (take: ~5x faster than [blocks])


__all__ = ["block_size", "blocks_of", "histogram", "symbol_dtype", "write_table", "read_table", "encode_symbols",
           "decode_symbols"]
