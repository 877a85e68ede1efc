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


def check_sample(sample: dict, required: tuple[str, ...] = ("image",)) -> dict:
    """Validate one 2D sample against the schema; raise a ValueError naming what was expected and what came."""
    missing = [k for k in required if k not in sample]
    if missing:
        raise ValueError(f"sample is missing keys {missing}; expected at least {list(required)}, got {sorted(sample)}")
    h, w = sample["image"].shape[-2:]
    for key, value in sample.items():
        if key not in SCHEMA or not torch.is_tensor(value):
            continue
        dtype, rank = SCHEMA[key]
        if value.dtype != dtype or value.dim() != rank:
            raise ValueError(
                f"sample[{key!r}] should be {dtype} with {rank} dims, got {value.dtype} with shape {tuple(value.shape)}"
            )
        if tuple(value.shape[-2:]) != (h, w):
            raise ValueError(
                f"sample[{key!r}] has size {tuple(value.shape[-2:])} but the image is {(h, w)}; they must match"
            )
    return sample


# key -> (dtype, rank without batch dim) for 3D volume samples
VOLUME_SCHEMA = {
    "image": (torch.float32, 4),  # (C, D, H, W), z-scored per channel
    "mask": (torch.int64, 3),  # (D, H, W) train ids, ignore = 255
    "valid": (torch.bool, 3),  # (D, H, W)
}


def check_volume_sample(sample: dict, required: tuple[str, ...] = ("image", "mask", "valid")) -> dict:
    """Validate one 3D volume sample (image (C,D,H,W) float32, mask (D,H,W) int64, valid (D,H,W) bool)."""
    missing = [k for k in required if k not in sample]
    if missing:
        raise ValueError(
            f"sample is missing keys {missing}; expected at least {list(required)}, got {sorted(sample)}"
        )
    spatial = tuple(sample["image"].shape[-3:])
    for key, value in sample.items():
        if key not in VOLUME_SCHEMA or not torch.is_tensor(value):
            continue
        dtype, rank = VOLUME_SCHEMA[key]
        if value.dtype != dtype or value.dim() != rank:
            raise ValueError(
                f"sample[{key!r}] should be {dtype} with {rank} dims, got {value.dtype} with shape "
                f"{tuple(value.shape)}"
            )
        if tuple(value.shape[-3:]) != spatial:
            raise ValueError(
                f"sample[{key!r}] has size {tuple(value.shape[-3:])} but the image is {spatial} (D, H, W); "
                "they must match"
            )
    return sample
