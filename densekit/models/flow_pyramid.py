"""FlowPyramid: a light MobileNetV3-style siamese feature pyramid, the default backbone of the flow model.

Registered as backbone ``flow_pyramid`` (2D, serves task flow only: no published weights, no use elsewhere).
Images (B, 3, H, W) in [0, 1]; the backbone normalises them with ImageNet statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BACKBONES, Backbone, load_trunk_weights

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
    conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    layers = [conv, nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.Hardswish())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """MobileNetV3's squeeze-and-excite: channel gates from global pooling, hard-sigmoid activated."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(gate))))


class InvertedResidual(nn.Module):
    """MobileNetV3 "bneck": 1x1 expand -> depthwise kxk (carries the stride) -> SE -> linear 1x1 project.
    ``expand=1`` is the depthwise-separable block. Residual when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 4, kernel: int = 3, se: bool = False):
        super().__init__()
        hidden = cin * expand
        layers = [_conv_bn_act(cin, hidden, 1)] if expand != 1 else []
        layers.append(_conv_bn_act(hidden, hidden, kernel, stride, groups=hidden))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(_conv_bn_act(hidden, cout, 1, act=False))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def _per_level(value, n: int, what: str) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"flow_pyramid: {what} needs one value per level ({n} levels), got {values}")
    return values


@BACKBONES.register("flow_pyramid", dims=2, tasks=("flow",))
class FlowPyramid(Backbone):
    """A light MobileNetV3-style siamese feature pyramid for flow, one level per stride 2, 4, ..., 2**L.

    Level 0 is a stride-2 3x3 stem plus depthwise-separable blocks; every further level starts with a
    strided inverted residual block (hardswish, optional squeeze-excite) and adds ``blocks[i] - 1``
    unstrided ones. Defaults: widths (16, 32, 64, 96, 128, 196) at reductions (2, 4, 8, 16, 32, 64),
    expansion (1, 2, 2, 4, 4, 4) and SE on the three coarsest levels (MobileNetV3 likewise keeps its
    high-resolution blocks narrow and puts SE in its late stages; expansion 4 at strides 4/8 measured 3x
    slower on CPU for the whole pyramid). Both frames go through the same weights (the flow model batches
    them together).

    There are no published weights: ``pretrained`` false/"auto" gives random init, a path is loaded strictly,
    true is an error.
    """

    def __init__(
        self,
        widths: tuple[int, ...] | list[int] = (16, 32, 64, 96, 128, 196),
        blocks: int | tuple[int, ...] | list[int] = (1, 1, 2, 2, 2, 2),
        expand: int | tuple[int, ...] | list[int] = (1, 2, 2, 4, 4, 4),
        se: bool | tuple[bool, ...] | list[bool] = (False, False, False, True, True, True),
        pretrained: bool | str = False,
    ):
        super().__init__(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        widths = [int(w) for w in widths]
        n = len(widths)
        if n < 1 or min(widths) < 1:
            raise ValueError(f"flow_pyramid: widths must be positive channel counts, got {widths}")
        blocks = [int(b) for b in _per_level(blocks, n, "blocks")]
        expand = [int(e) for e in _per_level(expand, n, "expand")]
        se = [bool(s) for s in _per_level(se, n, "se")]
        if min(blocks) < 1:
            raise ValueError(f"flow_pyramid: every level needs at least one block, got blocks={blocks}")
        levels = []
        for i, (width, depth, exp, use_se) in enumerate(zip(widths, blocks, expand, se)):
            if i == 0:  # stride 2: a full 3x3 conv on RGB, then (depthwise-separable for expand 1) blocks
                layers = [_conv_bn_act(3, width, 3, stride=2)]
                layers += [InvertedResidual(width, width, 1, expand=exp, se=use_se) for _ in range(depth)]
            else:
                layers = [InvertedResidual(widths[i - 1], width, 2, expand=exp, se=use_se)]
                layers += [InvertedResidual(width, width, 1, expand=exp, se=use_se) for _ in range(depth - 1)]
            levels.append(nn.Sequential(*layers))
        self.levels = nn.ModuleList(levels)
        self.channels = widths
        self.reductions = [2 ** (i + 1) for i in range(n)]
        word = str(pretrained).strip().lower()
        if word == "true":
            raise ValueError(
                "flow_pyramid has no published pretrained weights; use pretrained=false, or a local weight file path"
            )
        if word not in ("false", "none", "", "auto"):
            load_trunk_weights(self, pretrained, what="flow_pyramid")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.normalize(x)
        out = []
        for level in self.levels:
            x = level(x)  # (B, widths[i], H / 2**(i+1), W / 2**(i+1))
            out.append(x)
        return out
