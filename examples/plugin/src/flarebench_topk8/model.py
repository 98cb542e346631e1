"""``leaf-lstm``: LEAF's Shakespeare model (Caldas et al. 2018, models/shakespeare/stacked_lstm.py): an
8-dimensional character embedding, two stacked LSTM layers of 256 units, a dense layer from the last
position's output to the characters. For ``--dataset leaf`` text with ``dataset.targets=next`` (int64 ``[B, 80]``
ids -> logits ``[B, 80]``). ``nn.LSTM`` does not vmap: flarebench trains it on its sequential engine.
"""

from __future__ import annotations

from torch import nn

from flarebench.methods.registry import Param, positive, register
from flarebench.models.base import ModelPart, sequence_shape


class StackedLSTM(nn.Module):
    def __init__(self, vocab: int, embedding: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, embedding)
        self.lstm = nn.LSTM(embedding, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x):
        h, _ = self.lstm(self.embed(x))  # [B, T, hidden]
        return self.out(h[:, -1])  # [B, vocab]: the character after the sequence


@register
class LeafLSTM(ModelPart):
    name = "leaf-lstm"
    summary = "LEAF's Shakespeare model: embedding 8, 2 LSTM layers of 256, dense from the last position (example plug-in)"
    paper = "Caldas et al., LEAF, 2018 (stacked_lstm.py)"
    inputs = ("tokens",)
    params = (
        Param("embedding", int, 8, "character embedding size", check=positive, rule="> 0"),
        Param("hidden", int, 256, "LSTM units per layer", check=positive, rule="> 0"),
        Param("layers", int, 2, "stacked LSTM layers", check=positive, rule="> 0"),
    )

    def build(self, input_shape, num_classes):
        sequence_shape(input_shape, self.name)
        return StackedLSTM(num_classes, self.embedding, self.hidden, self.layers)
