"""Model assemblies: prediction = head(backbone(input)), with padding to the stride and resizing back.

``assemble`` is task-free: it knows backbones and heads by their registry facts (dims, what a head builds),
not by task names; the tasks (``densekit.tasks``) choose the output channels and activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BACKBONES, Backbone, create_backbone
from .heads import HEADS


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (B, C, H, W) at the bottom/right to a multiple of ``multiple`` (replicating the border)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


class DenseModel(nn.Module):
    """Backbone + 2D head for per-pixel outputs (segmentation logits, depth, ...).

    Inputs of any size are padded to the backbone's largest stride and the output is cropped back, so
    ``model(image)`` returns (B, out_channels, H, W) at the input size.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, out_channels: int, output: nn.Module | None = None):
        super().__init__()
        self.backbone, self.head, self.out_channels = backbone, head, int(out_channels)
        # applied at full resolution, after the resize: a bounded activation stays bounded per pixel
        self.output = output if output is not None else nn.Identity()
        # Pad to the backbone's stride, or further where the head builds coarser levels itself.
        self.multiple = max(backbone.stride, int(getattr(head, "input_multiple", 1)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4:
            raise ValueError(f"expected an image batch (B, C, H, W), got shape {tuple(image.shape)}")
        x, (h, w) = pad_to_multiple(image, self.multiple)
        out = self.head(self.backbone(x))  # (B, K, Hp/r, Wp/r) at the head's output reduction
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)  # (B, K, Hp, Wp)
        return self.output(out[..., :h, :w])


class VolumeModel(nn.Module):
    """3D backbone + 3D head for per-voxel logits: ``model(x (B, C, D, H, W)) -> (B, K, D, H, W)``.

    Volumes of any size are zero-padded (z-scored background is 0) at the far end of each axis to the
    backbone's largest reduction and the logits cropped back.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, out_channels: int, output: nn.Module | None = None):
        super().__init__()
        self.backbone, self.head, self.out_channels = backbone, head, int(out_channels)
        self.output = output if output is not None else nn.Identity()  # per voxel, after the crop
        self.multiple = max(int(r) for r in backbone.reductions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected a volume batch (B, C, D, H, W), got shape {tuple(x.shape)}")
        d, h, w = x.shape[-3:]
        pd, ph, pw = ((-s) % self.multiple for s in (d, h, w))
        if pd or ph or pw:
            x = F.pad(x, (0, pw, 0, ph, 0, pd))  # (B, C, D+pd, H+ph, W+pw)
        out = self.head(self.backbone(x))  # (B, K, Dp/r, Hp/r, Wp/r)
        if out.shape[-3:] != x.shape[-3:]:
            out = F.interpolate(out, size=x.shape[-3:], mode="trilinear", align_corners=False)
        return self.output(out[..., :d, :h, :w])


class DepthActivation(nn.Module):
    """Raw head output -> metric depth (metres).

    ``sigmoid``: min_depth + (max_depth - min_depth) * sigmoid(x), bounded to the dataset's range (AdaBins,
    NeWCRFs bound depth the same way); ``softplus``: min_depth + softplus(x), unbounded above (for data
    without a known range). A zero raw output gives the middle of the range (sigmoid) or min + 0.69 m.
    """

    KINDS = ("sigmoid", "softplus")

    def __init__(self, kind: str = "sigmoid", max_depth: float = 10.0, min_depth: float = 1e-3):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"depth activation must be one of {list(self.KINDS)}, got {kind!r}")
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"need 0 <= min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}")
        self.kind, self.max_depth, self.min_depth = kind, float(max_depth), float(min_depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "sigmoid":
            return self.min_depth + (self.max_depth - self.min_depth) * torch.sigmoid(x)
        return self.min_depth + F.softplus(x)

    def extra_repr(self) -> str:
        return f"{self.kind}, min_depth={self.min_depth}, max_depth={self.max_depth}"


def _spec(spec, what: str) -> tuple[str, dict]:
    """(name, params) of a component spec: a name or ``{"name": ..., **params}``."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict):
        params = dict(spec)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"a {what} spec needs a 'name' key, got {sorted(spec)}")
        return name, params
    raise TypeError(f"{what}: expected a name, a dict with 'name', or an nn.Module; got {type(spec).__name__}")


def _dims_word(dims) -> str:
    return " or ".join(f"{d}D" for d in dims)


def assemble(backbone, head, out_channels: int, output: nn.Module | None = None) -> nn.Module:
    """The network ``head(backbone(x))`` from a backbone and a head, each a registered name, a dict
    ``{"name": ..., **params}`` or a ready module.

    2D backbone: ``DenseModel``, ``model(image (B, C, H, W)) -> (B, out_channels, H, W)``; 3D backbone:
    ``VolumeModel``, ``model(x (B, C, D, H, W)) -> (B, out_channels, D, H, W)``. ``output`` (e.g.
    ``DepthActivation``) is applied at full resolution. The head's registered ``dims`` must include the
    backbone's dims (a ValueError naming both otherwise); a head registered for both 2D and 3D is given
    ``dims``. A head registered with ``builds="model"`` (``flow``) is built from the backbone module and
    returns the whole network: ``out_channels`` and ``output`` do not apply to it.
    """
    if isinstance(backbone, nn.Module):
        bb, bb_name, bb_params = backbone, type(backbone).__name__, None
        dims = int(getattr(bb, "dims", 2))
    else:  # checked against the head before the (possibly slow) build
        bb, (bb_name, bb_params) = None, _spec(backbone, "backbone")
        dims = int(bb_params.get("dims", BACKBONES.fact(bb_name, "dims", 2)))
    if isinstance(head, nn.Module):
        head_name, head_params, head_dims = None, None, (dims,)
    else:
        head_name, head_params = _spec(head, "head")
        head_dims = tuple(HEADS.fact(head_name, "dims", (2,)))
    if dims not in head_dims:
        raise ValueError(f"head {head_name!r} needs a {_dims_word(head_dims)} backbone; {bb_name!r} is {dims}D")
    if bb is None:
        bb = create_backbone(bb_name, **bb_params)
        dims = int(getattr(bb, "dims", dims))
    if head_name is None:
        hd = head
    elif HEADS.fact(head_name, "builds", "head") == "model":
        if output is not None:
            raise ValueError(f"head {head_name!r} builds the whole model; it takes no output module")
        return HEADS[head_name](bb, **head_params)
    else:
        if len(head_dims) > 1:
            head_params.setdefault("dims", dims)  # a head serving 2D and 3D builds the layers of this backbone
        hd = HEADS[head_name](list(bb.channels), list(bb.reductions), _check_out(out_channels), **head_params)
    out_channels = _check_out(out_channels)
    if dims == 3:
        return VolumeModel(bb, hd, out_channels, output)
    return DenseModel(bb, hd, out_channels, output)


def _check_out(out_channels) -> int:
    if isinstance(out_channels, bool) or int(out_channels) != out_channels or out_channels < 1:
        raise ValueError(f"out_channels must be a positive integer, got {out_channels!r}")
    return int(out_channels)
