"""Monocular depth metrics under the standard BTS / AdaBins evaluation protocol, stated exactly:

1. Counted pixels, per image: ``valid`` (if given) & finite ground truth & ``min_depth < gt <= max_depth``
   (``max_depth=None``: no upper cap) & inside the evaluation ``crop`` (if any).
2. ``median_scaling=True`` (for scale-ambiguous predictions): ``pred *= median(gt) / median(pred)``, medians
   over the counted pixels of that image; applied before the clamp of step 3.
3. Predictions are clamped to ``[min_depth, max_depth]`` (non-positive predictions would break the logs).
   A NaN prediction stays NaN and makes the metrics NaN: a diverged model must not look merely mediocre.
4. Per image, over its counted pixels (gt ``g``, prediction ``p``, metres):
     abs_rel  = mean(|g - p| / g)             sq_rel = mean((g - p)^2 / g)
     rmse     = sqrt(mean((g - p)^2))         rmse_log = sqrt(mean((ln g - ln p)^2))
     log10    = mean(|log10 g - log10 p|)
     silog    = 100 * sqrt(mean(d^2) - mean(d)^2),  d = ln p - ln g   (lambda = 1, x100: the BTS /
                                                    MDE-Toolbox form; not the lambda = 0.5 training loss)
     d1/d2/d3 = fraction of pixels with max(g / p, p / g) < 1.25, 1.25^2, 1.25^3
5. The dataset value of each metric is the mean over images of the per-image values (images without a
   counted pixel are left out); this is what BTS/AdaBins report, and it is not the pixel-pooled mean.

Evaluation crops (``EVAL_CROPS``; row/column boxes as fractions of the image height/width, the box being
``rows [floor(top*H), floor(bottom*H)), cols [floor(left*W), floor(right*W))``, in exact fractions):
  * ``eigen_nyu``:   rows 45:471, cols 41:601 of the 480x640 NYUv2 frame (Eigen et al. 2014); other sizes
                     get the same fractions of their size (so a 240x320 map keeps rows 22:235, cols 20:300).
  * ``garg``:        KITTI, rows 0.40810811 H : 0.99189189 H, cols 0.03594771 W : 0.96405229 W
                     (Garg et al. 2016)
  * ``eigen_kitti``: KITTI, rows 0.3324324 H : 0.91351351 H, cols 0.0359477 W : 0.96405229 W
                     (Eigen et al. 2014)
The KITTI crops are defined on the full raw frame (about 375x1242): evaluate full frames, not KB crops.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torchmetrics import Metric

__all__ = [
    "DEPTH_METRIC_NAMES",
    "EVAL_CROPS",
    "DepthMetrics",
    "crop_mask",
    "depth_metrics",
    "per_image_depth_metrics",
]

DEPTH_METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "log10", "d1", "d2", "d3")

# name -> (top, bottom, left, right) as exact fractions of (H, H, W, W)
EVAL_CROPS: dict[str, tuple[Fraction, Fraction, Fraction, Fraction]] = {
    "eigen_nyu": (Fraction(45, 480), Fraction(471, 480), Fraction(41, 640), Fraction(601, 640)),
    "garg": (Fraction("0.40810811"), Fraction("0.99189189"), Fraction("0.03594771"), Fraction("0.96405229")),
    "eigen_kitti": (
        Fraction("0.3324324"),
        Fraction("0.91351351"),
        Fraction("0.0359477"),
        Fraction("0.96405229"),
    ),
}


def crop_mask(crop: str | None, height: int, width: int, device=None) -> torch.Tensor:
    """(H, W) bool: True inside the named evaluation crop (everything for ``crop=None``)."""
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    if crop is None:
        mask[:] = True
        return mask
    if crop not in EVAL_CROPS:
        raise ValueError(f"unknown depth evaluation crop {crop!r}; expected None or one of {sorted(EVAL_CROPS)}")
    top, bottom, left, right = EVAL_CROPS[crop]
    # floor of an exact fraction: 45/480 * 480 is exactly 45, where float arithmetic may land on 44.999...
    mask[
        math.floor(top * height) : math.floor(bottom * height),
        math.floor(left * width) : math.floor(right * width),
    ] = True
    return mask


def _as_bhw(x: torch.Tensor, name: str) -> torch.Tensor:
    """(B,1,H,W) / (B,H,W) / (H,W) -> (B,H,W)."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]  # (B, H, W)
    if x.dim() == 3:
        return x
    if x.dim() == 2:
        return x[None]  # (1, H, W)
    raise ValueError(f"{name} must have shape (B,1,H,W), (B,H,W) or (H,W), got {tuple(x.shape)}")


def per_image_depth_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    min_depth: float = 1e-3,
    max_depth: float | None = None,
    crop: str | None = None,
    median_scaling: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-image metrics: {name: float64 tensor (N,)} over the N images that have at least one counted
    pixel, plus ``"count"`` (N,) pixel counts. Same protocol and options as ``depth_metrics``."""
    pred, target = _as_bhw(pred, "pred"), _as_bhw(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    if min_depth is None or min_depth <= 0:
        raise ValueError(f"min_depth must be > 0 (logs of the depths are taken), got {min_depth!r}")
    if max_depth is not None and max_depth <= min_depth:
        raise ValueError(f"max_depth must exceed min_depth={min_depth}, got {max_depth!r}")
    # float64: sums of squared log ratios over a megapixel lose digits in float32 (SILog is a difference)
    pred, target = pred.detach().double(), target.detach().double()
    keep = torch.isfinite(target) & (target > min_depth)
    if max_depth is not None:
        keep &= target <= max_depth
    if valid is not None:
        valid = _as_bhw(valid, "valid")
        if valid.shape != target.shape:
            raise ValueError(f"valid {tuple(valid.shape)} must match target {tuple(target.shape)}")
        keep &= valid.bool()
    keep &= crop_mask(crop, target.shape[-2], target.shape[-1], device=target.device)  # broadcast over B
    count = keep.sum(dim=(1, 2))  # (B,)
    has = count > 0
    pred, target, keep, count = pred[has], target[has], keep[has], count[has].double()
    n = count.clamp(min=1)

    def mean(x: torch.Tensor) -> torch.Tensor:  # per-image mean over the counted pixels -> (N,)
        return torch.where(keep, x, torch.zeros_like(x)).sum(dim=(1, 2)) / n

    if median_scaling and pred.shape[0]:
        ratios = torch.stack([target[i][keep[i]].median() / pred[i][keep[i]].median() for i in range(pred.shape[0])])
        pred = pred * ratios[:, None, None]
    pred = pred.clamp(min=min_depth, max=max_depth)
    # outside the counted pixels the values are masked out; keep them finite so that NaN * 0 does not leak
    target = torch.where(keep, target, torch.ones_like(target))
    pred = torch.where(keep, pred, torch.ones_like(pred))
    thresh = torch.maximum(target / pred, pred / target)
    d = torch.log(pred) - torch.log(target)
    out = {
        "abs_rel": mean((target - pred).abs() / target),
        "sq_rel": mean((target - pred) ** 2 / target),
        "rmse": mean((target - pred) ** 2).sqrt(),
        "rmse_log": mean(d**2).sqrt(),
        # clamp: mean(d^2) - mean(d)^2 is a variance, >= 0, but rounding can make it -1e-17
        "silog": (mean(d**2) - mean(d) ** 2).clamp(min=0).sqrt() * 100.0,
        "log10": mean((torch.log10(pred) - torch.log10(target)).abs()),
        "d1": mean((thresh < 1.25).double()),
        "d2": mean((thresh < 1.25**2).double()),
        "d3": mean((thresh < 1.25**3).double()),
    }
    out["count"] = count
    return out


def depth_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    min_depth: float = 1e-3,
    max_depth: float | None = None,
    crop: str | None = None,
    median_scaling: bool = False,
) -> dict[str, float]:
    """Depth metrics (metres) averaged over images: abs_rel, sq_rel, rmse, rmse_log, silog, log10, d1, d2, d3.

    ``pred``/``target``/``valid``: (B,1,H,W), (B,H,W) or (H,W). Protocol, crops and the SILog form: module
    docstring. With no counted pixel in any image every metric is NaN.
    """
    per = per_image_depth_metrics(
        pred,
        target,
        valid,
        min_depth=min_depth,
        max_depth=max_depth,
        crop=crop,
        median_scaling=median_scaling,
    )
    n = per["count"].numel()
    return {k: float(per[k].mean()) if n else float("nan") for k in DEPTH_METRIC_NAMES}


class DepthMetrics(Metric):
    """Accumulates the per-image metric sums and the image count over batches (and over processes:
    sum-reduced), so ``compute()`` equals ``depth_metrics`` on all images at once."""

    full_state_update = False

    def __init__(
        self,
        *,
        min_depth: float = 1e-3,
        max_depth: float | None = None,
        crop: str | None = None,
        median_scaling: bool = False,
    ):
        super().__init__()
        if crop is not None and crop not in EVAL_CROPS:
            raise ValueError(f"unknown depth evaluation crop {crop!r}; expected None or one of {sorted(EVAL_CROPS)}")
        self.options = {
            "min_depth": min_depth,
            "max_depth": max_depth,
            "crop": crop,
            "median_scaling": median_scaling,
        }
        self.add_state("sums", default=torch.zeros(len(DEPTH_METRIC_NAMES), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        per = per_image_depth_metrics(pred, target, valid, **self.options)
        self.sums += torch.stack([per[k].sum() for k in DEPTH_METRIC_NAMES]).to(self.sums)
        self.images += per["count"].numel()

    def compute(self) -> dict[str, float]:
        if int(self.images) == 0:
            return {k: float("nan") for k in DEPTH_METRIC_NAMES}
        return {k: float(v) for k, v in zip(DEPTH_METRIC_NAMES, self.sums / self.images)}
