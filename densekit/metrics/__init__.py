"""Metrics, one module per task: functional ``<task>_metrics(pred, target, valid=None) -> dict[str, float]``
and torchmetrics accumulators (sum-reduced across processes) for the training loop."""

from .depth import EVAL_CROPS, DepthMetrics, depth_metrics

# -- task metrics (one import line per task module) --
from .flow import FlowMetrics, flow_metrics, flow_sums
from .seg import IGNORE_INDEX, SegMetrics, confusion_matrix, scores_from_confusion, seg_metrics
from .volume import BRATS_REGIONS, VolumeMetrics, volume_metrics

__all__ = [
    "BRATS_REGIONS",
    "DepthMetrics",
    "EVAL_CROPS",
    "FlowMetrics",
    "IGNORE_INDEX",
    "SegMetrics",
    "VolumeMetrics",
    "confusion_matrix",
    "depth_metrics",
    "flow_metrics",
    "flow_sums",
    "scores_from_confusion",
    "seg_metrics",
    "volume_metrics",
]
