"""3D volume segmentation loss: cross-entropy + soft Dice (nnU-Net's default pairing), in float32."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..schema import IGNORE_INDEX


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    keep: torch.Tensor,
    include_background: bool = False,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """1 - mean over classes of the batch soft Dice ``(2 sum(p t) + s) / (sum p + sum t + s)``.

    Sums run over every counted voxel of the whole batch ("batch Dice", as nnU-Net uses for 3D patches:
    a patch without some class does not produce a 0/0). ``keep`` (B, D, H, W) bool drops voxels from both
    sums. Background is left out by default (nnU-Net's ``do_bg=False``): it dominates the voxel count.
    A class absent from target and prediction gives s/s = 1, i.e. no loss.
    """
    k = logits.shape[1]
    probs = logits.softmax(dim=1)  # (B, K, D, H, W)
    onehot = F.one_hot(target.clamp(0, k - 1), k).movedim(-1, 1).to(probs.dtype)  # (B, K, D, H, W)
    w = keep.unsqueeze(1).to(probs.dtype)  # (B, 1, D, H, W)
    dims = (0, 2, 3, 4)
    inter = (probs * onehot * w).sum(dims)  # (K,)
    total = (probs * w).sum(dims) + (onehot * w).sum(dims)
    dice = (2 * inter + smooth) / (total + smooth)
    if not include_background:
        dice = dice[1:]
    return 1 - dice.mean()


def volume_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
    include_background: bool = False,
) -> torch.Tensor:
    """``ce_weight`` * cross-entropy + ``dice_weight`` * soft Dice over the counted voxels.

    logits (B, K, D, H, W), target (B, D, H, W) int64 train ids, valid (B, D, H, W) bool or None. Voxels
    whose target is ``ignore_index`` or whose ``valid`` is False count in neither term. Computed in
    float32 even under mixed precision. A batch without any counted voxel gives 0 (with a graph), not NaN.
    """
    if logits.dim() != 5 or target.shape != (logits.shape[0],) + logits.shape[2:]:
        raise ValueError(
            f"volume_loss expects logits (B, K, D, H, W) and target (B, D, H, W); got {tuple(logits.shape)} "
            f"and "
            f"{tuple(target.shape)}"
        )
    if valid is not None and valid.shape != target.shape:
        raise ValueError(f"valid {tuple(valid.shape)} must match target {tuple(target.shape)}")
    logits = logits.float()
    keep = target != ignore_index
    if valid is not None:
        keep = keep & valid.bool()
    if not bool(keep.any()):
        return logits.sum() * 0.0
    k = logits.shape[1]
    counted = target[keep]
    if counted.min() < 0 or counted.max() >= k:
        bad = torch.unique(counted[(counted < 0) | (counted >= k)]).tolist()
        raise ValueError(f"target holds labels {bad[:10]} outside [0, {k}) (ignore index {ignore_index})")
    loss = logits.new_zeros(())
    if ce_weight:
        loss = loss + ce_weight * F.cross_entropy(
            logits, target.masked_fill(~keep, ignore_index), ignore_index=ignore_index
        )
    if dice_weight:
        dice = soft_dice_loss(logits, target.masked_fill(~keep, 0), keep, include_background)
        loss = loss + dice_weight * dice
    return loss
