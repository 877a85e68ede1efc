"""3D transforms of volume samples: intensity z-scoring, patch sampling and the train-time augmentation.

Samples here are numpy dicts in (D, H, W) order: ``image`` (C, D, H, W), ``mask`` (D, H, W) train ids,
``valid`` (D, H, W), ``brain`` (D, H, W) (the voxels where any modality is nonzero).

Sampling (train split): ``patch: [D, H, W]`` cuts a random patch; with probability ``fg_prob`` it is
centred on a random foreground voxel (label > 0), clamped inside the volume, so that voxel is always in the
patch (nnU-Net's oversampling, default 0.33). A volume smaller than the patch is padded symmetrically
(image 0, mask 255, valid False). ``patch: null`` returns the whole volume. The val/test splits return the
whole volume (for sliding-window inference), or a deterministic centre patch of ``val_patch: [D, H, W]``.
Randomness comes from torch's generator (seeded by Lightning's ``seed_everything``, distinct per DataLoader
worker), so runs are reproducible and workers do not repeat each other's patches.

Augmentation (``augment:``, train split only; numpy, image/mask/valid moved together):
  flip: p            flip each of the three axes independently with probability p (or [pD, pH, pW])
  scale: s           multiply each modality by a factor drawn from U(1 - s, 1 + s)
  shift: s           add an offset drawn from U(-s, s) to each modality (z-score units)
  gauss_noise: sigma add N(0, sigma') noise, sigma' drawn from U(0, sigma) per sample
Intensity ops touch brain voxels only: the background stays exactly 0.
"""

from __future__ import annotations

import numpy as np
import torch

from ...schema import IGNORE_INDEX, check_volume_sample

_AUGMENT_KEYS = {"flip", "scale", "shift", "gauss_noise"}


# -- intensity -------------------------------------------------------------------------------------------
def zscore(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Per-channel z-score over the ``brain`` voxels of ``image`` (C, D, H, W); background set to 0.

    A channel constant over the brain (std 0) is only centred, not divided.
    """
    out = np.zeros(image.shape, np.float32)
    if not brain.any():
        return out
    for c in range(image.shape[0]):
        values = image[c][brain].astype(np.float64)
        mean, std = values.mean(), values.std()
        out[c][brain] = ((values - mean) / (std if std > 0 else 1.0)).astype(np.float32)
    return out


# -- patches ---------------------------------------------------------------------------------------------
def check_patch(patch, what: str = "patch") -> tuple[int, int, int] | None:
    """``[D, H, W]`` of positive ints -> tuple, or None; a clear error otherwise."""
    if patch is None:
        return None
    if (
        not isinstance(patch, (list, tuple))
        or len(patch) != 3
        or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in patch)
    ):
        raise ValueError(f"{what} must be [D, H, W] of positive ints or null, got {patch!r}")
    return tuple(int(p) for p in patch)


def pad_to(sample: dict[str, np.ndarray], shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Pad a numpy volume sample symmetrically to at least ``shape``: image 0, mask 255, valid/brain False."""
    size = sample["mask"].shape
    need = [max(0, s - n) for s, n in zip(shape, size)]
    if not any(need):
        return sample
    pads = [(n // 2, n - n // 2) for n in need]
    fill = {"image": 0.0, "mask": IGNORE_INDEX, "valid": False, "brain": False}
    out = {}
    for key, value in sample.items():
        lead = [(0, 0)] * (value.ndim - 3)  # the channel axis of image is not padded
        out[key] = np.pad(value, lead + pads, constant_values=fill[key])
    return out


def crop(sample: dict[str, np.ndarray], start: tuple[int, ...], shape: tuple[int, int, int]) -> dict:
    window = tuple(slice(s, s + n) for s, n in zip(start, shape))
    return {k: np.ascontiguousarray(v[(Ellipsis,) + window]) for k, v in sample.items()}


def random_patch(
    sample: dict[str, np.ndarray], shape: tuple[int, int, int], fg_prob: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """A ``shape`` patch; with probability ``fg_prob`` centred (then clamped) on a random foreground voxel,
    which therefore lies inside the patch. Without foreground in the volume the patch is uniform."""
    sample = pad_to(sample, shape)
    size = sample["mask"].shape
    start = None
    if fg_prob > 0 and rng.random() < fg_prob:
        mask = sample["mask"]
        fg = np.flatnonzero((mask > 0) & (mask != IGNORE_INDEX))
        if fg.size:
            centre = np.unravel_index(fg[rng.integers(fg.size)], size)
            start = [min(max(c - n // 2, 0), s - n) for c, n, s in zip(centre, shape, size)]
    if start is None:
        start = [int(rng.integers(0, s - n + 1)) for n, s in zip(shape, size)]
    return crop(sample, tuple(int(s) for s in start), shape)


def centre_patch(sample: dict[str, np.ndarray], shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """The deterministic centre ``shape`` patch (padded where the volume is smaller)."""
    sample = pad_to(sample, shape)
    start = tuple((s - n) // 2 for n, s in zip(shape, sample["mask"].shape))
    return crop(sample, start, shape)


# -- augmentation ----------------------------------------------------------------------------------------
class VolumeAugment:
    """The train-time 3D augmentation of the module docstring, checked at construction."""

    def __init__(self, cfg: dict | None):
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - _AUGMENT_KEYS)
        if unknown:
            raise ValueError(f"unknown volume augment key(s) {unknown}; known: {sorted(_AUGMENT_KEYS)}")
        flip = cfg.get("flip", 0.0)
        flips = list(flip) if isinstance(flip, (list, tuple)) else [flip] * 3
        if len(flips) != 3 or any(
            isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1 for p in flips
        ):
            raise ValueError(f"augment.flip must be a probability or [pD, pH, pW] in [0, 1], got {flip!r}")
        self.flip = [float(p) for p in flips]
        for key in ("scale", "shift", "gauss_noise"):
            value = cfg.get(key, 0.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"augment.{key} must be a number >= 0, got {value!r}")
        self.scale, self.shift = float(cfg.get("scale", 0.0)), float(cfg.get("shift", 0.0))
        self.noise = float(cfg.get("gauss_noise", 0.0))
        if self.scale >= 1:
            raise ValueError(
                f"augment.scale must be < 1 (factors in (1 - s, 1 + s) must stay positive), got {self.scale}"
            )

    def __call__(self, sample: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        out = dict(sample)
        for axis, p in enumerate(self.flip):
            if p and rng.random() < p:
                # spatial axis ``axis`` is the last three dims of every key (image has a channel axis first)
                out = {k: np.flip(v, axis=v.ndim - 3 + axis) for k, v in out.items()}
        image = np.array(out["image"], np.float32)  # a copy: flips are views of the cached arrays
        brain = out["brain"]
        channels = image.shape[0]
        if self.scale:
            factor = rng.uniform(1 - self.scale, 1 + self.scale, size=channels).astype(np.float32)
            image *= factor[:, None, None, None]  # (C, 1, 1, 1)
        if self.shift:
            offset = rng.uniform(-self.shift, self.shift, size=channels).astype(np.float32)
            image += offset[:, None, None, None]  # (C, 1, 1, 1)
        if self.noise:
            image += rng.normal(0.0, rng.uniform(0, self.noise), size=image.shape).astype(np.float32)
        image[:, ~brain] = 0.0  # the background stays exactly 0 (scale keeps it, shift/noise would not)
        out["image"] = image
        return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _torch_rng() -> np.random.Generator:
    """A numpy generator drawn from torch's RNG: reproducible under seed_everything, distinct per worker."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


class VolumeSampling:
    """Patch sampling + augmentation + conversion to tensors, shared by every volume dataset (a mixin:
    ``_setup`` in the constructor, ``_finish`` on each loaded sample)."""

    def _setup(self, split: str, patch, fg_prob, val_patch, augment, targets) -> None:
        name = type(self).__name__
        bad = [t for t in targets if t != "mask"]
        if bad:
            raise ValueError(f"{name} provides only the 'mask' target; the task asked for {list(targets)}")
        if isinstance(fg_prob, bool) or not isinstance(fg_prob, (int, float)) or not 0 <= fg_prob <= 1:
            raise ValueError(f"{name}: fg_prob must be a probability in [0, 1], got {fg_prob!r}")
        self.is_train = split == "train"
        self.patch = check_patch(patch, "patch")
        self.val_patch = check_patch(val_patch, "val_patch")
        self.fg_prob = float(fg_prob)
        train_aug = VolumeAugment(augment)  # checked for every split: a typo should not wait for training
        self.augment = train_aug if self.is_train and augment else None

    def _finish(self, sample: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        if self.is_train:
            rng = _torch_rng()
            if self.patch is not None:
                sample = random_patch(sample, self.patch, self.fg_prob, rng)
            if self.augment is not None:
                sample = self.augment(sample, rng)
        elif self.val_patch is not None:
            sample = centre_patch(sample, self.val_patch)
        out = {
            "image": torch.from_numpy(np.ascontiguousarray(sample["image"], np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(sample["mask"], np.int64)),
            "valid": torch.from_numpy(np.ascontiguousarray(sample["valid"], bool)),
        }
        return check_volume_sample(out)


__all__ = [
    "VolumeAugment",
    "VolumeSampling",
    "centre_patch",
    "check_patch",
    "crop",
    "pad_to",
    "random_patch",
    "zscore",
]
