"""``gru`` and ``gru-small``: character language models for ``shakespeare`` (token sequences).

int64 ``[B, T]`` -> logits ``[B, T, vocab]`` (``num_classes`` characters; inputs are the same characters).
``gru`` is the reference Shakespeare model (TFF text-generation tutorial): embedding 256, GRU 1024, dense to
the vocabulary; trained from scratch (the reference fine-tunes a Dickens-pretrained checkpoint that is not
available offline): 4,021,569 parameters at 65 characters. ``gru-small``: the same scaled down for CPU smoke
runs (embedding 32, GRU 128: 72,673 parameters at 65 characters). Both sizes are parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..methods.registry import Param, positive, register
from .base import ModelPart, sequence_shape


class CharGRU(nn.Module):
    """Character language model: embedding -> GRU -> dense to the vocabulary, at every position.

    The GRU cell is written out (matmuls in a loop over time, PyTorch gate layout r, z, n with separate
    input/hidden biases, as Keras' ``reset_after=True``) so that ``torch.func.vmap`` over parameters works;
    the initial state is zero.
    """

    def __init__(self, vocab: int, embedding: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.embed = nn.Embedding(vocab, embedding)
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden, embedding))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden, hidden))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden))
        bound = 1.0 / math.sqrt(hidden)  # nn.GRU's initialisation
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            nn.init.uniform_(p, -bound, bound)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embed(x)  # [B, T, E]
        gi = F.linear(e, self.weight_ih, self.bias_ih)  # [B, T, 3H]: input part of all gates, all steps
        h = torch.zeros(x.shape[0], self.hidden, dtype=gi.dtype, device=gi.device)
        outs = []
        for t in range(x.shape[1]):
            i_r, i_z, i_n = gi[:, t].chunk(3, dim=-1)
            h_r, h_z, h_n = F.linear(h, self.weight_hh, self.bias_hh).chunk(3, dim=-1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            h = (1 - z) * n + z * h
            outs.append(h)
        return self.out(torch.stack(outs, dim=1))  # [B, T, vocab]


def _sizes(embedding: int, hidden: int) -> tuple[Param, Param]:
    return (Param("embedding", int, embedding, "embedding width", check=positive, rule="> 0"),
            Param("hidden", int, hidden, "GRU state width", check=positive, rule="> 0"))


@register
class GRU(ModelPart):
    name = "gru"
    summary = "the reference Shakespeare model: embedding 256, GRU 1024, dense to the vocabulary"
    paper = "TFF text-generation tutorial; as in the FLARE reference code"
    inputs = ("tokens",)
    params = _sizes(256, 1024)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        sequence_shape(input_shape, self.name)
        return CharGRU(num_classes, self.embedding, self.hidden)


@register
class GRUSmall(GRU):
    name = "gru-small"
    summary = "the character GRU scaled down for CPU smoke runs: embedding 32, GRU 128"
    paper = ""
    params = _sizes(32, 128)
