"""densekit: dense prediction (segmentation, depth, flow, 3D volumes) from mobile backbones."""

from . import metrics, ops
from .inference import Predictor
from .models import create_backbone, create_model

__version__ = "0.1.0"
__all__ = ["Predictor", "create_backbone", "create_model", "metrics", "ops", "__version__"]
