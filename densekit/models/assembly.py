"""Model assemblies: prediction = head(backbone(input)), with padding to the stride and resizing back."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone, create_backbone
from .flow import create_flow_model
from .heads import create_head


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

    def __init__(self, backbone: nn.Module, head: nn.Module, out_channels: int):
        super().__init__()
        self.backbone, self.head, self.out_channels = backbone, head, int(out_channels)
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
        return out[..., :d, :h, :w]


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


def _build(spec, builder, **extra):
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        return builder(spec, **extra)
    if isinstance(spec, dict):
        spec = dict(spec)
        name = spec.pop("name", None)
        if name is None:
            raise ValueError(f"a component spec needs a 'name' key, got {sorted(spec)}")
        return builder(name, **extra, **spec)
    raise TypeError(f"expected a name, a dict with 'name', or an nn.Module; got {type(spec).__name__}")


TASKS = ("seg", "depth", "flow", "volume")
# keyword arguments each task's model takes besides backbone/head
_TASK_KWARGS = {
    "seg": {"num_classes"},
    "depth": {"activation", "max_depth", "min_depth", "num_classes"},
    "volume": {"num_classes"},
    "flow": {"num_classes"},
}


def create_model(task: str, *, backbone, head, num_classes: int | None = None, **kwargs) -> nn.Module:
    """The model for ``task`` from a backbone and a head, each a name, a dict ``{"name": ..., **params}``
    or a ready module.

    seg:   ``model(image) -> logits (B, num_classes, H, W)``
    depth: ``model(image) -> metres (B, 1, H, W)``; kwargs ``activation`` ("sigmoid" | "softplus"),
           ``max_depth`` (default 10), ``min_depth`` (default 1e-3); see ``DepthActivation``.
    volume: ``model(x (B, C, D, H, W)) -> logits (B, num_classes, D, H, W)`` from a 3D backbone
           (revmb3d, lightm3d) and a 3D head (revunet3d, lightm).
    flow:  ``model(image1, image2) -> (B, 2, H, W)`` pixels in eval mode, the coarse-to-fine list in
           training (``densekit.models.flow.CompactFlowNet``); head "flow" (a name or ``{"name": "flow", ...}``).
    """
    if task not in TASKS:
        raise ValueError(f"unknown or not yet available task {task!r}; available: {list(TASKS)}")
    unknown = set(kwargs) - _TASK_KWARGS[task]
    if unknown:
        raise TypeError(f"unexpected arguments for task {task!r}: {sorted(unknown)}; expected {sorted(_TASK_KWARGS[task])}")
    output = None
    if task == "flow":
        spec = {"name": head} if isinstance(head, str) else head
        if not isinstance(spec, dict) or spec.get("name") != "flow":
            raise ValueError(f"task 'flow' needs head 'flow' (the coarse-to-fine flow estimator), got {head!r}")
        bb = _build(backbone, create_backbone)
        if int(getattr(bb, "dims", 2)) != 2:
            raise ValueError(f"task 'flow' needs a 2D backbone; {type(bb).__name__} is 3D")
        return create_flow_model(bb, **spec)
    if task in ("seg", "volume"):
        if not num_classes or num_classes < 2:
            raise ValueError(f"{task} needs num_classes >= 2, got {num_classes}")
        out_channels = int(num_classes)
    else:  # depth: one channel in metres (num_classes is accepted and ignored: configs carry it for every task)
        out_channels = 1
        output = DepthActivation(
            kwargs.get("activation", "sigmoid"), kwargs.get("max_depth", 10.0), kwargs.get("min_depth", 1e-3)
        )
    bb = _build(backbone, create_backbone)
    dims = int(getattr(bb, "dims", 2))
    if (task == "volume") != (dims == 3):
        need = "a 3D backbone (revmb3d, lightm3d)" if task == "volume" else "a 2D backbone"
        raise ValueError(f"task {task!r} needs {need}; {type(bb).__name__} is {dims}D")

    def make_head(name, **kw):
        if dims == 3 and name == "lightm":
            kw.setdefault("dims", 3)  # the LightM-UNet decoder serves both; volumes need its 3D layers
        return create_head(name, bb.channels, bb.reductions, out_channels, **kw)

    hd = _build(head, make_head)
    if task == "volume":
        return VolumeModel(bb, hd, out_channels)
    return DenseModel(bb, hd, out_channels, output)
