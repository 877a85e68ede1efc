"""MobileSAM's image encoder (TinyViT-5M at 1024, stride-16 last stage, 256-channel neck) as a backbone.

Architecture facts from ChaoningZhang/MobileSAM ``mobile_sam/modeling/tiny_vit_sam.py`` and
``mobile_sam/build_sam.py: build_sam_vit_t`` (commit 34bbbfd), see reference/models.md Sec. 2. The module
paths and parameter shapes are exactly the official ones (``patch_embed.seq.0.c.weight``,
``layers.1.blocks.0.attn.attention_biases``, ``neck.0.weight`` ...), so the ``image_encoder.*`` part of
``mobile_sam.pt`` loads strictly with the prefix stripped. Unlike the official code (which bakes
``input_resolution`` into every block and reshapes to a fixed 64x64 before the neck), every size is
computed from the input, so any H, W works; windows are zero-padded bottom/right exactly as officially.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from .backbones import BACKBONES, Backbone, few, load_trunk_weights, with_pretrained

log = logging.getLogger(__name__)

# SAM's pixel normalisation (build_sam.py: pixel_mean/pixel_std on the 0-255 scale). Our inputs are in
# [0, 1], so both are divided by 255 (they equal the ImageNet values 0.485/0.456/0.406, 0.229/0.224/0.225).
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)

# Output levels in network order: name -> index into (stage0, stage1, stage2, stage3, neck).
LEVELS = ("stage0", "stage1", "stage2", "stage3", "neck")
# Keys of the TinyViT classifier that the official TinyViT builds but never runs (forward skips them).
_CLASSIFIER_PREFIXES = ("norm_head.", "head.")
_PREFIX = "image_encoder."


class ConvBN(nn.Sequential):
    """Conv (no bias) + BatchNorm, named ``c``/``bn`` like the official ``Conv2d_BN``; padding k//2."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        self.c = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of (B, C, H, W), eps 1e-6 (SAM's neck norm, tiny_vit_sam.py)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 ConvBNs (``seq.0``, ``seq.2``), GELU between: (B, 3, H, W) -> (B, dim, H/4, W/4)."""

    def __init__(self, dim: int):
        super().__init__()
        self.seq = nn.Sequential(ConvBN(3, dim // 2, 3, 2), nn.GELU(), ConvBN(dim // 2, dim, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual (1x1 expand, dw 3x3, 1x1 project), GELU after the residual sum (official order)."""

    def __init__(self, dim: int, expand: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden, 1)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim, 1)
        self.act = nn.GELU()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        y = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return self.act(x + self.drop_path(y))


class PatchMerging(nn.Module):
    """1x1 ConvBN, GELU, dw 3x3 ConvBN (stride 2, or 1 for the last merge), GELU, 1x1 ConvBN.

    MobileSAM hard-codes stride 1 when ``out_dim`` is 320/448/576 (the last merge), which keeps the deepest
    stage at stride 16 so the neck yields SAM's 64x64 embedding at 1024.
    """

    def __init__(self, dim: int, out_dim: int, stride: int):
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C', H/s, W/s)
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


def relative_bias_index(window: int) -> torch.Tensor:
    """(w*w, w*w) index into ``attention_biases[:, w*w]``: entry (p, q) = |dy| * w + |dx|.

    The official Attention numbers each offset (|dy|, |dx|) in first-seen order while scanning point
    pairs row-major; every offset first appears with p = (0, 0), where q = (dy, dx) is visited in row-major
    order, so the number of offset (dy, dx) is dy * w + dx (LeViT-style, symmetric in sign).
    """
    r = torch.arange(window)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    y, x = yy.flatten(), xx.flatten()  # (w*w,) row-major window positions
    return (y[:, None] - y[None, :]).abs() * window + (x[:, None] - x[None, :]).abs()


class Attention(nn.Module):
    """Pre-norm multi-head self-attention within one window, with a learned relative-position bias.

    ``qkv`` output is laid out per head as [q | k | v] (the official ``view(B, N, heads, -1).split``),
    not [q-all-heads | k | v]; attn_ratio 1, so every part has key_dim = dim / heads channels.
    """

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.key_dim = num_heads, dim // num_heads
        self.norm = nn.LayerNorm(dim)  # eps 1e-5 (PyTorch default, as officially)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("attention_bias_idxs", relative_bias_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape  # (B * windows, w*w, C)
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.key_dim)  # (Bw, N, heads, 3*kd)
        q, k, v = qkv.transpose(1, 2).split(self.key_dim, dim=-1)  # each (Bw, heads, N, kd)
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, N, N)
        # softmax(q k^T / sqrt(kd) + bias) v; the default SDPA scale is kd ** -0.5, as officially.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # (Bw, heads, N, kd)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """LayerNorm -> Linear(4d) -> GELU -> Linear (the norm lives inside, as officially)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """x + WindowAttn(x); depthwise 3x3 ConvBN (no residual); x + Mlp(x). Works on (B, H, W, C)."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.window = int(window)
        self.attn = Attention(dim, num_heads, self.window)
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window
        # Official rule: zero-pad bottom/right to a multiple of the window. The padded tokens are not masked:
        # they enter the (pre-norm) attention as keys/values like any token, then are cropped away.
        pad_b, pad_r = (-h) % ws, (-w) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))  # (B, Hp, Wp, C)
        hp, wp = h + pad_b, w + pad_r
        nh, nw = hp // ws, wp // ws
        x = x.view(b, nh, ws, nw, ws, c).transpose(2, 3)  # (B, nh, nw, ws, ws, C)
        x = x.reshape(b * nh * nw, ws * ws, c)  # (B*nh*nw, ws*ws, C): one row of tokens per window
        x = self.attn(x)
        x = x.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, hp, wp, c)  # (B, Hp, Wp, C)
        return x[:, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        x = x + self.drop_path(self.window_attention(x))
        x = self.local_conv(x.permute(0, 3, 1, 2))  # (B, C, H, W): depthwise 3x3 + BN, no residual
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        return x + self.drop_path(self.mlp(x))


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks, then (optionally) the patch merging into stage 1."""

    def __init__(self, dim: int, depth: int, expand: float, drop_path: list[float], downsample):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand, drop_path[i]) for i in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.blocks:
            x = block(x)  # (B, C, H, W)
        return x, (self.downsample(x) if self.downsample is not None else x)


class BasicLayer(nn.Module):
    """Stages 1-3: TinyViT blocks on (B, H, W, C), then (optionally) the patch merging."""

    def __init__(self, dim, depth, num_heads, window, mlp_ratio, drop_path, downsample):
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, num_heads, window, mlp_ratio, drop_path[i]) for i in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        return x, (self.downsample(x) if self.downsample is not None else x)


@BACKBONES.register("mobilesam", dims=2)
class MobileSAMEncoder(Backbone):
    """MobileSAM image encoder. Features: ``levels`` of (stage0 64@/4, stage1 128@/8, stage2 160@/16,
    stage3 320@/16, neck 256@/16); default stage0, stage1, stage2, neck -> channels [64, 128, 160, 256] at
    reductions [4, 8, 16, 16]. The neck (SAM's image embedding) is last, so heads that take the last entry
    as the deepest level use it; a head asking for reduction 16 by ``reductions.index`` gets stage 2.

    Stage outputs are taken before each patch merging (the last block of ``layers[i]``), because the
    official ``layers[i]`` returns the already merged tensor of the next resolution.

    ``pretrained``: False, a path to ``mobile_sam.pt`` (a full SAM state dict: ``image_encoder.*`` is
    loaded strictly, prompt encoder / mask decoder ignored, the unused TinyViT classifier dropped with a
    log line) or an encoder-only state dict under our (= official) names. True/"auto": there is no hub
    copy, so True is an error and "auto" warns and starts from random init.
    """

    def __init__(
        self,
        pretrained: bool | str = False,
        embed_dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        num_heads=(2, 4, 5, 10),
        window_sizes=(7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        neck_dim: int = 256,
        drop_path_rate: float = 0.0,
        levels=("stage0", "stage1", "stage2", "neck"),
    ):
        super().__init__(mean=[m / 255.0 for m in SAM_PIXEL_MEAN], std=[s / 255.0 for s in SAM_PIXEL_STD])
        lengths = {len(embed_dims), len(depths), len(num_heads), len(window_sizes)}
        if lengths != {4}:
            raise ValueError(
                f"MobileSAM encoder needs 4 stages in embed_dims/depths/num_heads/window_sizes, got "
                f"{list(embed_dims)}, {list(depths)}, {list(num_heads)}, {list(window_sizes)}"
            )
        levels = list(levels)
        in_order = all(lv in LEVELS for lv in levels) and levels == sorted(set(levels), key=LEVELS.index)
        if not levels or not in_order:
            raise ValueError(f"levels must be distinct names from {list(LEVELS)} in network order, got {levels}")
        self.levels = levels
        net, weight_file = with_pretrained(
            pretrained,
            "mobilesam (no hub copy: pass the path to mobile_sam.pt)",
            functools.partial(
                self._build,
                list(embed_dims),
                list(depths),
                list(num_heads),
                list(window_sizes),
                mlp_ratio,
                mbconv_expand_ratio,
                neck_dim,
                drop_path_rate,
            ),
            host="github.com",
        )
        self.patch_embed, self.layers, self.neck = net["patch_embed"], net["layers"], net["neck"]
        dims = list(embed_dims)
        widths = dict(zip(LEVELS, [*dims, neck_dim]))
        strides = {"stage0": 4, "stage1": 8, "stage2": 16, "stage3": 16, "neck": 16}
        self.channels = [widths[lv] for lv in levels]
        self.reductions = [strides[lv] for lv in levels]
        if weight_file is not None:
            load_trunk_weights(
                self,
                weight_file,
                filter_fn=functools.partial(_sam_filter, path=weight_file),
                what="mobilesam (MobileSAM TinyViT-5M encoder)",
            )

    @staticmethod
    def _build(dims, depths, heads, windows, mlp_ratio, expand, neck_dim, drop_path_rate, hub):
        if hub:
            raise FileNotFoundError(
                "MobileSAM weights are not on any hub densekit downloads from; get weights/mobile_sam.pt "
                "from github.com/ChaoningZhang/MobileSAM and pass backbone.pretrained=/path/to/mobile_sam.pt"
            )
        # Stochastic depth grows linearly over all blocks (TinyViT's rule).
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        patch_embed = PatchEmbed(dims[0])
        layers = nn.ModuleList()
        for i in range(4):
            drops = dpr[sum(depths[:i]) : sum(depths[: i + 1])]
            # the last merge (into stage 3) keeps the resolution: stride 1 (MobileSAM's stride_c rule)
            down = PatchMerging(dims[i], dims[i + 1], 1 if i == 2 else 2) if i < 3 else None
            if i == 0:
                layers.append(ConvLayer(dims[0], depths[0], expand, drops, down))
            else:
                layers.append(BasicLayer(dims[i], depths[i], heads[i], windows[i], mlp_ratio, drops, down))
        neck = nn.Sequential(
            nn.Conv2d(dims[3], neck_dim, 1, bias=False),
            LayerNorm2d(neck_dim),
            nn.Conv2d(neck_dim, neck_dim, 3, padding=1, bias=False),
            LayerNorm2d(neck_dim),
        )
        return nn.ModuleDict({"patch_embed": patch_embed, "layers": layers, "neck": neck})

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(self.normalize(x))  # (B, 64, H/4, W/4)
        taps = []
        for layer in self.layers:
            tap, x = layer(x)  # tap: stage output before merging; x: input of the next stage
            # (B, 64, H/4, W/4), (B, 128, H/8, W/8), (B, 160, H/16, W/16), (B, 320, H/16, W/16)
            taps.append(tap)
        taps.append(self.neck(taps[-1]))  # (B, 256, H/16, W/16): SAM's image embedding
        return [taps[LEVELS.index(lv)] for lv in self.levels]


def _sam_filter(state: dict, model: nn.Module, path=None) -> dict:
    """A SAM-format file -> encoder keys: keep ``image_encoder.*`` (prefix stripped), ignore the prompt
    encoder / mask decoder, drop the unused TinyViT classifier (``norm_head``, ``head``) with a log line.
    Only called when no key of the file matches the model directly (see ``load_trunk_weights``)."""
    encoder = {k[len(_PREFIX) :]: v for k, v in state.items() if k.startswith(_PREFIX)}
    if not encoder:
        raise ValueError(
            f"weight file {path} is not a MobileSAM checkpoint: expected 'image_encoder.*' keys (a full SAM "
            f"state dict such as mobile_sam.pt) or the encoder's own keys (e.g. patch_embed.seq.0.c.weight); "
            f"found {len(state)} keys: {few(sorted(state), 6)}"
        )
    own = model.state_dict()
    if not set(encoder) & set(own):
        raise ValueError(
            f"weight file {path} holds an image encoder of another architecture: none of its "
            f"{len(encoder)} image_encoder keys matches MobileSAM's TinyViT "
            f"(e.g. patch_embed.seq.0.c.weight); found {few(sorted(encoder), 6)}"
        )
    dropped = sorted(k for k in encoder if k.startswith(_CLASSIFIER_PREFIXES) and k not in own)
    if dropped:
        log.info("%s: dropping the unused TinyViT classifier tensors %s", path, ", ".join(dropped))
    others = sorted({k.split(".")[0] for k in state if not k.startswith(_PREFIX)})
    if others:
        log.info("%s: ignoring non-encoder parts %s", path, ", ".join(others))
    return {k: v for k, v in encoder.items() if k not in dropped}
