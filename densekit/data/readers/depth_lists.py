"""Depth readers driven by BTS-style list files: NYUv2 (as extracted by BTS / AdaBins) and KITTI on the
Eigen split. Valid pixels, scales and the bad-sample policy: ``densekit.data.readers.depth``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar

from ..registry import DATASETS
from .base import BadSampleError, missing
from .depth import DepthValueWarning, FilePairDepth, resolve

KB_CROP = (352, 1216)  # (H, W) of the KITTI benchmark crop (Uhrig et al. 2017), as used by BTS/AdaBins


def _absent_error(source: Path, absent: list[str]) -> ValueError:
    more = f"\n  ... and {len(absent) - 5} more" if len(absent) > 5 else ""
    return ValueError(f"{source} lists {len(absent)} file(s) that do not exist:\n  " + "\n  ".join(absent[:5]) + more)


def read_pair_list(
    list_file: Path, image_base: Path, depth_bases: tuple[Path, ...], what: str
) -> tuple[list[tuple[Path, Path]], int]:
    """Parse a BTS-style list (``<rgb path> <depth path or None> [<focal>]`` per line; paths relative to
    ``image_base`` / one of ``depth_bases``, a leading ``/`` ignored). Returns the pairs and the number of
    lines whose depth is ``None``. A listed file that does not exist is an error naming it; an image listed
    with the other of .png/.jpg is accepted (BTS converts the KITTI raw PNGs to JPEG)."""
    if not list_file.is_file():
        raise missing(list_file, what)
    pairs, no_gt, absent = [], 0, []
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (2, 3):
            raise ValueError(
                f"{list_file}:{number}: expected '<rgb path> <depth path or None> [<focal>]', got {line.strip()!r}"
            )
        if fields[1] == "None":
            no_gt += 1
            continue
        image = image_base / fields[0].lstrip("/")
        if not image.is_file():
            for other in (".png", ".jpg"):
                if image.with_suffix(other).is_file():
                    image = image.with_suffix(other)
                    break
        rel = fields[1].lstrip("/")
        depth = next((base / rel for base in depth_bases if (base / rel).is_file()), depth_bases[0] / rel)
        absent += [str(p) for p in (image, depth) if not p.is_file()]
        pairs.append((image, depth))
    if absent:
        raise _absent_error(list_file, absent)
    return pairs, no_gt


class _ListDepth(FilePairDepth):
    """A reader driven by one list file per split (``lists`` overrides the default names)."""

    default_lists: ClassVar[dict[str, str]] = {}

    def __init__(self, split: str = "train", root=None, lists: dict[str, str] | None = None, **kwargs):
        unknown = set(lists or {}) - set(self.splits)
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: lists has unknown split(s) {sorted(unknown)}; expected {list(self.splits)}"
            )
        self.lists = {**self.default_lists, **(lists or {})}
        super().__init__(split=split, root=root, **kwargs)

    def _list(self, split: str) -> Path:
        self.listed = resolve(self.root, self.lists[split])
        return self.listed


@DATASETS.register("nyuv2", tasks=("depth",), dims=2)
class NYUv2Folder(_ListDepth):
    """NYUv2 as extracted by BTS / AdaBins: ``root/sync/<scene>/rgb_<n>.jpg`` + ``sync_depth_<n>.png`` (train,
    from the raw video, ~24k frames listed) and ``root/official_splits/test/<scene>/rgb_<n>.jpg`` +
    ``sync_depth_<n>.png`` (the 654 official test frames), listed by
    ``root/nyudepthv2_train_files_with_gt.txt`` and ``root/nyudepthv2_test_files_with_gt.txt`` (lines
    ``<rgb path> <depth path> <focal>``, paths relative to the split folder). Depth: 16-bit PNG in
    millimetres (``depth_scale`` 1000), 480x640.
    ``val`` (alias ``test``) is the official test split. Where the split folder is absent, paths are taken
    relative to ``root``."""

    default_root = "datasets/nyuv2"
    default_scale = 1000.0
    unit_warn_median = 100.0
    default_lists: ClassVar[dict[str, str]] = {
        "train": "nyudepthv2_train_files_with_gt.txt",
        "val": "nyudepthv2_test_files_with_gt.txt",
    }
    split_dirs: ClassVar[dict[str, str]] = {"train": "sync", "val": "official_splits/test"}

    def _samples(self, split):
        base = self.root / self.split_dirs[split]
        base = base if base.is_dir() else self.root
        pairs, no_gt = read_pair_list(self._list(split), base, (base,), f"NYUv2 {split} list")
        if no_gt:
            raise ValueError(
                f"{self.listed}: {no_gt} line(s) without ground truth ('None'); every NYUv2 frame has depth"
            )
        return pairs


@DATASETS.register("kitti", tasks=("depth",), dims=2)
class KITTIDepth(_ListDepth):
    """KITTI depth on the Eigen split: raw frames ``root/<date>/<drive>_sync/image_02/data/<n>.png`` and the
    annotated depth (``data_depth_annotated``) ``root/data_depth_annotated/[train|val/]<drive>_sync/
    proj_depth/groundtruth/image_02/<n>.png`` (16-bit PNG, metres = value / 256, 0 = no LiDAR point: ~85 %
    of the pixels, so valid is sparse), listed by ``root/eigen_train_files_with_gt.txt`` /
    ``root/eigen_test_files_with_gt.txt`` (lines ``<rgb path> <gt path or None> <focal>``). The Eigen test
    list has 697 frames of which 652 have ground truth: the ``None`` lines are skipped and counted in one
    ``DepthValueWarning`` (``self.no_ground_truth``).

    ``kb_crop=True`` cuts every frame to the KITTI benchmark crop (Garg/BTS "KB crop"): 352x1216, bottom
    rows, centred horizontally (top = H - 352, left = (W - 1216) // 2), which removes the top rows no LiDAR
    point reaches and makes the slightly different raw frame sizes (370..376 x 1224..1242) batchable. The
    ``garg``/``eigen_kitti`` evaluation crops are defined on the full frame: evaluate with ``kb_crop=False``
    (and val batch size 1) to reproduce published numbers. ``kb_crop="train"`` crops the train split only:
    the BTS/AdaBins recipe (train on KB crops, evaluate full frames with the garg crop)."""

    default_root = "datasets/kitti"
    default_scale = 256.0
    unit_warn_median = 300.0
    default_lists: ClassVar[dict[str, str]] = {
        "train": "eigen_train_files_with_gt.txt",
        "val": "eigen_test_files_with_gt.txt",
    }

    def __init__(
        self,
        split: str = "train",
        root=None,
        kb_crop: bool | str = False,
        raw_dir: str = ".",
        depth_dir: str = "data_depth_annotated",
        **kwargs,
    ):
        if kb_crop not in (True, False, "train"):
            raise ValueError(f"KITTIDepth: kb_crop must be true, false or 'train', got {kb_crop!r}")
        self.kb_crop, self.raw_dir, self.depth_dir = kb_crop, raw_dir, depth_dir
        self.no_ground_truth = 0
        super().__init__(split=split, root=root, **kwargs)

    def _samples(self, split):
        raw = resolve(self.root, self.raw_dir)
        gt = resolve(self.root, self.depth_dir)
        if not raw.is_dir():
            raise missing(raw, "KITTI raw data folder (raw_dir)")
        if not gt.is_dir():
            raise missing(gt, "KITTI data_depth_annotated folder (depth_dir)")
        pairs, self.no_ground_truth = read_pair_list(
            self._list(split), raw, (gt, gt / "train", gt / "val"), f"KITTI Eigen {split} list"
        )
        if self.no_ground_truth:
            warnings.warn(
                f"{self.listed}: {self.no_ground_truth} of {self.no_ground_truth + len(pairs)} listed frames "
                "have no ground truth ('None') and are left out (the Eigen test list: 697 frames, 652 with "
                "ground truth)",
                DepthValueWarning,
                stacklevel=4,
            )
        return pairs

    def crop_native(self, sample, source):
        if not (self.kb_crop is True or (self.kb_crop == "train" and self.split == "train")):
            return sample
        h, w = sample["depth"].shape
        ch, cw = KB_CROP
        if h < ch or w < cw:
            raise BadSampleError(
                f"{source}: {w}x{h} (WxH) is smaller than the {cw}x{ch} KB crop; is it a KITTI raw frame?"
            )
        top, left = h - ch, (w - cw) // 2
        return {k: v[top : top + ch, left : left + cw] for k, v in sample.items()}


__all__ = ["KITTIDepth", "NYUv2Folder", "read_pair_list"]
