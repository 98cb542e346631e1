"""``identity``: no compression; every entry as a dense message (fp32 by default: 32 bits per entry)."""

from __future__ import annotations

from ...wire.message import Message
from ..registry import register
from .base import MessageCompressor


@register
class Identity(MessageCompressor):
    name = "identity"
    family = "dense"
    summary = "every entry, dense (value codec fp32: 32 bits per entry)"
    paper = "McMahan et al., AISTATS 2017 (FedAvg)"
    params = tuple(p for p in MessageCompressor.params if p.name == "value_codec")  # no positions travel

    def compress(self, v, ctx):
        rows = v.detach().float().cpu()
        return [Message.dense(self.sizes, row) for row in rows]
