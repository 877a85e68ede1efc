"""Optical flow: a CompactFlowNet-style coarse-to-fine network on any densekit 2D backbone.

CompactFlowNet (Znobishchev et al., arXiv 2412.13273) keeps PWC-Net's design (Sun et al., CVPR 2018:
pyramid, warping, cost volume) and replaces two parts: the DenseNet-style flow estimator, which dominates
PWC-Net's latency and memory, becomes a *sequential* conv stack (128-128-96-64-32-2, no feature
concatenation), and the feature encoder becomes a MobileNetV3-style network. No code was published; this
is our own implementation from the paper's description and PWC-Net's published design.

Conventions (everywhere in this module):
- images (B, 3, H, W) in [0, 1]; the backbone normalises them;
- flow (B, 2, H, W) in pixels, channel 0 = u (to the right), channel 1 = v (down); frame 1's pixel p
  moves to p + flow(p) in frame 2, so frame 2 sampled at p + flow(p) matches frame 1 at p.

The pieces live in files named after them: ``flow_pyramid.py`` (the default feature pyramid backbone) and
``flow_ops.py`` (warping, correlation, convex upsampling); this module holds the estimators and the network,
registered as head ``flow`` (``builds="model"``: its builder takes the built backbone).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .assembly import pad_to_multiple
from .backbones import Backbone, create_backbone
from .flow_ops import convex_upsample, cost_volume, warp
from .heads import HEADS


def _small_init(conv: nn.Conv2d) -> None:
    """Flow outputs start near zero: default init gives ~0.3 units, i.e. ~6 px of noise at flow_scale 20."""
    nn.init.normal_(conv.weight, std=1e-3)
    nn.init.zeros_(conv.bias)


class SequentialEstimator(nn.Module):
    """CompactFlowNet's flow estimator: plain 3x3 conv + LeakyReLU(0.1) stack (default 128-128-96-64-32) and
    a 3x3 conv to 2 flow channels. Each conv sees only the previous one's output: no DenseNet concatenation,
    so the input widths stay fixed instead of growing 245 -> 373 -> 501 -> 597 -> 661 as in PWC-Net."""

    def __init__(self, in_channels: int, channels: tuple[int, ...] = (128, 128, 96, 64, 32)):
        super().__init__()
        layers, c = [], int(in_channels)
        for out in channels:
            layers += [nn.Conv2d(c, int(out), 3, padding=1), nn.LeakyReLU(0.1, inplace=True)]
            c = int(out)
        self.body = nn.Sequential(*layers)
        self.out_channels = c
        self.flow = nn.Conv2d(c, 2, 3, padding=1)
        _small_init(self.flow)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.body(x)  # (B, channels[-1], h, w)
        return feat, self.flow(feat)  # (B, 2, h, w)


class ContextNetwork(nn.Module):
    """PWC-Net's context network: dilated 3x3 convs (default 128/128/128/96/64/32 at dilations
    1/2/4/8/16/1) over [estimator features, flow], predicting a flow residual with a large receptive field."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], dilations: tuple[int, ...]):
        super().__init__()
        if len(channels) != len(dilations):
            raise ValueError(
                f"context_channels {list(channels)} and context_dilations {list(dilations)} need the same length"
            )
        layers, c = [], int(in_channels)
        for out, dil in zip(channels, dilations):
            conv = nn.Conv2d(c, int(out), 3, padding=int(dil), dilation=int(dil))
            layers += [conv, nn.LeakyReLU(0.1, inplace=True)]
            c = int(out)
        layers.append(nn.Conv2d(c, 2, 3, padding=1))
        self.body = nn.Sequential(*layers)
        _small_init(layers[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, 2, h, w)


# --------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------


@HEADS.register(
    "flow",
    dims=(2,),
    tasks=("flow",),
    builds="model",
    width_keys=("estimator_channels", "fine_estimator_channels", "context_channels"),
)
class CompactFlowNet(nn.Module):
    """CompactFlowNet-style coarse-to-fine optical flow on any densekit 2D backbone.

    ``forward(image1, image2)``: images (B, 3, H, W) in [0, 1], any H, W (replicate-padded at the bottom/right
    to a multiple of the backbone stride, the flow cropped back; padding does not change flow values).
    - eval mode: (B, 2, H, W) flow in pixels at full resolution (u right, v down).
    - train mode: a list with one (B, 2, H, W) flow per pyramid level, ordered COARSE TO FINE (finest last),
      each bilinearly upsampled to the full input size and expressed in full-resolution pixels, so every
      entry is directly comparable with the ground truth; the last entry is exactly the eval output.
      ``self.levels`` gives each entry's stride.

    Per level (coarse to fine, ``levels`` = the backbone reductions used, finest = ``output_stride``):
    1. upsample the coarser flow bilinearly (and the coarser estimator features by a learned transposed
       conv to ``upfeat_channels``, PWC-Net's "upfeat");
    2. warp frame 2's features with it (bilinear, zeros outside, validity mask: :func:`warp`);
    3. local cost volume of frame 1's and the warped features, radius ``search_radius``, mean over channels,
       LeakyReLU(0.1);
    4. the sequential estimator on [cost volume, frame-1 features, upsampled flow, upsampled features]
       predicts a flow *residual* added to the upsampled flow (coarsest level: [cost volume, features]);
    at the finest level a dilated context network adds a last residual; then the flow is upsampled to full
    resolution (``upsample="bilinear"``, or "convex": RAFT's learned convex combination).

    Widths: ``estimator_channels`` at every level (CompactFlowNet's 128-128-96-64-32) except the finest,
    which has 4x the pixels of the next and uses ``fine_estimator_channels``; it and the context network
    default to about half PWC-Net's widths: with PWC-Net's widths the model measured 0.37x RAFT-small's CPU
    latency at 384x512, with these 0.15x (budget 0.25x; ``scripts/benchmark.py flow``).

    Units: internally the estimators predict flow in units of ``flow_scale`` full-resolution pixels at every
    level (PWC-Net divides the ground truth by 20, which keeps the regression targets near 1); at stride s
    the warp uses flow * flow_scale / s level pixels. ``flow_scale=1`` predicts plain full-resolution pixels.

    Large displacements: each level searches +-r level pixels = +-r*s full-resolution pixels around the
    upsampled flow, so the cascade reaches r * sum(strides) (``max_displacement``). With ``flow_pyramid``
    (levels 64/32/16/8/4) and r = 4: +-256 px at the coarsest level alone and 496 px in total. The target
    range is 0.125 * W: 64 px at W = 512 is 1 stride-64 pixel (r = 4 leaves 4x headroom) and 16 px at the
    128-px training size is 1 stride-16 pixel, so the first level whose map is big enough to hold context
    (8x8 at 128 px) already sees it well inside its +-64 px window. On the MCi backbones (levels 32/16/8/4):
    +-128 px at stride 32, 240 px in total; 64 px at W = 512 is 2 stride-32 pixels.
    """

    def __init__(
        self,
        backbone: Backbone,
        levels: tuple[int, ...] | list[int] | None = None,
        output_stride: int = 4,
        search_radius: int = 4,
        estimator_channels: tuple[int, ...] | list[int] = (128, 128, 96, 64, 32),
        fine_estimator_channels: tuple[int, ...] | list[int] | None = (64, 64, 48, 32, 32),
        context_channels: tuple[int, ...] | list[int] = (64, 64, 64, 48, 32, 32),
        context_dilations: tuple[int, ...] | list[int] = (1, 2, 4, 8, 16, 1),
        feature_channels: int | None = None,
        upfeat_channels: int = 2,
        flow_scale: float = 20.0,
        upsample: str = "bilinear",
    ):
        super().__init__()
        reductions = [int(r) for r in backbone.reductions]
        if levels is None:
            levels = [r for r in reductions if r >= output_stride]
        levels = sorted({int(r) for r in levels}, reverse=True)  # coarse -> fine
        missing = [r for r in levels if r not in reductions]
        if missing or not levels:
            raise ValueError(f"flow levels {levels} must be backbone reductions; the backbone provides {reductions}")
        if levels[-1] != int(output_stride):
            raise ValueError(
                f"the finest flow level must be output_stride={output_stride}, got levels {levels} "
                f"(backbone reductions {reductions})"
            )
        for coarse, fine in zip(levels, levels[1:]):
            ratio = coarse // fine
            if coarse % fine or ratio & (ratio - 1):
                raise ValueError(f"consecutive flow levels must differ by a power of two, got {coarse} -> {fine}")
        if upsample not in ("bilinear", "convex"):
            raise ValueError(f"upsample must be 'bilinear' or 'convex', got {upsample!r}")
        if search_radius < 1 or flow_scale <= 0:
            raise ValueError(f"need search_radius >= 1 and flow_scale > 0, got {search_radius}, {flow_scale}")
        self.backbone = backbone
        self.levels = levels
        self.level_index = [reductions.index(r) for r in levels]
        self.output_stride = int(output_stride)
        self.search_radius = int(search_radius)
        self.flow_scale = float(flow_scale)
        self.upsample = upsample
        # pad to the backbone's largest stride: every level then tiles the padded image exactly
        self.multiple = backbone.stride
        in_ch = [backbone.channels[i] for i in self.level_index]
        if feature_channels:
            # optional 1x1 projections (shared by both frames) bound the cost of wide backbones (MCi2: 640)
            self.project = nn.ModuleList(nn.Conv2d(c, int(feature_channels), 1) for c in in_ch)
            in_ch = [int(feature_channels)] * len(in_ch)
        else:
            self.project = None
        corr_ch = (2 * self.search_radius + 1) ** 2
        est_ch = [tuple(int(c) for c in estimator_channels)] * len(levels)
        if fine_estimator_channels:
            est_ch[-1] = tuple(int(c) for c in fine_estimator_channels)
        if not all(est_ch):
            raise ValueError("estimator_channels must not be empty")
        self.estimators = nn.ModuleList()
        self.upfeat = nn.ModuleList()
        for i, c in enumerate(in_ch):
            extra = 0 if i == 0 else 2 + upfeat_channels  # upsampled flow + upsampled features
            self.estimators.append(SequentialEstimator(corr_ch + c + extra, est_ch[i]))
            if i + 1 < len(levels):
                ratio = levels[i] // levels[i + 1]
                # kernel 2s, stride s, padding s/2: output exactly s times the input size
                up = nn.ConvTranspose2d(est_ch[i][-1], upfeat_channels, 2 * ratio, ratio, ratio // 2)
                self.upfeat.append(up)
        self.context = (
            ContextNetwork(est_ch[-1][-1] + 2, tuple(context_channels), tuple(context_dilations))
            if len(context_channels)
            else None
        )
        if upsample == "convex":
            s = self.output_stride
            self.mask_head = nn.Sequential(
                nn.Conv2d(est_ch[-1][-1], 64, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(64, 9 * s * s, 1),  # softmax weights over 3x3 neighbours per s x s sub-pixel
            )
        else:
            self.mask_head = None

    @property
    def max_displacement(self) -> int:
        """Largest full-resolution displacement (px) the search windows of the cascade can reach."""
        return self.search_radius * sum(self.levels)

    def _features(self, image1: torch.Tensor, image2: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        b = image1.shape[0]
        feats = self.backbone(torch.cat([image1, image2], dim=0))  # one batched pass: [(2B, C_l, H/s, W/s)]
        pairs = []
        for j, i in enumerate(self.level_index):
            f = feats[i]
            if self.project is not None:
                f = self.project[j](f)  # (2B, feature_channels, H/s, W/s)
            pairs.append((f[:b], f[b:]))
        return pairs

    def forward(self, image1: torch.Tensor, image2: torch.Tensor):
        if image1.dim() != 4 or image1.shape != image2.shape or image1.shape[1] != 3:
            raise ValueError(
                f"CompactFlowNet expects two image batches (B, 3, H, W) of one shape in [0, 1], got "
                f"{tuple(image1.shape)} and {tuple(image2.shape)}"
            )
        x1, (h, w) = pad_to_multiple(image1, self.multiple)
        x2, _ = pad_to_multiple(image2, self.multiple)
        hp, wp = x1.shape[-2:]
        flow = feat = None
        per_level = []
        for i, (stride, (f1, f2)) in enumerate(zip(self.levels, self._features(x1, x2))):
            if flow is None:
                inputs = [cost_volume(f1, f2, self.search_radius), f1]
            else:
                # flow is in full-resolution units, so resizing keeps its values
                size = f1.shape[-2:]
                flow = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)  # (B, 2, h, w)
                up_feat = self.upfeat[i - 1](feat)  # (B, upfeat_channels, h, w)
                warped, _ = warp(f2, flow * (self.flow_scale / stride))  # flow in this level's pixels
                inputs = [cost_volume(f1, warped, self.search_radius), f1, flow, up_feat]
            feat, delta = self.estimators[i](torch.cat(inputs, dim=1))  # (B, est_ch[-1], h, w), (B, 2, h, w)
            flow = delta if flow is None else flow + delta
            if i == len(self.levels) - 1:
                if self.context is not None:
                    flow = flow + self.context(torch.cat([feat, flow], dim=1))
                full = self._to_full(flow, feat, hp, wp)  # (B, 2, Hp, Wp), full-resolution pixels
            elif self.training:
                full = F.interpolate(flow, size=(hp, wp), mode="bilinear", align_corners=False)
                full = full * self.flow_scale  # (B, 2, Hp, Wp) in full-resolution pixels
            else:
                continue
            per_level.append(full[..., :h, :w])
        return per_level if self.training else per_level[-1]

    def _to_full(self, flow: torch.Tensor, feat: torch.Tensor, hp: int, wp: int) -> torch.Tensor:
        if self.mask_head is not None:
            up = convex_upsample(flow, self.mask_head(feat), self.output_stride)  # (B, 2, Hp, Wp)
        else:
            up = F.interpolate(flow, size=(hp, wp), mode="bilinear", align_corners=False)  # (B, 2, Hp, Wp)
        return up * self.flow_scale


def create_flow_model(backbone: Backbone | str | dict, **head_kw) -> CompactFlowNet:
    """CompactFlowNet on ``backbone``: a :class:`Backbone`, a registered name or ``{"name": ..., **kw}``.
    ``head_kw`` are :class:`CompactFlowNet`'s hyper-parameters (conf/head/flow.yaml; a ``name`` key, if
    present, must be "flow")."""
    name = head_kw.pop("name", "flow")
    if name != "flow":
        raise ValueError(f"create_flow_model builds the 'flow' head, got head name {name!r}")
    if isinstance(backbone, str):
        backbone = create_backbone(backbone)
    elif isinstance(backbone, dict):
        spec = dict(backbone)
        backbone = create_backbone(spec.pop("name"), **spec)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"backbone must be a densekit Backbone, a name or a dict, got {type(backbone).__name__}")
    return CompactFlowNet(backbone, **head_kw)
