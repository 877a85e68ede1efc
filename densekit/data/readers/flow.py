"""Optical-flow readers: the ``FlowDataset`` base and ``FolderFlow`` (your own data); the benchmark layouts
(FlyingChairs, FlyingThings3D, MPI-Sintel, KITTI 2015) are in ``densekit.data.readers.flow_benchmarks``.

Each yields schema samples: ``image``, ``image2`` float32 (3, H, W) in [0, 1] (frame 1 and frame 2),
``flow`` float32 (2, H, W) in pixels (u right, v down, from frame 1 to frame 2), ``valid`` bool (H, W);
and, where the dataset has occlusion ground truth (Sintel, KITTI 2015), the extra key ``noc`` bool (H, W):
True where the pixel is not occluded in frame 2 (``densekit.metrics.flow_metrics(..., noc=...)`` splits
the scores by it).

A pixel is valid when its ground truth exists (KITTI's valid channel, Sintel's ``invalid`` masks), is
finite, and has |u| and |v| below ``max_flow`` (1000 px by default: RAFT's rule against the few absurd
vectors in FlyingThings3D; null keeps everything below the 1e9 "unknown" marker).

Arguments shared by every reader (``FlowDataset``):
  split       "train" or "val" (see each reader for what they map to)
  root        the dataset folder (datasets/README.md); None = ``default_root``
  augment     train-only random ops, ``densekit.data.transforms.flow`` keys; ignored for other splits
  targets     what the task asks for: must include "flow" (these readers provide nothing else)
  skip_bad    replace unreadable/inconsistent samples by the next good one (counted, warned), not raise
  length      samples per epoch: fewer than the split caps it, more repeats it; None = the split
  max_flow    |u| or |v| at or above this is invalid (None: no cap)

Listing happens at construction (directory listings only); contents are checked when a sample loads:
readable frames of one size, a flow file of that size (truncated ``.flo``, a KITTI PNG that is not 16-bit
3-channel, ... are a ``BadSampleError`` naming the file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ...io.flow import FLOW_SUFFIXES, read_flow
from ..registry import DATASETS
from ..transforms.flow import apply_flow_augment, build_flow_augment
from .base import BadSampleError, ReaderDataset, missing, read_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class FlowFiles:
    """The files of one sample: the frame pair, its flow, and optional per-pixel masks."""

    image1: Path
    image2: Path
    flow: Path
    invalid: Path | None = None  # Sintel: white = no ground truth
    occlusion: Path | None = None  # Sintel: white = occluded in frame 2
    flow_noc: Path | None = None  # KITTI: the non-occluded flow file (its valid pixels are the noc mask)


def absent_files(paths: list[Path], source: Path | str) -> None:
    """One error for every listed file that does not exist (a half-extracted dataset must not shrink
    silently)."""
    if paths:
        more = f" ... and {len(paths) - 5} more" if len(paths) > 5 else ""
        shown = [str(p) for p in paths[:5]]
        raise ValueError(f"{source} lists {len(paths)} file(s) that do not exist: {shown}{more}")


class FlowDataset(ReaderDataset):
    """Base of the flow readers. Subclasses set ``splits``, ``default_root``, ``sparse`` and implement
    ``_samples(split) -> list[FlowFiles]`` (setting ``self.listed`` to what they read)."""

    sparse = False  # KITTI-style ground truth: augmentation must not interpolate it
    required = ("image", "image2", "flow", "valid")

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        augment: dict | None = None,
        targets: tuple[str, ...] = ("flow",),
        skip_bad: bool = False,
        length: int | None = None,
        max_flow: float | None = 1000.0,
    ):
        if max_flow is not None and (
            isinstance(max_flow, bool) or not isinstance(max_flow, (int, float)) or max_flow <= 0
        ):
            raise ValueError(
                f"{type(self).__name__}: max_flow must be a positive number of pixels or null, got {max_flow!r}"
            )
        self.max_flow = max_flow
        super().__init__(split, root, augment, targets, skip_bad, length)
        if self.augment is not None:
            self.augment.sparse = self.sparse  # FolderFlow learns whether its flow is sparse from the listing

    def check_targets(self, targets):
        if "flow" not in targets or any(t != "flow" for t in targets):
            raise ValueError(
                f"{type(self).__name__} provides only the 'flow' target (with image2/valid); "
                f"the task asked for {list(targets)}"
            )

    def make_augment(self, augment, targets):
        # the flow-aware augmenter: vectors move with the pixels; other splits are not augmented at all
        train = build_flow_augment(augment, sparse=self.sparse, targets=targets)
        return train if self.is_train else None

    def apply(self, sample):
        return apply_flow_augment(self.augment, sample)

    # -- loading -------------------------------------------------------------------------------------
    @staticmethod
    def read_image(path: Path) -> np.ndarray:
        """An RGB frame as uint8 (H, W, 3); unreadable files are a ``BadSampleError`` naming the file."""
        return read_rgb(path, "frame")

    @staticmethod
    def read_binary(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
        """A single-channel mask PNG (0 = False, anything else = True) of the frames' size."""
        try:
            with Image.open(path) as img:
                img.load()
                if img.mode not in ("1", "L", "P", "I", "I;16"):
                    raise BadSampleError(f"{path}: expected a single-channel {what} mask, got mode {img.mode}")
                arr = np.asarray(img)
        except (OSError, SyntaxError, ValueError) as exc:
            if isinstance(exc, BadSampleError):
                raise
            raise BadSampleError(f"{path}: unreadable {what} mask ({type(exc).__name__}: {exc})") from None
        if arr.shape != shape:
            raise BadSampleError(
                f"{path}: {what} mask is {arr.shape[1]}x{arr.shape[0]} (WxH), frames are {shape[1]}x{shape[0]}"
            )
        return arr > 0

    def read_flow(self, path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        try:
            flow, valid = read_flow(path)
        except ValueError as exc:  # the io message already names the file and what was expected
            raise BadSampleError(str(exc)) from None
        if flow.shape[:2] != shape:
            raise BadSampleError(
                f"{path}: flow is {flow.shape[1]}x{flow.shape[0]} (WxH) but its frames are {shape[1]}x{shape[0]}"
            )
        if self.max_flow is not None:
            valid &= (np.abs(flow) < self.max_flow).all(axis=-1)
            flow[~valid] = 0.0
        return flow, valid

    def load(self, i: int) -> dict[str, np.ndarray]:
        """Sample ``i`` as numpy (frames uint8 HWC, flow (H, W, 2), masks (H, W)), checked."""
        f = self.files[i]
        image1, image2 = self.read_image(f.image1), self.read_image(f.image2)
        if image1.shape != image2.shape:
            raise BadSampleError(
                f"{f.image2}: frame 2 is {image2.shape[1]}x{image2.shape[0]} (WxH) but frame 1 {f.image1} is "
                f"{image1.shape[1]}x{image1.shape[0]}; a pair must have one size"
            )
        shape = image1.shape[:2]
        flow, valid = self.read_flow(f.flow, shape)
        sample = {"image": image1, "image2": image2, "flow": flow, "valid": valid}
        if f.invalid is not None:
            sample["valid"] = valid & ~self.read_binary(f.invalid, shape, "invalid")
        if f.occlusion is not None:
            sample["noc"] = ~self.read_binary(f.occlusion, shape, "occlusion")
        if f.flow_noc is not None:
            sample["noc"] = self.read_flow(f.flow_noc, shape)[1]
        return sample


@DATASETS.register("flow_folder", tasks=("flow",), dims=2)
class FolderFlow(FlowDataset):
    """Your own flow data, in one of two layouts (the list file wins when both exist):

      * a list file ``root/<split>.txt``: one sample per line, ``img1 img2 flow`` (paths relative to
        ``root``, or absolute; whitespace-separated, so no spaces in names; ``#`` starts a comment);
      * a folder ``root/<split>/`` of ``<stem>_img1.<ext>``, ``<stem>_img2.<ext>`` and
        ``<stem>_flow.<flo|png|pfm>``.

    Flow files are read by extension (``densekit.io.read_flow``: ``.flo``, KITTI 16-bit ``.png``, ``.pfm``).
    ``sparse`` (None = True when every flow file is a KITTI ``.png``) stops augmentation from
    interpolating it.
    """

    default_root = "datasets/flow_folder"
    splits = ()  # any split the user made

    def __init__(self, split: str = "train", root: str | Path | None = None, sparse: bool | None = None, **kwargs):
        self._sparse_arg = sparse
        super().__init__(split=split, root=root, **kwargs)

    def _samples(self, split):
        list_file = self.root / f"{split}.txt"
        if list_file.is_file():
            files = self._from_list(list_file)
        else:
            files = self._from_folder(self.root / split, list_file)
        sparse = self._sparse_arg
        self.sparse = all(f.flow.suffix.lower() == ".png" for f in files) if sparse is None else bool(sparse)
        return files

    def _from_list(self, list_file: Path) -> list[FlowFiles]:
        self.listed = list_file
        files = []
        for k, line in enumerate(list_file.read_text().splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 3:
                raise ValueError(
                    f"{list_file}:{k}: expected 'img1 img2 flow' (3 paths), got {len(parts)} field(s): {line!r}"
                )
            p1, p2, pf = (Path(p) if Path(p).is_absolute() else self.root / p for p in parts)
            if pf.suffix.lower() not in FLOW_SUFFIXES:
                raise ValueError(f"{list_file}:{k}: flow file {pf.name} must end in one of {list(FLOW_SUFFIXES)}")
            files.append(FlowFiles(p1, p2, pf))
        absent_files([p for f in files for p in (f.image1, f.image2, f.flow) if not p.is_file()], list_file)
        return files

    def _from_folder(self, folder: Path, list_file: Path) -> list[FlowFiles]:
        if not folder.is_dir():
            what = f"FolderFlow split (neither the list {list_file.name} nor the folder {folder.name}/)"
            raise missing(folder, what)
        self.listed = folder
        roles: dict[str, dict[str, Path]] = {"img1": {}, "img2": {}, "flow": {}}
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            m = re.fullmatch(r"(.+)_(img1|img2|flow)", path.stem)
            suffixes = FLOW_SUFFIXES if m and m.group(2) == "flow" else IMAGE_SUFFIXES
            if m is None or path.suffix.lower() not in suffixes:
                continue
            stem, role = m.group(1), m.group(2)
            if stem in roles[role]:
                raise ValueError(f"{folder}: two {role} files for {stem!r}: {roles[role][stem].name}, {path.name}")
            roles[role][stem] = path
        stems = set().union(*roles.values())
        incomplete = sorted(s for s in stems if any(s not in r for r in roles.values()))
        if incomplete:
            lacks = {s: [role for role, r in roles.items() if s not in r] for s in incomplete[:5]}
            raise ValueError(f"{folder}: {len(incomplete)} sample(s) lack files (stem: missing roles): {lacks}")
        return [FlowFiles(roles["img1"][s], roles["img2"][s], roles["flow"][s]) for s in sorted(stems)]


__all__ = ["FlowDataset", "FlowFiles", "FolderFlow", "absent_files"]
