"""Depth readers: the ``DepthDataset`` base and the generic ``FolderDepth`` (NYUv2 / KITTI lists:
``densekit.data.readers.depth_lists``; the labeled NYUv2 .mat: ``densekit.data.readers.depth_mat``).

Each yields schema samples: image float32 (3, H, W) in [0, 1], depth float32 (1, H, W) in metres with 0
wherever there is no usable measurement, valid bool (H, W) (True exactly where depth counts).

What makes a ground-truth pixel valid (``DepthDataset.clean``):
  * finite and > 0: 0 is every format's "no measurement" (KITTI's LiDAR projections are ~85 % zeros);
    NaN, inf and negative values are data errors: made invalid, counted per dataset and warned about once
    (``dataset.pixel_stats`` / ``dataset.report()``), never passed on;
  * inside the caps ``min_depth < depth <= max_depth`` (``max_depth=None``: no upper cap), the interval the
    evaluation protocol counts (``densekit.metrics.depth``);
  * a depth map whose median (of its positive values) is implausibly large for the dataset (NYUv2 > 100 m,
    KITTI > 300 m, a generic folder > 1000 m) was most likely stored in millimetres with the wrong
    ``depth_scale``: a ``DepthValueWarning`` names the file and suggests the scale.

The bad-sample policy is the segmentation readers' (``densekit.data.readers.base``): an unreadable file or an
image/depth size mismatch is a ``BadSampleError`` naming both files, or, with ``skip_bad=True``, the sample
is replaced by the next good one, counted and warned about (``BadSampleWarning``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np

from ...io.depth import DEPTH_SUFFIXES, read_depth
from ..registry import DATASETS
from .base import BadSampleError, ReaderDataset, missing, read_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DepthValueWarning(UserWarning):
    """Depth values that were made invalid (NaN/inf/negative) or that look like the wrong unit."""


def resolve(root: Path, path: str | Path) -> Path:
    """``path`` as given if absolute, else relative to the dataset ``root``."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path


class DepthDataset(ReaderDataset):
    """Base of the depth readers. Subclasses set ``default_root``, ``default_scale`` (metres = stored value
    / scale for integer formats), ``unit_warn_median`` and ``splits``, and implement ``_samples(split)``
    (returning one reference per sample, and setting ``self.listed``) and ``read(i)`` (returning the RGB
    image uint8 (H, W, 3), the raw depth in metres float32 (H, W), and the two source names for errors).

    Arguments beyond the shared ones (``ReaderDataset``; "test" is an alias of "val" where the format says
    so; ``augment`` is ``densekit.data.transforms.image``, whose ``scale`` is refused for depth):
      targets      must include "depth" (the only target these readers provide)
      min_depth    ground truth <= min_depth (metres) is invalid
      max_depth    ground truth > max_depth (metres) is invalid; None = no upper cap
      depth_scale  metres = stored value / depth_scale for integer PNGs (and NYUv2Mat's floats); None = the
                   format's standard (``default_scale``); ``.npy`` depth is read as metres
    """

    splits: tuple[str, ...] = ("train", "val")
    split_aliases: ClassVar[dict[str, str]] = {"test": "val"}
    default_root = "datasets"
    default_scale: float | None = None
    unit_warn_median = 1000.0  # metres; a larger median depth most likely means millimetres
    required = ("image", "depth", "valid")

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        augment: dict | None = None,
        targets: tuple[str, ...] = ("depth",),
        skip_bad: bool = False,
        length: int | None = None,
        resize: int | None = None,
        min_depth: float = 1e-3,
        max_depth: float | None = None,
        depth_scale: float | None = None,
    ):
        name = type(self).__name__
        self.min_depth = float(min_depth)
        self.max_depth = None if max_depth is None else float(max_depth)
        if not np.isfinite(self.min_depth) or self.min_depth < 0:
            raise ValueError(f"{name}: min_depth must be a finite number >= 0 (metres), got {min_depth!r}")
        if self.max_depth is not None and not self.max_depth > self.min_depth:
            raise ValueError(
                f"{name}: max_depth must exceed min_depth={self.min_depth} (or be null), got {max_depth!r}"
            )
        if depth_scale is not None and (isinstance(depth_scale, bool) or not float(depth_scale) > 0):
            raise ValueError(f"{name}: depth_scale must be a positive number or null, got {depth_scale!r}")
        self.depth_scale = float(depth_scale) if depth_scale is not None else self.default_scale
        # per-process pixel counters over the samples loaded so far (each DataLoader worker keeps its own)
        self.pixel_stats = {"pixels": 0, "invalid_values": 0, "no_measurement": 0, "outside_caps": 0}
        self.invalid_value_files: list[str] = []
        self.unit_suspects: list[str] = []
        super().__init__(split, root, augment, targets, skip_bad, length, resize)

    def check_targets(self, targets):
        if "depth" not in targets or set(targets) - {"depth"}:
            raise ValueError(
                f"{type(self).__name__} provides only the 'depth' target; the task asked for {list(targets)}"
            )

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray, str, str]:
        raise NotImplementedError

    def report(self) -> str:
        """The pixel counters of this process, as one line."""
        s = self.pixel_stats
        return (
            f"{type(self).__name__} {self.split}: {s['pixels']} ground-truth pixels loaded; "
            f"{s['invalid_values']} NaN/inf/negative (made invalid) in "
            f"{len(self.invalid_value_files)} file(s), "
            f"{s['no_measurement']} without measurement (0), {s['outside_caps']} outside "
            f"({self.min_depth:g}, {self.max_depth if self.max_depth is not None else 'inf'}] m; "
            f"{len(self.unit_suspects)} file(s) with a median depth above {self.unit_warn_median:g} m"
        )

    # -- loading -------------------------------------------------------------------------------------
    def _read_depth(self, path: Path) -> np.ndarray:
        """``densekit.io.read_depth``: a PNG at this dataset's ``depth_scale``, a ``.npy`` as metres (so one
        folder may mix both); its errors become BadSampleErrors."""
        is_png = path.suffix.lower() == ".png"
        scale = self.depth_scale if is_png else None
        if is_png and scale is None:
            raise ValueError(
                f"{type(self).__name__}: {path} is a 16-bit PNG; set depth_scale "
                "(metres = value / depth_scale, "
                "e.g. 1000 for millimetres, 256 for KITTI-style PNGs)"
            )
        try:
            return read_depth(path, scale)
        except (OSError, ValueError) as exc:
            raise BadSampleError(str(exc)) from None

    def clean(self, depth: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
        """Raw metres -> (depth with 0 where invalid, valid); counts and warns (see the module docstring)."""
        finite = np.isfinite(depth)
        positive = finite & (depth > 0)
        invalid_values = int((~finite).sum() + (depth[finite] < 0).sum())
        stats = self.pixel_stats
        stats["pixels"] += depth.size
        stats["no_measurement"] += int((depth == 0).sum())
        if invalid_values:
            stats["invalid_values"] += invalid_values
            self.invalid_value_files.append(source)
            if len(self.invalid_value_files) == 1:
                warnings.warn(
                    f"{source}: {invalid_values} NaN/inf/negative depth value(s) made invalid; further "
                    f"files are counted without a warning (dataset.report())",
                    DepthValueWarning,
                    stacklevel=3,
                )
        if positive.any():
            median = float(np.median(depth[positive]))
            if median > self.unit_warn_median:
                self.unit_suspects.append(source)
                if len(self.unit_suspects) == 1:
                    fix = (
                        "store .npy depth in metres"
                        if source.lower().endswith(".npy")
                        else f"if so, set depth_scale={1000 * (self.depth_scale or 1):g} (now {self.depth_scale})"
                    )
                    warnings.warn(
                        f"{source}: median depth {median:.6g} m is implausible for {type(self).__name__} "
                        f"(over {self.unit_warn_median:g} m): millimetres read as metres? {fix}. Further "
                        "files are counted without a warning (dataset.report())",
                        DepthValueWarning,
                        stacklevel=3,
                    )
        valid = positive & (depth > self.min_depth)
        if self.max_depth is not None:
            valid &= depth <= self.max_depth
        stats["outside_caps"] += int((positive & ~valid).sum())
        return np.where(valid, depth, 0).astype(np.float32), valid

    def crop_native(self, sample: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
        """A reader's fixed crop of every split (KITTI's KB crop); the identity by default."""
        return sample

    def load(self, i: int) -> dict[str, np.ndarray]:
        """Sample ``i`` as numpy (image uint8 HWC, depth float32 metres, valid bool), checked."""
        rgb, depth, image_name, depth_name = self.read(i)
        if depth.shape != rgb.shape[:2]:
            raise BadSampleError(
                f"{depth_name}: depth is {depth.shape[1]}x{depth.shape[0]} (WxH) but its image {image_name} "
                f"is {rgb.shape[1]}x{rgb.shape[0]}; they must match"
            )
        depth, valid = self.clean(depth, depth_name)
        return self.crop_native({"image": rgb, "depth": depth, "valid": valid}, depth_name)


class FilePairDepth(DepthDataset):
    """A depth reader over (image file, depth file) pairs."""

    def read(self, i):
        image_path, depth_path = self.files[i]
        return read_rgb(image_path), self._read_depth(depth_path), str(image_path), str(depth_path)


@DATASETS.register("depth_folder", tasks=("depth",), dims=2)
class FolderDepth(FilePairDepth):
    """A generic folder: ``root/images/<split>/<stem>.<jpg|png|...>`` with ``root/depth/<split>/<stem>.png``
    (16-bit PNG, metres = value / ``depth_scale``, which is then required; 0 = no measurement) or
    ``<stem>.npy`` (float (H, W) in metres; ``depth_scale`` does not apply), paired by file stem. Any split
    folder name works."""

    default_root = "datasets/depth_folder"
    splits = ()
    split_aliases: ClassVar[dict[str, str]] = {}

    def _samples(self, split):
        image_dir, depth_dir = self.root / "images" / split, self.root / "depth" / split
        self.listed = image_dir
        found = {}
        for directory, suffixes, what in (
            (image_dir, IMAGE_SUFFIXES, "images"),
            (depth_dir, DEPTH_SUFFIXES, "depth"),
        ):
            if not directory.is_dir():
                raise missing(directory, f"FolderDepth {what} folder")
            files = {}
            for path in sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in suffixes):
                if path.stem in files:
                    raise ValueError(
                        f"{directory}: two files share the stem {path.stem!r} "
                        f"({files[path.stem].name}, {path.name}); "
                        "images and depth maps are matched by stem, so stems must be unique"
                    )
                files[path.stem] = path
            found[what] = files
        images, depths = found["images"], found["depth"]
        lonely = [
            f"image without a depth map (expected one in {depth_dir}): {images[k]}"
            for k in sorted(set(images) - set(depths))
        ]
        lonely += [
            f"depth map without an image (expected one in {image_dir}): {depths[k]}"
            for k in sorted(set(depths) - set(images))
        ]
        if lonely:
            more = f"\n  ... and {len(lonely) - 10} more" if len(lonely) > 10 else ""
            raise ValueError(f"{len(lonely)} unpaired file(s):\n  " + "\n  ".join(lonely[:10]) + more)
        return [(images[k], depths[k]) for k in sorted(images)]


__all__ = ["DepthDataset", "DepthValueWarning", "FilePairDepth", "FolderDepth"]
