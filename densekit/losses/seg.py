"""Losses: pure tensor functions (no models, data or lightning)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss

from ..schema import IGNORE_INDEX


def seg_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    ce_weight: float = 1.0,
    dice_weight: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
    class_weights=None,
) -> torch.Tensor:
    """Cross-entropy (+ optional multiclass Dice) over pixels that are not ``ignore_index`` and are ``valid``.

    logits (B, K, H, W), target (B, H, W) int64, valid (B, H, W) bool or None. ``class_weights``: K per-class
    cross-entropy weights (e.g. the median-frequency weights ``scripts/inspect_data.py`` suggests), or None.
    A batch without a single labelled pixel gives 0 with a zero gradient (cross-entropy's mean over no pixel
    would be NaN).
    """
    if logits.dim() != 4 or target.shape != (logits.shape[0],) + logits.shape[2:]:
        raise ValueError(
            f"seg_loss expects logits (B, K, H, W) and target (B, H, W); got {tuple(logits.shape)} and "
            f"{tuple(target.shape)}"
        )
    if valid is not None:
        target = target.masked_fill(~valid, ignore_index)
    logits = logits.float()  # the loss is computed in float32 even under mixed precision
    loss = logits.new_zeros(())
    weight = None
    if class_weights is not None:
        weight = torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
        if weight.shape != (logits.shape[1],) or not torch.isfinite(weight).all() or (weight < 0).any():
            raise ValueError(
                f"class_weights: expected {logits.shape[1]} finite weights >= 0 (one per class), "
                f"got {list(class_weights)}"
            )
    if not (target != ignore_index).any():
        return loss + 0.0 * logits.sum()  # nothing labelled: 0, and a graph for backward
    if ce_weight:
        loss = loss + ce_weight * F.cross_entropy(
            logits, target, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing
        )
    if dice_weight:
        dice = DiceLoss(mode="multiclass", from_logits=True, ignore_index=ignore_index)
        loss = loss + dice_weight * dice(logits, target)
    return loss
