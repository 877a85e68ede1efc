"""Metrics: functional ``(pred, target, valid=None) -> dict[str, float]`` and torchmetrics accumulators."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from ..schema import IGNORE_INDEX


def confusion_matrix(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    valid: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """(K, K) int64 counts, rows = target class, columns = predicted class, over counted pixels.

    ``pred``: labels (B, H, W) or scores (B, K, H, W) (argmax over K). Pixels whose target is
    ``ignore_index`` or whose ``valid`` is False are not counted. Targets outside [0, K) other than
    the ignore index are an error (they would silently shift the counts).
    """
    if pred.dim() == target.dim() + 1:
        pred = pred.argmax(dim=1)
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    keep = target != ignore_index
    if valid is not None:
        keep &= valid.bool()
    t, p = target[keep].long(), pred[keep].long()
    if t.numel() and (t.min() < 0 or t.max() >= num_classes):
        bad = torch.unique(t[(t < 0) | (t >= num_classes)]).tolist()
        raise ValueError(f"target holds labels {bad[:10]} outside [0, {num_classes}) (ignore index {ignore_index})")
    if p.numel() and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"pred holds labels outside [0, {num_classes})")
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores_from_confusion(cm: torch.Tensor, class_names: list[str] | None = None) -> dict[str, float]:
    """mIoU, mDice, pixel accuracy and per-class IoU from a confusion matrix.

    A class absent from both target and prediction has no IoU (NaN) and is left out of the means
    (the mmseg/torchmetrics-nan convention), so it neither helps nor hurts.
    """
    cm = cm.double()
    tp = cm.diag()
    gt, pr = cm.sum(1), cm.sum(0)
    union = gt + pr - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    dice = torch.where(gt + pr > 0, 2 * tp / (gt + pr).clamp(min=1), torch.full_like(tp, float("nan")))
    total = cm.sum()
    names = class_names or [str(i) for i in range(cm.shape[0])]
    if len(names) != cm.shape[0]:
        raise ValueError(f"{len(names)} class names for {cm.shape[0]} classes")
    out = {
        "mIoU": _nanmean(iou),
        "mDice": _nanmean(dice),
        "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
    }
    out.update({f"IoU/{n}": float(v) for n, v in zip(names, iou)})
    return out


def _nanmean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else float("nan")


def seg_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, float]:
    """Segmentation metrics for one set of predictions: mIoU, mDice, pixel_acc, IoU/<class>.

    ``num_classes`` defaults to K of score maps, or to len(class_names), or to 1 + the largest label seen.
    """
    if num_classes is None:
        if pred.dim() == target.dim() + 1:
            num_classes = pred.shape[1]
        elif class_names:
            num_classes = len(class_names)
        else:
            seen = target[target != ignore_index]
            num_classes = int(max(seen.max().item() if seen.numel() else 0, pred.max().item())) + 1
    cm = confusion_matrix(pred, target, num_classes, valid, ignore_index)
    return scores_from_confusion(cm, class_names)


class SegMetrics(Metric):
    """Accumulates the confusion matrix over batches (and over processes: sum-reduced), and the number of
    pixels seen, so that ``compute`` can tell what the scores were computed over: after each ``compute``,
    ``counts`` holds the totals of all processes (``pixel_counts``)."""

    full_state_update = False

    def __init__(self, num_classes: int, class_names: list[str] | None = None, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.num_classes, self.class_names, self.ignore_index = num_classes, class_names, ignore_index
        self.add_state("cm", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("pixels", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.counts: dict[str, int] = {}

    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        self.cm += confusion_matrix(pred, target, self.num_classes, valid, self.ignore_index)
        self.pixels += target.numel()

    def compute(self) -> dict[str, float]:
        # compute() runs on the synced (all-process) states; they are unsynced again afterwards
        self.counts = pixel_counts(self.cm, int(self.pixels))
        return scores_from_confusion(self.cm, self.class_names)


def pixel_counts(cm: torch.Tensor, pixels: int) -> dict[str, int]:
    """What a confusion matrix was computed over: ``pixels`` seen, ``labelled`` (counted), ``ignored``
    (ignore label or not valid), ``foreground`` (labelled pixels of every class but class 0, the
    background of a class list that has one) and ``per_class`` labelled pixels."""
    per_class = cm.sum(1)
    labelled = int(per_class.sum())
    return {
        "pixels": pixels,
        "labelled": labelled,
        "ignored": pixels - labelled,
        "foreground": int(per_class[1:].sum()),
        "per_class": [int(v) for v in per_class],
    }
