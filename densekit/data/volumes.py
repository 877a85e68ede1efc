"""3D volume datasets: the embedded procedural volumes, BraTS case folders and nnU-Net-style NIfTI folders.

Every dataset yields the volume schema (``densekit.data.schema.check_volume_sample``):
  image  float32 (C, D, H, W)  one channel per modality, z-scored per modality over the brain voxels
                               (the voxels where any modality is nonzero); background voxels are 0
  mask   int64   (D, H, W)     contiguous train ids; 255 = ignore (only where a patch was padded)
  valid  bool    (D, H, W)     False where a patch was padded beyond the volume

Axis order: NIfTI arrays are stored (i, j, k) = (x, y, z); samples are (D, H, W) = (k, j, i), so D runs
over axial slices for the usual BraTS orientation. ``dhw_to_nifti`` undoes it before writing a prediction
with the case's affine (``densekit.io.write_nifti``).

Label conventions (``labels:``) and the train ids they map to (``VOLUME_CLASS_NAMES`` order):
  brats2023  raw {0, 1, 2, 3}: 0 background, 1 necrotic core (NETC), 2 edema (SNFH), 3 enhancing (ET)
             -> identity (0->0, 1->1, 2->2, 3->3)
  brats2021  raw {0, 1, 2, 4} (BraTS 2018-2021): 0 background, 1 necrotic/non-enhancing core, 2 edema,
             4 enhancing -> 0->0, 1->1, 2->2, 4->3 (label 3 is unused in this convention and an error)
  null       (NiftiFolder) raw values are already train ids 0..K-1, K = len(class names)
A label value outside the convention is an error naming the case and the values.

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

Splits of the file readers: ``split_file`` (JSON; a relative path is resolved against ``root``) holding
``{"train": [case, ...], "val": [...], "test": [...]}`` or nnU-Net's ``splits_final.json`` (a list of such
dicts, one per fold; ``fold`` picks one). Without it, the cases sorted by name are permuted by ``seed`` and
the first ``round(val_fraction * n)`` (at least 1, at most n - 1) form val, the rest train; the same
(cases, seed, val_fraction) always gives the same split. A single case (and ``val_fraction > 0``) is both
the train and the val split, said in the dataset's ``notes``. ``test`` needs a split file.

Epochs of the file readers are counted in patches: cases x ``patches_per_case`` (``auto``: nnU-Net's 500
patches per epoch spread over the cases, each case at least once), or ``length`` (``VolumeFiles``).
Facts a run needs from the data are attributes: ``in_channels``, ``class_names`` / ``num_classes``,
``labels`` (the resolved convention) and ``notes`` (what was inferred, in words).
"""

from __future__ import annotations

import functools
import json
import math
import re
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from densekit.io.nifti import NIFTI_SUFFIXES as NIFTI_ENDINGS
from densekit.io.nifti import read_nifti

from .schema import IGNORE_INDEX, check_volume_sample
from .seg_base import BadSampleError, load_or_skip, missing
from .synthetic import VOLUME_CLASS_NAMES, generate_volume  # (background, necrotic_core, edema, enhancing)

# raw label value -> train id, per convention (module docstring)
LABEL_CONVENTIONS: dict[str, dict[int, int]] = {
    "brats2023": {0: 0, 1: 1, 2: 2, 3: 3},
    "brats2021": {0: 0, 1: 1, 2: 2, 4: 3},
}
_LABEL_DESC = {
    "brats2023": "{0, 1, 2, 3} (0 background, 1 necrotic core, 2 edema, 3 enhancing)",
    "brats2021": "{0, 1, 2, 4} (0 background, 1 necrotic core, 2 edema, 4 enhancing)",
}

# BraTS file naming: <root>/<case>/<pattern> with {case} and {modality} filled in
BRATS_NAMINGS = {
    # 2018-2021: BraTS2021_00000/BraTS2021_00000_t1.nii.gz ... _seg.nii.gz
    "brats2021": {"pattern": "{case}_{modality}.nii.gz", "modalities": ("t1", "t1ce", "t2", "flair"),
                  "seg": "seg", "labels": "brats2021"},
    # 2023 (GLI): BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz ... -seg.nii.gz
    "brats2023": {"pattern": "{case}-{modality}.nii.gz", "modalities": ("t1n", "t1c", "t2w", "t2f"),
                  "seg": "seg", "labels": "brats2023"},
}

_AUGMENT_KEYS = {"flip", "scale", "shift", "gauss_noise"}

# patches_per_case=auto: an epoch holds at least nnU-Net's epoch of random patches (250 iterations x batch
# 2), spread over the cases, and every case at least once; a one-case folder then trains 250 steps an epoch
NNUNET_EPOCH_PATCHES = 500


# -- axes ------------------------------------------------------------------------------------------------
def nifti_to_dhw(array: np.ndarray) -> np.ndarray:
    """(..., i, j, k) file order -> (..., D, H, W) = (..., k, j, i) sample order (contiguous copy)."""
    return np.ascontiguousarray(np.swapaxes(array, -1, -3))


def dhw_to_nifti(array: np.ndarray) -> np.ndarray:
    """(..., D, H, W) sample order -> (..., i, j, k) file order; the inverse of ``nifti_to_dhw``."""
    return np.ascontiguousarray(np.swapaxes(array, -1, -3))


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
    if (not isinstance(patch, (list, tuple)) or len(patch) != 3
            or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in patch)):
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
        if len(flips) != 3 or any(isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1
                                  for p in flips):
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


class _VolumeSampling:
    """Patch sampling + augmentation + conversion shared by every volume dataset."""

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


# -- the embedded procedural volumes -------------------------------------------------------------------------
class SyntheticVolumes(_VolumeSampling, Dataset):
    """The embedded procedural volumes (``densekit.data.synthetic.generate_volume``): a noisy ellipsoidal
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
            raise ValueError(f"SyntheticVolumes: the generator writes BraTS-2023 train ids; labels must be "
                             f"'brats2023' or null, got {labels!r}")
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
        return {"image": zscore(vol["image"], brain), "mask": vol["mask"], "valid": np.ones(self.size, bool),
                "brain": brain}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        return self._finish(self.load(index))


# -- file readers ----------------------------------------------------------------------------------------
def _select_split(
    names: list[str],
    split: str,
    split_file: Path | None,
    fold: int,
    val_fraction: float,
    seed: int,
    what: str,
) -> list[str]:
    """The case names of ``split`` (module docstring: split file, or a seeded fraction split)."""
    if split_file is not None:
        if not split_file.is_file():
            raise missing(split_file, f"{what} split_file")
        try:
            data = json.loads(split_file.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{split_file}: unreadable split file ({type(exc).__name__}: {exc})") from None
        if isinstance(data, list):  # nnU-Net splits_final.json: one {"train", "val"} dict per fold
            if not 0 <= fold < len(data):
                raise ValueError(f"{split_file}: fold {fold} requested but the file holds {len(data)} folds")
            data = data[fold]
        if not isinstance(data, dict) or split not in data or not isinstance(data[split], list):
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(
                f"{split_file}: expected a JSON object with a list of case names under {split!r}, got {keys}"
            )
        chosen = [str(c) for c in data[split]]
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ValueError(
                f"{split_file}: {len(unknown)} case(s) of split {split!r} not found in the data: "
                f"{unknown[:5]}"
            )
        return sorted(chosen)
    if split == "test":
        raise ValueError(
            f"{what}: the 'test' split needs a split_file (the fraction split makes train/val only)"
        )
    bad_fraction = isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float))
    if bad_fraction or not 0 <= val_fraction < 1:
        raise ValueError(f"{what}: val_fraction must be in [0, 1), got {val_fraction!r}")
    names = sorted(names)
    n = len(names)
    if n == 1 and val_fraction > 0:
        return names  # one case: train on it and validate on it too (VolumeFiles says so in its notes)
    n_val = 0 if val_fraction == 0 or n < 2 else min(max(round(val_fraction * n), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val = {names[i] for i in order[:n_val]}
    return [c for c in names if (c in val) == (split == "val")]


class VolumeFiles(_VolumeSampling, Dataset):
    """Base of the NIfTI readers: lists cases at construction (directory listings only) and reads, checks
    and normalises a case when it is loaded. Subclasses implement ``_cases() -> [(case, [image paths in
    channel order], label path)]`` over every case under ``root``.

    Checks per case (each a ``BadSampleError`` naming the case and file; ``skip_bad=True`` replaces the
    case by the next good one, counted and warned about): every modality file present and readable, all
    modalities and the label map 3D with the same shape and the same affine (within ``affine_atol`` mm),
    label values inside the convention.

    Epoch length (``len``): ``length`` (``data.train_length`` / ``val_length``) if set. Otherwise the train
    split with ``patch`` set counts its epoch in random patches, cases x ``patches_per_case``; ``auto``
    is ceil(500 / cases) per case (nnU-Net's epoch, 250 iterations of 2 patches, and each case at least
    once), so one case gives 500 patches, 3 cases 3 x 167, 1000 cases 1000. Whole-volume training
    (``patch: null``) and val/test: each case once (times an int ``patches_per_case`` for train).
    Sample ``i`` is case ``i mod cases``. With a single case and no split file, val is that same case.
    ``notes`` lists, in words, what was inferred (class and channel sources, the epoch, a val split that
    repeats the train case); ``densekit.train`` logs them once and lists them in the run's summary.
    """

    default_root = "datasets"
    labels: str | None

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        labels: str | None = "brats2023",
        patch: list[int] | None = None,
        fg_prob: float = 0.33,
        val_patch: list[int] | None = None,
        augment: dict | None = None,
        split_file: str | Path | None = None,
        fold: int = 0,
        val_fraction: float = 0.2,
        seed: int = 0,
        skip_bad: bool = False,
        length: int | None = None,
        targets: tuple[str, ...] = ("mask",),
        affine_atol: float = 1e-3,
        patches_per_case: int | str | None = "auto",
    ):
        name = type(self).__name__
        if split not in ("train", "val", "test"):
            raise ValueError(f"{name}: split must be 'train', 'val' or 'test', got {split!r}")
        if patches_per_case is not None and patches_per_case != "auto" and (
                isinstance(patches_per_case, bool) or not isinstance(patches_per_case, int)
                or patches_per_case < 1):
            raise ValueError(f"data.patches_per_case must be a positive int or 'auto', got {patches_per_case!r}")
        if labels is not None and labels not in LABEL_CONVENTIONS:
            raise ValueError(
                f"{name}: labels must be one of {sorted(LABEL_CONVENTIONS)} or null, got {labels!r}"
            )
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise ValueError(f"{name}: length must be a positive int or null, got {length!r}")
        self._setup(split, patch, fg_prob, val_patch, augment, targets)
        self.split, self.labels = split, labels
        self.skip_bad, self.affine_atol = bool(skip_bad), float(affine_atol)
        self.root = Path(root if root is not None else self.default_root).expanduser()
        if not self.root.is_dir():
            raise missing(self.root, f"{name} root")
        if labels is not None:
            table, self.label_desc = LABEL_CONVENTIONS[labels], f"{labels} {_LABEL_DESC[labels]}"
        else:
            table = {k: k for k in range(len(self.class_names))}
            self.label_desc = f"train ids 0..{len(self.class_names) - 1} ({', '.join(self.class_names)})"
        self.lut = np.full(256, -1, np.int16)
        for raw, train in table.items():
            self.lut[raw] = train
        cases = self._cases()
        if not cases:
            raise ValueError(f"{name}: no cases found under {self.root.resolve()}; see datasets/README.md")
        by_name = {c[0]: c for c in cases}
        sf = None if split_file is None else Path(split_file).expanduser()
        if sf is not None and not sf.is_absolute():
            sf = self.root / sf
        chosen = _select_split(sorted(by_name), split, sf, int(fold), val_fraction, int(seed), name)
        self.cases = [by_name[c] for c in chosen]
        if not self.cases:
            raise ValueError(f"{name}: split {split!r} is empty ({len(by_name)} cases under "
                             f"{self.root.resolve()}, "
                             f"val_fraction={val_fraction}, split_file={split_file})")
        self.notes: list[str] = list(getattr(self, "notes", []))  # a subclass may have noted things first
        if sf is None and len(by_name) == 1 and split in ("train", "val"):
            self.notes.append(
                f"{name}: only 1 case under {self.root.resolve()}: the val split validates on the training "
                f"case (its scores measure fit, not generalisation); add cases or a split_file for a "
                f"held-out estimate"
            )
        self.length = self._epoch_length(length, patches_per_case)
        self.skipped: dict[int, str] = {}
        self._cached: tuple[int, dict] | None = None  # the last case loaded (train split), see load()

    def _epoch_length(self, length: int | None, per_case: int | str | None) -> int:
        """Samples per epoch (class docstring); notes how a train epoch was counted."""
        n = len(self.cases)
        if length is not None:
            return int(length)
        if self.split != "train":
            return n
        auto = per_case in ("auto", None)
        if self.patch is None:
            per = 1 if auto else int(per_case)
            if per > 1:
                self.notes.append(f"train epoch: {n * per} whole-volume samples ({n} case(s) x "
                                  f"patches_per_case={per})")
            return n * per
        per = math.ceil(NNUNET_EPOCH_PATCHES / n) if auto else int(per_case)
        how = (f"patches_per_case=auto: at least {NNUNET_EPOCH_PATCHES} patches, nnU-Net's 250 iterations "
               f"of 2" if auto else f"patches_per_case={per}")
        self.notes.append(f"train epoch: {n * per} random patches of {list(self.patch)} ({_plural(n, 'case')} x {per}; "
                          f"{how}; data.train_length sets it directly)")
        return n * per

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        """Channels of every image (C of (C, D, H, W)): what the model's input layer must take."""
        return len(self.cases[0][1])

    def _cases(self) -> list[tuple[str, list[Path], Path]]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.length

    # -- loading ---------------------------------------------------------------------------------------
    def _read(self, case: str, path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
        if not path.is_file():
            raise BadSampleError(f"case {case}: missing {what} file {path}")
        try:
            array, affine = read_nifti(path)
        except (ValueError, OSError) as exc:
            raise BadSampleError(f"case {case}: {exc}") from None
        while array.ndim > 3 and array.shape[-1] == 1:  # (X, Y, Z, 1) as some converters write it
            array = array[..., 0]
        if array.ndim != 3:
            raise BadSampleError(f"case {case}: {path} is not a 3D volume: shape {array.shape}")
        return array, affine

    def encode(self, raw: np.ndarray, case: str, path: Path) -> np.ndarray:
        """Raw label map -> train ids; values outside the convention are an error naming case and values."""
        if not np.issubdtype(raw.dtype, np.integer):
            rounded = np.rint(raw)
            if not np.array_equal(rounded, raw):
                bad = np.unique(raw[rounded != raw])[:5].tolist()
                raise BadSampleError(f"case {case}: label map {path} holds non-integer values {bad}; "
                                     f"expected {self.label_desc}")
            raw = rounded
        raw = raw.astype(np.int64)
        inside = (raw >= 0) & (raw < 256)
        mapped = np.where(inside, self.lut[np.clip(raw, 0, 255)], -1)
        if (mapped < 0).any():
            values = np.unique(raw[mapped < 0]).tolist()
            raise BadSampleError(f"case {case}: label map {path} holds values {values[:10]} outside the "
                                 f"convention; expected {self.label_desc}")
        return mapped.astype(np.int64)

    def load(self, i: int) -> dict[str, np.ndarray]:
        """Case ``i`` as numpy in (D, H, W) order: image z-scored (C,D,H,W), mask train ids, valid, brain.

        The train split keeps the last case it loaded: patch training draws many patches per case (a
        one-case folder draws every patch from the same volume), and re-reading and re-normalising the
        files each time would dominate a step. Sampling never writes into the returned arrays (crops,
        pads and the augmentation copy), so the kept case stays as read. One case per process at most."""
        if self._cached is not None and self._cached[0] == i:
            return self._cached[1]
        sample = self._load(i)
        if self.is_train:
            self._cached = (i, sample)
        return sample

    def _load(self, i: int) -> dict[str, np.ndarray]:
        case, image_paths, label_path = self.cases[i]
        arrays, ref_path, ref_shape, ref_affine = [], None, None, None
        for path, what in [(p, "modality") for p in image_paths] + [(label_path, "label")]:
            array, affine = self._read(case, path, what)
            if ref_shape is None:
                ref_path, ref_shape, ref_affine = path, array.shape, affine
            elif array.shape != ref_shape:
                raise BadSampleError(f"case {case}: {path.name} has shape {array.shape} but "
                                     f"{ref_path.name} has "
                                     f"{ref_shape}; all modalities and the label map must match")
            elif not np.allclose(affine, ref_affine, rtol=0, atol=self.affine_atol):
                raise BadSampleError(
                    f"case {case}: {path.name} has a different affine than {ref_path.name} (max difference "
                    f"{np.abs(affine - ref_affine).max():.4g} > affine_atol={self.affine_atol}); "
                    f"modalities are "
                    f"not co-registered:\n{affine.round(4)}\nvs\n{ref_affine.round(4)}"
                )
            arrays.append(array)
        mask = nifti_to_dhw(self.encode(arrays.pop(), case, label_path))
        image = nifti_to_dhw(np.stack([a.astype(np.float32) for a in arrays]))  # (C, D, H, W)
        if not np.isfinite(image).all():
            raise BadSampleError(f"case {case}: a modality holds NaN or infinite values")
        brain = (image != 0).any(axis=0)  # BraTS is skull-stripped: brain = nonzero in any modality
        valid = np.ones(mask.shape, bool)
        return {"image": zscore(image, brain), "mask": mask, "valid": valid, "brain": brain}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = load_or_skip(self, index, len(self.cases), "case")
        return self._finish(sample)


class BraTSVolumes(VolumeFiles):
    """BraTS case folders: ``<root>/<case>/<case><sep><modality>.nii.gz`` plus ``<case><sep>seg.nii.gz``.

    ``naming`` picks the release's file names, modality order and label convention (each overridable):
      brats2021 (2018-2021)  ``<case>_{t1,t1ce,t2,flair,seg}.nii.gz``, labels {0,1,2,4} (4 enhancing -> 3)
      brats2023              ``<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``, labels {0,1,2,3}
    ``modalities`` sets the channel order (and subset) of the image; ``pattern`` the file name with
    ``{case}`` and ``{modality}`` placeholders; ``seg`` the label map's modality name. Every non-hidden
    sub-folder of ``root`` is a case (the case name is the folder name).
    """

    class_names = VOLUME_CLASS_NAMES
    default_root = "datasets/brats"

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        naming: str = "brats2021",
        modalities: list[str] | None = None,
        pattern: str | None = None,
        seg: str | None = None,
        labels: str | None = None,
        **kwargs,
    ):
        if naming not in BRATS_NAMINGS:
            raise ValueError(f"BraTSVolumes: naming must be one of {sorted(BRATS_NAMINGS)}, got {naming!r}")
        preset = BRATS_NAMINGS[naming]
        self.modalities = tuple(modalities if modalities is not None else preset["modalities"])
        self.pattern = pattern if pattern is not None else preset["pattern"]
        self.seg = seg if seg is not None else preset["seg"]
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(
                f"BraTSVolumes: modalities must be a non-empty list of distinct names, got {modalities!r}"
            )
        if "{case}" not in self.pattern or "{modality}" not in self.pattern:
            raise ValueError(
                f"BraTSVolumes: pattern needs {{case}} and {{modality}} placeholders, got {self.pattern!r}"
            )
        labels = labels if labels is not None else preset["labels"]
        if labels is None:
            raise ValueError("BraTSVolumes: labels must be 'brats2021' or 'brats2023'")
        super().__init__(split, root, labels=labels, **kwargs)

    def _cases(self) -> list[tuple[str, list[Path], Path]]:
        out = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            case = folder.name
            images = [folder / self.pattern.format(case=case, modality=m) for m in self.modalities]
            out.append((case, images, folder / self.pattern.format(case=case, modality=self.seg)))
        return out


_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii(\.gz)?$", re.IGNORECASE)
_LABEL_FILE = re.compile(r"^(?P<case>.+?)\.nii(\.gz)?$", re.IGNORECASE)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def _norm_name(name) -> str:
    return re.sub(r"[^a-z]", "", str(name).lower())


def brats_convention(by_id: dict[int, str]) -> str | None:
    """The BraTS label convention a dataset.json ``labels`` table ({id: name}) spells, else None.

    BraTS's table is 0 background, 1 necrotic (non-enhancing) core, 2 edema, enhancing 3 (2023:
    ``brats2023``) or 4 (2018-2021: ``brats2021``). Names are matched loosely (NCR / NETC / necrotic /
    non-enhancing; ED / SNFH / edema; ET / enhancing). The Medical Segmentation Decathlon's Task01 order
    (1 edema, 2 non-enhancing, 3 enhancing) is a different convention and is not matched."""
    conv = {(0, 1, 2, 3): "brats2023", (0, 1, 2, 4): "brats2021"}.get(tuple(sorted(by_id)))
    if conv is None:
        return None
    bg, core, edema, enh = (_norm_name(by_id[k]) for k in sorted(by_id))
    is_bg = "background" in bg or bg in ("bg", "bkg", "none")
    is_core = any(k in core for k in ("necro", "ncr", "netc", "nonenhanc")) or core == "net"
    is_edema = any(k in edema for k in ("edema", "oedema", "snfh")) or edema == "ed"
    is_enh = ("enhanc" in enh and "nonenhanc" not in enh) or enh == "et"
    return conv if is_bg and is_core and is_edema and is_enh else None


@functools.lru_cache(maxsize=4096)
def _label_values(path: str, size: int, mtime_ns: int) -> tuple[int, ...]:
    """The distinct values of a label file (size and mtime key the cache: a rewritten file is re-read)."""
    array, _ = read_nifti(path)
    if not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            bad = np.unique(array[rounded != array])[:5].tolist()
            raise ValueError(f"{path}: label map holds non-integer values {bad}; expected integer class ids")
        array = rounded
    return tuple(int(v) for v in np.unique(array))


class NiftiFolder(VolumeFiles):
    """A folder in the nnU-Net raw layout: ``images/<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ... (one
    file per channel, 4-digit channel index) and ``labels/<case>.nii.gz`` (``imagesTr``/``labelsTr``, the
    nnU-Net names, are used when ``images``/``labels`` are absent). ``.nii`` works as well as ``.nii.gz``.

    Everything defaults to what the data says (each inference is one of ``notes``):

    Channels (``in_channels``): ``channels`` if set (fewer than the files hold: the first ones), else the
    length of ``channel_names`` (nnU-Net v2) or ``modality`` (v1) in ``root/dataset.json`` (a channel file
    beyond it is an error naming both), else 1 + the highest channel index found. A case lacking a
    channel file is a bad case naming the file.

    Classes (``class_names``) and the label convention (``labels``):
      ``auto``     ``classes`` if given, else ``dataset.json`` ``labels`` ({name: id} in v2, {"id": name} in
                   v1; ids contiguous from 0); a table that spells BraTS's (``brats_convention``) also sets
                   ``labels`` to that convention, so the BraTS region metrics apply and raw 2021 value 4 is
                   train id 3. Without a table: ``expect_num_classes`` generic names, else the label files
                   are read once and the classes are 0..max value found (names ``class_<id>``).
      ``null``     as ``auto`` without the BraTS recognition: the files hold train ids 0..K-1.
      ``brats2021`` / ``brats2023``  that convention and the four BraTS classes.
    ``expect_num_classes`` (``data.num_classes``) is checked against the classes found: a disagreement
    is one line naming both. Image intensities are z-scored per channel over the voxels nonzero in any
    channel, whatever the file's dtype and range (16-bit, float, scaled integers), as in ``VolumeFiles``.
    """

    default_root = "datasets/nifti_folder"

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        labels: str | None = "auto",
        classes: list[str] | None = None,
        channels: int | None = None,
        expect_num_classes: int | None = None,
        **kwargs,
    ):
        root_path = Path(root if root is not None else self.default_root).expanduser()
        if not root_path.is_dir():
            raise missing(root_path, "NiftiFolder root")
        if labels != "auto" and labels is not None and labels not in LABEL_CONVENTIONS:
            raise ValueError(f"data.labels must be auto, null or one of {sorted(LABEL_CONVENTIONS)}, "
                             f"got {labels!r}")
        if expect_num_classes is not None and (isinstance(expect_num_classes, bool)
                                               or not isinstance(expect_num_classes, int)
                                               or expect_num_classes < 2):
            raise ValueError(f"data.num_classes must be an int >= 2 (background + one) or null, "
                             f"got {expect_num_classes!r}")
        self.notes = []
        self.root = root_path
        json_path = root_path / "dataset.json"
        meta = self._dataset_json(root_path)
        self._listing = self._list_files(root_path)
        found = len(self._listing[2])
        if not found:
            raise ValueError(f"NiftiFolder: no cases found under {self._listing[0].resolve()}; "
                             f"see datasets/README.md")
        listed = meta.get("numTraining")
        if isinstance(listed, int) and not isinstance(listed, bool) and listed != found:
            self.notes.append(f"NiftiFolder: {json_path} numTraining is {listed} but "
                              f"{_plural(found, 'case')} were found in {self._listing[0]}; using those found")
        self.channels = self._channel_count(meta, json_path, channels)
        names, labels = self._classes(meta, json_path, labels, classes, expect_num_classes)
        self.class_names = tuple(names)
        super().__init__(split, root_path, labels=labels, **kwargs)

    # -- facts from dataset.json or the files ------------------------------------------------------------
    def _channel_count(self, meta: dict, json_path: Path, channels) -> int:
        image_dir, _, found, _ = self._listing
        top = max((max(ch), case) for case, ch in found.items()) if found else (0, None)
        have = top[0] + 1  # channels the files hold (the highest index + 1)
        listed = meta.get("channel_names", meta.get("modality"))
        from_json = len(listed) if isinstance(listed, dict) and listed else None
        key = "channel_names" if "channel_names" in meta else "modality"
        if channels is not None:
            if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
                raise ValueError(f"data.channels must be a positive int or null, got {channels!r}")
            if have > channels:
                self.notes.append(f"NiftiFolder: data.channels={channels}: using channels 0..{channels - 1} "
                                  f"of the {have} the image files hold")
            return channels
        if from_json is not None:
            if have > from_json:
                extra = image_dir / f"{top[1]}_{top[0]:04d}.nii.gz"
                raise ValueError(f"{json_path}: {key} lists {_plural(from_json, 'channel')} but {extra} "
                                 f"exists (channel index {top[0]}); list every channel in {key} or set "
                                 f"data.channels")
            self.notes.append(f"NiftiFolder: {_plural(from_json, 'channel')} from {json_path} {key} "
                              f"{list(listed.values())}")
            return from_json
        where = f"no dataset.json in {self.root}" if not json_path.is_file() else f"{json_path} has no {key}"
        self.notes.append(f"NiftiFolder: {where}: {_plural(have, 'channel')} from the image files "
                          f"(highest _{top[0]:04d} index + 1)")
        return have

    def _classes(self, meta: dict, json_path: Path, labels, classes, expect: int | None):
        """(class names, label convention or None) per the class docstring."""
        table = meta.get("labels")
        json_names, json_conv = None, None
        if isinstance(table, dict) and table:
            by_id = self._table(table, json_path)
            json_conv = brats_convention(by_id) if labels == "auto" else None
            ids = sorted(by_id)
            if json_conv is None and labels not in LABEL_CONVENTIONS and ids != list(range(len(ids))):
                raise ValueError(f"{json_path}: label ids must be contiguous from 0, got {ids}")
            json_names = [by_id[k] for k in ids]
        elif table is not None and not isinstance(table, dict):
            raise ValueError(f"{json_path}: 'labels' must be a table of class names and ids, got {table!r}")
        table_desc = f"{json_path} 'labels'"
        if labels in LABEL_CONVENTIONS:
            names = [str(c) for c in classes] if classes is not None else list(VOLUME_CLASS_NAMES)
            if len(names) != 4:
                raise ValueError(f"NiftiFolder: labels={labels!r} has 4 classes but {len(names)} class names "
                                 f"were given")
            if json_names is not None and len(json_names) != 4:
                raise ValueError(f"data.labels={labels} (the 4 BraTS classes) but {table_desc} lists "
                                 f"{len(json_names)} classes {json_names}; set data.labels=auto to use the table")
            conv, source = labels, f"data.labels={labels}"
        elif classes is not None:
            names, conv, source = [str(c) for c in classes], json_conv, "data.class_names"
            if json_names is not None and len(names) != len(json_names):
                raise ValueError(f"data.class_names has {len(names)} names {names} but {table_desc} lists "
                                 f"{len(json_names)} classes {json_names}; set data.class_names=null to use "
                                 f"the table")
        elif json_names is not None:
            names, conv, source = json_names, json_conv, table_desc
            brats = f" (BraTS's table: {conv} convention, region metrics WT/TC/ET)" if conv else ""
            self.notes.append(f"NiftiFolder: {_plural(len(names), 'class')} from {table_desc}: {names}{brats}")
        elif expect is not None:
            names = ["background"] + [f"class_{k}" for k in range(1, expect)]
            conv, source = None, "data.num_classes"
            self.notes.append(f"NiftiFolder: no dataset.json 'labels' table: {expect} classes from "
                              f"data.num_classes, named {names} (set data.class_names to name them)")
        else:
            names, conv, source = self._classes_from_files(json_path), None, "the label files"
        if expect is not None and expect != len(names):
            raise ValueError(f"data.num_classes={expect} but the data has {len(names)} classes {names} (from "
                             f"{source}); set data.num_classes={len(names)} or null (null takes it from the data)")
        if len(names) < 2:
            raise ValueError(f"NiftiFolder: at least 2 classes (background + one) expected, got {names}")
        return names, conv

    def _classes_from_files(self, json_path: Path) -> list[str]:
        """Classes 0..max label value found in the label files (read once per process; cached)."""
        label_files = sorted(self._listing[3].values())
        values: set[int] = set()
        for path in label_files:
            stat = path.stat()
            found = _label_values(str(path), stat.st_size, stat.st_mtime_ns)
            if IGNORE_INDEX in found:
                raise ValueError(f"{path}: label value {IGNORE_INDEX} (the ignore index, as in a 0/255 mask) and "
                                 f"no {json_path.name} 'labels' table, so the classes are read from the values "
                                 f"{list(found)}: store the foreground as 1..K-1")
            bad = [v for v in found if v < 0 or v > IGNORE_INDEX]
            if bad:
                raise ValueError(f"{path}: label values {bad[:5]} outside 0..{IGNORE_INDEX - 1}; expected "
                                 f"integer class ids 0..K-1")
            values.update(found)
        k = max(values) + 1
        if k < 2:
            raise ValueError(f"NiftiFolder: the {_plural(len(label_files), 'label file')} in {self._listing[1]} "
                             f"hold only background (0) and there is no dataset.json 'labels' table: "
                             f"nothing to segment")
        names = ["background"] + [f"class_{c}" for c in range(1, k)]
        where = f"no dataset.json in {self.root}" if not json_path.is_file() else f"{json_path} has no 'labels'"
        absent = sorted(set(range(k)) - values)
        self.notes.append(
            f"NiftiFolder: {where}: {_plural(k, 'class')} from the label values "
            f"{{{', '.join(map(str, sorted(values)))}}} found in {_plural(len(label_files), 'label file')} "
            f"(named {names}; a dataset.json 'labels' table or data.class_names names them)"
            + (f"; class ids {absent} never appear" if absent else "")
        )
        return names

    @staticmethod
    def _dataset_json(root: Path) -> dict:
        path = root / "dataset.json"
        if not path.is_file():
            return {}
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable dataset.json ({type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
        ending = meta.get("file_ending")
        if ending is not None and str(ending).lower() not in NIFTI_ENDINGS:
            raise ValueError(f"{path}: file_ending {ending!r}: this reader reads NIfTI ({', '.join(NIFTI_ENDINGS)}) "
                             f"only; convert the images (e.g. SimpleITK) or use nnU-Net's own reader")
        return meta

    @staticmethod
    def _table(table: dict, json_path: Path) -> dict[int, str]:
        """dataset.json ``labels`` -> {id: name}: v2 {name: id}, v1 {"id": name}."""
        try:
            if all(isinstance(v, int) and not isinstance(v, bool) for v in table.values()):  # v2
                by_id = {int(v): str(k) for k, v in table.items()}
            else:  # v1: {"0": "background", "1": "tumor"}
                by_id = {int(k): str(v) for k, v in table.items()}
        except (TypeError, ValueError):
            raise ValueError(f"{json_path}: 'labels' must map names to int ids (v2) or ids to names (v1) "
                             f"(region-based label lists are not supported), got {table}") from None
        if len(by_id) != len(table):
            raise ValueError(f"{json_path}: 'labels' gives one id to several classes: {table}")
        return by_id

    @staticmethod
    def _list_files(root: Path) -> tuple[Path, Path, dict[str, dict[int, Path]], dict[str, Path]]:
        """(image dir, label dir, {case: {channel: path}}, {case: label path}); unpaired cases are an error."""
        image_dir, label_dir = root / "images", root / "labels"
        if not image_dir.is_dir() and (root / "imagesTr").is_dir():
            image_dir, label_dir = root / "imagesTr", root / "labelsTr"
        if not image_dir.is_dir():
            raise missing(image_dir, "NiftiFolder images folder")
        if not label_dir.is_dir():
            raise missing(label_dir, "NiftiFolder labels folder")
        channels: dict[str, dict[int, Path]] = {}
        for p in sorted(image_dir.iterdir()):
            if p.name.startswith(".") or not p.is_file():
                continue
            m = _CHANNEL_FILE.match(p.name)
            if m is None:
                raise ValueError(
                    f"{p}: expected image files named <case>_<4-digit channel>.nii.gz "
                    "(e.g. case1_0000.nii.gz)"
                )
            channels.setdefault(m["case"], {})[int(m["channel"])] = p
        labels = {}
        for p in sorted(label_dir.iterdir()):
            if p.name.startswith(".") or not p.is_file():
                continue
            m = _LABEL_FILE.match(p.name)
            if m is None:
                raise ValueError(f"{p}: expected label files named <case>.nii.gz")
            labels[m["case"]] = p
        lonely = sorted(set(channels) ^ set(labels))
        if lonely:
            lines = [f"case {c}: image files without {label_dir / (c + '.nii.gz')}" if c in channels
                     else f"case {c}: label file {labels[c]} without images in {image_dir}"
                     for c in lonely[:5]]
            raise ValueError(f"{len(lonely)} unpaired case(s): " + "; ".join(lines))
        return image_dir, label_dir, channels, labels

    def _cases(self) -> list[tuple[str, list[Path], Path]]:
        image_dir, _, channels, labels = self._listing
        n, suffix = self.channels, ".nii.gz"
        return [(case, [ch.get(c, image_dir / f"{case}_{c:04d}{suffix}") for c in range(n)], labels[case])
                for case, ch in sorted(channels.items())]
