"""Transforms of samples: paired 2D augmentation (``image``), flow-aware augmentation of frame pairs
(``flow``), 3D patch sampling and augmentation of volumes (``volume``) and the pixel-value rule of images
that are not 8-bit (``intensity``)."""

from .flow import FlowAugment, apply_flow_augment, build_flow_augment
from .image import apply_augment, build_augment, check_resize
from .intensity import IntensityRule, check_intensity
from .volume import VolumeAugment, VolumeSampling, centre_patch, random_patch, zscore

__all__ = [
    "FlowAugment",
    "IntensityRule",
    "VolumeAugment",
    "VolumeSampling",
    "apply_augment",
    "apply_flow_augment",
    "build_augment",
    "build_flow_augment",
    "centre_patch",
    "check_intensity",
    "check_resize",
    "random_patch",
    "zscore",
]
