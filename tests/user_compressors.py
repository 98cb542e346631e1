"""A user's compressors, unregistered (used by import reference ``PATH.py:NAME``, and by the tests' plug-in
package): fp16 entries, and four broken variants that the run's checks must refuse."""

import torch

from flarebench.methods.compressors.base import Compressor


class Half(Compressor):
    """fp16 entries."""

    def compress(self, v, ctx):
        return [row.detach().to(torch.float16).cpu() for row in v]

    def encode(self, payload):
        return payload.numpy().tobytes()

    def decode(self, data):
        return torch.frombuffer(bytearray(data), dtype=torch.float16)

    def decompress(self, payload, device=None):
        return payload.float().to(device)

    def nnz(self, payload):
        return payload.numel()

    def bound_bits(self, payload):
        return 16.0 * payload.numel()


class Lossy(Half):
    """decode loses the sign: decode(encode(x)) is not x."""

    def decode(self, data):
        return super().decode(data).abs()


class NotBytes(Half):
    def encode(self, payload):
        return list(payload.numpy().tobytes())


class Boasting(Half):
    """States a floor above the bytes it sends."""

    def bound_bits(self, payload):
        return 64.0 * payload.numel()


class Unfinished(Compressor):
    """Only compress: the five other abstract methods of Compressor are missing."""

    def compress(self, v, ctx):
        return [row.detach().to(torch.float16).cpu() for row in v]
