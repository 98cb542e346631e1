"""``vgg11``, ``vgg16``, ``vgg19``: VGG as in the FLARE reference (CIFAR).

3x3 same-padding convs + ReLU, a 2x2 max-pool after each block, no BatchNorm, then Flatten, Dense 4096 ReLU,
Dropout 0.5, Dense 4096 ReLU, Dropout 0.5, Dense classes. 28,144,010 parameters for VGG-11 on 3x32x32 with
10 classes. ``vgg11``'s ``reference_relu`` reproduces the reference VGG-11's quirk of no ReLU after the first
conv of each two-conv (256/512) block (conv, conv, relu); was RunConfig ``vgg11_reference_relu``.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..methods.registry import Param, register
from .base import ModelPart, image_shape

VGG_BLOCKS: dict[str, list[list[int]]] = {
    # conv widths per block; a 2x2 max-pool follows each block
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


class VGG(ModelPart):
    """One VGG variant (``name`` is a key of VGG_BLOCKS)."""

    paper = "Simonyan & Zisserman, ICLR 2015; as in the FLARE reference code"
    reference_relu = False  # vgg11 declares it as a parameter

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        c, h, w = image_shape(input_shape, self.name)
        blocks = VGG_BLOCKS[self.name]
        hf, wf = h >> len(blocks), w >> len(blocks)
        if hf < 1 or wf < 1:
            raise ConfigError(f"model {self.name} needs images of at least 32x32 (5 max-pools), got {h}x{w}")
        layers: list[nn.Module] = []
        for block in blocks:
            for j, width in enumerate(block):
                layers.append(nn.Conv2d(c, width, 3, padding=1))
                if not (self.reference_relu and len(block) == 2 and j == 0):
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


@register
class VGG11(VGG):
    name = "vgg11"
    summary = "VGG-11 (8 convs) without BatchNorm, dense 4096-4096 with dropout 0.5"
    params = (Param("reference_relu", bool, False, "reference quirk: no ReLU after the 1st conv of the 256/512 blocks"),)


@register
class VGG16(VGG):
    name = "vgg16"
    summary = "VGG-16 (13 convs) without BatchNorm, dense 4096-4096 with dropout 0.5"


@register
class VGG19(VGG):
    name = "vgg19"
    summary = "VGG-19 (16 convs) without BatchNorm, dense 4096-4096 with dropout 0.5"
