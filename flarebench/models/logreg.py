"""``logreg``: multinomial logistic regression, FedProx's model for its Synthetic data (and MNIST)."""

from __future__ import annotations

import math

from torch import nn

from ..methods.registry import register
from .base import ModelPart


@register
class LogReg(ModelPart):
    """flatten, one dense layer to the classes (softmax in the loss): 610 parameters on Synthetic (60 features, 10 classes)."""

    name = "logreg"
    summary = "multinomial logistic regression: flatten, dense to the classes"
    paper = "Li et al., MLSys 2020 (FedProx: its model for Synthetic and MNIST)"
    inputs = ("images", "vectors")

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))
