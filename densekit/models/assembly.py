"""Model assemblies: prediction = head(backbone(input)), with padding to the stride and resizing back."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone, create_backbone
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


TASKS = ("seg", "depth")
# keyword arguments each task's model takes besides backbone/head
_TASK_KWARGS = {"seg": {"num_classes"}, "depth": {"activation", "max_depth", "min_depth", "num_classes"}}


def create_model(task: str, *, backbone, head, num_classes: int | None = None, **kwargs) -> nn.Module:
    """The model for ``task`` from a backbone and a head, each a name, a dict ``{"name": ..., **params}``
    or a ready module.

    seg:   ``model(image) -> logits (B, num_classes, H, W)``
    depth: ``model(image) -> metres (B, 1, H, W)``; kwargs ``activation`` ("sigmoid" | "softplus"),
           ``max_depth`` (default 10), ``min_depth`` (default 1e-3); see ``DepthActivation``.
    """
    if task not in TASKS:
        raise ValueError(f"unknown or not yet available task {task!r}; available: {list(TASKS)}")
    unknown = set(kwargs) - _TASK_KWARGS[task]
    if unknown:
        raise TypeError(f"unexpected arguments for task {task!r}: {sorted(unknown)}; expected {sorted(_TASK_KWARGS[task])}")
    output = None
    if task == "seg":
        if not num_classes or num_classes < 2:
            raise ValueError(f"seg needs num_classes >= 2, got {num_classes}")
        out_channels = int(num_classes)
    else:  # depth: one channel in metres (num_classes is accepted and ignored: configs carry it for every task)
        out_channels = 1
        output = DepthActivation(
            kwargs.get("activation", "sigmoid"), kwargs.get("max_depth", 10.0), kwargs.get("min_depth", 1e-3)
        )
    bb = _build(backbone, create_backbone)
    hd = _build(
        head,
        lambda name, **kw: create_head(name, bb.channels, bb.reductions, out_channels, **kw),
    )
    return DenseModel(bb, hd, out_channels, output)
