"""Losses, one module per task: pure tensor functions (no models, data or lightning), computed in float32."""

from .depth import depth_loss, gradient_loss, silog_loss

# -- task losses (one import line per task module) --
from .flow import epe, multiscale_flow_loss
from .seg import IGNORE_INDEX, seg_loss
from .volume import soft_dice_loss, volume_loss

__all__ = [
    "IGNORE_INDEX",
    "depth_loss",
    "epe",
    "gradient_loss",
    "multiscale_flow_loss",
    "seg_loss",
    "silog_loss",
    "soft_dice_loss",
    "volume_loss",
]
