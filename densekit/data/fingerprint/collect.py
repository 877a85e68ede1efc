"""The fingerprint's measuring tools: raw file readers (the values as stored, before any conversion) and the
accumulator of statistics over the samples read (``Collector``)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from ...io.nifti import read_nifti
from ...schema import IGNORE_INDEX

PERCENTILES = (0.5, 50.0, 99.5)
KEEP_VALUES = 1 << 15  # intensity values kept per sample and channel (strided) for the percentiles
MAX_LISTED_BAD = 50  # bad samples listed in the fingerprint (all are counted)

MODE_DTYPE = {
    "1": "bool",
    "I;16": "uint16",
    "I;16L": "uint16",
    "I;16B": "uint16",
    "I;16N": "uint16",
    "I": "int32",
    "F": "float32",
}
DTYPE_MAX = {"uint8": 255, "uint16": 65535, "bool": 1, "int16": 32767}
MASK_MODES = ("L", "P", "I", "I;16", "I;16L", "I;16B", "1")


class BadFile(Exception):
    """One sample's files are unreadable or inconsistent (recorded, never raised out of ``fingerprint``)."""

    def __init__(self, file, reason: str):
        super().__init__(reason)
        self.file, self.reason = str(file), reason


def sample_indices(n: int, k: int | None) -> list[int]:
    """Up to ``k`` distinct indices spread evenly over ``range(n)`` (first and last included); all if
    ``k`` is None or >= n."""
    if n <= 0:
        return []
    if k is None or k >= n:
        return list(range(n))
    if k <= 1:
        return [0]
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, int(k))})


def keep(values: np.ndarray, cap: int = KEEP_VALUES) -> np.ndarray:
    """A strided subsample of at most ``cap`` values (float64), enough for stable percentiles."""
    flat = np.asarray(values).reshape(-1)
    step = max(1, math.ceil(flat.size / cap))
    return flat[::step].astype(np.float64)


def value_counts(array: np.ndarray) -> Counter:
    values, counts = np.unique(np.asarray(array), return_counts=True)
    return Counter({int(v): int(c) for v, c in zip(values.tolist(), counts.tolist())})


def num(x, digits: int = 6):
    """A float rounded for JSON (ints stay ints)."""
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    return x if not math.isfinite(x) else float(f"{x:.{digits}g}")


# -- raw file readers ------------------------------------------------------------------------------------
def read_image_raw(path: Path) -> tuple[np.ndarray, str, str]:
    """(array (H, W, C) as stored, PIL mode, on-disk dtype name) of an image file. Palette and exotic
    colour modes are converted to RGB (their stored indices are not intensities)."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here
            mode, fmt = img.mode, img.format
            if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                array = np.asarray(img.convert("RGB"))
            else:
                array = np.asarray(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadFile(path, f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None
    dtype = MODE_DTYPE.get(mode, "uint8")
    if mode == "I" and fmt == "PNG":
        dtype = "uint16"  # PNG stores at most 16 bits; Pillow widens some 16-bit PNGs to mode I
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.ndim == 2:
        array = array[..., None]  # (H, W) -> (H, W, 1)
    return array, mode, dtype


def read_mask_raw(path: Path) -> np.ndarray:
    """Raw label values of a single-channel mask file, (H, W); a colour rendering is a bad sample."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in MASK_MODES:
                raise BadFile(
                    path,
                    f"{path}: mask has mode {img.mode}, expected a single-channel label PNG "
                    f"(a colour rendering instead of class indices?)",
                )
            array = np.asarray(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadFile(path, f"{path}: unreadable mask ({type(exc).__name__}: {exc})") from None
    return array.astype(np.uint8) if array.dtype == bool else array


def read_nifti_raw(path: Path) -> tuple[np.ndarray, np.ndarray, str, tuple[float, ...]]:
    """(array (i, j, k), affine, on-disk dtype name, voxel spacing (i, j, k) mm) of a NIfTI file."""
    if not path.is_file():
        raise BadFile(path, f"{path}: missing file")
    try:
        array, affine = read_nifti(path)
        header = nib.load(str(path)).header  # the header only (no data is decoded again)
    except (ValueError, OSError) as exc:
        raise BadFile(path, str(exc)) from None
    while array.ndim > 3 and array.shape[-1] == 1:  # (X, Y, Z, 1) as some converters write it
        array = array[..., 0]
    if array.ndim != 3:
        raise BadFile(path, f"{path}: not a 3D volume: shape {array.shape}")
    zooms = tuple(float(z) for z in header.get_zooms()[:3])
    return array, affine, str(header.get_data_dtype()), zooms


# -- the accumulator -------------------------------------------------------------------------------------
class Collector:
    """Statistics accumulated over the samples read."""

    def __init__(self, ndim: int | None):
        self.ndim = ndim
        self.sizes: list[tuple[int, ...]] = []
        self.spacings: list[tuple[float, ...]] = []
        self.orientations: Counter = Counter()
        self.channels: Counter = Counter()
        self.modes: Counter = Counter()
        self.dtypes: Counter = Counter()
        self.mask_dtypes: Counter = Counter()
        self.values: dict[int, list[np.ndarray]] = {}
        self.nonzero: dict[int, list[np.ndarray]] = {}
        self.foreground: dict[int, list[np.ndarray]] = {}
        self.nonzero_voxels = [0, 0]  # [nonzero, all]
        self.raw_labels: Counter = Counter()
        self.ids: Counter = Counter()  # train id (or -1 unknown) -> pixels
        self.presence: Counter = Counter()  # train id -> samples holding it
        self.unknown_files: list[str] = []
        self.label_samples = 0
        self.targets: dict[str, list[np.ndarray]] = {}
        self.target_valid = [0, 0]  # [valid, all] target pixels (depth / flow)
        self.bad: list[dict] = []
        self.bad_count = 0
        self.read = 0

    def add_image(self, image: np.ndarray, mode: str | None, dtype: str) -> None:
        """``image`` channels first: (C, H, W) or (C, D, H, W)."""
        self.sizes.append(tuple(int(s) for s in image.shape[1:]))
        self.channels[int(image.shape[0])] += 1
        if mode:
            self.modes[mode] += 1
        self.dtypes[dtype] += 1
        for c in range(image.shape[0]):
            self.values.setdefault(c, []).append(keep(image[c]))

    def add_volume_masks(self, image: np.ndarray, train_ids: np.ndarray | None) -> None:
        """Nonzero and foreground intensity subsets of a volume ``image`` (C, D, H, W)."""
        nonzero = (image != 0).any(axis=0)
        self.nonzero_voxels[0] += int(nonzero.sum())
        self.nonzero_voxels[1] += int(nonzero.size)
        fg = None if train_ids is None else (train_ids > 0) & (train_ids != IGNORE_INDEX)
        for c in range(image.shape[0]):
            if nonzero.any():
                self.nonzero.setdefault(c, []).append(keep(image[c][nonzero]))
            if fg is not None and fg.any():
                self.foreground.setdefault(c, []).append(keep(image[c][fg]))

    def add_labels(self, raw: np.ndarray, lut: np.ndarray | None, num_classes: int | None, file) -> np.ndarray:
        """Count raw values and train ids of one label map; returns the train ids (-1 = unknown value)."""
        raw = np.asarray(raw)
        if raw.dtype.kind == "f":
            raw = np.rint(raw)
        raw = raw.astype(np.int64)
        self.raw_labels.update(value_counts(raw))
        if lut is not None:
            lut = np.asarray(lut)
            inside = (raw >= 0) & (raw < lut.size)  # the reader's table (256 entries, more for 16-bit masks)
            ids = np.where(inside, lut[np.clip(raw, 0, lut.size - 1)], -1).astype(np.int64)
        else:  # train ids already, or the folder convention: 0..K-1 classes, 255 ignore
            below = (raw < num_classes) if num_classes else (raw < 256)
            known = (raw == IGNORE_INDEX) | ((raw >= 0) & below)
            ids = np.where(known, raw, -1)
        counts = value_counts(ids)
        self.ids.update(counts)
        for v in counts:
            if v >= 0 and v != IGNORE_INDEX:
                self.presence[v] += 1
        if -1 in counts:
            self.unknown_files.append(str(file))
        self.label_samples += 1
        return ids

    def add_target(self, name: str, values: np.ndarray, valid: np.ndarray) -> None:
        self.target_valid[0] += int(valid.sum())
        self.target_valid[1] += int(valid.size)
        if valid.any():
            self.targets.setdefault(name, []).append(keep(values[valid]))

    def add_bad(self, index: int, file, reason: str) -> None:
        self.bad_count += 1
        if len(self.bad) < MAX_LISTED_BAD:
            self.bad.append({"index": int(index), "file": str(file), "reason": reason})


def percentiles_of(chunks: list[np.ndarray]) -> list[float]:
    values = np.concatenate(chunks)
    return [num(v, 5) for v in np.percentile(values, PERCENTILES)]


def axis_stats(rows: list[tuple]) -> dict | None:
    if not rows:
        return None
    a = np.asarray(rows, np.float64)
    return {
        "min": [num(v) for v in a.min(0)],
        "median": [num(v) for v in np.median(a, 0)],
        "max": [num(v) for v in a.max(0)],
        "distinct": len(set(rows)),
    }


__all__ = [
    "BadFile",
    "Collector",
    "DTYPE_MAX",
    "KEEP_VALUES",
    "MAX_LISTED_BAD",
    "PERCENTILES",
    "axis_stats",
    "keep",
    "num",
    "value_counts",
    "percentiles_of",
    "read_image_raw",
    "read_mask_raw",
    "read_nifti_raw",
    "sample_indices",
]
