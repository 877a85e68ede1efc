"""The labeled NYUv2 release (one MATLAB v7.3 file) as a depth reader: ``NYUv2Mat``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np

from ..registry import DATASETS
from .base import missing
from .depth import DepthDataset, resolve


@DATASETS.register("nyuv2_mat", tasks=("depth",), dims=2)
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
            raise ValueError(f"NYUv2Mat: depth_key must be 'depths' (in-painted) or 'rawDepths', got {depth_key!r}")
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
        self.mat_path = resolve(self.root, self.mat_file)
        if not self.mat_path.is_file():
            raise missing(self.mat_path, "NYUv2 labeled .mat file")
        if not h5py.is_hdf5(self.mat_path):
            raise ValueError(
                f"{self.mat_path}: not a MATLAB v7.3 (HDF5) file; nyu_depth_v2_labeled.mat is v7.3 (re-download it?)"
            )
        with h5py.File(self.mat_path, "r") as f:
            for key in ("images", self.depth_key):
                if key not in f:
                    raise ValueError(f"{self.mat_path}: no dataset {key!r}; found {sorted(f.keys())}")
            images, depths = f["images"], f[self.depth_key]
            if images.ndim != 4 or images.shape[1] != 3 or depths.ndim != 3 or images.shape[0] != depths.shape[0]:
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
            raise ValueError(f"{self.listed}: frame numbers {bad[:5]} outside 1..{n} (1-based, as MATLAB numbers them)")
        return [k - 1 for k in frames]  # 0-based rows of the HDF5 datasets

    def _split_frames(self, split: str) -> list[int]:
        spec = self.split_file
        if isinstance(spec, dict) or (spec is not None and not isinstance(spec, (str, Path))):
            spec = dict(spec)
            if split not in spec:
                raise ValueError(f"NYUv2Mat: split_file has no entry for split {split!r}; got {sorted(spec)}")
            path = resolve(self.root, spec[split])
            if not path.is_file():
                raise missing(path, f"NYUv2 {split} index list")
            self.listed = path
            tokens = re.split(r"[\s,]+", path.read_text().strip())
            try:
                frames = [int(t) for t in tokens if t]
            except ValueError:
                raise ValueError(f"{path}: expected 1-based frame numbers (integers), got {tokens[:5]}...") from None
        else:
            path = resolve(self.root, spec if spec is not None else "splits.mat")
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
                raise ValueError(f"{path}: unreadable .mat split file ({type(exc).__name__}: {exc})") from None
            if key not in content:
                raise ValueError(f"{path}: no {key!r}; found {sorted(k for k in content if not k.startswith('__'))}")
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
        depth = np.asarray(f[self.depth_key][row], np.float32).T / np.float32(self.depth_scale)  # (W, H) -> (H, W)
        return rgb, np.ascontiguousarray(depth), name, name


__all__ = ["NYUv2Mat"]
