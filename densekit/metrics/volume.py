"""3D volume segmentation metrics: per-case Dice per class and per BraTS region, optional HD95.

Conventions (stated once, used everywhere here):
  * Inputs are train ids: ``pred`` labels (B, D, H, W) or scores (B, K, D, H, W) (argmax over K),
    ``target`` (B, D, H, W). Voxels whose target is 255 (ignore) or whose ``valid`` is False are not
    counted: they are treated as background in both pred and target.
  * Each of the B volumes is one case. Dice is computed per case, then averaged over cases (the BraTS
    convention), not pooled over all voxels. A structure absent from both a case's target and its
    prediction scores Dice 1.0 for that case (BraTS: empty/empty is a perfect answer); absent from one
    only, Dice 0.0.
  * ``mDice`` is the mean over the foreground classes 1..K-1 (background excluded, as nnU-Net/BraTS).
  * BraTS regions (``labels="brats2023"`` or ``"brats2021"``; both readers map to the same train ids:
    0 background, 1 necrotic core, 2 edema, 3 enhancing, the raw 2021 value 4 being train id 3):
      WT whole tumour  = {1, 2, 3}   (raw 2021: {1, 2, 4}; raw 2023: {1, 2, 3})
      TC tumour core   = {1, 3}      (raw 2021: {1, 4};    raw 2023: {1, 3})
      ET enhancing     = {3}         (raw 2021: {4};       raw 2023: {3})
    reported as ``Dice/WT``, ``Dice/TC``, ``Dice/ET`` and their mean ``Dice/regions``.
  * HD95 (``hd95=True``): the 95th percentile Hausdorff distance of MONAI's
    ``compute_hausdorff_distance(percentile=95)`` (max of the two directed 95th percentiles between
    surfaces), in voxels (times ``spacing`` when given, e.g. mm). Per case: both empty -> 0; exactly one
    empty -> the volume diagonal (the worst possible distance, as the BraTS evaluation penalises it);
    averaged over cases. Keys ``HD95/<class>`` (foreground) and ``HD95/WT|TC|ET``.
"""

from __future__ import annotations

import math
import warnings

import torch
from torchmetrics import Metric

from .._monai import import_monai
from ..schema import IGNORE_INDEX

BRATS_REGIONS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}  # in train ids (module docstring)
_CONVENTIONS = ("brats2023", "brats2021")


def _structures(num_classes: int, labels: str | None, class_names) -> list[tuple[str, tuple[int, ...]]]:
    """(name, train ids) of every structure scored: foreground classes, then the BraTS regions."""
    if labels is not None and labels not in _CONVENTIONS:
        raise ValueError(f"labels must be one of {list(_CONVENTIONS)} or None, got {labels!r}")
    if labels is not None and num_classes != 4:
        raise ValueError(
            f"BraTS regions need num_classes=4 (background, necrotic, edema, enhancing), got {num_classes}"
        )
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    out = [(names[k], (k,)) for k in range(1, num_classes)]
    if labels is not None:
        out += list(BRATS_REGIONS.items())
    return out


def _prepare(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, num_classes: int):
    """Labels (B, D, H, W) with excluded voxels set to background in both; checked."""
    if pred.dim() == target.dim() + 1:
        pred = pred.argmax(dim=1)  # (B, K, D, H, W) scores -> (B, D, H, W) labels
    if target.dim() != 4 or pred.shape != target.shape:
        raise ValueError(
            f"volume metrics expect pred (B, D, H, W) labels or (B, K, D, H, W) scores and "
            f"target "
            f"(B, D, H, W); got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    keep = target != IGNORE_INDEX
    if valid is not None:
        if valid.shape != target.shape:
            raise ValueError(f"valid {tuple(valid.shape)} must match target {tuple(target.shape)}")
        keep = keep & valid.bool()
    target = torch.where(keep, target.long(), 0)
    pred = torch.where(keep, pred.long(), 0)
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        bad = torch.unique(target[(target < 0) | (target >= num_classes)]).tolist()
        raise ValueError(f"target holds labels {bad[:10]} outside [0, {num_classes}) (ignore index {IGNORE_INDEX})")
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"pred holds labels outside [0, {num_classes})")
    return pred, target


def _member(labels: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
    out = labels == ids[0]
    for k in ids[1:]:
        out |= labels == k
    return out


def per_case_dice(pred: torch.Tensor, target: torch.Tensor, structures) -> torch.Tensor:
    """(B, S) float64 Dice per case and structure; empty/empty = 1.0."""
    rows = []
    for _, ids in structures:
        p, t = _member(pred, ids).flatten(1), _member(target, ids).flatten(1)  # (B, D*H*W)
        inter = (p & t).sum(1).double()
        total = p.sum(1).double() + t.sum(1).double()
        rows.append(torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total)))
    return torch.stack(rows, 1)


def per_case_hd95(pred: torch.Tensor, target: torch.Tensor, structures, spacing=None) -> torch.Tensor:
    """(B, S) float64 HD95 per case and structure (module docstring for the empty cases)."""
    compute_hausdorff_distance = import_monai("monai.metrics").compute_hausdorff_distance  # heavy: only for HD95

    shape = pred.shape[1:]
    sp = [1.0, 1.0, 1.0] if spacing is None else [float(s) for s in spacing]
    worst = math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, sp)))  # the volume's diagonal
    out = torch.zeros(pred.shape[0], len(structures), dtype=torch.float64)
    for j, (_, ids) in enumerate(structures):
        p, t = _member(pred, ids), _member(target, ids)
        for b in range(pred.shape[0]):
            has_p, has_t = bool(p[b].any()), bool(t[b].any())
            if not has_p and not has_t:
                out[b, j] = 0.0
            elif has_p != has_t:
                out[b, j] = worst
            else:
                with warnings.catch_warnings():  # monai 1.5+ warns about its own internal deprecated argument
                    warnings.simplefilter("ignore", FutureWarning)
                    hd = compute_hausdorff_distance(
                        p[b][None, None].float().cpu(),  # (1, 1, D, H, W): MONAI's (B, C, spatial)
                        t[b][None, None].float().cpu(),
                        percentile=95,
                        spacing=sp,
                    )
                out[b, j] = float(hd.reshape(-1)[0])
    return out


def _scores(dice_sum: torch.Tensor, hd_sum: torch.Tensor | None, cases: float, structures, labels) -> dict:
    """Per-case sums over ``cases`` -> the metric dict; the first structures are the foreground classes,
    followed by the three BraTS regions when ``labels`` is set (``_structures``)."""
    if cases == 0:
        return {}
    dice = dice_sum / cases
    n_classes = len(structures) - (len(BRATS_REGIONS) if labels is not None else 0)
    out = {"mDice": float(dice[:n_classes].mean()) if n_classes else float("nan")}
    for (name, _), d in zip(structures, dice):
        out[f"Dice/{name}"] = float(d)
    if labels is not None:
        out["Dice/regions"] = float(dice[n_classes:].mean())
    if hd_sum is not None:
        for (name, _), h in zip(structures, hd_sum / cases):
            out[f"HD95/{name}"] = float(h)
    return out


def volume_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    num_classes: int | None = None,
    labels: str | None = "brats2023",
    class_names: list[str] | None = None,
    hd95: bool = False,
    spacing: tuple[float, float, float] | None = None,
) -> dict[str, float]:
    """Per-case-averaged Dice (and HD95) of B volumes: ``mDice``, ``Dice/<class>`` (foreground classes),
    with ``labels`` also ``Dice/WT|TC|ET`` and ``Dice/regions``; conventions in the module docstring.

    ``num_classes`` defaults to K of score maps, else len(class_names), else 4 (the BraTS classes).
    """
    if num_classes is None:
        if pred.dim() == target.dim() + 1:
            num_classes = pred.shape[1]
        else:
            num_classes = len(class_names) if class_names else 4
    structures = _structures(num_classes, labels, class_names)
    pred, target = _prepare(pred, target, valid, num_classes)
    dice = per_case_dice(pred, target, structures)
    hd = per_case_hd95(pred, target, structures, spacing).sum(0) if hd95 else None
    return _scores(dice.sum(0), hd, pred.shape[0], structures, labels)


class VolumeMetrics(Metric):
    """Accumulates per-case Dice (and HD95) sums and the case count over batches; sum-reduced across
    processes, so ``compute()`` equals ``volume_metrics`` on all cases at once."""

    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        labels: str | None = "brats2023",
        class_names: list[str] | None = None,
        hd95: bool = False,
        spacing: tuple[float, float, float] | None = None,
    ):
        super().__init__()
        self.num_classes, self.labels, self.hd95, self.spacing = num_classes, labels, hd95, spacing
        self.structures = _structures(num_classes, labels, class_names)
        n = len(self.structures)
        self.add_state("dice_sum", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("hd_sum", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("cases", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        pred, target = _prepare(pred, target, valid, self.num_classes)
        self.dice_sum += per_case_dice(pred, target, self.structures).sum(0).to(self.dice_sum.device)
        if self.hd95:
            hd = per_case_hd95(pred, target, self.structures, self.spacing)
            self.hd_sum += hd.sum(0).to(self.hd_sum.device)
        self.cases += pred.shape[0]

    def compute(self) -> dict[str, float]:
        hd = self.hd_sum.cpu() if self.hd95 else None
        return _scores(self.dice_sum.cpu(), hd, float(self.cases), self.structures, self.labels)
