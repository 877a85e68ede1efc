"""Encoder-decoder heads: segmentation-models-pytorch's decoders on any densekit backbone, and FFNet's up-head.

smp's decoders assume smp encoders: six maps at strides 1..32 and fixed x2/x4 upsampling between them.
densekit backbones give four levels whose reductions may repeat (a dilated MobileNetV3 or MobileSAM end
at stride 16 twice), so every head here first puts the levels on a strict x2 pyramid (``PyramidAdapter``)
and calls the smp decoder modules with that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder
from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import nn

from .heads import DENSE_2D_TASKS, HEADS


class PyramidAdapter(nn.Module):
    """Map backbone levels to a strict x2 pyramid starting at the first level's reduction.

    Level i is expected at reduction r_0 * 2**i; a level that is finer than that (a repeated stride,
    e.g. a dilated last stage or MobileSAM's neck at 16 after the stride-16 stage) is average-pooled to
    it. Levels may not be coarser than expected (a gap in the pyramid) — that is an error at build time.
    """

    def __init__(self, reductions: list[int]):
        super().__init__()
        if len(reductions) < 3:
            raise ValueError(f"encoder-decoder heads need at least 3 feature levels, got reductions {reductions}")
        self.reductions = [int(reductions[0]) * 2**i for i in range(len(reductions))]
        self.pools = []
        for have, want in zip(reductions, self.reductions):
            if want % have or have > want:
                raise ValueError(
                    f"feature reductions {list(reductions)} cannot form a x2 pyramid {self.reductions} "
                    f"(level at {have} where {want} is expected)"
                )
            self.pools.append(want // have)
        self.input_multiple = self.reductions[-1]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [f if k == 1 else F.avg_pool2d(f, k, ceil_mode=True) for f, k in zip(features, self.pools)]


def _conv_bn_relu(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@HEADS.register("unet", dims=(2,), tasks=DENSE_2D_TASKS, width_keys=("decoder_channels",))
class UNetHead(nn.Module):
    """smp's ``UnetDecoder`` over the pyramid, one more x2 block without skip, then a 3x3 classifier.

    Output at half the first level's reduction (stride 2 for stride-4 backbones), as smp's U-Net
    ends one block above its shallowest skip.
    """

    def __init__(
        self,
        in_channels,
        reductions,
        out_channels,
        decoder_channels=(256, 128, 64, 32),
        attention_type=None,
        interpolation_mode="nearest",
    ):
        super().__init__()
        self.adapt = PyramidAdapter(reductions)
        n = len(in_channels)
        if len(decoder_channels) != n:
            raise ValueError(f"unet decoder_channels needs {n} entries (one per level), got {list(decoder_channels)}")
        # smp drops its first (input-resolution) map; a 0-channel placeholder at half the first
        # level's reduction stands in for it and only lends its spatial size to the last block.
        self.decoder = UnetDecoder(
            encoder_channels=[0] + list(in_channels),
            decoder_channels=list(decoder_channels),
            n_blocks=n,
            attention_type=attention_type,
            interpolation_mode=interpolation_mode,
        )
        self.classifier = nn.Conv2d(decoder_channels[-1], out_channels, 3, padding=1)
        self.output_reduction = self.adapt.reductions[0] // 2
        self.input_multiple = self.adapt.input_multiple

    def forward(self, features):
        feats = self.adapt(features)
        b, _, h, w = feats[0].shape
        placeholder = feats[0].new_zeros(b, 0, h * 2, w * 2)  # (B, 0, 2H/r0, 2W/r0)
        return self.classifier(self.decoder([placeholder] + feats))


@HEADS.register("fpn", dims=(2,), tasks=DENSE_2D_TASKS, width_keys=("pyramid_channels", "segmentation_channels"))
class FPNHead(nn.Module):
    """smp's ``FPNDecoder`` (Kirillov et al. 2019 Semantic FPN) on the last four pyramid levels, 1x1 classifier.

    Output at the reduction of the finest of those four levels (stride 4 for stride-4 backbones).
    """

    def __init__(
        self,
        in_channels,
        reductions,
        out_channels,
        pyramid_channels=256,
        segmentation_channels=128,
        dropout=0.2,
        merge_policy="add",
        interpolation_mode="nearest",
    ):
        super().__init__()
        self.adapt = PyramidAdapter(reductions)
        if len(in_channels) < 4:
            raise ValueError(f"fpn needs 4 feature levels, got {len(in_channels)}")
        self.decoder = FPNDecoder(
            encoder_channels=list(in_channels),
            encoder_depth=len(in_channels),
            pyramid_channels=pyramid_channels,
            segmentation_channels=segmentation_channels,
            dropout=dropout,
            merge_policy=merge_policy,
            interpolation_mode=interpolation_mode,
        )
        ch = segmentation_channels * (4 if merge_policy == "cat" else 1)
        self.classifier = nn.Conv2d(ch, out_channels, 1)
        self.output_reduction = self.adapt.reductions[-4]
        self.input_multiple = self.adapt.input_multiple

    def forward(self, features):
        return self.classifier(self.decoder(self.adapt(features)))


@HEADS.register("deeplabv3plus", dims=(2,), tasks=DENSE_2D_TASKS, width_keys=("decoder_channels",))
class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+ (Chen et al., ECCV 2018) with smp's ASPP and fusion blocks, run on the deepest level.

    smp's own DeepLabV3+ dilates its encoder to output stride 16/8 and upsamples by a fixed x4; our
    backbones take no ``output_stride``, so ASPP runs on the deepest available level (stride 32 for
    MCi, 16 for MobileSAM / dilated MobileNetV3) and is resized to the stride-4 level, whatever the
    ratio. ``atrous_rates`` default to (12, 24, 36) at stride 16 and (6, 12, 18) at stride 32, so the
    rates cover the same image extent.
    """

    def __init__(
        self,
        in_channels,
        reductions,
        out_channels,
        decoder_channels=256,
        atrous_rates=None,
        aspp_separable=True,
        aspp_dropout=0.5,
        low_reduction=4,
    ):
        super().__init__()
        if low_reduction not in reductions:
            raise ValueError(
                f"deeplabv3plus needs a level at reduction {low_reduction}; the backbone has {list(reductions)}"
            )
        self.low_index = list(reductions).index(low_reduction)
        deepest = reductions[-1]
        if atrous_rates is None:
            atrous_rates = (12, 24, 36) if deepest <= 16 else (6, 12, 18)
        # smp reads encoder_channels[2] (high-res input) and [-1] (ASPP input)
        self.decoder = DeepLabV3PlusDecoder(
            encoder_channels=[0, 0, in_channels[self.low_index], in_channels[-1]],
            encoder_depth=5,
            out_channels=decoder_channels,
            atrous_rates=tuple(atrous_rates),
            output_stride=16,
            aspp_separable=aspp_separable,
            aspp_dropout=aspp_dropout,
        )
        del self.decoder.up  # replaced by a resize to the high-res level, whatever the ratio
        self.classifier = nn.Conv2d(decoder_channels, out_channels, 1)
        self.output_reduction = int(low_reduction)

    def forward(self, features):
        low = features[self.low_index]
        x = self.decoder.aspp(features[-1])  # (B, C, H/r, W/r) at the deepest level
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)  # (B, C, H/4, W/4)
        x = self.decoder.block2(torch.cat([x, self.decoder.block1(low)], dim=1))
        return self.classifier(x)


@HEADS.register("ffnet", dims=(2,), tasks=DENSE_2D_TASKS, width_keys=("up_channels", "seg_channels"))
class FFNetHead(nn.Module):
    """FFNet's up-head (Mehta et al., CVPR-W 2022; Qualcomm FFNet ``ffnet_blocks.py``), see reference §7.2.

    Per level a 1x1 ConvBNReLU adapter to ``base_channels``; an FPN-like up branch from the deepest
    level (3x3 CBR outputs per level, 1x1 CBR to the next level's width, upsample, add); the outputs are
    upsampled to the finest level and concatenated; a segmentation head ``3x3 CBR(seg_channels) ->
    seg_kernel x seg_kernel conv`` gives the classes at the finest level's reduction.
    Variants A/B/C are YAML (conf/head/ffnet_{a,b,c}.yaml).
    """

    def __init__(
        self,
        in_channels,
        reductions,
        out_channels,
        base_channels=(64, 128, 128, 256),
        up_channels=(96, 96, 64, 32),
        seg_channels=256,
        seg_kernel=3,
        upsample_mode="bilinear",
    ):
        super().__init__()
        self.adapt = PyramidAdapter(reductions)
        n = len(in_channels)
        if not len(base_channels) == len(up_channels) == n:
            raise ValueError(
                f"ffnet needs one base/up width per level ({n}); got base_channels={list(base_channels)}, "
                f"up_channels={list(up_channels)}"
            )
        self.upsample_mode = upsample_mode
        self.adapters = nn.ModuleList(_conv_bn_relu(c, b) for c, b in zip(in_channels, base_channels))
        self.outs = nn.ModuleList(_conv_bn_relu(b, o, 3) for b, o in zip(base_channels, up_channels))
        # 1x1 from level i's width to level i-1's width, for the top-down sum
        self.lateral = nn.ModuleList(_conv_bn_relu(base_channels[i], base_channels[i - 1]) for i in range(1, n))
        self.seg = nn.Sequential(
            _conv_bn_relu(sum(up_channels), seg_channels, 3),
            nn.Conv2d(seg_channels, out_channels, seg_kernel, padding=seg_kernel // 2),
        )
        self.output_reduction = self.adapt.reductions[0]
        self.input_multiple = self.adapt.input_multiple

    def _up(self, x, size):
        if self.upsample_mode == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)  # as FFNet's GPU models

    def forward(self, features):
        feats = [a(f) for a, f in zip(self.adapters, self.adapt(features))]
        x = feats[-1]
        outs = [None] * len(feats)
        for i in range(len(feats) - 1, -1, -1):
            if i < len(feats) - 1:
                x = self._up(self.lateral[i](x), feats[i].shape[-2:]) + feats[i]
            outs[i] = self.outs[i](x)
        size = outs[0].shape[-2:]
        return self.seg(torch.cat([outs[0]] + [self._up(o, size) for o in outs[1:]], dim=1))
