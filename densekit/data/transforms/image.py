"""Paired augmentation for 2D samples, built from a plain config with albumentations.

albumentations moves the image and every per-pixel target together (masks, depth, valid and flow with
nearest interpolation, so no label is ever blended). Config keys (``augment:`` in conf/data/*.yaml):

  scale: [lo, hi]     random zoom factor in [lo, hi] (both sides)          -- changes geometry, see below
  crop: [h, w]        random crop; where the crop is larger than the image it is padded: image 0,
                      mask 255 (ignore), depth 0, valid False
  hflip: p, vflip: p  flips with probability p
  color_jitter: s     brightness/contrast/saturation s, hue s/4 (same draw on image and image2)
  gauss_noise: p      additive noise with probability p

and, deterministic for every split (a dataset argument, not an ``augment`` key): ``resize=N`` sets the
short side to N pixels, aspect kept, before the random ops.

Which ops change which targets:
  * ``scale`` zooms the scene: an object drawn twice as large looks as if it were half as far away, so
    the metric depth a network is taught would contradict what it sees. It raises when a depth target is
    present (there is no honest fix short of rescaling depth and the intrinsics together). Flow vectors
    would have to scale too: it raises with flow as well.
  * ``resize`` rescales every image of a dataset alike: metric depth per pixel stays true (the camera
    merely has fewer pixels), so it is allowed with depth; with flow it raises (vectors would need scaling).
  * flips keep depth; with flow the u (hflip) or v (vflip) component is negated to stay correct.
  * ``crop`` keeps depth and flow (both frames are cut at the same place); padded pixels are not valid.
"""

from __future__ import annotations

import os

import albumentations as A
import cv2
import numpy as np
import torch

from ...schema import IGNORE_INDEX

_KNOWN = {"hflip", "vflip", "color_jitter", "gauss_noise", "scale", "crop"}
_SCALING = (A.RandomScale, A.SmallestMaxSize)
_PAD = IGNORE_INDEX  # fill for every mask-like target; becomes ignore in the mask and False in valid


def pair_option(cfg: dict, key: str, kind: type, minimum: float) -> tuple:
    value = cfg[key]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"augment.{key} must be a pair [a, b], got {value!r}")
    try:
        a, b = kind(value[0]), kind(value[1])
    except (TypeError, ValueError):
        raise ValueError(f"augment.{key} must hold two {kind.__name__}s, got {value!r}") from None
    if a != value[0] or b != value[1] or min(a, b) < minimum:
        raise ValueError(f"augment.{key} must hold two {kind.__name__}s >= {minimum}, got {value!r}")
    return a, b


def check_resize(resize) -> int | None:
    """``resize`` (short side in pixels) -> int, or None; a clear error otherwise."""
    if resize is None:
        return None
    if isinstance(resize, bool) or not isinstance(resize, int) or resize < 8:
        raise ValueError(f"resize (the short side in pixels) must be an int >= 8 or null, got {resize!r}")
    return resize


def build_augment(cfg: dict | None, *, resize: int | None = None, targets: tuple[str, ...] = ()) -> A.Compose | None:
    """Config (keys in the module docstring) -> albumentations Compose, or None when there is nothing to do.

    ``resize`` prepends the deterministic short-side resize; ``targets`` lets geometry that would corrupt a
    depth or flow target be refused here, before any data is read.
    """
    cfg = dict(cfg or {})
    unknown = set(cfg) - _KNOWN
    if unknown:
        raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; expected any of {sorted(_KNOWN)}")
    resize = check_resize(resize)
    ops = []
    if resize is not None:
        if "flow" in targets:
            raise ValueError("resize would need the flow vectors rescaled; it is not supported with a flow target")
        ops.append(A.SmallestMaxSize(max_size=resize, interpolation=cv2.INTER_LINEAR))
    if cfg.get("scale") is not None:
        lo, hi = pair_option(cfg, "scale", float, 0.05)
        if lo > hi:
            raise ValueError(f"augment.scale must be [lo, hi] with lo <= hi, got {cfg['scale']!r}")
        for target in ("depth", "flow"):
            if target in targets:
                raise ValueError(
                    f"augment.scale zooms the scene, which would silently corrupt the {target} target "
                    f"(apparent size no longer matches metric depth / flow magnitudes); "
                    f"remove it for this task"
                )
        ops.append(A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR, p=1.0))
    if cfg.get("crop") is not None:
        h, w = pair_option(cfg, "crop", int, 8)
        ops.append(A.RandomCrop(h, w, pad_if_needed=True, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=_PAD))
    if cfg.get("hflip"):
        ops.append(A.HorizontalFlip(p=float(cfg["hflip"])))
    if cfg.get("vflip"):
        ops.append(A.VerticalFlip(p=float(cfg["vflip"])))
    if cfg.get("color_jitter"):
        s = float(cfg["color_jitter"])
        ops.append(A.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(s / 4, 0.5), p=0.8))
    if cfg.get("gauss_noise"):
        ops.append(A.GaussNoise(std_range=(0.01, 0.03), p=float(cfg["gauss_noise"])))
    if not ops:
        return None
    aug = A.Compose(
        ops,
        additional_targets={"image2": "image", "depth": "mask", "valid": "mask", "flow": "mask"},
        # never blends labels; pixel centres align with INTER_LINEAR
        mask_interpolation=cv2.INTER_NEAREST_EXACT,
        save_applied_params=True,  # to know which flips ran (flow signs)
        seed=torch.initial_seed() % 2**32,  # reproducible under pl.seed_everything
    )
    aug._densekit_pid = os.getpid()
    return aug


def to_float(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _check_geometry(aug: A.Compose, sample: dict) -> None:
    for t in aug.transforms:
        if isinstance(t, A.RandomScale) and ("depth" in sample or "flow" in sample):
            raise ValueError("augment.scale would silently corrupt the depth/flow target of this sample; remove it")
        if isinstance(t, _SCALING) and "flow" in sample:
            raise ValueError("resize would need the flow vectors rescaled; it is not supported with a flow target")


def apply_augment(aug: A.Compose | None, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``aug`` on a numpy sample: HWC image(s) (uint8, or float in [0, 1]), (H, W) mask/depth/valid,
    (H, W, 2) flow. Returns images as float32 in [0, 1], the mask as int64, ``valid`` bool (False where
    a crop padded), depth 0 and flow 0 where padded."""
    if aug is None:
        out = dict(sample)
        for key in ("image", "image2"):
            if key in out:
                out[key] = to_float(out[key])
        return out
    _check_geometry(aug, sample)
    if getattr(aug, "_densekit_pid", None) != os.getpid():
        # A forked DataLoader worker inherits the parent's generator state: without a reseed every worker
        # would draw the same augmentations. torch seeds each worker differently (base_seed + worker id).
        aug.set_random_seed(torch.initial_seed() % 2**32)
        aug._densekit_pid = os.getpid()
    kwargs = {k: sample[k] for k in ("image", "image2", "depth", "flow") if k in sample}
    h, w = sample["image"].shape[:2]
    valid = sample.get("valid")
    # valid travels as 1/0 so that crop padding (255) can be told apart from pixels that were invalid
    kwargs["valid"] = np.ones((h, w), np.uint8) if valid is None else valid.astype(np.uint8)
    if "mask" in sample:
        mask = sample["mask"]
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise ValueError(f"mask values must lie in [0, 255] (255 = ignore), got [{mask.min()}, {mask.max()}]")
        kwargs["mask"] = mask.astype(np.uint8)  # OpenCV warps cannot take int64
    out = aug(**kwargs)
    padded = out["valid"] == _PAD
    result = dict(sample)
    for key in kwargs:
        result[key] = out[key]
    result["valid"] = out["valid"] == 1
    if "mask" in result:
        result["mask"] = result["mask"].astype(np.int64)
    for key in ("depth", "flow"):
        if key in result and padded.any():
            result[key] = result[key].copy()
            result[key][padded] = 0.0
    if "flow" in result:
        names = {name for name, _ in out.get("applied_transforms", ())}
        flow = result["flow"].copy()
        if "HorizontalFlip" in names:
            flow[..., 0] *= -1.0  # mirrored x: motion to the right becomes motion to the left
        if "VerticalFlip" in names:
            flow[..., 1] *= -1.0
        result["flow"] = flow
    for key in ("image", "image2"):
        if key in result:
            result[key] = to_float(result[key])
    return result
