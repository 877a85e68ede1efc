"""Optical-flow losses: pure tensor functions, computed in float32 (also under autocast).

Flow is (B, 2, H, W) in pixels (u right, v down); ``valid`` is (B, H, W) bool. A target pixel counts only
where ``valid`` is true, both components are finite and its magnitude is at most ``max_flow``; invalid
pixels are excluded with ``torch.where`` (never multiplied by 0: NaN * 0 is NaN), so NaN/inf targets and
unused sparse pixels never reach the loss or its gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# PWC-Net's per-level weights (Sun et al., CVPR 2018, Sec. 4), coarse (stride 64) to fine (stride 4), for a
# loss SUMMED over each level's pixels with flows in units of 20 full-resolution pixels.
PWC_WEIGHTS = (0.32, 0.08, 0.02, 0.01, 0.005)
# The same balance for our convention (per-pixel MEAN of full-resolution errors): a level with 4x fewer
# pixels contributes 4x less to a sum, so PWC's alpha_l times the pixel count of level l, relative to the
# finest: 0.32/256 : 0.08/64 : 0.02/16 : 0.01/4 : 0.005 = 0.25 : 0.25 : 0.25 : 0.5 : 1 (coarse to fine).
# One more coarse entry lets a 6-level pyramid use it too.
DEFAULT_WEIGHTS = (0.25, 0.25, 0.25, 0.25, 0.5, 1.0)
KINDS = ("l1", "epe", "robust")


def _check(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, what: str) -> None:
    if target.dim() != 4 or target.shape[1] != 2:
        raise ValueError(f"{what}: target flow must be (B, 2, H, W), got {tuple(target.shape)}")
    if pred.dim() != 4 or pred.shape[:2] != target.shape[:2]:
        raise ValueError(
            f"{what}: prediction must be (B, 2, h, w) for target {tuple(target.shape)}, got {tuple(pred.shape)}"
        )
    if valid is not None and tuple(valid.shape) != (target.shape[0],) + tuple(target.shape[2:]):
        raise ValueError(
            f"{what}: valid must be (B, H, W) = {(target.shape[0],) + tuple(target.shape[2:])}, "
            f"got {tuple(valid.shape)}"
        )


def valid_mask(target: torch.Tensor, valid: torch.Tensor | None = None, max_flow: float | None = 400.0) -> torch.Tensor:
    """(B, H, W) bool: ``valid`` and finite and |flow|_2 <= max_flow (None: no magnitude limit)."""
    finite = torch.isfinite(target).all(dim=1)  # (B, H, W)
    keep = finite if valid is None else finite & valid.bool()
    if max_flow is not None:
        mag = torch.where(finite.unsqueeze(1), target, 0.0).norm(dim=1)  # (B, H, W)
        keep = keep & (mag <= max_flow)
    return keep


def downsample_flow(
    target: torch.Tensor, keep: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target flow at a coarser ``size`` (integer factors): the average of the VALID fine vectors in each
    cell, scaled by the size ratio (a displacement of k fine pixels is k/f coarse pixels); a cell is valid
    when it holds at least one valid fine pixel. Returns (flow (B, 2, h, w), valid (B, h, w))."""
    h, w = target.shape[-2:]
    fh, fw = h // size[0], w // size[1]
    if fh * size[0] != h or fw * size[1] != w:
        raise ValueError(
            f"flow loss: prediction size {tuple(size)} must divide the target size {(h, w)}; "
            f"upsample predictions to the target size instead"
        )
    weight = keep.unsqueeze(1).float()  # (B, 1, H, W)
    clean = torch.where(keep.unsqueeze(1), target, 0.0)  # invalid vectors (NaN included) never averaged in
    total = F.avg_pool2d(clean * weight, (fh, fw)) * (fh * fw)  # (B, 2, h, w) sums of valid vectors
    count = F.avg_pool2d(weight, (fh, fw)) * (fh * fw)  # (B, 1, h, w)
    flow = total / count.clamp(min=1.0)
    # u shrinks with the width factor, v with the height factor
    scale = torch.tensor([1.0 / fw, 1.0 / fh], device=target.device).view(1, 2, 1, 1)
    return flow * scale, count[:, 0] > 0


def _distance(pred: torch.Tensor, target: torch.Tensor, kind: str, eps: float, q: float) -> torch.Tensor:
    diff = pred - target  # (B, 2, H, W)
    if kind == "l1":
        return diff.abs().sum(1)  # (B, H, W)
    if kind == "epe":
        # sqrt(x + tiny) keeps the gradient finite at an exact match (d sqrt / dx is infinite at 0)
        return (diff.pow(2).sum(1) + 1e-12).sqrt()
    return (diff.abs().sum(1) + eps).pow(q)  # PWC-Net's robust fine-tuning loss (Sec. 4)


def flow_level_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    kind: str = "l1",
    max_flow: float | None = 400.0,
    eps: float = 0.01,
    q: float = 0.4,
) -> torch.Tensor:
    """Mean per-pixel distance of one flow prediction over the valid target pixels (0 when none is valid).

    ``pred`` at the target size is compared directly; at a coarser size (integer factors) it is taken as
    flow in pixels of its own grid and compared with :func:`downsample_flow` of the target. ``kind``: "l1"
    (|du| + |dv|), "epe" (Euclidean), "robust" ((|du| + |dv| + eps) ** q, PWC-Net: eps 0.01, q 0.4).
    """
    if kind not in KINDS:
        raise ValueError(f"flow loss kind must be one of {KINDS}, got {kind!r}")
    _check(pred, target, valid, "flow loss")
    with torch.autocast(device_type=pred.device.type, enabled=False):
        pred, target = pred.float(), target.float()
        keep = valid_mask(target, valid, max_flow)
        if pred.shape[-2:] != target.shape[-2:]:
            target, keep = downsample_flow(target, keep, tuple(pred.shape[-2:]))
        target = torch.where(keep.unsqueeze(1), target, 0.0)  # finite everywhere: no NaN enters autograd
        dist = _distance(pred, target, kind, eps, q)  # (B, h, w)
        dist = torch.where(keep, dist, 0.0)
        return dist.sum() / keep.sum().clamp(min=1)


def multiscale_flow_loss(
    preds: list[torch.Tensor] | torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    weights: tuple[float, ...] | list[float] = DEFAULT_WEIGHTS,
    kind: str = "l1",
    max_flow: float | None = 400.0,
    eps: float = 0.01,
    q: float = 0.4,
) -> torch.Tensor:
    """Weighted sum of :func:`flow_level_loss` over a coarse-to-fine list of predictions (finest LAST, as
    :class:`densekit.models.flow.CompactFlowNet` returns in training mode: each entry (B, 2, H, W) in
    full-resolution pixels; coarser-size entries are also accepted, see :func:`flow_level_loss`).

    ``weights`` are aligned at the fine end: the last weight goes to the last (finest) prediction, and a
    list longer than ``preds`` drops its coarsest entries. Default :data:`DEFAULT_WEIGHTS` = PWC-Net's
    level balance re-expressed for per-pixel means. A single tensor is a one-level list (weight 1).
    """
    if torch.is_tensor(preds):
        preds, weights = [preds], [1.0]
    preds = list(preds)
    weights = [float(w) for w in weights]
    if not preds:
        raise ValueError("multiscale_flow_loss: no predictions")
    if len(weights) < len(preds):
        raise ValueError(
            f"multiscale_flow_loss: {len(preds)} predictions but only {len(weights)} weights "
            f"({weights}); give one weight per level, coarse to fine"
        )
    weights = weights[len(weights) - len(preds) :]
    total = None
    for w, pred in zip(weights, preds):
        term = w * flow_level_loss(pred, target, valid, kind=kind, max_flow=max_flow, eps=eps, q=q)
        total = term if total is None else total + term
    return total


def epe(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, max_flow: float | None = None
) -> torch.Tensor:
    """Mean end-point error (Euclidean distance, pixels) over the valid, finite target pixels; (B, 2, H, W)
    each. No magnitude limit by default (evaluation counts every valid pixel). 0 when none is valid."""
    _check(pred, target, valid, "epe")
    if pred.shape != target.shape:
        raise ValueError(f"epe: prediction {tuple(pred.shape)} and target {tuple(target.shape)} must match")
    with torch.autocast(device_type=pred.device.type, enabled=False):
        pred, target = pred.float(), target.float()
        keep = valid_mask(target, valid, max_flow)
        target = torch.where(keep.unsqueeze(1), target, 0.0)
        dist = torch.where(keep, (pred - target).norm(dim=1), 0.0)  # (B, H, W)
        return dist.sum() / keep.sum().clamp(min=1)
