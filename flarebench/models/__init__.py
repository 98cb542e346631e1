"""Models: the ``model`` part kind (base.py: the contract) and the built-ins, one file each (``@register``).

Use :func:`build_model` to build one by name (or import reference) with parameters; ``flarebench parts`` lists them.
"""

from __future__ import annotations

from torch import nn

from .base import INPUTS, ModelPart, image_shape, sequence_shape


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, params: dict | None = None) -> nn.Module:
    """Model part ``name`` with ``params`` (checked against its declaration; defaults filled in), built for
    ``input_shape`` (one sample, no batch dimension) and ``num_classes``."""
    from ..methods.registry import make_part

    return make_part("model", name, params).build(tuple(input_shape), num_classes)


def num_params_for(cfg) -> int:
    """Trainable parameters of ``cfg``'s model on its dataset (world.num_params_for; kept here, where it was)."""
    from ..world import num_params_for as count

    return count(cfg)


__all__ = ["ModelPart", "INPUTS", "build_model", "num_params_for", "image_shape", "sequence_shape"]
