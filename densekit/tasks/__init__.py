"""LightningModules: one shared step (``DenseTask``), per-task loss/metrics; each task registered in ``TASKS``.

Every module of this package is imported here (``pkgutil.iter_modules``), so a task registers itself by
being defined in a file of this folder: adding one edits no other Python file.
"""

import importlib
import pkgutil

from .base import TASKS, DenseTask, get_task
from .depth import DepthTask
from .flow import FlowTask
from .optim import make_schedule, param_groups
from .seg import SegTask
from .volume import VolumeTask

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "TASKS",
    "DenseTask",
    "DepthTask",
    "FlowTask",
    "SegTask",
    "VolumeTask",
    "get_task",
    "make_schedule",
    "param_groups",
]
