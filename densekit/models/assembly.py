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

    def __init__(self, backbone: Backbone, head: nn.Module, out_channels: int):
        super().__init__()
        self.backbone, self.head, self.out_channels = backbone, head, int(out_channels)
        # Pad to the backbone's stride, or further where the head builds coarser levels itself.
        self.multiple = max(backbone.stride, int(getattr(head, "input_multiple", 1)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4:
            raise ValueError(f"expected an image batch (B, C, H, W), got shape {tuple(image.shape)}")
        x, (h, w) = pad_to_multiple(image, self.multiple)
        out = self.head(self.backbone(x))  # (B, K, Hp/r, Wp/r) at the head's output reduction
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)  # (B, K, Hp, Wp)
        return out[..., :h, :w]


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


TASKS = ("seg",)


def create_model(task: str, *, backbone, head, num_classes: int | None = None, **kwargs) -> nn.Module:
    """The model for ``task`` from a backbone and a head, each a name, a dict ``{"name": ..., **params}``
    or a ready module. seg: ``model(image) -> logits (B, num_classes, H, W)``."""
    if task not in TASKS:
        raise ValueError(f"unknown or not yet available task {task!r}; available: {list(TASKS)}")
    if kwargs:
        raise TypeError(f"unexpected arguments for task {task!r}: {sorted(kwargs)}")
    if task == "seg":
        if not num_classes or num_classes < 2:
            raise ValueError(f"seg needs num_classes >= 2, got {num_classes}")
        out_channels = int(num_classes)
    bb = _build(backbone, create_backbone)
    hd = _build(
        head,
        lambda name, **kw: create_head(name, bb.channels, bb.reductions, out_channels, **kw),
    )
    return DenseModel(bb, hd, out_channels)
