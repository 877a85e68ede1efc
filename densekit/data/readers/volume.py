"""3D volume readers: the ``VolumeFiles`` base of the NIfTI readers (BraTS case folders:
``densekit.data.readers.brats``; nnU-Net-style folders: ``densekit.data.readers.nifti_folder``).

Every dataset yields the volume schema (``densekit.schema.check_volume_sample``; patch sampling and
augmentation: ``densekit.data.transforms.volume``):
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

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ...io.nifti import read_nifti
from ..transforms.volume import VolumeSampling, zscore
from .base import BadSampleError, load_or_skip, missing

VOLUME_CLASS_NAMES = ("background", "necrotic_core", "edema", "enhancing")  # BraTS 2023 label order
# raw label value -> train id, per convention (module docstring)
LABEL_CONVENTIONS: dict[str, dict[int, int]] = {
    "brats2023": {0: 0, 1: 1, 2: 2, 3: 3},
    "brats2021": {0: 0, 1: 1, 2: 2, 4: 3},
}
_LABEL_DESC = {
    "brats2023": "{0, 1, 2, 3} (0 background, 1 necrotic core, 2 edema, 3 enhancing)",
    "brats2021": "{0, 1, 2, 4} (0 background, 1 necrotic core, 2 edema, 4 enhancing)",
}

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


def select_split(
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
                f"{split_file}: {len(unknown)} case(s) of split {split!r} not found in the data: {unknown[:5]}"
            )
        return sorted(chosen)
    if split == "test":
        raise ValueError(f"{what}: the 'test' split needs a split_file (the fraction split makes train/val only)")
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


class VolumeFiles(VolumeSampling, Dataset):
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
        if (
            patches_per_case is not None
            and patches_per_case != "auto"
            and (isinstance(patches_per_case, bool) or not isinstance(patches_per_case, int) or patches_per_case < 1)
        ):
            raise ValueError(f"data.patches_per_case must be a positive int or 'auto', got {patches_per_case!r}")
        if labels is not None and labels not in LABEL_CONVENTIONS:
            raise ValueError(f"{name}: labels must be one of {sorted(LABEL_CONVENTIONS)} or null, got {labels!r}")
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
        chosen = select_split(sorted(by_name), split, sf, int(fold), val_fraction, int(seed), name)
        self.cases = [by_name[c] for c in chosen]
        if not self.cases:
            raise ValueError(
                f"{name}: split {split!r} is empty ({len(by_name)} cases under "
                f"{self.root.resolve()}, "
                f"val_fraction={val_fraction}, split_file={split_file})"
            )
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
                self.notes.append(f"train epoch: {n * per} whole-volume samples ({n} case(s) x patches_per_case={per})")
            return n * per
        per = math.ceil(NNUNET_EPOCH_PATCHES / n) if auto else int(per_case)
        how = (
            f"patches_per_case=auto: at least {NNUNET_EPOCH_PATCHES} patches, nnU-Net's 250 iterations of 2"
            if auto
            else f"patches_per_case={per}"
        )
        self.notes.append(
            f"train epoch: {n * per} random patches of {list(self.patch)} ({plural(n, 'case')} x {per}; "
            f"{how}; data.train_length sets it directly)"
        )
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
                raise BadSampleError(
                    f"case {case}: label map {path} holds non-integer values {bad}; expected {self.label_desc}"
                )
            raw = rounded
        raw = raw.astype(np.int64)
        inside = (raw >= 0) & (raw < 256)
        mapped = np.where(inside, self.lut[np.clip(raw, 0, 255)], -1)
        if (mapped < 0).any():
            values = np.unique(raw[mapped < 0]).tolist()
            raise BadSampleError(
                f"case {case}: label map {path} holds values {values[:10]} outside the "
                f"convention; expected {self.label_desc}"
            )
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
                raise BadSampleError(
                    f"case {case}: {path.name} has shape {array.shape} but "
                    f"{ref_path.name} has "
                    f"{ref_shape}; all modalities and the label map must match"
                )
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


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


__all__ = [
    "LABEL_CONVENTIONS",
    "NNUNET_EPOCH_PATCHES",
    "VOLUME_CLASS_NAMES",
    "VolumeFiles",
    "dhw_to_nifti",
    "nifti_to_dhw",
    "plural",
    "select_split",
]
