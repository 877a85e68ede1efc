"""Inference: rebuild a model from a checkpoint without Hydra, whole-image / sliding-window prediction, TTA."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .models import create_model


def load_checkpoint_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode, the run config) from a densekit Lightning checkpoint.

    The checkpoint's hyper-parameters hold the resolved run config; the model is rebuilt from it with
    ``pretrained=False`` (the checkpoint carries the trained weights) and loaded strictly.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"could not read checkpoint {path}: {type(err).__name__}: {err}") from err
    config = (ckpt.get("hyper_parameters") or {}).get("config") if isinstance(ckpt, dict) else None
    if not config or "task" not in config:
        raise ValueError(f"{path} is not a densekit checkpoint (no run config in its hyper_parameters)")
    backbone = dict(config["backbone"], pretrained=False)
    model = create_model(
        config["task"]["name"], backbone=backbone, head=dict(config["head"]), num_classes=config["data"]["num_classes"]
    )
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match its own config: missing {missing[:10]}, unexpected {unexpected[:10]}")
    return model.to(device).eval(), config


@torch.no_grad()
def sliding_window(model: nn.Module, image: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Average the model's outputs over overlapping crops (mmseg's 'slide' mode): (B, K, H, W).

    Windows start every ``stride`` pixels and the last one is flush with the border; images smaller
    than the crop are run whole (the model pads internally).
    """
    b, _, h, w = image.shape
    ch, cw = min(crop[0], h), min(crop[1], w)
    sh, sw = stride
    rows = max(math.ceil((h - ch) / sh), 0) + 1
    cols = max(math.ceil((w - cw) / sw), 0) + 1
    out, count = None, image.new_zeros(1, 1, h, w)
    for r in range(rows):
        for c in range(cols):
            y0, x0 = min(r * sh, h - ch), min(c * sw, w - cw)
            pred = model(image[..., y0 : y0 + ch, x0 : x0 + cw])  # (B, K, ch, cw)
            if out is None:
                out = image.new_zeros(b, pred.shape[1], h, w)
            out[..., y0 : y0 + ch, x0 : x0 + cw] += pred
            count[..., y0 : y0 + ch, x0 : x0 + cw] += 1
    return out / count


@torch.no_grad()
def predict(
    model: nn.Module,
    image: torch.Tensor,
    mode: str = "whole",
    crop: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    flip: bool = False,
    scales: tuple[float, ...] = (1.0,),
    probabilities: bool = True,
) -> torch.Tensor:
    """Per-pixel outputs at the input size, averaged over scales and (optionally) horizontal flips.

    For segmentation the average is over softmax probabilities (``probabilities=True``), the usual
    multi-scale + flip TTA; ``mode="slide"`` runs each scale with ``sliding_window(crop, stride)``.
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    if mode == "slide" and not crop:
        raise ValueError("mode='slide' needs crop=[h, w] (and optionally stride=[h, w])")
    h, w = image.shape[-2:]
    total = None
    for scale in scales:
        x = image if scale == 1.0 else F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            xi = x.flip(-1) if flipped else x
            if mode == "slide":
                st = stride or (max(1, crop[0] * 2 // 3), max(1, crop[1] * 2 // 3))
                y = sliding_window(model, xi, tuple(crop), tuple(st))
            else:
                y = model(xi)
            if flipped:
                y = y.flip(-1)
            if y.shape[-2:] != (h, w):
                y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
            y = y.softmax(1) if probabilities else y
            total = y if total is None else total + y
    return total / (len(scales) * (2 if flip else 1))
