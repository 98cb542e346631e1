"""Models by name. Each constructor takes ``(input_shape, num_classes, options)`` and returns an
``nn.Module`` that maps float32 ``[B, *input_shape]`` to logits ``[B, num_classes]``.

Sequence models (``gru``) map int64 token ids ``[B, T]`` to logits ``[B, T, num_classes]``; the
loss flattens positions, so accuracy is next-token accuracy over all positions.

Losses are cross-entropy on logits (one softmax). The reference CNN applies softmax twice (a
softmax dense layer, then a Softmax layer, then cross-entropy on probabilities); ``cnn_double_softmax``
reproduces that by making the model's "logits" softmax probabilities, so the loss is
``-log softmax(softmax(z))_y``. Off by default: it flattens the loss and slows learning.

All models are built from functional-friendly modules (no in-place ops, no BatchNorm, no
``nn.GRU``) so ``torch.func.functional_call`` and ``torch.func.vmap`` work on them; dropout
under vmap needs ``randomness="different"`` (or ``"same"``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError


@dataclass(frozen=True)
class ModelOptions:
    """Model switches that come from the run config."""

    fc_linear: bool = False  # reference FC quirk: no activation functions
    cnn_double_softmax: bool = False  # reference CNN quirk: softmax on the logits, then cross-entropy's own softmax
    vgg11_reference_relu: bool = False  # reference VGG-11 quirk: no ReLU after the 1st conv of its 256/512 blocks

    @classmethod
    def from_config(cls, cfg) -> "ModelOptions":
        """The model switches of a RunConfig (fields missing from an older config take defaults)."""
        return cls(**{f: getattr(cfg, f) for f in cls.__dataclass_fields__ if hasattr(cfg, f)})


def cnn(input_shape: tuple[int, ...], num_classes: int, opts: ModelOptions) -> nn.Module:
    """The paper's CNN: conv5x5-32, pool, conv5x5-64, pool, dense 512, dense classes ('valid' convs).

    582,026 parameters on 1x28x28 inputs; for 3x32x32 (CIFAR) the dense layer grows to fit.
    """
    c, h, w = _image_shape(input_shape, "cnn")
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
    if opts.cnn_double_softmax:  # the reference's quirk: the loss's softmax comes on top of this one
        layers.append(nn.Softmax(dim=-1))
    return nn.Sequential(*layers)


def fc(input_shape: tuple[int, ...], num_classes: int, opts: ModelOptions) -> nn.Module:
    """The paper's FC net: in-4069-4069-4069-classes (4069 as in the reference), ReLU unless fc_linear."""
    n_in = math.prod(_image_shape(input_shape, "fc"))
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
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(_image_shape(input_shape, "mlp")), 100), nn.ReLU(), nn.Linear(100, num_classes))


VGG_BLOCKS: dict[str, list[list[int]]] = {
    # conv widths per block; a 2x2 max-pool follows each block
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def vgg(variant: str) -> Callable[[tuple[int, ...], int, ModelOptions], nn.Module]:
    """VGG as in the FLARE reference (CIFAR): 3x3 same-padding convs + ReLU, 2x2 max-pool after each
    block, no BatchNorm, then Flatten, Dense 4096 ReLU, Dropout 0.5, Dense 4096 ReLU, Dropout 0.5,
    Dense classes. 28,144,010 parameters for VGG-11 on 3x32x32 with 10 classes.

    ``vgg11_reference_relu``: the reference VGG-11 has no ReLU after the first conv of each
    two-conv (256/512) block (conv, conv, relu); default is ReLU after every conv.
    """

    def build(input_shape: tuple[int, ...], num_classes: int, opts: ModelOptions) -> nn.Module:
        c, h, w = _image_shape(input_shape, variant)
        blocks = VGG_BLOCKS[variant]
        hf, wf = h >> len(blocks), w >> len(blocks)
        if hf < 1 or wf < 1:
            raise ConfigError(f"model {variant} needs images of at least 32x32 (5 max-pools), got {h}x{w}")
        quirk = opts.vgg11_reference_relu and variant == "vgg11"
        layers: list[nn.Module] = []
        for block in blocks:
            for j, width in enumerate(block):
                layers.append(nn.Conv2d(c, width, 3, padding=1))
                if not (quirk and len(block) == 2 and j == 0):
                    layers.append(nn.ReLU())
                c = width
            layers.append(nn.MaxPool2d(2))
        return nn.Sequential(
            *layers,
            nn.Flatten(),
            nn.Linear(c * hf * wf, 4096), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )

    build.__name__ = variant
    build.__doc__ = vgg.__doc__
    return build


class CharGRU(nn.Module):
    """Character language model: embedding -> GRU -> dense to the vocabulary, at every position.

    int64 ``[B, T]`` -> logits ``[B, T, vocab]``. The GRU cell is written out (matmuls in a loop
    over time, PyTorch gate layout r, z, n with separate input/hidden biases, as Keras'
    ``reset_after=True``) so that ``torch.func.vmap`` over parameters works; the initial state is zero.
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


def gru(input_shape: tuple[int, ...], num_classes: int, opts: ModelOptions) -> nn.Module:
    """The reference Shakespeare model (TFF text-generation tutorial): embedding 256, GRU 1024, dense
    to the vocabulary (``num_classes`` characters; inputs are the same characters). Trained from
    scratch: the reference fine-tunes a Dickens-pretrained checkpoint that is not available offline.
    4,021,569 parameters for the 65-character tiny-Shakespeare vocabulary.
    """
    _sequence_shape(input_shape, "gru")
    return CharGRU(num_classes, 256, 1024)


def gru_small(input_shape: tuple[int, ...], num_classes: int, opts: ModelOptions) -> nn.Module:
    """The same character GRU scaled down for CPU smoke runs: embedding 32, GRU 128 (72,673 params at 65 chars)."""
    _sequence_shape(input_shape, "gru-small")
    return CharGRU(num_classes, 32, 128)


def _sequence_shape(input_shape: tuple[int, ...], model: str) -> None:
    if len(input_shape) != 1:
        raise ConfigError(f"model {model} needs token sequences [T] (e.g. dataset shakespeare), got shape {list(input_shape)}")


def _image_shape(input_shape: tuple[int, ...], model: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(f"model {model} needs image inputs [C, H, W], got shape {list(input_shape)}")
    return input_shape  # type: ignore[return-value]


MODELS: dict[str, Callable[[tuple[int, ...], int, ModelOptions], nn.Module]] = {
    "cnn": cnn,
    "fc": fc,
    "mlp": mlp,
    "vgg11": vgg("vgg11"),
    "vgg16": vgg("vgg16"),
    "vgg19": vgg("vgg19"),
    "gru": gru,
    "gru-small": gru_small,
}


SEQUENCE_MODELS = {"gru", "gru-small"}  # take int64 token sequences [T]; the others take float images [C, H, W]


@functools.lru_cache(maxsize=None)
def check_fits(model: str, dataset: str) -> None:
    """ConfigError unless ``model`` can be built for ``dataset``'s inputs (known without reading its
    files): images or token sequences, and large enough images (e.g. vgg needs 32x32). Built on the
    meta device: no memory allocated."""
    from .data.datasets import dataset_shape

    input_shape, num_classes = dataset_shape(dataset)
    tokens = len(input_shape) == 1
    if tokens != (model in SEQUENCE_MODELS):
        fits = ", ".join(sorted(m for m in MODELS if (m in SEQUENCE_MODELS) == tokens))
        kind = f"token sequences [{input_shape[0]}]" if tokens else f"images {list(input_shape)}"
        raise ConfigError(f"model {model} cannot take dataset {dataset}'s {kind}; models for it: {fits}")
    with torch.device("meta"):
        build_model(model, input_shape, num_classes)


def num_params_for(cfg) -> int:
    """Trainable parameters of ``cfg.model`` on ``cfg.dataset``, from the dataset's known shape
    (no data files read, no memory allocated: built on the meta device)."""
    import torch

    from .data.datasets import dataset_shape
    from .flat import Layout

    input_shape, num_classes = dataset_shape(cfg.dataset)
    with torch.device("meta"):
        return Layout.of(build_model(cfg.model, input_shape, num_classes, ModelOptions.from_config(cfg))).num_params


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, opts: ModelOptions | None = None) -> nn.Module:
    """Construct model ``name`` (see MODELS) for the given input shape and class count."""
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}' (choose from: {', '.join(sorted(MODELS))})")
    return MODELS[name](tuple(input_shape), num_classes, opts or ModelOptions())
