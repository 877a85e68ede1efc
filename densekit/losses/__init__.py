"""Losses, one module per task: pure tensor functions (no models, data or lightning), computed in float32."""

from .seg import IGNORE_INDEX, seg_loss

# -- task losses (one import line per task module) --

__all__ = [name for name in dir() if not name.startswith("_")]
