"""Data that ships with densekit and its dependencies (nothing to download): the procedural 2D scenes
(``scenes``: seg, depth and flow targets at once), the procedural volumes (``volumes``) and scikit-image's
real stereo pair with dense ground truth (``motorcycle``)."""

from .motorcycle import StereoMotorcycle
from .scenes import CLASS_NAMES, SceneConfig, SyntheticScenes, generate_scene
from .volumes import SyntheticVolumes, generate_volume

__all__ = [
    "CLASS_NAMES",
    "SceneConfig",
    "StereoMotorcycle",
    "SyntheticScenes",
    "SyntheticVolumes",
    "generate_scene",
    "generate_volume",
]
