"""Depth losses: scale-invariant log loss (SILog) and an optional multi-scale gradient-matching term.

Pixels count only where ``valid`` is True and the target is finite and > 0 (NaN/inf/0 depth is "no
measurement", never loss poison); everything is computed in float32 even under mixed precision.
"""

from __future__ import annotations

import torch


def _check(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 1:
        raise ValueError(
            f"depth losses expect pred and target (B, 1, H, W) of the same shape; "
            f"got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    keep = torch.isfinite(target) & (target > 0)
    if valid is not None:
        if valid.shape != target.shape[:1] + target.shape[2:]:
            raise ValueError(
                f"valid must be (B, H, W) = {tuple(target.shape[:1] + target.shape[2:])}, got {tuple(valid.shape)}"
            )
        keep &= valid[:, None].bool()
    return keep


def silog_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    lam: float = 0.85,
    scale: float = 10.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Scale-invariant log loss, the form of BTS (Lee et al. 2019) / AdaBins / NeWCRFs:

        d = log(pred) - log(gt) over counted pixels of the batch,
        L = scale * sqrt( mean(d^2) - lam * mean(d)^2 ).

    Eigen et al. (NeurIPS 2014) use the squared form with lam = 0.5 and no scale; lam = 1 is fully scale
    invariant (then the absolute scale is never learned), lam = 0 is a plain log-RMSE. lam = 0.85 and
    scale = 10 are the common defaults for metric depth. Returns 0 (with a gradient path) when no pixel
    counts. pred/target (B, 1, H, W) metres, valid (B, H, W) bool or None.
    """
    keep = _check(pred, target, valid)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"silog lam must lie in [0, 1], got {lam}")
    if not keep.any():
        return pred.float().sum() * 0.0
    p = pred.float()[keep].clamp(min=eps)
    t = target.float()[keep]
    d = torch.log(p) - torch.log(t)
    var = (d.square().mean() - lam * d.mean().square()).clamp(min=0.0)
    return scale * torch.sqrt(var + 1e-12)


def gradient_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, scales: int = 4, eps: float = 1e-6
) -> torch.Tensor:
    """Multi-scale gradient matching on log depth (MegaDepth, Li & Snavely 2018; MiDaS): the mean absolute
    difference of horizontal and vertical log-depth gradients of pred and gt, at ``scales`` halvings,
    only where both pixels of a difference count. Sharpens depth edges; log makes it scale-free."""
    keep = _check(pred, target, valid)
    diff = torch.where(keep, torch.log(pred.float().clamp(min=eps)) - torch.log(target.float().clamp(min=eps)), 0.0)
    mask = keep.float()
    total = pred.float().sum() * 0.0
    for s in range(scales):
        if s:
            # (B, 1, H/2^s, W/2^s): subsampling, not averaging, keeps invalid pixels out of the differences
            diff, mask = diff[..., ::2, ::2], mask[..., ::2, ::2]
        if diff.shape[-1] < 2 or diff.shape[-2] < 2:
            break
        mx = mask[..., :, 1:] * mask[..., :, :-1]
        my = mask[..., 1:, :] * mask[..., :-1, :]
        gx = (diff[..., :, 1:] - diff[..., :, :-1]).abs() * mx
        gy = (diff[..., 1:, :] - diff[..., :-1, :]).abs() * my
        n = mx.sum() + my.sum()
        if n > 0:
            total = total + (gx.sum() + gy.sum()) / n
    return total


def depth_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    silog_weight: float = 1.0,
    silog_lambda: float = 0.85,
    silog_scale: float = 10.0,
    grad_weight: float = 0.0,
    grad_scales: int = 4,
) -> torch.Tensor:
    """The depth task's loss: ``silog_weight * silog + grad_weight * gradient matching`` (float32)."""
    loss = pred.float().sum() * 0.0
    if silog_weight:
        loss = loss + silog_weight * silog_loss(pred, target, valid, lam=silog_lambda, scale=silog_scale)
    if grad_weight:
        loss = loss + grad_weight * gradient_loss(pred, target, valid, scales=grad_scales)
    return loss
