"""Building blocks for a compressor's own payload bytes: a writer and a size-checking reader.

A payload that is not a sparse/dense/seeded :class:`~.message.Message` (signs, quantization levels,
low-rank factors, sketches, ...) is written with :class:`ByteWriter` and read back with
:class:`ByteReader`. Every payload starts with a 2-byte tag (:func:`ByteWriter.tag`: a magic byte and
the compressor's payload id) so a message of one compressor cannot be mistaken for another's.

The reader raises DecodeError, and only DecodeError, on a short, long or inconsistent message, and
checks that the bytes a field needs are there *before* allocating anything sized by the message.
"""

from __future__ import annotations

import numpy as np

from ..errors import DecodeError
from .bitstream import bytes_to_bits, pack_fixed, unpack_fixed
from .encoder import read_varint, write_varint

PAYLOAD_MAGIC = 0xFC  # sparse/dense/seeded messages (encoder.py) start with a frame byte <= 0x2F
PAYLOAD_TAGS: dict[int, str] = {}  # registry: payload id -> the compressor that owns it


def claim_tag(payload_id: int, owner: str) -> None:
    """Register ``payload_id`` (0-255) as ``owner``'s; TypeError if another compressor already has it (at import)."""
    if not 0 <= payload_id <= 255:
        raise TypeError(f"{owner}: payload id {payload_id} is not a byte")
    held = PAYLOAD_TAGS.setdefault(payload_id, owner)
    if held != owner:
        raise TypeError(f"{owner}: payload id {payload_id:#04x} is already {held}'s")


class ByteWriter:
    """Appends fields to a byte string; :meth:`getvalue` is what goes on the wire."""

    def __init__(self):
        self._parts: list[bytes] = []

    def tag(self, payload_id: int) -> "ByteWriter":
        """The 2-byte payload tag: PAYLOAD_MAGIC, then ``payload_id`` (0-255, unique per compressor)."""
        self._parts.append(bytes([PAYLOAD_MAGIC, payload_id]))
        return self

    def u8(self, x: int) -> "ByteWriter":
        self._parts.append(bytes([int(x)]))
        return self

    def varint(self, x: int) -> "ByteWriter":
        """An unsigned LEB128 integer (1 byte below 128)."""
        self._parts.append(write_varint(int(x)))
        return self

    def u64(self, x: int) -> "ByteWriter":
        self._parts.append(int(x).to_bytes(8, "little"))
        return self

    def f32(self, values) -> "ByteWriter":
        """Little-endian float32 values (a scalar or an array): 32 bits each."""
        self._parts.append(np.asarray(values, dtype="<f4").reshape(-1).tobytes())
        return self

    def f16(self, values) -> "ByteWriter":
        self._parts.append(np.asarray(values, dtype="<f2").reshape(-1).tobytes())
        return self

    def bits(self, bits: np.ndarray) -> "ByteWriter":
        """A 0/1 array packed MSB first, zero-padded to a whole byte: ceil(len / 8) bytes."""
        self._parts.append(np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes())
        return self

    def uints(self, values: np.ndarray, width: int) -> "ByteWriter":
        """Unsigned integers of ``width`` bits each, back to back, zero-padded to a byte: ceil(n*width/8) bytes."""
        self._parts.append(np.packbits(pack_fixed(np.asarray(values, dtype=np.uint64), width)).tobytes())
        return self

    def raw(self, data: bytes) -> "ByteWriter":
        self._parts.append(bytes(data))
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class ByteReader:
    """Reads the fields a :class:`ByteWriter` wrote, checking sizes first; ``what`` names the payload in errors."""

    def __init__(self, data: bytes | memoryview, what: str):
        self.buf = memoryview(bytes(data))
        self.at = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.at

    def need(self, nbytes: int) -> None:
        """DecodeError unless ``nbytes`` more bytes are there."""
        if nbytes < 0 or nbytes > self.remaining:
            raise DecodeError(f"{self.what}: message is truncated (needs {nbytes} more bytes, has {self.remaining})")

    def tag(self, payload_id: int) -> None:
        self.need(2)
        if self.buf[self.at] != PAYLOAD_MAGIC or self.buf[self.at + 1] != payload_id:
            raise DecodeError(f"{self.what}: not a {self.what} payload (bad tag)")
        self.at += 2

    def u8(self) -> int:
        self.need(1)
        self.at += 1
        return self.buf[self.at - 1]

    def varint(self, max_value: int | None = None) -> int:
        x, self.at = read_varint(self.buf, self.at)
        if max_value is not None and x > max_value:
            raise DecodeError(f"{self.what}: field value {x} exceeds {max_value}")
        return x

    def u64(self) -> int:
        self.need(8)
        self.at += 8
        return int.from_bytes(self.buf[self.at - 8 : self.at], "little")

    def f32(self, count: int, finite: bool = False) -> np.ndarray:
        """``count`` float32 values (a copy); DecodeError on NaN/inf when ``finite`` (values are data: a
        diverged client honestly sends NaN, and the run shows it; nothing is sized by them)."""
        self.need(4 * count)
        out = np.frombuffer(self.buf[self.at : self.at + 4 * count], dtype="<f4").astype(np.float32)
        self.at += 4 * count
        if finite and not np.all(np.isfinite(out)):
            raise DecodeError(f"{self.what}: non-finite value in the message")
        return out

    def f16(self, count: int, finite: bool = False) -> np.ndarray:
        self.need(2 * count)
        out = np.frombuffer(self.buf[self.at : self.at + 2 * count], dtype="<f2").astype(np.float32)
        self.at += 2 * count
        if finite and not np.all(np.isfinite(out)):
            raise DecodeError(f"{self.what}: non-finite value in the message")
        return out

    def bits(self, count: int) -> np.ndarray:
        """``count`` bits (uint8 0/1); the padding bits of the last byte must be zero."""
        nbytes = (count + 7) // 8
        self.need(nbytes)
        bits = bytes_to_bits(self.buf[self.at : self.at + nbytes])
        self.at += nbytes
        if bits[count:].any():
            raise DecodeError(f"{self.what}: padding bits are not zero")
        return bits[:count]

    def uints(self, count: int, width: int) -> np.ndarray:
        """``count`` unsigned ``width``-bit integers (uint64); zero padding checked."""
        nbits = count * width
        nbytes = (nbits + 7) // 8
        self.need(nbytes)
        bits = bytes_to_bits(self.buf[self.at : self.at + nbytes])
        self.at += nbytes
        if bits[nbits:].any():
            raise DecodeError(f"{self.what}: padding bits are not zero")
        return unpack_fixed(bits, width, count)

    def raw(self, nbytes: int) -> memoryview:
        self.need(nbytes)
        self.at += nbytes
        return self.buf[self.at - nbytes : self.at]

    def end(self) -> None:
        """DecodeError unless every byte was read."""
        if self.at != len(self.buf):
            raise DecodeError(f"{self.what}: {len(self.buf) - self.at} unexpected bytes after the last field")


__all__ = ["ByteWriter", "ByteReader", "PAYLOAD_MAGIC", "PAYLOAD_TAGS", "claim_tag"]
