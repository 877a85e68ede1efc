"""Paired augmentation for 2D samples, built from a plain config with albumentations.

albumentations moves images and masks together; geometric transforms here are ones whose effect on
depth is nil (flips) — transforms that would change metric depth or flow vectors belong to the
task-specific pipelines that know how to update those targets.
"""

from __future__ import annotations

import albumentations as A
import numpy as np

_KNOWN = {"hflip", "vflip", "color_jitter", "gauss_noise"}


def build_augment(cfg: dict | None) -> A.Compose | None:
    """{'hflip': p, 'vflip': p, 'color_jitter': strength, 'gauss_noise': p} -> albumentations Compose."""
    if not cfg:
        return None
    unknown = set(cfg) - _KNOWN
    if unknown:
        raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; expected any of {sorted(_KNOWN)}")
    ops = []
    if cfg.get("hflip"):
        ops.append(A.HorizontalFlip(p=float(cfg["hflip"])))
    if cfg.get("vflip"):
        ops.append(A.VerticalFlip(p=float(cfg["vflip"])))
    if cfg.get("color_jitter"):
        s = float(cfg["color_jitter"])
        ops.append(A.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(s / 4, 0.5), p=0.8))
    if cfg.get("gauss_noise"):
        ops.append(A.GaussNoise(std_range=(0.01, 0.03), p=float(cfg["gauss_noise"])))
    return A.Compose(ops, additional_targets={"depth": "mask", "valid": "mask"}) if ops else None


def apply_augment(aug: A.Compose | None, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``aug`` on numpy HWC image + (H, W) mask/depth/valid targets present in ``sample``."""
    if aug is None:
        return sample
    kwargs = {k: sample[k] for k in ("image", "mask", "depth", "valid") if k in sample}
    if "valid" in kwargs:
        kwargs["valid"] = kwargs["valid"].astype(np.uint8)
    out = aug(**kwargs)
    result = dict(sample)
    result.update(out)
    if "valid" in result:
        result["valid"] = result["valid"].astype(bool)
    result["image"] = np.clip(result["image"], 0.0, 1.0).astype(np.float32)
    return result
