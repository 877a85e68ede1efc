"""LightningModules: one shared step (``DenseTask``), per-task loss/metrics."""

from .base import DenseTask, make_schedule
from .seg import SegTask

TASK_MODULES = {"seg": SegTask}

__all__ = ["TASK_MODULES", "DenseTask", "SegTask", "make_schedule"]
