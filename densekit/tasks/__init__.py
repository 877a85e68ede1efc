"""LightningModules: one shared step (``DenseTask``), per-task loss/metrics."""

from .base import DenseTask, make_schedule
from .depth import DepthTask
from .flow import FlowTask
from .seg import SegTask
from .volume import VolumeTask

TASK_MODULES = {"seg": SegTask, "depth": DepthTask, "flow": FlowTask, "volume": VolumeTask}

__all__ = ["TASK_MODULES", "DenseTask", "DepthTask", "FlowTask", "SegTask", "VolumeTask", "make_schedule"]
