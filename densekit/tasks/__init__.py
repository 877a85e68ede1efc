"""LightningModules: one shared step (``DenseTask``), per-task loss/metrics."""

from .base import DenseTask, make_schedule
from .depth import DepthTask
from .seg import SegTask

TASK_MODULES = {"seg": SegTask, "depth": DepthTask}

__all__ = ["TASK_MODULES", "DenseTask", "DepthTask", "SegTask", "make_schedule"]
