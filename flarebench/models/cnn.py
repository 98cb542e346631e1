"""``cnn``: the FLARE paper's CNN: conv5x5-32, pool, conv5x5-64, pool, dense 512, dense classes ('valid' convs).

``double_softmax`` reproduces the reference code's quirk: a softmax dense layer, then a Softmax layer, then
cross-entropy on probabilities, i.e. the loss is ``-log softmax(softmax(z))_y``. Off by default: it flattens the
loss and slows learning (was RunConfig ``cnn_double_softmax`` before parts).
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..methods.registry import Param, register
from .base import ModelPart, image_shape


@register
class CNN(ModelPart):
    """582,026 parameters on 1x28x28 inputs; for 3x32x32 (CIFAR) the dense layer grows to fit."""

    name = "cnn"
    summary = "the FLARE paper's CNN: conv5x5-32, pool, conv5x5-64, pool, dense 512, dense classes"
    paper = "Greidi & Cohen 2023 (arXiv 2312.13795)"
    params = (Param("double_softmax", bool, False, "reference quirk: softmax on the logits, then cross-entropy's own softmax"),)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        c, h, w = image_shape(input_shape, self.name)
        h2, w2 = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
        if h2 < 1 or w2 < 1:
            raise ConfigError(f"model cnn needs images of at least 16x16, got {h}x{w}")
        layers = [
            nn.Conv2d(c, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * h2 * w2, 512), nn.ReLU(),
            nn.Linear(512, num_classes),
        ]
        if self.double_softmax:  # the reference's quirk: the loss's softmax comes on top of this one
            layers.append(nn.Softmax(dim=-1))
        return nn.Sequential(*layers)
