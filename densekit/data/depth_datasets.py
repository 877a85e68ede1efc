"""Readers for monocular depth datasets, each in its usual on-disk layout (datasets/README.md).

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

The bad-sample policy is the segmentation readers' (``densekit.data.seg_base``): an unreadable file or an
image/depth size mismatch is a ``BadSampleError`` naming both files, or, with ``skip_bad=True``, the sample
is replaced by the next good one, counted and warned about (``BadSampleWarning``).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..io.depth import DEPTH_SUFFIXES, read_depth
from .datasets import to_tensors
from .schema import check_sample
from .seg_base import BadSampleError, load_or_skip, missing
from .transforms import apply_augment, build_augment, check_resize

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
KB_CROP = (352, 1216)  # (H, W) of the KITTI benchmark crop (Uhrig et al. 2017), as used by BTS/AdaBins


class DepthValueWarning(UserWarning):
    """Depth values that were made invalid (NaN/inf/negative) or that look like the wrong unit."""


def _open_rgb(path: Path) -> np.ndarray:
    img = None
    try:
        img = Image.open(path)
        img.load()  # decode now: a truncated or corrupt file fails here with its name
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if img is not None:
            img.close()
        raise BadSampleError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None
    with img:
        return np.asarray(img.convert("RGB"))  # also takes the odd greyscale/CMYK JPEG


def _resolve(root: Path, path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path


def _absent_error(source: Path, absent: list[str]) -> ValueError:
    more = f"\n  ... and {len(absent) - 5} more" if len(absent) > 5 else ""
    return ValueError(
        f"{source} lists {len(absent)} file(s) that do not exist:\n  " + "\n  ".join(absent[:5]) + more
    )


class DepthDataset(Dataset):
    """Base of the depth readers. Subclasses set ``default_root``, ``default_scale`` (metres = stored value
    / scale for integer formats), ``unit_warn_median`` and ``splits``, and implement ``_samples(split)``
    (returning one reference per sample, and setting ``self.listed``) and ``read(i)`` (returning the RGB
    image uint8 (H, W, 3), the raw depth in metres float32 (H, W), and the two source names for errors).

    Arguments shared by every reader:
      split        one of the reader's ``splits`` ("test" is an alias of "val" where the format says so)
      root         the dataset folder (see datasets/README.md); None = ``default_root``
      augment      train-only random ops (``densekit.data.transforms``; ``scale`` is refused for depth)
      targets      what the task asks for: must include "depth" (the only target these readers provide)
      skip_bad     replace unreadable/inconsistent samples by the next good one instead of raising
      length       samples per epoch: fewer than the split caps it, more repeats it; None = the split
      resize       short side in pixels for every split (deterministic), or None for the native size
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
        split = self.split_aliases.get(split, split)
        if self.splits and split not in self.splits:
            raise ValueError(f"{name}: split must be one of {list(self.splits)}, got {split!r}")
        targets = tuple(targets)
        if "depth" not in targets or set(targets) - {"depth"}:
            raise ValueError(f"{name} provides only the 'depth' target; the task asked for {list(targets)}")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise ValueError(f"{name}: length must be a positive int or null, got {length!r}")
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
        self.split, self.skip_bad = split, bool(skip_bad)
        self.root = Path(root if root is not None else self.default_root).expanduser()
        if not self.root.is_dir():
            raise missing(self.root, f"{name} root")
        self.resize = check_resize(resize)
        train = build_augment(
            augment, resize=self.resize, targets=targets
        )  # checks the config before any I/O
        self.augment = train if split == "train" else build_augment(None, resize=self.resize)
        self.listed = self.root  # what _samples read (a folder or a list file), for the empty-split error
        self.files = self._samples(split)
        if not self.files:
            raise ValueError(f"{name}: split {split!r} is empty: no samples in {self.listed.resolve()}")
        self.length = len(self.files) if length is None else int(length)
        self.skipped: dict[int, str] = {}  # index into files -> why it was skipped (this process)
        # per-process pixel counters over the samples loaded so far (each DataLoader worker keeps its own)
        self.pixel_stats = {"pixels": 0, "invalid_values": 0, "no_measurement": 0, "outside_caps": 0}
        self.invalid_value_files: list[str] = []
        self.unit_suspects: list[str] = []

    def _samples(self, split: str) -> list:
        raise NotImplementedError

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray, str, str]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.length

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
                        else f"if so, set depth_scale={1000 * (self.depth_scale or 1):g} "
                        f"(now {self.depth_scale})"
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

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = load_or_skip(self, index, len(self.files))
        sample = apply_augment(self.augment, sample)
        return check_sample(to_tensors(sample), required=("image", "depth", "valid"))


class FilePairDepth(DepthDataset):
    """A depth reader over (image file, depth file) pairs."""

    def read(self, i):
        image_path, depth_path = self.files[i]
        return _open_rgb(image_path), self._read_depth(depth_path), str(image_path), str(depth_path)


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
                f"{list_file}:{number}: expected '<rgb path> <depth path or None> [<focal>]', "
                f"got {line.strip()!r}"
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
                f"{type(self).__name__}: lists has unknown split(s) {sorted(unknown)}; "
                f"expected {list(self.splits)}"
            )
        self.lists = {**self.default_lists, **(lists or {})}
        super().__init__(split=split, root=root, **kwargs)

    def _list(self, split: str) -> Path:
        self.listed = _resolve(self.root, self.lists[split])
        return self.listed


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
        raw = _resolve(self.root, self.raw_dir)
        gt = _resolve(self.root, self.depth_dir)
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


class NYUv2Mat(DepthDataset):
    """The labeled NYUv2 release ``root/nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5): 1449 frames, RGB and
    in-painted depth in metres (``depth_key="rawDepths"`` for the raw Kinect depth, 0 = no measurement).

    MATLAB writes arrays column-major, so h5py sees the dimensions reversed: ``images`` is (N, 3, W, H) uint8
    and ``depths`` (N, W, H) float, W = 640, H = 480; frame i is ``images[i].transpose(2, 1, 0)`` (H, W, 3)
    and ``depths[i].T`` (H, W).

    The split (795 train / 654 test, 1-based frame numbers) comes from ``split_file``: the official
    ``splits.mat`` (keys ``trainNdxs`` / ``testNdxs``; MATLAB v5 or v7.3), or a mapping ``{train: <txt>,
    val: <txt>}`` of text files holding 1-based frame numbers (whitespace/comma separated). Default: the
    ``splits.mat`` beside the data file. Relative paths are taken from ``root``."""

    default_root = "datasets/nyuv2_mat"
    default_scale = 1.0
    unit_warn_median = 100.0
    split_keys: ClassVar[dict[str, str]] = {"train": "trainNdxs", "val": "testNdxs"}

    def __init__(
        self,
        split: str = "train",
        root=None,
        mat_file: str = "nyu_depth_v2_labeled.mat",
        split_file: str | dict | None = None,
        depth_key: str = "depths",
        **kwargs,
    ):
        if depth_key not in ("depths", "rawDepths"):
            raise ValueError(
                f"NYUv2Mat: depth_key must be 'depths' (in-painted) or 'rawDepths', got {depth_key!r}"
            )
        self.mat_file, self.split_file, self.depth_key = mat_file, split_file, depth_key
        self._h5: h5py.File | None = None
        self._h5_pid: int | None = None
        super().__init__(split=split, root=root, **kwargs)

    def __getstate__(self):  # an open HDF5 handle cannot be pickled (spawned DataLoader workers)
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    def _file(self) -> h5py.File:
        if self._h5 is None or self._h5_pid != os.getpid():
            # a handle inherited through fork is not safe to share: each worker opens its own
            self._h5, self._h5_pid = h5py.File(self.mat_path, "r"), os.getpid()
        return self._h5

    def _samples(self, split):
        self.mat_path = _resolve(self.root, self.mat_file)
        if not self.mat_path.is_file():
            raise missing(self.mat_path, "NYUv2 labeled .mat file")
        if not h5py.is_hdf5(self.mat_path):
            raise ValueError(
                f"{self.mat_path}: not a MATLAB v7.3 (HDF5) file; nyu_depth_v2_labeled.mat is v7.3 "
                "(re-download it?)"
            )
        with h5py.File(self.mat_path, "r") as f:
            for key in ("images", self.depth_key):
                if key not in f:
                    raise ValueError(f"{self.mat_path}: no dataset {key!r}; found {sorted(f.keys())}")
            images, depths = f["images"], f[self.depth_key]
            if (
                images.ndim != 4
                or images.shape[1] != 3
                or depths.ndim != 3
                or images.shape[0] != depths.shape[0]
            ):
                raise ValueError(
                    f"{self.mat_path}: expected images (N, 3, W, H) and {self.depth_key} (N, W, H) as "
                    f"MATLAB v7.3 stores them, got {images.shape} and {depths.shape}"
                )
            if images.shape[2:] != depths.shape[1:]:
                raise ValueError(
                    f"{self.mat_path}: images are {images.shape[2]}x{images.shape[3]} (WxH) but "
                    f"{self.depth_key} are {depths.shape[1]}x{depths.shape[2]}; they must match"
                )
            n = images.shape[0]
        frames = self._split_frames(split)
        bad = [k for k in frames if not 1 <= k <= n]
        if bad:
            raise ValueError(
                f"{self.listed}: frame numbers {bad[:5]} outside 1..{n} (1-based, as MATLAB numbers them)"
            )
        return [k - 1 for k in frames]  # 0-based rows of the HDF5 datasets

    def _split_frames(self, split: str) -> list[int]:
        spec = self.split_file
        if isinstance(spec, dict) or (spec is not None and not isinstance(spec, (str, Path))):
            spec = dict(spec)
            if split not in spec:
                raise ValueError(f"NYUv2Mat: split_file has no entry for split {split!r}; got {sorted(spec)}")
            path = _resolve(self.root, spec[split])
            if not path.is_file():
                raise missing(path, f"NYUv2 {split} index list")
            self.listed = path
            tokens = re.split(r"[\s,]+", path.read_text().strip())
            try:
                frames = [int(t) for t in tokens if t]
            except ValueError:
                raise ValueError(
                    f"{path}: expected 1-based frame numbers (integers), got {tokens[:5]}..."
                ) from None
        else:
            path = _resolve(self.root, spec if spec is not None else "splits.mat")
            if not path.is_file():
                raise missing(path, "NYUv2 split file splits.mat (trainNdxs/testNdxs)")
            if path.suffix.lower() != ".mat":
                raise ValueError(
                    f"{path}: a text list holds one split; give split_file as {{train: <txt>, val: <txt>}} "
                    "or a .mat with trainNdxs/testNdxs"
                )
            self.listed = path
            frames = self._read_split_mat(path, self.split_keys[split])
        if len(set(frames)) != len(frames):
            raise ValueError(f"{path}: frame numbers repeat; each frame must be listed once")
        return frames

    @staticmethod
    def _read_split_mat(path: Path, key: str) -> list[int]:
        if h5py.is_hdf5(path):  # a v7.3 re-save
            with h5py.File(path, "r") as f:
                if key not in f:
                    raise ValueError(f"{path}: no {key!r}; found {sorted(f.keys())}")
                values = np.asarray(f[key])
        else:
            import scipy.io  # the official splits.mat is MATLAB v5, which h5py cannot read

            try:
                content = scipy.io.loadmat(path)
            except (ValueError, OSError, TypeError) as exc:
                raise ValueError(
                    f"{path}: unreadable .mat split file ({type(exc).__name__}: {exc})"
                ) from None
            if key not in content:
                raise ValueError(
                    f"{path}: no {key!r}; found {sorted(k for k in content if not k.startswith('__'))}"
                )
            values = np.asarray(content[key])
        flat = values.reshape(-1)
        if not np.all(np.isfinite(flat)) or not np.all(flat == np.round(flat)):
            raise ValueError(f"{path}: {key} must hold integer frame numbers")
        return [int(v) for v in flat]

    def read(self, i):
        row = self.files[i]
        f = self._file()
        name = f"{self.mat_path}[frame {row + 1}]"
        rgb = np.ascontiguousarray(f["images"][row].transpose(2, 1, 0))  # (3, W, H) -> (H, W, 3)
        depth = np.asarray(f[self.depth_key][row], np.float32).T / np.float32(
            self.depth_scale
        )  # (W, H) -> (H, W)
        return rgb, np.ascontiguousarray(depth), name, name


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
            for path in sorted(
                p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in suffixes
            ):
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


__all__ = ["DepthDataset", "DepthValueWarning", "FolderDepth", "KITTIDepth", "NYUv2Folder", "NYUv2Mat"]
