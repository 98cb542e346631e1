"""A model of your own for flarebench: a small ResNet with GroupNorm.

    python -m flarebench run --model examples/custom_model.py:Net -p model.width=16 --method stc --rounds 3

flarebench builds ``Net(input_shape, num_classes, **params)``: ``input_shape`` is one sample's shape
(``[C, H, W]`` for images), ``num_classes`` the data set's classes, and the keyword arguments after them
are the model's parameters (``-p model.width=32``, TOML ``[model] width = 32``), checked against this
signature. ``forward`` maps float32 ``[B, C, H, W]`` to logits ``[B, num_classes]``.

Written so that flarebench's vectorized engine can train all clients at once with ``torch.func.vmap``:
GroupNorm instead of BatchNorm (no running statistics, no batch coupling), no in-place operations
(``out = out + x``, ``nn.ReLU()`` without ``inplace``). A model vmap cannot batch still runs: the
engine falls back to training clients one after another and logs why.
"""

from __future__ import annotations

from torch import nn


class Block(nn.Module):
    """Two 3x3 convolutions with GroupNorm and a skip connection (1x1 convolution when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(groups, c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.GroupNorm(groups, c_out),
        )
        self.skip = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.GroupNorm(groups, c_out))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


class Net(nn.Module):
    """ResNet-8-style: a 3x3 stem, three residual stages (width, 2 width, 4 width; stride 2 after the first),
    global average pooling, a linear classifier. ``width`` channels in the first stage; ``groups`` GroupNorm groups.
    With width 16: 77,754 parameters on 1x28x28 inputs and 10 classes."""

    def __init__(self, input_shape, num_classes: int, width: int = 16, groups: int = 4):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"Net needs image inputs [C, H, W], got shape {list(input_shape)}")
        if width < 1 or width % groups:
            raise ValueError(f"width must be a positive multiple of groups ({groups}), got {width}")
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, 1, 1, bias=False), nn.GroupNorm(groups, width), nn.ReLU(),
            Block(width, width, 1, groups),
            Block(width, 2 * width, 2, groups),
            Block(2 * width, 4 * width, 2, groups),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
