"""``threshold``: the entries with ``|v| > tau`` (Strom, Interspeech 2015), a fixed threshold; used with error feedback.

How many entries travel depends on the data (it may be 0 in a tensor, or in the whole message);
``--sparsity`` plays no part. Shapes: ``v`` ``[K, P]``; a payload is a sparse :class:`Message` whose
values are what the server uses.

- ``values = "tau"`` (default, the paper's): a sent entry is ``sign(v) * tau``: its position and one
  sign bit. ``tau`` is a parameter of the run, known to both sides, so it does not travel.
  Wire (:mod:`flarebench.wire.frame`): 2-byte tag, position codec id (1 byte), ``k_t`` per tensor
  (varints: they depend on the data), the positions (flarebench's position codecs, ``position_codec``;
  ``auto`` = the smallest; their length is what the sign bits leave), then ``sum k_t`` sign bits
  (1 = positive), padded to a byte.
  Floor: ``sum_t log2 C(n_t, k_t) + sum_t k_t`` bits.
- ``values = "exact"``: the entries' own values through ``value_codec`` (fp32: GRACE's ThresholdCompressor),
  as a sparse message of :class:`~flarebench.wire.encoder.WireFormat`.
  Floor: ``sum_t log2 C(n_t, k_t)`` + the value codec's bits (32 per fp32 value).
  (``value_codec`` is used in this mode only.)

``tau`` is in weight units: ``v`` is the client's round update d = w_i - w (plus its residual). Strom
chose tau for his acoustic model's per-minibatch gradients; that value does not carry over to a
round's update of another model, so the default is set on the main job (mlp on mnist-embedded,
10 clients, batch 50, lr 0.1, momentum 0.9, 200 rounds): ``tau = 0.05`` gives 0.955 final accuracy
for 9.3 Mib of uplink (tau 0.01 / 0.03 / 0.1: 0.956 / 0.956 / 0.951 for 37.3 / 14.5 / 4.9 Mib).
With error feedback the residual builds up until it crosses tau, so a larger tau sends fewer,
later entries (tau = 0.05: 0.75% of the entries sent on average over the run, 8.2 bits per sent entry).

The floor ``log2 C(n_t, k_t)`` is that of a code for which every k-subset is equally likely; the
gap codes beat it where the positions cluster (at tau = 0.01 the main job's early messages are
16% below it), so ``uplink_bound_bits`` can exceed the bits of such a round.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import DecodeError
from ...wire.bounds import log2_binom, message_bound_bits
from ...wire.codecs import POSITION_CODECS_BY_ID
from ...wire.frame import ByteReader, ByteWriter
from ...wire.message import SPARSE, Message
from ..registry import FLOAT32_RULE, Param, positive_float32, register
from .base import MessageCompressor
from .topk import positions_above


@register
class Threshold(MessageCompressor):
    name = "threshold"
    family = "sparsifier"
    summary = "the entries with |v| > tau (a fixed threshold), sent as sign * tau (1 bit + position each)"
    paper = "Strom, Interspeech 2015"
    payload_id = 0x23
    params = MessageCompressor.params + (
        Param("tau", float, 0.05, "send the entries with |v| > tau", unit="weight units", check=positive_float32,
              rule=FLOAT32_RULE,
              paper="Strom 2015 (value chosen for the main job)"),
        Param("values", str, "tau", "what a sent entry carries: tau = sign(v) * tau, 1 bit (the paper's); "
              "exact = v itself through value_codec", choices=("tau", "exact"), paper="Strom 2015"),
    )

    def __init__(self, ctx, **params):
        super().__init__(ctx, **params)
        self.starts = torch.tensor([s.start for s in self.layout.segments], dtype=torch.int64)
        self.bounds = torch.tensor([s.stop for s in self.layout.segments], dtype=torch.int64)

    # ------------------------------------------------------------ client side
    def compress(self, v, ctx):
        v = v.detach()
        out = []
        for row in v:
            flat = positions_above(row, self.tau)
            vals = row[flat].float()
            if self.values == "tau":
                vals = torch.where(vals > 0, self.tau, -self.tau).float()
            flat, vals = flat.cpu(), vals.cpu()
            seg = torch.searchsorted(self.bounds, flat, right=True)  # tensor of each sent entry
            counts = torch.bincount(seg, minlength=len(self.sizes)).tolist()
            out.append(Message.sparse(self.sizes, counts, flat - self.starts[seg], vals))
        return out

    # ------------------------------------------------------------ bytes
    def encode(self, payload: Message) -> bytes:
        if self.values == "exact":
            return super().encode(payload)
        pos = [p.numpy() for p in payload.split_indices()]
        codec = self.wire.choose(pos, payload.counts)
        data = codec.encode(pos, self.sizes)
        w = ByteWriter().tag(self.payload_id).u8(codec.id)
        for k in payload.counts:
            w.varint(k)
        return w.raw(data).bits(payload.values.numpy() > 0).getvalue()

    def decode(self, data: bytes) -> Message:
        if self.values == "exact":
            msg = self.check_sizes(super().decode(data))
            if msg.kind != SPARSE:
                raise DecodeError(f"{self.name}: expected a sparse message")
            return msg
        r = ByteReader(data, self.name)
        r.tag(self.payload_id)
        codec_id = r.u8()
        if codec_id not in POSITION_CODECS_BY_ID:
            raise DecodeError(f"{self.name}: unknown position codec id {codec_id}")
        counts = tuple(r.varint(max_value=n) for n in self.sizes)
        total = sum(counts)
        length = r.remaining - (total + 7) // 8  # the positions: what the sign bits leave
        if length < 0:  # before decoding or allocating anything sized by the message
            raise DecodeError(f"{self.name}: message has {r.remaining} bytes after its header, its {total} signs "
                              f"alone need {(total + 7) // 8}")
        codec = POSITION_CODECS_BY_ID[codec_id]
        pos = codec.decode(r.raw(length), self.sizes, counts)
        signs = r.bits(total)
        r.end()
        indices = torch.from_numpy(np.concatenate(pos).astype(np.int64)) if pos else torch.zeros(0, dtype=torch.int64)
        values = torch.from_numpy(np.where(signs.astype(bool), np.float32(self.tau), np.float32(-self.tau)))
        msg = Message.sparse(self.sizes, counts, indices, values)
        msg.position_codec = codec.name
        return msg

    # ------------------------------------------------------------ accounting
    def bound_bits(self, payload: Message) -> float:
        """sum_t log2 C(n_t, k_t) + one sign bit per sent entry (values = tau); + value codec bits (exact)."""
        if self.values == "exact":
            return message_bound_bits(payload, self.wire.values)
        return sum(log2_binom(n, k) for n, k in zip(self.sizes, payload.counts)) + payload.nnz


__all__ = ["Threshold"]
