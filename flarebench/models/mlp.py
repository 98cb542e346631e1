"""``mlp``: a small fast model for tests and quick looks: flatten, dense ``hidden`` + ReLU, dense classes."""

from __future__ import annotations

import math

from torch import nn

from ..methods.registry import Param, positive, register
from .base import ModelPart


@register
class MLP(ModelPart):
    """in-100-classes with ReLU: 79,510 parameters on MNIST (1x28x28, 10 classes)."""

    name = "mlp"
    summary = "flatten, dense 100 + ReLU, dense classes: a small fast model for tests and quick looks"
    inputs = ("images", "vectors")
    params = (Param("hidden", int, 100, "width of the hidden layer", check=positive, rule="> 0"),)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), self.hidden), nn.ReLU(),
                             nn.Linear(self.hidden, num_classes))
