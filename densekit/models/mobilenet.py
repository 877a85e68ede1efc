"""MobileNetV3 (Howard et al., ICCV 2019) as a densekit backbone: the LR-ASPP reference encoder.

Built on torchvision's implementation because torchvision's ``lraspp_mobilenet_v3_large`` is the
reference this suite must match numerically: it provides the dilated last stage (output stride 16,
paper Sec. 6.3) and its segmentation taps. Timm's MobileNetV3 cannot dilate outside its features-only
wrapper, whose taps sit at other blocks.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small
from torchvision.models.mobilenetv3 import MobileNet_V3_Large_Weights, MobileNet_V3_Small_Weights

from .backbones import BACKBONES, Backbone, load_trunk_weights, with_pretrained

_VARIANTS = {
    "large": (mobilenet_v3_large, MobileNet_V3_Large_Weights.IMAGENET1K_V1),
    "small": (mobilenet_v3_small, MobileNet_V3_Small_Weights.IMAGENET1K_V1),
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@BACKBONES.register("mobilenetv3_large", dims=2, preset={"variant": "large"})
class MobileNetV3Backbone(Backbone):
    """MobileNetV3 features at strides 4, 8, 16 and the deepest (960/576-ch) map.

    ``taps="first"`` follows torchvision's segmentation models: each level is the output of the first
    (strided) block of its stage, so the stride-8 map is the 40-channel block LR-ASPP uses as its
    low-level input. ``taps="last"`` takes the last block of each stage instead (richer features for
    encoder-decoder heads). The deepest level is always the final 1x1 conv (960 channels for large).
    ``dilated=True`` replaces the last stage's stride by dilation (output stride 16), ``reduced_tail``
    halves the last stage's channels (the paper's "RF2").
    """

    def __init__(
        self,
        variant: str = "large",
        pretrained: bool | str = False,
        dilated: bool = False,
        reduced_tail: bool = False,
        taps: str = "first",
    ):
        if variant not in _VARIANTS:
            raise ValueError(f"MobileNetV3 variant must be one of {sorted(_VARIANTS)}, got {variant!r}")
        if taps not in ("first", "last"):
            raise ValueError(f"taps must be 'first' or 'last', got {taps!r}")
        super().__init__(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        ctor, weights = _VARIANTS[variant]
        net, weight_file = with_pretrained(
            pretrained,
            f"torchvision mobilenet_v3_{variant} {weights.name}",
            lambda hub: ctor(weights=weights if hub else None, dilated=dilated, reduced_tail=reduced_tail),
            host="download.pytorch.org",
        )
        self.features = net.features
        if weight_file is not None:
            load_trunk_weights(self, weight_file, filter_fn=_torchvision_filter, what=f"mobilenet_v3_{variant}")
        # Stage starts: blocks that change the resolution (torchvision marks them `_is_cn`).
        starts = [i for i, block in enumerate(self.features) if getattr(block, "_is_cn", False)]
        last = len(self.features) - 1
        # starts = blocks entering strides 4, 8, 16, 32; the deepest tap is the final 1x1 conv
        if taps == "first":
            self.tap_indices = starts[:3] + [last]
        else:
            self.tap_indices = [s - 1 for s in starts[1:4]] + [last]
        self.channels, self.reductions = self._probe()

    @torch.no_grad()
    def _probe(self) -> tuple[list[int], list[int]]:
        """Channels and reductions of the taps, measured once on a dummy input."""
        was_training = self.training
        self.eval()
        size = 64
        feats = self._run(torch.zeros(1, 3, size, size))
        self.train(was_training)
        return [f.shape[1] for f in feats], [size // f.shape[-1] for f in feats]

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, taps = [], set(self.tap_indices)
        for i, block in enumerate(self.features):
            x = block(x)
            if i in taps:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._run(self.normalize(x))


def _torchvision_filter(state: dict, model: nn.Module) -> dict:
    """torchvision checkpoints -> our keys: classification files hold ``features.*``; LR-ASPP / DeepLab
    segmentation files hold the trunk as ``backbone.<i>.*`` (and their head as ``classifier.*``)."""
    out = {}
    for key, value in state.items():
        if key.startswith("backbone."):
            out["features." + key[len("backbone.") :]] = value
        elif not key.startswith(("classifier.", "aux_classifier.")):
            out[key] = value
    return out
