"""LightM-UNet (Liao et al., arXiv 2403.05246), 2D and 3D, as released in MrBlankness/LightM-UNet
(``lightm-unet/nnunetv2/nets/LightMUNet.py``; nnU-Net trainer ``nnUNetTrainerLightMUNet``).

Encoder ("residual vision Mamba" layers): a depthwise-separable stem to 32 channels, then four
stages at strides 1/2/4/8 with 32/64/128/256 channels and 1/2/2/4 ``ResMambaBlock``s; stages 1-3
open with a ``MambaLayer`` to twice the channels followed by 2x max-pooling. Every ``MambaLayer``
flattens the map to H*W (or D*H*W) tokens in raster order and runs one forward 1-D Mamba scan.
Decoder: per level 1x1 conv to half the channels, x2 (bi/tri)linear upsampling, *addition* of the
skip, one ``ResUpBlock``; then GN-ReLU-1x1 to classes at full resolution (no deep supervision).

The released trainer builds it with init_filters=32, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1),
GroupNorm(8), ReLU, Mamba(d_state=16, d_conv=4, expand=2): 5,011,765 parameters in 2D with 3 input
channels and 2 classes (the paper states 1.09 M; the released code has ~5.0 M, issues #6/#30/#36).
Inner module names follow the release; its ``convInit``/``down_layers`` are our ``stem``/``stages``
and ``release_key_filter`` maps released (or DenseModel ``backbone.``/``head.``) state dicts.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BACKBONES, Backbone, load_trunk_weights, with_pretrained
from .heads import HEADS
from .mamba import Mamba

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _conv_cls(dims: int):
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _conv_only(dims, cin, cout, kernel=1, groups=1, bias=False) -> nn.Sequential:
    """MONAI ``Convolution(conv_only=True)``: a Sequential holding ``conv`` (hence keys ``*.conv.weight``)."""
    conv = _conv_cls(dims)(cin, cout, kernel, padding=(kernel - 1) // 2, groups=groups, bias=bias)
    return nn.Sequential(OrderedDict(conv=conv))


def _dwconv(dims, cin, cout, kernel=3, bias=False) -> nn.Sequential:
    """The release's ``get_dwconv_layer``: depthwise kxk (cin -> cin) then pointwise 1x1 (cin -> cout)."""
    return nn.Sequential(
        _conv_only(dims, cin, cin, kernel, groups=cin, bias=bias), _conv_only(dims, cin, cout, 1, bias=bias)
    )


class MambaLayer(nn.Module):
    """The paper's RVM layer: tokens = the map flattened in raster order, y = LN(Mamba(LN(x)) + s x),
    then a linear map to ``output_dim``. The same LayerNorm is applied twice (shared parameters), and
    ``skip_scale`` s is a learned scalar (the paper's "adjustment factor"), as in the release."""

    def __init__(self, input_dim: int, output_dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__()
        self.input_dim, self.output_dim = input_dim, output_dim
        self.norm = nn.LayerNorm(input_dim)
        self.mamba = Mamba(d_model=input_dim, d_state=d_state, d_conv=d_conv, expand=expand)
        self.proj = nn.Linear(input_dim, output_dim)
        self.skip_scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):  # the release runs its Mamba layers in float32
            x = x.float()
        b, c, *spatial = x.shape
        x_flat = x.reshape(b, c, -1).transpose(1, 2)  # (B, L = H*W or D*H*W, C); a view if x is channels-last
        y = torch.addcmul(self.mamba(self.norm(x_flat)), self.skip_scale, x_flat)  # (B, L, C): + s x in one op
        y = self.proj(self.norm(y))  # (B, L, C_out)
        # (B, C_out, *spatial) as a channels-last view of the token-major result, no copy. view + permute
        # rather than transpose + reshape: reshape gives a size-1 batch an odd stride, and then GroupNorm
        # and max-pooling no longer see channels-last and copy to NCHW (and the next layer's LayerNorm
        # copies back).
        return y.view(b, *spatial, self.output_dim).permute(0, len(spatial) + 1, *range(1, len(spatial) + 1))


class ResMambaBlock(nn.Module):
    """x + RVM(ReLU(GN(RVM(ReLU(GN(x)))))): two Mamba layers per block (release ``ResMambaBlock``)."""

    def __init__(self, dims: int, channels: int, num_groups: int = 8, **mamba):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, channels)
        self.norm2 = nn.GroupNorm(num_groups, channels)
        self.act = nn.ReLU(inplace=True)
        self.conv1 = MambaLayer(channels, channels, **mamba)
        self.conv2 = MambaLayer(channels, channels, **mamba)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.act(self.norm1(x)))
        y = self.conv2(self.act(self.norm2(y)))
        return y + x


class ResUpBlock(nn.Module):
    """ReLU(GN(DWConv3(ReLU(GN(x))) + s x)) with a learned scalar s (release ``ResUpBlock``)."""

    def __init__(self, dims: int, channels: int, num_groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, channels)
        self.norm2 = nn.GroupNorm(num_groups, channels)
        self.act = nn.ReLU(inplace=True)
        self.conv = _dwconv(dims, channels, channels, 3)
        self.skip_scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.act(self.norm1(x))) + self.skip_scale * x
        return self.act(self.norm2(y))


def _check_dims(dims) -> int:
    if dims not in (2, 3):
        raise ValueError(f"LightM-UNet dims must be 2 (images) or 3 (volumes), got {dims!r}")
    return int(dims)


@BACKBONES.register("lightm", dims=2, preset={"dims": 2, "in_channels": 3})
@BACKBONES.register("lightm3d", dims=3, preset={"dims": 3, "in_channels": 4})
class LightMEncoder(Backbone):
    """LightM-UNet encoder as a densekit backbone: features at reductions 1/2/4/8 with
    ``init_filters * (1, 2, 4, 8)`` channels (32/64/128/256 released).

    dims=2: images (B, C, H, W) in [0, 1], normalised by ``mean``/``std`` (default: ImageNet statistics
    for 3 channels, else 0.5/0.25 — there are no pretrained weights whose statistics would rule).
    dims=3: volumes (B, C, D, H, W), already z-scored per channel (nnU-Net style): no normalisation.
    A sample whose size is not a multiple of 8 gives floor-sized maps (max-pooling); the models pad.
    """

    def __init__(
        self,
        dims: int = 2,
        in_channels: int = 3,
        init_filters: int = 32,
        blocks_down: tuple[int, ...] | list[int] = (1, 2, 2, 4),
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        num_groups: int = 8,
        mean: tuple[float, ...] | list[float] | None = None,
        std: tuple[float, ...] | list[float] | None = None,
        pretrained: bool | str = False,
    ):
        dims = _check_dims(dims)
        in_channels = int(in_channels)
        if mean is None:
            mean = IMAGENET_MEAN if (dims == 2 and in_channels == 3) else (0.5 if dims == 2 else 0.0,) * in_channels
        if std is None:
            std = IMAGENET_STD if (dims == 2 and in_channels == 3) else (0.25 if dims == 2 else 1.0,) * in_channels
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean/std need {in_channels} values (in_channels), got {list(mean)} / {list(std)}")
        super().__init__(mean=tuple(mean), std=tuple(std))
        self.dims, self.in_channels = dims, in_channels
        self._identity_norm = all(m == 0 for m in mean) and all(s == 1 for s in std)
        mamba = {"d_state": d_state, "d_conv": d_conv, "expand": expand}
        self.stem = _dwconv(dims, in_channels, init_filters, 3)  # release: convInit
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        stages = []  # release: down_layers
        for i, n_blocks in enumerate(blocks_down):
            ch = init_filters * 2**i
            # Stage i > 0 opens with the "downsample Mamba": MambaLayer(ch/2 -> ch) then 2x max-pool.
            down = nn.Sequential(MambaLayer(ch // 2, ch, **mamba), pool(2, 2)) if i > 0 else nn.Identity()
            stages.append(nn.Sequential(down, *[ResMambaBlock(dims, ch, num_groups, **mamba) for _ in range(n_blocks)]))
        self.stages = nn.ModuleList(stages)
        self.channels = [init_filters * 2**i for i in range(len(blocks_down))]
        self.reductions = [2**i for i in range(len(blocks_down))]
        self._load(pretrained)

    def _load(self, pretrained) -> None:
        path = _weight_file(pretrained)
        if path is not None:
            load_trunk_weights(self, path, filter_fn=release_key_filter, what=f"LightMEncoder(dims={self.dims})")

    def check_input(self, x: torch.Tensor) -> None:
        """A clear error, before any work, for a 2D input to the 3D encoder (or vice versa) or a wrong C."""
        want = "(B, C, H, W) images" if self.dims == 2 else "(B, C, D, H, W) volumes"
        if x.dim() != self.dims + 2:
            other = "lightm3d (dims=3)" if x.dim() == 5 else "lightm (dims=2)"
            raise ValueError(
                f"LightMEncoder(dims={self.dims}) expects {want} with C={self.in_channels}, got a "
                f"{x.dim()}-D tensor of shape {tuple(x.shape)}; for this input use {other}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"LightMEncoder(dims={self.dims}) expects {want} with C={self.in_channels}, got shape {tuple(x.shape)}"
            )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self._identity_norm:
            return x
        shape = (1, -1) + (1,) * self.dims
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(self.normalize(x))  # (B, 32, *S)
        feats = []
        for stage in self.stages:
            x = stage(x)  # (B, 32 * 2^i, *S / 2^i)
            feats.append(x)
        return feats


# backbone=lightm head=lightm is the released LightM-UNet; on lightm3d the decoder takes dims=3
@HEADS.register("lightm", dims=(2, 3), tasks=("seg", "depth", "volume"), width_keys=())
class LightMDecoder(nn.Module):
    """The release's light decoder, with the 2D head signature ``(in_channels, reductions, out_channels)``.

    Per level, deepest first: 1x1 conv (no bias) to the next level's channels (C -> C/2 in the
    release), x2 linear upsampling (align_corners=False, MONAI NONTRAINABLE), + skip (addition, not
    concatenation), ResUpBlock(s); then GN -> ReLU -> DWConv 1x1 (with bias) to ``out_channels``.
    Output at ``reductions[0]`` (1 for the LightM encoder). ``dims=3`` for volumes.
    """

    def __init__(
        self,
        in_channels: list[int],
        reductions: list[int],
        out_channels: int,
        blocks_up: tuple[int, ...] | list[int] | None = None,
        num_groups: int = 8,
        dims: int = 2,
    ):
        super().__init__()
        dims = _check_dims(dims)
        channels, reductions = [int(c) for c in in_channels], [int(r) for r in reductions]
        if len(channels) != len(reductions) or len(channels) < 2:
            raise ValueError(f"lightm decoder needs >= 2 levels with one reduction each, got {channels} / {reductions}")
        if any(b != 2 * a for a, b in pairwise(reductions)):
            raise ValueError(f"lightm decoder upsamples by 2 per level: reductions must double, got {reductions}")
        blocks_up = [1] * (len(channels) - 1) if blocks_up is None else list(blocks_up)
        if len(blocks_up) != len(channels) - 1:
            raise ValueError(f"blocks_up needs {len(channels) - 1} entries (levels - 1), got {blocks_up}")
        self.output_reduction = reductions[0]
        mode = "bilinear" if dims == 2 else "trilinear"
        self.up_samples, self.up_layers = nn.ModuleList(), nn.ModuleList()
        for i, n_blocks in enumerate(blocks_up):
            cin, cskip = channels[-1 - i], channels[-2 - i]
            up = nn.Upsample(scale_factor=2, mode=mode, align_corners=False)
            self.up_samples.append(
                nn.Sequential(_conv_only(dims, cin, cskip, 1), nn.Sequential(OrderedDict(upsample_non_trainable=up)))
            )
            self.up_layers.append(nn.Sequential(*[ResUpBlock(dims, cskip, num_groups) for _ in range(n_blocks)]))
        self.conv_final = nn.Sequential(
            nn.GroupNorm(num_groups, channels[0]),
            nn.ReLU(inplace=True),
            _dwconv(dims, channels[0], out_channels, 1, bias=True),
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for i, (up, layer) in enumerate(zip(self.up_samples, self.up_layers)):
            x = layer(up(x) + feats[-2 - i])  # (B, C_skip, 2x spatial)
        return self.conv_final(x)  # (B, out_channels, *spatial of feats[0])


class LightMUNet(nn.Module):
    """The full released network: ``LightMEncoder`` + ``LightMDecoder``; logits at the input size.

    Any size works: the input is padded (replicating the border) to a multiple of the largest stride
    and the logits are cropped back. 2D: images in [0, 1]; 3D: z-scored volumes (B, C, D, H, W).
    """

    def __init__(
        self,
        dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 2,
        init_filters: int = 32,
        blocks_down=(1, 2, 2, 4),
        blocks_up=(1, 1, 1),
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        num_groups: int = 8,
        mean=None,
        std=None,
        pretrained: bool | str = False,
    ):
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.encoder = LightMEncoder(
            dims, in_channels, init_filters, blocks_down, d_state, d_conv, expand, num_groups, mean, std
        )
        self.decoder = LightMDecoder(
            self.encoder.channels, self.encoder.reductions, int(num_classes), blocks_up, num_groups, dims
        )
        self.dims, self.out_channels = self.encoder.dims, int(num_classes)
        path = _weight_file(pretrained)
        if path is not None:
            self.load_weights(path)

    def load_weights(self, path) -> None:
        """Strictly load a densekit state dict or the released one (``convInit``, ``down_layers``, ...)."""
        load_trunk_weights(self, path, filter_fn=release_key_filter, what=f"LightMUNet(dims={self.dims})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.encoder.check_input(x)  # before any work
        stride = self.encoder.stride
        size = x.shape[2:]
        pad = [p for s in reversed(size) for p in (0, (-s) % stride)]  # F.pad order: last dim first
        if any(pad):
            x = F.pad(x, pad, mode="replicate")  # (B, C, *padded)
        out = self.decoder(self.encoder(x))  # (B, K, *padded)
        return out[(...,) + tuple(slice(0, s) for s in size)]  # (B, K, *size)


def _weight_file(pretrained):
    """None (random init) or an existing weight file. There are no published LightM-UNet weights, so
    "auto" means random initialisation and True is an error."""
    word = str(pretrained).strip().lower() if pretrained is not None else "false"
    if word in ("false", "none", "", "auto"):
        return None
    if word == "true":
        raise ValueError(
            "LightM-UNet has no published pretrained weights; pass pretrained=/path/to/weights "
            "(a densekit or released LightM-UNet state dict) or pretrained=false"
        )
    return with_pretrained(pretrained, "LightM-UNet", lambda hub: None)[1]  # FileNotFoundError if missing


_RENAMES = (("convInit.", "stem."), ("down_layers.", "stages."))
_DECODER = ("up_samples.", "up_layers.", "conv_final.")


def release_key_filter(state: dict, model: nn.Module) -> dict:
    """Map a released LightM-UNet state dict (or a densekit full-model one) onto ``model``'s keys: the
    encoder's ``convInit``/``down_layers`` become ``stem``/``stages``; for a bare encoder the decoder
    keys are dropped, for the full model they move under ``decoder.``. Applied by ``load_trunk_weights``
    only when no key of the file matches the model as is."""
    full = isinstance(model, LightMUNet)
    out = {}
    for key, value in state.items():
        for prefix in ("encoder.", "backbone.", "decoder.", "head."):  # densekit / DenseModel wrappers
            key = key.removeprefix(prefix)
        if key.startswith(_DECODER):
            if full:
                out["decoder." + key] = value
            continue
        for old, new in _RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
        out[("encoder." if full else "") + key] = value
    return out
