"""Metrics, one module per task: functional ``<task>_metrics(pred, target, valid=None) -> dict[str, float]``
and torchmetrics accumulators (sum-reduced across processes) for the training loop."""

from .seg import IGNORE_INDEX, SegMetrics, confusion_matrix, scores_from_confusion, seg_metrics

# -- task metrics (one import line per task module) --

__all__ = [name for name in dir() if not name.startswith("_")]
