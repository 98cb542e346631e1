"""The ``model`` part kind: a recipe that builds the run's ``nn.Module`` for the dataset's inputs.

Contract of :meth:`ModelPart.build` ``(input_shape, num_classes) -> nn.Module``:

- ``input_shape``: one sample's shape without the batch dimension (``DataSpec.input_shape``): images
  ``(C, H, W)`` float32, vectors ``(F,)`` float32, or token sequences ``(T,)`` int64;
- the module maps a batch ``[B, *input_shape]`` to float logits ``[B, num_classes]``, or, for token
  sequences (per-position targets ``y`` of shape ``[B, T]``), ``[B, T, num_classes]``. The loss is
  cross-entropy on these logits (one softmax), accuracy is argmax agreement (per position for tokens);
- parameters are created under the caller's seeded RNG and device (``torch.device`` context): build no
  tensors on an explicit device and draw no seed of your own. Build on the ``meta`` device must work (it
  is how parameter counts are known without memory);
- functional-friendly modules (no in-place ops, no BatchNorm running statistics, no ``nn.GRU``) let the
  vectorized engine ``vmap`` over clients; others run on the sequential engine (engine/select.py says why).

``inputs`` declares which :data:`INPUTS` the model accepts (checked before any data is read); an empty
tuple accepts any, and the shape check is the tiny forward pass at setup (world.py).
A model's switches (e.g. ``cnn``'s ``double_softmax``) are its declared ``params`` (``-p model.NAME=V``,
TOML ``[model]``); they are attributes of the part when ``build`` runs.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..methods.registry import WorldPart

INPUTS = ("images", "vectors", "tokens")  # float32 [C, H, W] | float32 [F] | int64 [T] (per-position targets)


class ModelPart(WorldPart):
    """Base of every model part: ``build(input_shape, num_classes) -> nn.Module`` (contract: module docstring)."""

    kind = "model"
    inputs: tuple[str, ...] = ("images",)  # which DataSpec.inputs it takes; () = any (checked by a forward pass)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        raise NotImplementedError


def image_shape(input_shape: tuple[int, ...], model: str) -> tuple[int, int, int]:
    """``(C, H, W)``, or ConfigError naming ``model`` for inputs that are not images."""
    if len(input_shape) != 3:
        raise ConfigError(f"model {model} needs image inputs [C, H, W], got shape {list(input_shape)}")
    return tuple(input_shape)  # type: ignore[return-value]


def sequence_shape(input_shape: tuple[int, ...], model: str) -> int:
    """``T`` of token sequences ``(T,)``, or ConfigError naming ``model``."""
    if len(input_shape) != 1:
        raise ConfigError(f"model {model} needs token sequences [T] (e.g. dataset shakespeare), got shape {list(input_shape)}")
    return input_shape[0]


__all__ = ["ModelPart", "INPUTS", "image_shape", "sequence_shape"]
