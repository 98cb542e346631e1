"""``fc``: the FLARE paper's fully connected net: in-4069-4069-4069-classes (4069 as in the reference code).

``linear`` reproduces the reference code's quirk of no activation functions (was RunConfig ``fc_linear``).
"""

from __future__ import annotations

import math

from torch import nn

from ..methods.registry import Param, register
from .base import ModelPart, image_shape


@register
class FC(ModelPart):
    """Flatten, three dense 4069 layers with ReLU (none with ``linear``), dense classes."""

    name = "fc"
    summary = "the FLARE paper's FC net: in-4069-4069-4069-classes, ReLU"
    paper = "Greidi & Cohen 2023 (arXiv 2312.13795)"
    params = (Param("linear", bool, False, "reference quirk: no activation functions"),)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        n_in = math.prod(image_shape(input_shape, self.name))
        layers: list[nn.Module] = [nn.Flatten()]
        widths = [n_in, 4069, 4069, 4069]
        for a, b in zip(widths[:-1], widths[1:]):
            layers.append(nn.Linear(a, b))
            if not self.linear:
                layers.append(nn.ReLU())
        layers.append(nn.Linear(widths[-1], num_classes))
        return nn.Sequential(*layers)
