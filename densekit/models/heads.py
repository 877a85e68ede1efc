"""The head registry and the Lite R-ASPP head.

A head is ``Head(in_channels, reductions, out_channels, **hparams)`` on a backbone's feature list and states
its ``output_reduction``. Every head registers itself where it is defined, with facts:
``dims`` (tuple of the backbone dims it works on: ``(2,)``, ``(3,)`` or ``(2, 3)``; a head serving both
takes a ``dims`` argument), ``tasks`` (the tasks it serves), ``width_keys`` (its channel-width
hyper-parameters, which sweeps scale) and ``builds``: "head" (default) or "model" for a head whose
builder takes the built backbone and returns the whole network (the flow estimator).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Registry

HEADS = Registry("head")
DENSE_2D_TASKS = ("seg", "depth")  # tasks a plain 2D per-pixel head serves


def _pick_level(reductions: list[int], want: int, what: str) -> int:
    if want not in reductions:
        raise ValueError(f"{what} needs a feature level at reduction {want}; the backbone provides {reductions}")
    return reductions.index(want)


class _ClampedAvgPool(nn.Module):
    """Average pooling whose window shrinks to the map when the map is smaller (then it is global pooling,
    which is what the paper's 49x49 window amounts to on its 769-px training crops at output stride 16)."""

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = (min(self.kernel[0], x.shape[-2]), min(self.kernel[1], x.shape[-1]))
        return F.avg_pool2d(x, k, self.stride)  # 1024x2048 at OS16 (64x128) -> a 1x4 grid, as in the paper


@HEADS.register("lraspp", dims=(2,), tasks=DENSE_2D_TASKS, width_keys=("inter_channels",))
class LRASPPHead(nn.Module):
    """Lite R-ASPP (Howard et al., "Searching for MobileNetV3", ICCV 2019, Fig. 10), the torchvision layout.

    high = deepest level: ``cbr`` (1x1 conv, BN, ReLU) gated by ``scale`` (pool, 1x1 conv, sigmoid);
    upsampled to the low level (reduction ``low_reduction``, default 8) and summed with a 1x1
    classifier on the low-level features: out = low_classifier(low) + high_classifier(gated high).

    ``pool``: "global" (torchvision: AdaptiveAvgPool2d(1), resolution independent) or
    ``{"kernel": [49, 49], "stride": [16, 20]}`` (the paper's pooling for 769-px crops at OS 16, whose
    gate is a coarse grid, bilinearly upsampled back to the high-level size).
    """

    def __init__(
        self,
        in_channels: list[int],
        reductions: list[int],
        out_channels: int,
        inter_channels: int = 128,
        low_reduction: int = 8,
        pool: str | dict = "global",
    ):
        super().__init__()
        self.low_index = _pick_level(list(reductions), low_reduction, "lraspp's low-level branch")
        self.high_index = len(in_channels) - 1
        self.output_reduction = int(low_reduction)
        low_ch, high_ch = in_channels[self.low_index], in_channels[self.high_index]
        self.cbr = nn.Sequential(
            nn.Conv2d(high_ch, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels), nn.ReLU(inplace=True)
        )
        if pool == "global":
            pooling = nn.AdaptiveAvgPool2d(1)
        elif isinstance(pool, dict) and {"kernel", "stride"} <= set(pool):
            pooling = _ClampedAvgPool(tuple(pool["kernel"]), tuple(pool["stride"]))
        else:
            raise ValueError(
                f"lraspp pool must be 'global' or {{'kernel': [kh, kw], 'stride': [sh, sw]}}, got {pool!r}"
            )
        self.scale = nn.Sequential(pooling, nn.Conv2d(high_ch, inter_channels, 1, bias=False), nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_ch, out_channels, 1)
        self.high_classifier = nn.Conv2d(inter_channels, out_channels, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low, high = features[self.low_index], features[self.high_index]
        gate = self.scale(high)
        if gate.shape[-2:] != high.shape[-2:] and gate.shape[-2:] != (1, 1):
            # paper pooling: a coarse grid of gates, spread back over the high-level map
            gate = F.interpolate(gate, size=high.shape[-2:], mode="bilinear", align_corners=False)
        x = self.cbr(high) * gate  # (B, inter, H/32, W/32)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)  # (B, inter, H/8, W/8)
        return self.low_classifier(low) + self.high_classifier(x)


def create_head(name: str, in_channels: list[int], reductions: list[int], out_channels: int, **kwargs) -> nn.Module:
    """Head ``name`` on features with ``in_channels`` at ``reductions``, predicting ``out_channels`` maps."""
    cls = HEADS.get_or_fail(name)
    if HEADS.fact(name, "builds", "head") != "head":
        raise ValueError(
            f"head {name!r} builds a whole model from the backbone, not a head on its features; "
            f"use densekit.models.assemble(backbone, {name!r}, ...)"
        )
    return cls(list(in_channels), list(reductions), int(out_channels), **kwargs)
