"""Models by name. Each constructor takes ``(input_shape, num_classes, options)`` and returns an
``nn.Module`` that maps float32 ``[B, *input_shape]`` to logits ``[B, num_classes]``.

Losses are cross-entropy on logits (one softmax). The reference CNN's double softmax is a quirk
flarebench does not reproduce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from torch import nn

from .errors import ConfigError


@dataclass(frozen=True)
class ModelOptions:
    """Model switches that come from the run config."""

    fc_linear: bool = False  # reference FC quirk: no activation functions


def cnn(input_shape: tuple[int, ...], num_classes: int, opts: ModelOptions) -> nn.Module:
    """The paper's CNN: conv5x5-32, pool, conv5x5-64, pool, dense 512, dense classes ('valid' convs).

    582,026 parameters on 1x28x28 inputs; for 3x32x32 (CIFAR) the dense layer grows to fit.
    """
    c, h, w = _image_shape(input_shape, "cnn")
    h2, w2 = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
    if h2 < 1 or w2 < 1:
        raise ConfigError(f"model cnn needs images of at least 16x16, got {h}x{w}")
    return nn.Sequential(
        nn.Conv2d(c, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * h2 * w2, 512), nn.ReLU(),
        nn.Linear(512, num_classes),
    )


def fc(input_shape: tuple[int, ...], num_classes: int, opts: ModelOptions) -> nn.Module:
    """The paper's FC net: in-4069-4069-4069-classes (4069 as in the reference), ReLU unless fc_linear."""
    n_in = math.prod(input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    widths = [n_in, 4069, 4069, 4069]
    for a, b in zip(widths[:-1], widths[1:]):
        layers.append(nn.Linear(a, b))
        if not opts.fc_linear:
            layers.append(nn.ReLU())
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)


def mlp(input_shape: tuple[int, ...], num_classes: int, opts: ModelOptions) -> nn.Module:
    """A small fast model for tests and quick looks: in-100-classes with ReLU (79,510 params on MNIST)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 100), nn.ReLU(), nn.Linear(100, num_classes))


def _image_shape(input_shape: tuple[int, ...], model: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(f"model {model} needs image inputs [C, H, W], got shape {list(input_shape)}")
    return input_shape  # type: ignore[return-value]


MODELS: dict[str, Callable[[tuple[int, ...], int, ModelOptions], nn.Module]] = {
    "cnn": cnn,
    "fc": fc,
    "mlp": mlp,
}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, opts: ModelOptions | None = None) -> nn.Module:
    """Construct model ``name`` (see MODELS) for the given input shape and class count."""
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}' (choose from: {', '.join(sorted(MODELS))})")
    return MODELS[name](tuple(input_shape), num_classes, opts or ModelOptions())
