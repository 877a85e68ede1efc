"""The batch schema every dataset yields and every task consumes (see DESIGN.md, Contracts)."""

from __future__ import annotations

import torch

IGNORE_INDEX = 255

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
                f"sample[{key!r}] has size {tuple(value.shape[-spatial_dims:])} but the image is {size}{axes}; "
                "they must match"
            )
    return sample


def check_sample(sample: dict, required: tuple[str, ...] = ("image",)) -> dict:
    """Validate one 2D sample against the schema; raise a ValueError naming what was expected and what came."""
    return _check(sample, required, SCHEMA, 2, "")


# key -> (dtype, rank without batch dim) for 3D volume samples
VOLUME_SCHEMA = {
    "image": (torch.float32, 4),  # (C, D, H, W), z-scored per channel
    "mask": (torch.int64, 3),  # (D, H, W) train ids, ignore = 255
    "valid": (torch.bool, 3),  # (D, H, W)
}


def check_volume_sample(sample: dict, required: tuple[str, ...] = ("image", "mask", "valid")) -> dict:
    """Validate one 3D volume sample (image (C,D,H,W) float32, mask (D,H,W) int64, valid (D,H,W) bool)."""
    return _check(sample, required, VOLUME_SCHEMA, 3, " (D, H, W)")
