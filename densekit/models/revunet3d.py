"""Memory-efficient 3D U-Net with reversible mobile inverted bottlenecks (Pendse et al., "Memory Efficient
3D U-Net with Reversible Mobile Inverted Bottlenecks", BrainLes 2020, arXiv 2104.09648).

The paper gives the idea (reversible MBConv stacks in a 3D U-Net for 4-modality BraTS volumes; with a
fixed memory budget up to 3x larger inputs) but no code, levels or widths; those here are our choice:

- ``RevMB3dEncoder`` (backbone ``revmb3d``): stem 3x3x3 conv to ``widths[0]``, then per level a 2x2x2
  stride-2 conv to the next width; every level ends in a stack of ``depths[i]`` reversible couplings
  (F, G = 3D inverted bottlenecks on half the channels). Features at reductions 1, 2, 4, ... 2^(L-1).
- ``RevUNet3dHead`` (head ``revunet3d``): per level, deepest first, a 2x2x2 stride-2 transposed conv to
  the skip's width, *addition* of the skip (keeps the width even and costs no memory), a reversible
  stack of ``decoder_depths[i]`` couplings; then a 1x1x1 classifier. Output at reduction 1.

The stem, the down/up convolutions and the classifier carry no norm or activation, so the only tensors
autograd keeps between the reversible stacks are the stack outputs themselves (which the next conv and
the skip need anyway); everything inside the stacks is recomputed in the backward pass.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from .backbones import BACKBONES, with_pretrained
from .heads import HEADS
from .reversible import ReversibleCoupling, ReversibleSequence


def _stack(channels: int, depth: int, reversible: bool, bottleneck: dict) -> ReversibleSequence:
    blocks = [ReversibleCoupling(channels, **bottleneck) for _ in range(int(depth))]
    return ReversibleSequence(blocks, reversible)


def _bottleneck(expand_ratio, kernel, norm, act, num_groups) -> dict:
    return dict(expand_ratio=expand_ratio, kernel=kernel, norm=norm, act=act, num_groups=num_groups)


def _weight_file(pretrained):
    """None (random init) or an existing weight file: there are no published weights for this network."""
    word = str(pretrained).strip().lower() if pretrained is not None else "false"
    if word in ("false", "none", "", "auto"):
        return None
    if word == "true":
        raise ValueError(
            "revmb3d has no published pretrained weights (Pendse et al. released no code); pass "
            "pretrained=/path/to/weights (a densekit state dict) or pretrained=false"
        )
    return with_pretrained(pretrained, "revmb3d", lambda hub: None)[1]  # FileNotFoundError if missing


@BACKBONES.register("revmb3d", dims=3)
class RevMB3dEncoder(nn.Module):
    """Reversible MBConv 3D encoder, following the backbone contract (``channels``, ``reductions``,
    ``stride``, ``forward(x) -> list[Tensor]``) with ``dims = 3``.

    Input: volumes (B, in_channels, D, H, W), already z-scored per channel by the data pipeline, so there
    is no mean/std buffer (hence an ``nn.Module``, not a ``Backbone``, whose buffers are 2D image
    statistics). D, H, W must be multiples of ``stride`` = 2^(levels-1) (16 for five levels); the model
    assembly pads. ``reversible=False`` runs the same parameters with stored activations.
    """

    dims = 3

    def __init__(
        self,
        in_channels: int = 4,
        widths: list[int] | tuple[int, ...] = (16, 32, 64, 128, 256),
        depths: list[int] | tuple[int, ...] = (1, 1, 2, 2, 2),
        expand_ratio: int = 4,
        kernel: int = 3,
        norm: str = "group",
        act: str = "relu6",
        num_groups: int = 8,
        reversible: bool = True,
        pretrained: bool | str = False,
    ):
        super().__init__()
        widths, depths = [int(w) for w in widths], [int(d) for d in depths]
        if len(widths) < 2 or len(widths) != len(depths):
            raise ValueError(f"revmb3d needs >= 2 levels and one depth per width, got widths {widths}, depths {depths}")
        odd = [w for w in widths if w < 2 or w % 2]
        if odd:
            raise ValueError(f"revmb3d widths must be even (a reversible coupling splits them in halves), got {widths}")
        if any(d < 0 for d in depths):
            raise ValueError(f"revmb3d depths must be >= 0, got {depths}")
        self.in_channels = int(in_channels)
        block = _bottleneck(expand_ratio, kernel, norm, act, num_groups)
        self.stem = nn.Conv3d(self.in_channels, widths[0], 3, padding=1)
        self.downs = nn.ModuleList(nn.Conv3d(a, b, 2, stride=2) for a, b in pairwise(widths))
        self.stages = nn.ModuleList(_stack(w, d, reversible, block) for w, d in zip(widths, depths))
        self.channels = widths
        self.reductions = [2**i for i in range(len(widths))]
        path = _weight_file(pretrained)
        if path is not None:
            from .backbones import load_trunk_weights

            load_trunk_weights(self, path, what="RevMB3dEncoder")

    @property
    def stride(self) -> int:
        return max(self.reductions)

    def check_input(self, x: torch.Tensor) -> None:
        want = f"volumes (B, {self.in_channels}, D, H, W) with D, H, W multiples of {self.stride}"
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"RevMB3dEncoder expects {want}; got shape {tuple(x.shape)}")
        if any(s % self.stride for s in x.shape[2:]):
            raise ValueError(
                f"RevMB3dEncoder expects {want} (pad the volume; the model assembly does); got shape {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        x = self.stages[0](self.stem(x))  # (B, widths[0], D, H, W)
        feats = [x]
        for down, stage in zip(self.downs, self.stages[1:]):
            x = stage(down(x))  # (B, widths[i], D/2^i, H/2^i, W/2^i)
            feats.append(x)
        return feats


@HEADS.register("revunet3d", dims=(3,), tasks=("volume",), width_keys=())
class RevUNet3dHead(nn.Module):
    """U-Net decoder of reversible MBConv stacks, head signature ``(in_channels, reductions, out_channels)``.

    Per level, deepest first: ConvTranspose3d (kernel = stride = the reduction ratio, 2) to the skip's
    channels, + skip, ``decoder_depths[i]`` reversible couplings; then a 1x1x1 conv to ``out_channels``
    logits at ``reductions[0]`` (``output_reduction``; 1 on revmb3d). ``decoder_depths``: one entry per
    upsampling step (levels - 1), deepest first; default one coupling each.
    """

    def __init__(
        self,
        in_channels: list[int],
        reductions: list[int],
        out_channels: int,
        decoder_depths: list[int] | tuple[int, ...] | None = None,
        expand_ratio: int = 4,
        kernel: int = 3,
        norm: str = "group",
        act: str = "relu6",
        num_groups: int = 8,
        reversible: bool = True,
    ):
        super().__init__()
        channels, reductions = [int(c) for c in in_channels], [int(r) for r in reductions]
        if len(channels) != len(reductions) or len(channels) < 2:
            raise ValueError(f"revunet3d needs >= 2 levels with one reduction each, got {channels} / {reductions}")
        if any(b % a or b <= a for a, b in pairwise(reductions)):
            raise ValueError(
                f"revunet3d needs increasing reductions, each a multiple of the previous, got {reductions}"
            )
        if any(c < 2 or c % 2 for c in channels[:-1]):
            raise ValueError(
                f"revunet3d runs reversible couplings at the skip widths: they must be even, got {channels}"
            )
        n_up = len(channels) - 1
        depths = [1] * n_up if decoder_depths is None else [int(d) for d in decoder_depths]
        if len(depths) != n_up or any(d < 0 for d in depths):
            raise ValueError(f"decoder_depths needs {n_up} entries >= 0 (levels - 1, deepest first), got {depths}")
        block = _bottleneck(expand_ratio, kernel, norm, act, num_groups)
        self.ups, self.stages = nn.ModuleList(), nn.ModuleList()
        for i, depth in enumerate(depths):
            cin, cskip = channels[-1 - i], channels[-2 - i]
            ratio = reductions[-1 - i] // reductions[-2 - i]
            self.ups.append(nn.ConvTranspose3d(cin, cskip, ratio, stride=ratio))
            self.stages.append(_stack(cskip, depth, reversible, block))
        self.classifier = nn.Conv3d(channels[0], int(out_channels), 1)
        self.in_channels, self.output_reduction = channels, reductions[0]

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        if len(feats) != len(self.in_channels) or any(f.dim() != 5 for f in feats):
            raise ValueError(
                f"revunet3d expects {len(self.in_channels)} volume features (B, C, D, H, W) with C = "
                f"{self.in_channels}, got shapes {[tuple(f.shape) for f in feats]}"
            )
        x = feats[-1]
        for i, (up, stage) in enumerate(zip(self.ups, self.stages)):
            skip = feats[-2 - i]
            x = up(x)  # (B, C_skip, 2x D, 2x H, 2x W)
            if x.shape != skip.shape:
                raise ValueError(
                    f"revunet3d: upsampled level {len(feats) - 1 - i} has shape {tuple(x.shape)} but its "
                    f"skip has {tuple(skip.shape)}; input sides must be multiples of the backbone stride"
                )
            x = stage(x + skip)
        return self.classifier(x)  # (B, out_channels, D/r0, H/r0, W/r0)
