"""Dataset fingerprint: what a dataset split holds, measured on an evenly spread sample, and the settings
it suggests (nnU-Net's fingerprint -> plan idea, for every densekit dataset, 2D and 3D).

``fingerprint(dataset, max_samples=64)`` reads up to ``max_samples`` items spread evenly over the split and
returns a JSON-serialisable dict: sample count, spatial sizes (min/median/max per axis: H x W, or D x H x W
for volumes, with the voxel spacing and orientation read from the NIfTI headers), channels, the on-disk
dtypes, intensity percentiles per channel (0.5/50/99.5; volumes also over the nonzero and the foreground
voxels, with the foreground mean/std), label statistics (raw mask values, class pixel frequencies, how
many samples hold each class, the ignore fraction), depth/flow value statistics, the bad samples found
(unreadable files, size mismatches; counted and listed, never raised) and warnings.

Where the dataset exposes its files (the segmentation, depth, flow and NIfTI readers), the raw files are
read, so dtypes and values are what is stored (a 16-bit PNG reports uint16, a 0/255 mask reports 0 and
255, before any conversion); otherwise (the embedded synthetic data, other datasets) the loaded samples'
tensors are measured. ``raw_listing`` lists a folder layout without its reader, for when the reader
refuses the data at construction: the fingerprint is then still taken, and says why the reader refused.

``suggest(fp, data_cfg, task)`` turns a fingerprint into config overrides, each with the reason:
crop/patch from the median size (a multiple of 32 in 2D, 64 for flow, 16 in 3D, capped by a memory budget
per step), batch size, ``num_workers`` for this machine, class weights when the classes are imbalanced
(median frequency), a label map for 0/255 masks, input channels, the intensity rule for 16-bit images.
``format_fingerprint(fp, suggestions)`` renders both as text. ``quick_check(dataset)`` is the cheap
variant for the start of a training run (a few samples; its warnings go to the log).

Pure Python/numpy/torch/PIL (nibabel through ``densekit.io`` for volumes): no Hydra, no models.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config_schema import select
from .schema import IGNORE_INDEX

__all__ = [
    "PERCENTILES", "RawFolder", "fingerprint", "format_fingerprint", "format_value", "quick_check",
    "raw_listing", "sample_indices", "source_kind", "suggest",
]

PERCENTILES = (0.5, 50.0, 99.5)
KEEP_VALUES = 1 << 15  # intensity values kept per sample and channel (strided) for the percentiles
# inspect_data's default per split; volumes are decoded whole (a 4 x 240 x 240 x 155 BraTS case: ~2 s here)
DEFAULT_MAX_SAMPLES = {2: 64, 3: 8}
MAX_LISTED_BAD = 50  # bad samples listed in the fingerprint (all are counted)
# Memory budget of one training step, in pixels (2D: batch x H x W) or voxels (3D: batch x D x H x W).
# CPU: about the scale the embedded runs train at (batch 8 at 128^2; 2 x 48^3 patches: ~1.8 s a step on
# 2 cores);
# GPU: the public recipes' scale (8 x 512^2 for 2D, nnU-Net's 2 x 128^3 for 3D).
CPU_BUDGET = {2: 8 * 256 * 256, 3: 2 * 64**3}
GPU_BUDGET = {2: 8 * 512 * 512, 3: 2 * 128**3}
MAX_BATCH_2D = 16
BATCH_3D = 2  # nnU-Net's batch: patches, not cases, fill an epoch
IMBALANCE_RATIO = 10.0  # largest / smallest class pixel share above which class weights are suggested
# The data key and value that select percentile intensity scaling for 16-bit / float images.
# (densekit.data.intensity: "auto" = 8-bit / 255, anything wider by the train split's 0.5-99.5 percentiles)
INTENSITY_KEY = "data.intensity.mode"
INTENSITY_VALUE = "auto"

_MODE_DTYPE = {"1": "bool", "I;16": "uint16", "I;16L": "uint16", "I;16B": "uint16", "I;16N": "uint16",
               "I": "int32", "F": "float32"}
_DTYPE_MAX = {"uint8": 255, "uint16": 65535, "bool": 1, "int16": 32767}
_MASK_MODES = ("L", "P", "I", "I;16", "I;16L", "I;16B", "1")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii(\.gz)?$", re.IGNORECASE)
_LABEL_FILE = re.compile(r"^(?P<case>.+?)\.nii(\.gz)?$", re.IGNORECASE)


class _Bad(Exception):
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


def _keep(values: np.ndarray, cap: int = KEEP_VALUES) -> np.ndarray:
    """A strided subsample of at most ``cap`` values (float64), enough for stable percentiles."""
    flat = np.asarray(values).reshape(-1)
    step = max(1, math.ceil(flat.size / cap))
    return flat[::step].astype(np.float64)


def _counts(array: np.ndarray) -> Counter:
    values, counts = np.unique(np.asarray(array), return_counts=True)
    return Counter({int(v): int(c) for v, c in zip(values.tolist(), counts.tolist())})


def _num(x, digits: int = 6):
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
        raise _Bad(path, f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None
    dtype = _MODE_DTYPE.get(mode, "uint8")
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
            if img.mode not in _MASK_MODES:
                raise _Bad(path, f"{path}: mask has mode {img.mode}, expected a single-channel label PNG "
                                 f"(a colour rendering instead of class indices?)")
            array = np.asarray(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _Bad(path, f"{path}: unreadable mask ({type(exc).__name__}: {exc})") from None
    return array.astype(np.uint8) if array.dtype == bool else array


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, str, tuple[float, ...]]:
    """(array (i, j, k), affine, on-disk dtype name, voxel spacing (i, j, k) mm) of a NIfTI file."""
    import nibabel as nib

    from ..io.nifti import read_nifti

    if not path.is_file():
        raise _Bad(path, f"{path}: missing file")
    try:
        array, affine = read_nifti(path)
        header = nib.load(str(path)).header  # the header only (no data is decoded again)
    except (ValueError, OSError) as exc:
        raise _Bad(path, str(exc)) from None
    while array.ndim > 3 and array.shape[-1] == 1:  # (X, Y, Z, 1) as some converters write it
        array = array[..., 0]
    if array.ndim != 3:
        raise _Bad(path, f"{path}: not a 3D volume: shape {array.shape}")
    zooms = tuple(float(z) for z in header.get_zooms()[:3])
    return array, affine, str(header.get_data_dtype()), zooms


# -- the accumulator -------------------------------------------------------------------------------------
class _Collector:
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
            self.values.setdefault(c, []).append(_keep(image[c]))

    def add_volume_masks(self, image: np.ndarray, train_ids: np.ndarray | None) -> None:
        """Nonzero and foreground intensity subsets of a volume ``image`` (C, D, H, W)."""
        nonzero = (image != 0).any(axis=0)
        self.nonzero_voxels[0] += int(nonzero.sum())
        self.nonzero_voxels[1] += int(nonzero.size)
        fg = None if train_ids is None else (train_ids > 0) & (train_ids != IGNORE_INDEX)
        for c in range(image.shape[0]):
            if nonzero.any():
                self.nonzero.setdefault(c, []).append(_keep(image[c][nonzero]))
            if fg is not None and fg.any():
                self.foreground.setdefault(c, []).append(_keep(image[c][fg]))

    def add_labels(self, raw: np.ndarray, lut: np.ndarray | None, num_classes: int | None,
                   file) -> np.ndarray:
        """Count raw values and train ids of one label map; returns the train ids (-1 = unknown value)."""
        raw = np.asarray(raw)
        if raw.dtype.kind == "f":
            raw = np.rint(raw)
        raw = raw.astype(np.int64)
        self.raw_labels.update(_counts(raw))
        if lut is not None:
            lut = np.asarray(lut)
            inside = (raw >= 0) & (raw < lut.size)  # the reader's table (256 entries, more for 16-bit masks)
            ids = np.where(inside, lut[np.clip(raw, 0, lut.size - 1)], -1).astype(np.int64)
        else:  # train ids already, or the folder convention: 0..K-1 classes, 255 ignore
            below = (raw < num_classes) if num_classes else (raw < 256)
            known = (raw == IGNORE_INDEX) | ((raw >= 0) & below)
            ids = np.where(known, raw, -1)
        counts = _counts(ids)
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
            self.targets.setdefault(name, []).append(_keep(values[valid]))

    def add_bad(self, index: int, file, reason: str) -> None:
        self.bad_count += 1
        if len(self.bad) < MAX_LISTED_BAD:
            self.bad.append({"index": int(index), "file": str(file), "reason": reason})


def _percentiles(chunks: list[np.ndarray]) -> list[float]:
    values = np.concatenate(chunks)
    return [_num(v, 5) for v in np.percentile(values, PERCENTILES)]


def _axis_stats(rows: list[tuple]) -> dict | None:
    if not rows:
        return None
    a = np.asarray(rows, np.float64)
    return {"min": [_num(v) for v in a.min(0)], "median": [_num(v) for v in np.median(a, 0)],
            "max": [_num(v) for v in a.max(0)], "distinct": len(set(rows))}


# -- the sources -----------------------------------------------------------------------------------------
class RawFolder:
    """The files of a folder layout listed without its reader (``raw_listing``): what ``fingerprint``
    reads when the reader refused the data at construction. ``reader_error`` says why it refused."""

    def __init__(self, kind: str, split: str, root: Path, files=None, cases=None, class_names=None,
                 lut=None, depth_scale=None, unpaired=(), reader_error: str | None = None, channels=None):
        self.fingerprint_kind, self.split, self.root = kind, split, Path(root)
        self.files, self.cases = files, cases
        self.class_names = tuple(class_names) if class_names else None
        self.lut, self.depth_scale, self.channels = lut, depth_scale, channels
        self.unpaired, self.reader_error = list(unpaired), reader_error

    def __len__(self) -> int:
        return len(self.files if self.files is not None else self.cases)


def _identity_lut(num_classes: int | None, label_map: dict | None) -> np.ndarray | None:
    if num_classes is None and not label_map:
        return None
    lut = np.full(256, -1, np.int16)
    for v in range(min(num_classes or 0, IGNORE_INDEX)):
        lut[v] = v
    lut[IGNORE_INDEX] = IGNORE_INDEX
    for raw, train in (label_map or {}).items():
        if 0 <= int(raw) < 256:
            lut[int(raw)] = int(train)
    return lut


def _pair_stems(a: dict[str, Path], b: dict[str, Path], what_a: str, what_b: str):
    pairs = [(a[k], b[k]) for k in sorted(set(a) & set(b))]
    lonely = [(a[k], f"{a[k]}: {what_a} without a {what_b}") for k in sorted(set(a) - set(b))]
    lonely += [(b[k], f"{b[k]}: {what_b} without an {what_a}") for k in sorted(set(b) - set(a))]
    return pairs, lonely


def _stems(directory: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if not directory.is_dir():
        raise FileNotFoundError(f"folder not found: {directory.resolve()}")
    return {p.stem: p for p in sorted(directory.iterdir())
            if p.is_file() and p.name.lower().endswith(suffixes)}


def _class_list(root: Path, classes) -> list[str] | None:
    if isinstance(classes, (list, tuple)):
        return [str(c) for c in classes]
    path = root / "classes.txt" if classes is None else Path(classes).expanduser()
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return None


def raw_listing(name: str, split: str, data: dict, reader_error: str | None = None) -> RawFolder | None:
    """List the files of split ``split`` of a folder layout (``name`` = folder, depth_folder or
    nifti_folder; ``data`` = the dataset kwargs of the config) without its reader; None for other
    datasets. Unpaired files become bad samples instead of an error."""
    root = Path(data.get("root") or f"datasets/{name}").expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root not found: {root.resolve()}")
    label_map = data.get("label_map") if isinstance(data.get("label_map"), dict) else None
    if name == "folder":
        names = _class_list(root, data.get("classes"))
        images = _stems(root / "images" / split, _IMAGE_SUFFIXES)
        masks = _stems(root / "masks" / split, _MASK_SUFFIXES)
        pairs, lonely = _pair_stems(images, masks, "image", "mask")
        return RawFolder("seg", split, root, files=pairs, class_names=names,
                         lut=_identity_lut(len(names) if names else None, label_map), unpaired=lonely,
                         reader_error=reader_error)
    if name == "depth_folder":
        images = _stems(root / "images" / split, _IMAGE_SUFFIXES)
        depths = _stems(root / "depth" / split, (".png", ".npy"))
        pairs, lonely = _pair_stems(images, depths, "image", "depth map")
        return RawFolder("depth", split, root, files=pairs, depth_scale=data.get("depth_scale"),
                         unpaired=lonely, reader_error=reader_error)
    if name == "nifti_folder":
        from .volumes import LABEL_CONVENTIONS, VOLUME_CLASS_NAMES, _select_split

        meta = {}
        if (root / "dataset.json").is_file():
            try:
                meta = json.loads((root / "dataset.json").read_text())
            except (OSError, ValueError):
                meta = {}
        image_dir, label_dir = root / "images", root / "labels"
        if not image_dir.is_dir() and (root / "imagesTr").is_dir():
            image_dir, label_dir = root / "imagesTr", root / "labelsTr"
        channels: dict[str, dict[int, Path]] = {}
        for p in sorted(image_dir.iterdir()) if image_dir.is_dir() else []:
            m = _CHANNEL_FILE.match(p.name)
            if m:
                channels.setdefault(m["case"], {})[int(m["channel"])] = p
        labels = {}
        for p in sorted(label_dir.iterdir()) if label_dir.is_dir() else []:
            m = _LABEL_FILE.match(p.name)
            if m:
                labels[m["case"]] = p
        listed = meta.get("channel_names", meta.get("modality")) if isinstance(meta, dict) else None
        n = data.get("channels") or (len(listed) if isinstance(listed, dict) and listed else None)
        n = n or (1 + max((max(ch) for ch in channels.values()), default=0))
        cases = sorted(set(channels) & set(labels))
        split_file = None if data.get("split_file") is None else root / data["split_file"]
        chosen = _select_split(cases, split, split_file, int(data.get("fold", 0)),
                               data.get("val_fraction", 0.2), int(data.get("seed", 0)),
                               "NiftiFolder") if cases else []
        lonely = [(image_dir / c, f"case {c}: images without a label file in {label_dir}")
                  for c in sorted(set(channels) - set(labels))]
        lonely += [(labels[c], f"case {c}: label file without images in {image_dir}")
                   for c in sorted(set(labels) - set(channels))]
        conv = data.get("labels")
        names = data.get("classes")
        if conv in LABEL_CONVENTIONS:
            lut = _identity_lut(None, LABEL_CONVENTIONS[conv])
            names = names or list(VOLUME_CLASS_NAMES)
        else:
            table = meta.get("labels") if isinstance(meta, dict) else None
            if not names and isinstance(table, dict):
                try:
                    if all(isinstance(v, int) for v in table.values()):  # v2: {name: id}
                        by_id = {int(v): str(k) for k, v in table.items()}
                    else:  # v1: {"id": name}
                        by_id = {int(k): str(v) for k, v in table.items()}
                    names = [by_id[k] for k in sorted(by_id)]
                except (TypeError, ValueError):
                    names = None
            lut = _identity_lut(len(names) if names else None, None)
        suffix = ".nii.gz"
        rows = [(c, [channels[c].get(i, image_dir / f"{c}_{i:04d}{suffix}") for i in range(n)], labels[c])
                for c in chosen]
        return RawFolder("volume", split, root, cases=rows, class_names=names, lut=lut, unpaired=lonely,
                         reader_error=reader_error, channels=n)
    return None


def source_kind(dataset) -> str:
    """How ``fingerprint`` reads ``dataset``: seg / volume / depth / flow files, or samples."""
    from .depth_datasets import DepthDataset
    from .flow_datasets import FlowDataset
    from .seg_base import SegDataset
    from .volumes import VolumeFiles

    kind = getattr(dataset, "fingerprint_kind", None)
    if kind:
        return kind
    if isinstance(dataset, SegDataset):
        return "seg"
    if isinstance(dataset, VolumeFiles):
        return "volume"
    if isinstance(dataset, DepthDataset):
        return "depth"
    if isinstance(dataset, FlowDataset):
        return "flow"
    return "samples"


def _read_seg(ds, i: int, col: _Collector, num_classes) -> None:
    image_path, mask_path = ds.files[i]
    image, mode, dtype = read_image_raw(Path(image_path))
    col.add_image(np.moveaxis(image, -1, 0), mode, dtype)  # (H, W, C) -> (C, H, W)
    reader = getattr(ds, "read_mask", None)
    if reader is not None and not isinstance(ds, RawFolder):
        try:
            mask = np.asarray(reader(Path(mask_path)))
        except ValueError as exc:  # the reader's BadSampleError names the file
            raise _Bad(mask_path, str(exc)) from None
    else:
        mask = read_mask_raw(Path(mask_path))
    col.mask_dtypes[str(mask.dtype)] += 1
    if mask.shape != image.shape[:2]:
        raise _Bad(mask_path, f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                              f"{image_path} is {image.shape[1]}x{image.shape[0]}")
    col.add_labels(mask, getattr(ds, "lut", None), num_classes, mask_path)


def _read_volume(ds, i: int, col: _Collector, num_classes) -> None:
    from .volumes import nifti_to_dhw

    case, image_paths, label_path = ds.cases[i]
    arrays, ref = [], None
    for path in list(image_paths) + [label_path]:
        array, affine, dtype, zooms = _read_nifti(Path(path))
        if ref is None:
            ref = (Path(path), array.shape, affine, zooms)
        elif array.shape != ref[1]:
            raise _Bad(path, f"case {case}: {Path(path).name} has shape {array.shape} but {ref[0].name} has "
                             f"{ref[1]}")
        elif not np.allclose(affine, ref[2], rtol=0, atol=getattr(ds, "affine_atol", 1e-3)):
            raise _Bad(path, f"case {case}: {Path(path).name} has a different affine than {ref[0].name}")
        arrays.append((array, dtype))
    import nibabel as nib

    label, label_dtype = arrays.pop()
    image = nifti_to_dhw(np.stack([a.astype(np.float32) for a, _ in arrays]))  # (C, i, j, k) -> (C, D, H, W)
    col.add_image(image, None, Counter(d for _, d in arrays).most_common(1)[0][0])
    col.spacings.append(tuple(reversed(ref[3])))  # (i, j, k) mm -> (D, H, W) = (k, j, i)
    col.orientations["".join(nib.aff2axcodes(ref[2]))] += 1
    col.mask_dtypes[label_dtype] += 1
    if not np.isfinite(image).all():
        raise _Bad(image_paths[0], f"case {case}: a channel holds NaN or infinite values")
    ids = col.add_labels(nifti_to_dhw(label), getattr(ds, "lut", None), num_classes, label_path)
    col.add_volume_masks(image, ids)


def _read_depth(ds, i: int, col: _Collector, num_classes) -> None:
    item = ds.files[i]
    if isinstance(item, tuple) and len(item) == 2 and all(isinstance(p, (str, Path)) for p in item):
        image_path, depth_path = Path(item[0]), Path(item[1])
        image, mode, dtype = read_image_raw(image_path)
        col.add_image(np.moveaxis(image, -1, 0), mode, dtype)  # (H, W, C) -> (C, H, W)
        try:
            if depth_path.suffix.lower() == ".npy":
                raw = np.load(depth_path, allow_pickle=False)
            else:
                with Image.open(depth_path) as img:
                    img.load()
                    raw = np.asarray(img)
        except (OSError, ValueError, SyntaxError) as exc:
            raise _Bad(depth_path,
                       f"{depth_path}: unreadable depth map ({type(exc).__name__}: {exc})") from None
        col.mask_dtypes[str(raw.dtype)] += 1
        scale = getattr(ds, "depth_scale", None)
        depth = raw.astype(np.float64) / (scale if scale and depth_path.suffix.lower() == ".png" else 1.0)
        shape, where = image.shape[:2], depth_path
    else:  # a reader without per-sample files (NYUv2 .mat): its own read
        rgb, depth, image_name, where = ds.read(i)
        col.add_image(np.moveaxis(np.asarray(rgb), -1, 0), None, "uint8")
        col.mask_dtypes[str(np.asarray(depth).dtype)] += 1
        shape = rgb.shape[:2]
    if depth.ndim != 2 or depth.shape != shape:
        raise _Bad(where, f"{where}: depth is {depth.shape} but its image is {shape}")
    col.add_target("depth", depth, np.isfinite(depth) & (depth > 0))


def _read_flow(ds, i: int, col: _Collector, num_classes) -> None:
    from ..io.flow import read_flow

    f = ds.files[i]
    image, mode, dtype = read_image_raw(Path(f.image1))
    col.add_image(np.moveaxis(image, -1, 0), mode, dtype)  # (H, W, C) -> (C, H, W)
    image2, _, _ = read_image_raw(Path(f.image2))
    if image2.shape[:2] != image.shape[:2]:
        raise _Bad(f.image2, f"{f.image2}: frame 2 is {image2.shape[1]}x{image2.shape[0]} (WxH) but frame 1 "
                             f"is {image.shape[1]}x{image.shape[0]}")
    try:
        flow, valid = read_flow(f.flow)
    except (ValueError, OSError) as exc:
        raise _Bad(f.flow, str(exc)) from None
    col.mask_dtypes[Path(f.flow).suffix.lower()] += 1
    if flow.shape[:2] != image.shape[:2]:
        raise _Bad(f.flow, f"{f.flow}: flow is {flow.shape[1]}x{flow.shape[0]} (WxH) but its frames are "
                           f"{image.shape[1]}x{image.shape[0]}")
    max_flow = getattr(ds, "max_flow", None)
    if max_flow is not None:
        valid = valid & (np.abs(flow) < max_flow).all(axis=-1)
    col.add_target("flow_magnitude", np.linalg.norm(flow, axis=-1), valid)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _read_sample(ds, i: int, col: _Collector, num_classes) -> None:
    """A loaded sample's arrays (the embedded data, or any dataset without files)."""
    from .volumes import _VolumeSampling

    # volumes: the whole volume before patch sampling; 2D: the sample as a task sees it
    item = ds.load(i) if isinstance(ds, _VolumeSampling) and hasattr(ds, "load") else ds[i]
    image = _numpy(item["image"])
    col.add_image(image, None, str(image.dtype))
    ids = None
    if "mask" in item:
        mask = _numpy(item["mask"])
        col.mask_dtypes[str(mask.dtype)] += 1
        ids = col.add_labels(mask, None, num_classes, f"sample {i}")
    if image.ndim == 4:
        col.add_volume_masks(image, ids)
    valid = _numpy(item["valid"]).astype(bool) if "valid" in item else None
    if "depth" in item:
        depth = _numpy(item["depth"])[0]
        measured = valid if valid is not None else np.ones(depth.shape, bool)
        col.add_target("depth", depth, measured & (depth > 0))
    if "flow" in item:
        flow = _numpy(item["flow"])  # (2, H, W)
        col.add_target("flow_magnitude", np.linalg.norm(flow, axis=0),
                       valid if valid is not None else np.ones(flow.shape[1:], bool))


_READERS = {"seg": _read_seg, "volume": _read_volume, "depth": _read_depth, "flow": _read_flow,
            "samples": _read_sample}


# -- fingerprint -----------------------------------------------------------------------------------------
def _unwrap(dataset):
    """The reader inside a wrapper that repeats it (the datamodule's ``Repeated``), which hides its files;
    not through a ``Subset``, whose files are only some of the reader's."""
    while (source_kind(dataset) == "samples" and not hasattr(dataset, "indices")
           and isinstance(getattr(dataset, "dataset", None), torch.utils.data.Dataset)):
        dataset = dataset.dataset
    return dataset


def fingerprint(dataset, max_samples: int | None = 64) -> dict:
    """The fingerprint of one dataset split (module docstring), from up to ``max_samples`` items spread
    evenly over it (None = all). Never raises for bad samples: they are counted and listed."""
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int)
                                    or max_samples < 1):
        raise ValueError(f"max_samples must be a positive int or null, got {max_samples!r}")
    start = time.perf_counter()
    outer_length = len(dataset) if hasattr(dataset, "__len__") else None
    dataset = _unwrap(dataset)
    kind = source_kind(dataset)
    if kind == "volume":
        n = len(dataset.cases)
    elif kind in ("seg", "depth", "flow"):
        n = len(dataset.files)
    else:
        n = len(dataset)
    names = getattr(dataset, "class_names", None)
    names = list(names) if names else None
    num_classes = len(names) if names else None
    col = _Collector(None)
    for file, reason in getattr(dataset, "unpaired", []):
        col.add_bad(-1, file, reason)
    reader = _READERS[kind]
    caught_messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in sample_indices(n, max_samples):
            try:
                reader(dataset, i, col, num_classes)
            except _Bad as exc:
                col.add_bad(i, exc.file, exc.reason)
            except Exception as exc:  # never fatal: a sample the reader cannot take is a finding
                col.add_bad(i, f"sample {i}", f"{type(exc).__name__}: {exc}")
            col.read += 1
    for w in caught:
        msg = str(w.message)
        if msg not in caught_messages:
            caught_messages.append(msg)
    fp = _result(dataset, kind, n, col, names, time.perf_counter() - start)
    if outer_length is not None:
        fp["length"] = int(outer_length)  # samples per epoch as the wrapper serves them
    fp["warnings"] = _warnings(fp) + [f"while reading: {m}" for m in caught_messages[:5]]
    return fp


def _result(dataset, kind: str, n: int, col: _Collector, names, seconds: float) -> dict:
    ndim = len(col.sizes[0]) if col.sizes else (3 if kind == "volume" else 2)
    source = "samples" if kind == "samples" else "files"
    if kind == "samples":
        kind = "volume" if ndim == 3 else ("seg" if col.label_samples else "image")
        if col.targets.get("depth"):
            kind = "depth"
        elif col.targets.get("flow_magnitude"):
            kind = "flow"
    fp: dict = {
        "dataset": f"{kind} folder (raw files)" if isinstance(dataset, RawFolder) else type(dataset).__name__,
        "split": str(getattr(dataset, "split", "")),
        "root": str(getattr(dataset, "root", "")) or None,
        "kind": kind, "ndim": ndim, "source": source,
        "samples": int(n), "length": int(len(dataset)), "read": col.read, "seconds": _num(seconds, 3),
        "axes": "DHW" if ndim == 3 else "HW",
        "size": _axis_stats(col.sizes),
        "channels": {str(k): v for k, v in sorted(col.channels.items())},
        "modes": dict(col.modes), "dtypes": dict(col.dtypes),
        "target_dtypes": dict(col.mask_dtypes),
        "reader_error": getattr(dataset, "reader_error", None),
    }
    if ndim == 3:
        fp["spacing"] = _axis_stats(col.spacings)
        fp["orientation"] = dict(col.orientations)
        said = getattr(dataset, "channels", None)  # the reader's count (dataset.json, or data.channels)
        found = int(max(col.channels)) if col.channels else None
        fp["in_channels"] = said if isinstance(said, int) else found
    intensity: dict = {"percentiles": list(PERCENTILES),
                       "channels": [_percentiles(col.values[c]) for c in sorted(col.values)]}
    # the stored range: the dtype's maximum when every sample has the same integer dtype
    intensity["dtype_max"] = _DTYPE_MAX.get(next(iter(col.dtypes))) if len(col.dtypes) == 1 else None
    if ndim == 3 and col.values:
        intensity["nonzero_fraction"] = _num(col.nonzero_voxels[0] / max(col.nonzero_voxels[1], 1), 4)
        intensity["nonzero"] = [_percentiles(col.nonzero[c]) if c in col.nonzero else None
                                for c in sorted(col.values)]
        fg = []
        for c in sorted(col.values):
            if c in col.foreground:
                v = np.concatenate(col.foreground[c])
                fg.append({"percentiles": _percentiles(col.foreground[c]), "mean": _num(v.mean(), 5),
                           "std": _num(v.std(), 5)})
            else:
                fg.append(None)
        intensity["foreground"] = fg
        # CT intensities are calibrated (air -1000 HU): a strongly negative low percentile says CT
        intensity["modality_guess"] = ["CT" if p[0] <= -500 else "MR/other" for p in intensity["channels"]]
    fp["intensity"] = intensity
    if col.label_samples:
        k = len(names) if names else max([v for v in col.ids if v not in (-1, IGNORE_INDEX)], default=0) + 1
        pixels = [int(col.ids.get(c, 0)) for c in range(k)]
        labelled = sum(pixels)
        total = sum(col.ids.values())
        fp["labels"] = {
            "class_names": names or [str(c) for c in range(k)],
            "raw_values": {str(v): int(c) for v, c in sorted(col.raw_labels.items())},
            "class_pixels": pixels,
            "class_frequency": [_num(p / labelled, 5) if labelled else 0.0 for p in pixels],
            "class_presence": [int(col.presence.get(c, 0)) for c in range(k)],
            "labelled_samples": col.label_samples,
            "ignore_fraction": _num(col.ids.get(IGNORE_INDEX, 0) / total, 5) if total else 0.0,
            "unknown_fraction": _num(col.ids.get(-1, 0) / total, 5) if total else 0.0,
            "unknown_files": col.unknown_files[:10],
            "foreground_fraction": _num(sum(pixels[1:]) / labelled, 5) if labelled else 0.0,
        }
    for name, chunks in col.targets.items():
        fp[name] = {"percentiles": list(PERCENTILES), "values": _percentiles(chunks),
                    "valid_fraction": _num(col.target_valid[0] / max(col.target_valid[1], 1), 4)}
        if name == "depth":
            metres = getattr(dataset, "depth_scale", None) or source == "samples"
            fp[name]["unit"] = "m" if metres else "stored"
    fp["bad"] = {"count": col.bad_count, "listed": col.bad}
    return fp


def _fmt_values(values: set[int]) -> str:
    return "{" + ", ".join(str(v) for v in sorted(values)) + "}"


def _binary_map(fp: dict) -> dict[int, int] | None:
    """{v: 1} when a 2-class split's masks hold only {0, v} (v != 1) and v is not mapped to class 1."""
    labels = fp.get("labels")
    if not labels or len(labels["class_names"]) != 2:
        return None
    raw = {int(v) for v in labels["raw_values"]}
    others = raw - {0}
    if len(others) != 1 or others == {1} or not raw <= {0} | others:
        return None
    # already mapped (a label_map the reader applied): class 1 then has pixels
    if labels["class_pixels"][1] > 0:
        return None
    return {others.pop(): 1}


def _warnings(fp: dict) -> list[str]:
    out = []
    if fp.get("reader_error"):
        out.append(f"the reader refused this split ({fp['reader_error']}); the raw files were measured")
    if fp["bad"]["count"]:
        out.append(f"{fp['bad']['count']} bad sample(s) among {fp['read']} read (listed under bad samples)")
    labels = fp.get("labels")
    if labels:
        fix = _binary_map(fp)
        if fix:
            (v, _), = fix.items()
            seen = _fmt_values({int(x) for x in labels["raw_values"]})
            out.append(f"masks hold only {seen} with 2 classes: "
                       f"{v} is not class 1 ({'ignored' if v == IGNORE_INDEX else 'unknown'}); "
                       f"set data.label_map={{{v}:1}}")
        if labels["ignore_fraction"] > 0.5:
            out.append(f"{100 * labels['ignore_fraction']:.1f}% of the label pixels are ignore "
                       f"({IGNORE_INDEX})")
        if labels["unknown_fraction"] > 0:
            known = len(labels["class_names"])
            out.append(f"label values outside 0..{known - 1} and {IGNORE_INDEX} in "
                       f"{len(labels['unknown_files'])}+ file(s), e.g. {labels['unknown_files'][0]}")
        if labels["foreground_fraction"] == 0 and not fix:
            out.append("no foreground pixels (class > 0) in the samples read")
        absent = [n for n, p in zip(labels["class_names"], labels["class_presence"]) if p == 0]
        if absent and labels["labelled_samples"] and not fix:
            out.append(f"class(es) {absent[:8]} absent from the {labels['labelled_samples']} samples read")
    intensity = fp.get("intensity", {})
    if intensity.get("dtype_max") == 65535 and intensity.get("channels"):
        top = max(p[-1] for p in intensity["channels"])
        out.append(f"16-bit images: p99.5 = {top:g} of 0..65535 ({100 * top / 65535:.2f}% of the range): "
                   f"they need percentile scaling ({INTENSITY_KEY}=auto or percentile); divided by 65535 "
                   f"they would be near black")
    size = fp.get("size")
    if fp["ndim"] == 3 and fp.get("spacing"):
        sp = fp["spacing"]["median"]
        if min(sp) > 0 and max(sp) / min(sp) > 3:
            out.append(f"anisotropic voxels: median spacing {sp} mm (D, H, W)")
    if size and size["distinct"] > 1 and fp["ndim"] == 2:
        pass  # different sizes are normal for photographs; the crop batches them
    return out


# -- suggestions -----------------------------------------------------------------------------------------
def _splits(fp: dict) -> dict[str, dict]:
    return fp["splits"] if "splits" in fp else {fp.get("split") or "train": fp}


def _train(fp: dict) -> dict | None:
    splits = {k: v for k, v in _splits(fp).items() if "error" not in v}
    return splits.get("train") or next(iter(splits.values()), None)


def _floor_to(x: float, m: int) -> int:
    return max(m, int(x // m) * m)


def _side(x: float, m: int) -> int:
    """A crop/patch side for a median side ``x``: the multiple of ``m`` below it, unless that drops more
    than a quarter of the side (then the one above, padding less than it would cut)."""
    down = _floor_to(x, m)
    return down if down >= 0.75 * x else down + m


def suggest(fp: dict, data_cfg: dict, task: str, *, config: dict | None = None, budget: int | None = None,
            cpus: int | None = None) -> dict[str, dict]:
    """Config overrides from a fingerprint (one split's, or ``{"splits": {...}}``: the train split's
    numbers are used): ``{override key: {"value", "reason", "current"}}``. ``data_cfg`` is the data config
    (plain dict), ``task`` the task name, ``config`` the whole plain config (backbone/loss keys; optional),
    ``budget`` pixels (2D) or voxels (3D) per training step (default ``CPU_BUDGET``), ``cpus`` the CPUs this
    process may use (default ``os.sched_getaffinity``)."""
    train = _train(fp)
    out: dict[str, dict] = {}
    if train is None or not train.get("size"):
        return out
    config = dict(config or {})
    config.setdefault("data", data_cfg)

    def add(key: str, value, reason: str) -> None:
        out[key] = {"value": value, "reason": reason, "current": select(config, key)}

    ndim = train["ndim"]
    budget = int(budget or CPU_BUDGET[ndim])
    median = train["size"]["median"]
    n_train = train["samples"]
    files = train["source"] == "files"
    if ndim == 2:
        multiple = 64 if train["kind"] == "flow" else 32
        h, w = (_side(s, multiple) for s in median)
        if h * w * 2 > budget:  # at least batch 2 must fit: shrink both sides alike
            f = math.sqrt(budget / 2 / (h * w))
            h, w = _floor_to(h * f, multiple), _floor_to(w * f, multiple)
        crop_now = select(data_cfg, "augment.crop")
        if files or crop_now is not None:
            reason = (f"median image {median[0]:g} x {median[1]:g} (H x W) to a multiple of {multiple}")
            if isinstance(crop_now, (list, tuple)) and len(crop_now) == 2:
                ch, cw = int(crop_now[0]), int(crop_now[1])
                if select(data_cfg, "fit_crop"):  # the reader cuts the crop to the largest train image
                    big = train["size"]["max"]
                    ch, cw = min(ch, int(big[0])), min(cw, int(big[1]))
                pad = 1 - min(median[0], ch) * min(median[1], cw) / (ch * cw)
                if pad > 0.05:
                    reason += f"; the configured {ch} x {cw} crop would be {100 * pad:.0f}% padding"
            add("data.augment.crop", [h, w], reason)
        batch = max(1, min(MAX_BATCH_2D, budget // (h * w), n_train))
        add("data.batch_size", batch, f"{budget} px per step (batch x crop) fit {budget // (h * w)} crops of "
                                      f"{h} x {w}; at most {MAX_BATCH_2D}, at most the {n_train} training "
                                      f"samples")
    else:
        d, h, w = (_side(s, 16) for s in median)
        patch = [d, h, w]
        while patch[0] * patch[1] * patch[2] * BATCH_3D > budget and max(patch) > 16:
            axis = int(np.argmax(patch))
            patch[axis] -= 16  # shrink the longest side first (nnU-Net's rule)
        add("data.patch", patch, f"median volume {' x '.join(f'{s:g}' for s in median)} (D x H x W) to "
                                 f"multiples of 16, {BATCH_3D} patches within {budget} voxels per step")
        add("data.batch_size", BATCH_3D, "patches, not cases, fill an epoch: nnU-Net's batch of 2")
        channels = train.get("in_channels")
        if channels:
            add("backbone.in_channels", int(channels), f"the volumes have {channels} channel(s)")
    cpus = int(cpus or len(os.sched_getaffinity(0)))
    workers = 0 if not files else min(8, max(0, cpus - 1))
    add("data.num_workers", workers, f"{cpus} CPU(s) available to this process" +
        ("; generated data needs no workers" if not files else "; one is left to the training loop"))
    labels = train.get("labels")
    if labels:
        names = labels["class_names"]
        given = select(data_cfg, "num_classes")
        if given == "???" or (isinstance(given, int) and given != len(names)):
            add("data.num_classes", len(names), f"the class list has {len(names)} names: {names[:6]}")
        pixels = list(labels["class_pixels"])
        fix = _binary_map(train)
        if fix:
            (v, _), = fix.items()
            add("data.label_map", {v: 1}, f"masks hold only {{0, {v}}} with 2 classes ({', '.join(names)}): "
                                          f"{v} marks the foreground")
            pixels = [labels["raw_values"].get("0", 0), labels["raw_values"].get(str(v), 0)]
        total = sum(pixels)
        shares = [p / total for p in pixels] if total else []
        present = [s for s in shares if s > 0]
        # 2D only: the volume recipe's Dice + CE and foreground oversampling already balance the classes
        if ndim == 2 and len(present) >= 2 and max(present) / min(present) > IMBALANCE_RATIO:
            med = float(np.median(present))
            weights = [round(med / s, 4) if s > 0 else 1.0 for s in shares]
            add("task.loss.class_weights", weights,
                f"class pixel shares {[round(s, 4) for s in shares]} (largest/smallest "
                f"{max(present) / min(present):.0f}x): median-frequency weights")
            if task == "seg" and not select(config, "task.loss.dice_weight"):
                add("task.loss.dice_weight", 1.0, "imbalanced classes: Dice counts every class alike")
    if ndim == 2:
        intensity = train.get("intensity", {})
        wide = set(train.get("dtypes", {})) & {"uint16", "int32", "float32"}
        if files and wide:
            chans = intensity.get("channels") or [[0, 0, 0]]
            lo, hi = min(p[0] for p in chans), max(p[-1] for p in chans)
            top = {"uint16": 65535}.get(next(iter(wide)))
            used = f" ({100 * hi / top:.2f}% of 0..{top})" if top else ""
            add(INTENSITY_KEY, INTENSITY_VALUE,
                f"{'/'.join(sorted(wide))} images with p0.5..p99.5 = {lo:g}..{hi:g}{used}: scaled by "
                f"percentiles of the train split, not by the dtype maximum")
    return out


def format_value(value) -> str:
    """A value as a Hydra command-line override writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _fmt_size(row) -> str:
    return " x ".join(f"{v:g}" for v in row)


def _fmt_pcts(p) -> str:
    return " / ".join(f"{v:.4g}" for v in p)


def format_fingerprint(fp: dict, suggestions: dict | None = None) -> str:
    """The printed report: one block per split, then the suggested overrides (changes first)."""
    lines = []
    for split, s in _splits(fp).items():
        if "error" in s:
            lines += [f"== {split}: not available ==", f"  {s['error']}", ""]
            continue
        axes = " x ".join(s["axes"])
        lines.append(f"== {split}: {s['samples']} samples (read {s['read']}, {s['seconds']:g} s), "
                     f"{s['dataset']}, {s['kind']} {s['ndim']}D from {s['source']} ==")
        if s["length"] != s["samples"]:
            lines.append(f"  epoch length     {s['length']}")
        if s.get("size"):
            z = s["size"]
            lines.append(f"  size ({axes})   min {_fmt_size(z['min'])}   median {_fmt_size(z['median'])}   "
                         f"max {_fmt_size(z['max'])}   ({z['distinct']} distinct)")
        if s.get("spacing"):
            z = s["spacing"]
            lines.append(f"  spacing mm       min {_fmt_size(z['min'])}   median {_fmt_size(z['median'])}   "
                         f"max {_fmt_size(z['max'])}")
        if s.get("orientation"):
            lines.append(f"  orientation      {', '.join(f'{k}: {v}' for k, v in s['orientation'].items())}")
        modes = f" (modes {', '.join(f'{k}: {v}' for k, v in s['modes'].items())})" if s["modes"] else ""
        lines.append(f"  channels         {', '.join(f'{k}: {v}' for k, v in s['channels'].items())}{modes}")
        lines.append(f"  dtype            {', '.join(f'{k}: {v}' for k, v in s['dtypes'].items())}"
                     + (f"   targets {', '.join(f'{k}: {v}' for k, v in s['target_dtypes'].items())}"
                        if s["target_dtypes"] else ""))
        it = s.get("intensity", {})
        for c, p in enumerate(it.get("channels", [])):
            extra = ""
            if it.get("foreground") and it["foreground"][c]:
                f = it["foreground"][c]
                extra = (f"   foreground {_fmt_pcts(f['percentiles'])} "
                         f"(mean {f['mean']:.4g}, std {f['std']:.4g})")
            lines.append(f"  intensity c{c}    p0.5 / p50 / p99.5 = {_fmt_pcts(p)}{extra}")
        if "nonzero_fraction" in it:
            lines.append(f"  nonzero voxels   {100 * it['nonzero_fraction']:.1f}%   modality guess "
                         f"{', '.join(it['modality_guess'])}")
        lab = s.get("labels")
        if lab:
            total = sum(lab["raw_values"].values()) or 1
            raw = ", ".join(f"{v} ({100 * c / total:.1f}%)" for v, c in list(lab["raw_values"].items())[:12])
            lines.append(f"  mask values      {raw}{' ...' if len(lab['raw_values']) > 12 else ''}")
            lines.append("  classes          " + "   ".join(
                f"{n} {100 * f:.2f}% ({p}/{lab['labelled_samples']})"
                for n, f, p in zip(lab["class_names"], lab["class_frequency"], lab["class_presence"])))
            share = lab["unknown_fraction"]
            unknown = f"; unknown values {100 * share:.2f}%" if share else ""
            lines.append(f"  ignore           {100 * lab['ignore_fraction']:.2f}% of label pixels{unknown}")
        for name in ("depth", "flow_magnitude"):
            if name in s:
                t = s[name]
                unit = t.get("unit", "px")
                lines.append(f"  {name:<16} p0.5 / p50 / p99.5 = {_fmt_pcts(t['values'])} {unit}; valid "
                             f"{100 * t['valid_fraction']:.1f}%")
        lines.append(f"  bad samples      {s['bad']['count']}")
        for b in s["bad"]["listed"][:10]:
            lines.append(f"    {b['reason']}")
        if s["bad"]["count"] > 10:
            lines.append(f"    ... and {s['bad']['count'] - 10} more")
        for w in s.get("warnings", []):
            lines.append(f"  warning: {w}")
        lines.append("")
    if suggestions:
        changes = {k: v for k, v in suggestions.items() if v.get("current") != v["value"]}
        kept = {k: v for k, v in suggestions.items() if k not in changes}
        lines.append("== suggested overrides ==")
        for key, s in changes.items():
            note = "" if s.get("supported", True) else "   [this config has no such key yet]"
            lines.append(f"  {key}={format_value(s['value'])}   # {s['reason']}{note}")
        for key, s in kept.items():
            lines.append(f"  (already set) {key}={format_value(s['value'])}")
        paste = [f"{k}={format_value(s['value'])}" for k, s in changes.items() if s.get("supported", True)]
        if paste:
            lines.append("  paste: " + " ".join(paste))
    return "\n".join(lines).rstrip() + "\n"


def quick_check(dataset, max_samples: int = 8) -> dict:
    """A cheap fingerprint for the start of a run (volumes: ``max(1, max_samples // 8)`` cases, as a
    BraTS-sized case takes ~2 s to decode):
    the fingerprint dict, whose ``warnings`` belong in the log. Never raises: a failure to inspect is
    returned as ``{"error": ...}``."""
    try:
        n = max_samples
        if source_kind(_unwrap(dataset)) == "volume":
            n = max(1, max_samples // 8)
        return fingerprint(dataset, max_samples=n)
    except Exception as exc:  # the run must not fail because its data could not be described
        return {"error": f"{type(exc).__name__}: {exc}", "warnings": [f"data fingerprint failed: {exc}"]}
