"""The batch schema every dataset yields and every task consumes, and the ignore label.

A leaf module (torch only): data, losses, metrics and tasks all import ``IGNORE_INDEX`` and the batch keys
from here, so the label that means "not scored" is defined once.

2D samples (``check_sample``): ``image`` (3, H, W) float32 in [0, 1]; ``image2`` (3, H, W) (flow only);
``mask`` (H, W) int64 train ids, ``IGNORE_INDEX`` = not scored; ``depth`` (1, H, W) float32 metres;
``flow`` (2, H, W) float32 pixels (u right, v down); ``valid`` (H, W) bool; ``noc`` (H, W) bool (flow with
occlusion ground truth: True = not occluded in frame 2). 3D volume samples (``check_volume_sample``):
``image`` (C, D, H, W) float32 z-scored per channel, ``mask`` (D, H, W) int64, ``valid`` (D, H, W) bool.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = 255  # mask value that is never trained on or scored (padding, borders, unlabelled pixels)

# key -> (dtype, rank without batch dim for 2D data)
SCHEMA = {
    "image": (torch.float32, 3),  # (3, H, W) in [0, 1]
    "image2": (torch.float32, 3),  # (3, H, W), flow only
    "mask": (torch.int64, 2),  # (H, W), ignore = 255
    "depth": (torch.float32, 3),  # (1, H, W) metres
    "flow": (torch.float32, 3),  # (2, H, W) pixels, u right, v down
    "valid": (torch.bool, 2),  # (H, W)
    "noc": (torch.bool, 2),  # (H, W), flow with occlusion ground truth: True = not occluded in frame 2
}

# key -> (dtype, rank without batch dim) for 3D volume samples
VOLUME_SCHEMA = {
    "image": (torch.float32, 4),  # (C, D, H, W), z-scored per channel
    "mask": (torch.int64, 3),  # (D, H, W) train ids, ignore = 255
    "valid": (torch.bool, 3),  # (D, H, W)
}

BATCH_KEYS = tuple(SCHEMA)  # every key a 2D batch may hold
VOLUME_BATCH_KEYS = tuple(VOLUME_SCHEMA)


def _check(sample: dict, required: tuple[str, ...], schema: dict, spatial_dims: int, axes: str) -> dict:
    """Keys, dtypes, ranks and spatial sizes of one sample against ``schema``; the last ``spatial_dims``
    axes of every per-pixel/voxel entry must equal the image's."""
    missing = [k for k in required if k not in sample]
    if missing:
        raise ValueError(f"sample is missing keys {missing}; expected at least {list(required)}, got {sorted(sample)}")
    size = tuple(sample["image"].shape[-spatial_dims:])
    for key, value in sample.items():
        if key not in schema or not torch.is_tensor(value):
            continue
        dtype, rank = schema[key]
        if value.dtype != dtype or value.dim() != rank:
            raise ValueError(
                f"sample[{key!r}] should be {dtype} with {rank} dims, got {value.dtype} with shape {tuple(value.shape)}"
            )
        if tuple(value.shape[-spatial_dims:]) != size:
            raise ValueError(
                f"sample[{key!r}] has size {tuple(value.shape[-spatial_dims:])} "
                f"but the image is {size}{axes}; "
                "they must match"
            )
    return sample


def check_sample(sample: dict, required: tuple[str, ...] = ("image",)) -> dict:
    """Validate one 2D sample against the schema; raise a ValueError naming what was expected and what
    came."""
    return _check(sample, required, SCHEMA, 2, "")


def check_volume_sample(sample: dict, required: tuple[str, ...] = ("image", "mask", "valid")) -> dict:
    """Validate one 3D volume sample (image (C,D,H,W) float32, mask (D,H,W) int64, valid (D,H,W) bool)."""
    return _check(sample, required, VOLUME_SCHEMA, 3, " (D, H, W)")


__all__ = [
    "BATCH_KEYS",
    "IGNORE_INDEX",
    "SCHEMA",
    "VOLUME_BATCH_KEYS",
    "VOLUME_SCHEMA",
    "check_sample",
    "check_volume_sample",
]
