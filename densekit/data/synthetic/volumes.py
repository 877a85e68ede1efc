"""The embedded procedural volumes: ``generate_volume`` (a multi-channel 3D volume with nested lesion labels)
and ``SyntheticVolumes``, the dataset that serves them in the volume schema (patches and augmentation:
``densekit.data.transforms.volume``).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch.utils.data import Dataset

from ..readers.volume import VOLUME_CLASS_NAMES  # (background, necrotic_core, edema, enhancing)
from ..registry import DATASETS
from ..transforms.volume import VolumeSampling, check_patch, zscore


def generate_volume(seed, shape: tuple[int, int, int] = (64, 64, 64), channels: int = 4) -> dict[str, np.ndarray]:
    """A multi-channel 3D volume with nested lesion labels (BraTS-2023 label order).

    A noisy ellipsoidal "brain" holds a lesion made of nested, irregular shells: edema (2) outside,
    enhancing rim (3) inside it, necrotic core (1) at the centre. Each channel gives each region its
    own mean intensity, under a smooth bias field and noise. Returns image (C,D,H,W) float32 and
    mask (D,H,W) int64 and brain (D,H,W) bool.
    """
    rng = np.random.default_rng(seed)
    d, h, w = shape
    zz, yy, xx = np.meshgrid(np.linspace(-1, 1, d), np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    brain = (zz / 0.85) ** 2 + (yy / 0.9) ** 2 + (xx / 0.8) ** 2 <= 1.0
    centre = rng.uniform(-0.35, 0.35, size=3)
    dz, dy, dx = zz - centre[0], yy - centre[1], xx - centre[2]
    r = np.sqrt(dz**2 + dy**2 + dx**2) + 1e-6
    # Irregular boundary: radius modulated by low-order angular harmonics with random phases.
    ang = np.zeros_like(r)
    for _ in range(3):
        k = rng.normal(size=3)
        ang += rng.uniform(0.05, 0.12) * np.sin((k[0] * dz + k[1] * dy + k[2] * dx) / r * 3 + rng.uniform(0, 6.3))
    rr = r * (1.0 + ang)
    r_edema, r_rim, r_core = rng.uniform(0.3, 0.45), rng.uniform(0.16, 0.26), rng.uniform(0.06, 0.13)
    mask = np.zeros(shape, np.int64)
    mask[(rr <= r_edema) & brain] = 2
    mask[(rr <= r_rim) & brain] = 3
    mask[(rr <= r_core) & brain] = 1
    bias = 1.0 + 0.15 * np.sin(rng.uniform(1, 3) * xx + rng.uniform(0, 6.3)) * np.cos(rng.uniform(1, 3) * yy)
    image = np.zeros((channels,) + shape, np.float32)
    for c in range(channels):
        means = rng.uniform(0.2, 1.0, size=4)  # brain tissue, core, edema, enhancing
        vol = np.where(brain, means[0], 0.0)
        for label in (1, 2, 3):
            vol = np.where(mask == label, means[label], vol)
        vol = vol * bias + rng.normal(0, 0.05, shape) * brain
        image[c] = vol.astype(np.float32)
    return {"image": image, "mask": mask, "brain": brain}


@DATASETS.register("synthetic_volume", tasks=("volume",), dims=3)
class SyntheticVolumes(VolumeSampling, Dataset):
    """The embedded procedural volumes (``generate_volume``): a noisy ellipsoidal
    brain with a nested lesion, BraTS-2023 train ids (0 background, 1 necrotic, 2 edema, 3 enhancing).

    Sample ``index`` of ``split`` is always the same volume for the same ``seed`` (the generator is seeded
    with ``[seed, crc32(split), index]``); train, val and test draw from disjoint seed streams. Intensities
    are z-scored per channel over the brain, like the real readers. ``size`` is the whole volume (D, H, W).
    ``labels`` only states the convention (for the metrics' BraTS regions); the train ids are fixed.
    """

    class_names = VOLUME_CLASS_NAMES

    def __init__(
        self,
        split: str = "train",
        length: int = 100,
        size: tuple[int, int, int] = (64, 64, 64),
        seed: int = 0,
        channels: int = 4,
        patch: list[int] | None = None,
        fg_prob: float = 0.33,
        val_patch: list[int] | None = None,
        augment: dict | None = None,
        targets: tuple[str, ...] = ("mask",),
        labels: str | None = "brats2023",
    ):
        if split not in ("train", "val", "test"):
            raise ValueError(f"SyntheticVolumes: split must be 'train', 'val' or 'test', got {split!r}")
        if labels not in ("brats2023", None):  # accepted so data.labels can tell the metrics the convention
            raise ValueError(
                f"SyntheticVolumes: the generator writes BraTS-2023 train ids; labels must be "
                f"'brats2023' or null, got {labels!r}"
            )
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"SyntheticVolumes: length must be a positive int, got {length!r}")
        size = check_patch(list(size) if isinstance(size, tuple) else size, "size")
        if size is None or min(size) < 8:
            raise ValueError(f"SyntheticVolumes: size must be [D, H, W] with every side >= 8, got {size!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"SyntheticVolumes: channels must be a positive int, got {channels!r}")
        self._setup(split, patch, fg_prob, val_patch, augment, targets)
        self.split, self.length, self.size = split, length, size
        self.seed, self.channels = int(seed), channels
        self._split_code = zlib.crc32(split.encode())  # stable across processes, unlike hash()
        self.notes: list[str] = []

    @property
    def in_channels(self) -> int:
        """Channels of every image (C of (C, D, H, W)): what the model's input layer must take."""
        return self.channels

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Volume ``index`` as numpy (image z-scored (C,D,H,W), mask, valid, brain), before sampling."""
        vol = generate_volume([self.seed, self._split_code, index], self.size, self.channels)
        brain = vol["brain"]
        return {
            "image": zscore(vol["image"], brain),
            "mask": vol["mask"],
            "valid": np.ones(self.size, bool),
            "brain": brain,
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        return self._finish(self.load(index))


__all__ = ["SyntheticVolumes", "generate_volume"]
