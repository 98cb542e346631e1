"""The server -> clients broadcast of each round and its bits.

- ``dense`` (default, as the paper): each participating client downloads the fp32 model:
  ``32 * P`` bits per participant per round. The server applies its update exactly.
- ``sparse``: the server turns the aggregated update ``[P]`` into a message (its non-zero entries
  per tensor; a dense message if every entry is non-zero), encodes it with the uplink's
  :class:`WireFormat` (same position/value codecs), and sends it to **every** client, participant
  or not, so that all C clients hold the same model as the server under partial participation
  without any catch-up logic: ``C * 8 * len(bytes)`` bits per round. Server and clients apply the
  *decoded* update, so a lossy value codec changes the model the same way on both sides.
"""

from __future__ import annotations

import torch

from ..flat import offsets
from .encoder import Encoded, WireFormat
from .message import Message

DOWNLINKS = ("dense", "sparse")


def update_message(sizes: tuple[int, ...], update: torch.Tensor) -> Message:
    """Dense float32 ``[P]`` -> the message carrying its non-zero entries (dense if all are non-zero)."""
    update = update.detach().float().cpu()
    if bool((update != 0).all()):
        return Message.dense(sizes, update)
    indices, counts, start = [], [], 0
    for n in sizes:
        nz = torch.nonzero(update[start : start + n], as_tuple=True)[0]
        indices.append(nz)
        counts.append(nz.numel())
        start += n
    idx = torch.cat(indices) if indices else torch.zeros(0, dtype=torch.int64)
    starts = torch.repeat_interleave(torch.tensor(offsets(sizes), dtype=torch.int64), torch.tensor(counts))
    return Message.sparse(sizes, counts, idx, update[idx + starts])


def message_to_dense(msg: Message, num_params: int) -> torch.Tensor:
    """A sparse or dense message -> float32 ``[P]`` (zeros where nothing was sent)."""
    if msg.is_dense:
        return msg.values.clone()
    out = torch.zeros(num_params, dtype=torch.float32)
    starts = torch.tensor(offsets(msg.sizes), dtype=torch.int64)
    out[msg.indices + torch.repeat_interleave(starts, torch.tensor(msg.counts))] = msg.values
    return out


class Downlink:
    """``send(update [P], participants) -> (update the clients apply [P], bits, Encoded or None)``."""

    def __init__(self, mode: str, wire: WireFormat, num_clients: int):
        if mode not in DOWNLINKS:
            raise ValueError(f"unknown downlink {mode}")
        self.mode, self.wire, self.num_clients = mode, wire, num_clients
        self.num_params = sum(wire.sizes)

    def send(self, update: torch.Tensor, participants: int) -> tuple[torch.Tensor, int, Encoded | None]:
        if self.mode == "dense":
            return update, 32 * self.num_params * participants, None
        enc = self.wire.encode(update_message(self.wire.sizes, update))
        applied = message_to_dense(self.wire.decode(enc.data), self.num_params).to(update.device)
        return applied, self.num_clients * enc.bits, enc
