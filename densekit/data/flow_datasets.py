"""Readers for the optical-flow datasets, each in its official on-disk layout (datasets/README.md).

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
  augment     train-only random ops, ``densekit.data.flow_transforms`` keys; ignored for other splits
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
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..io.flow import FLOW_SUFFIXES, read_flow
from .datasets import to_tensors
from .flow_transforms import apply_flow_augment, build_flow_augment
from .schema import check_sample
from .seg_base import BadSampleError, list_files, load_or_skip, missing

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


def _absent(paths: list[Path], source: Path | str) -> None:
    """One error for every listed file that does not exist (a half-extracted dataset must not shrink
    silently)."""
    if paths:
        more = f" ... and {len(paths) - 5} more" if len(paths) > 5 else ""
        shown = [str(p) for p in paths[:5]]
        raise ValueError(f"{source} lists {len(paths)} file(s) that do not exist: {shown}{more}")


class FlowDataset(Dataset):
    """Base of the flow readers. Subclasses set ``splits``, ``default_root``, ``sparse`` and implement
    ``_samples(split) -> list[FlowFiles]`` (setting ``self.listed`` to what they read)."""

    splits: tuple[str, ...] = ("train", "val")
    default_root = "datasets"
    sparse = False  # KITTI-style ground truth: augmentation must not interpolate it

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
        name = type(self).__name__
        if self.splits and split not in self.splits:
            raise ValueError(f"{name}: split must be one of {list(self.splits)}, got {split!r}")
        targets = tuple(targets)
        if "flow" not in targets or any(t != "flow" for t in targets):
            raise ValueError(
                f"{name} provides only the 'flow' target (with image2/valid); "
                f"the task asked for {list(targets)}"
            )
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise ValueError(f"{name}: length must be a positive int or null, got {length!r}")
        if max_flow is not None and (
            isinstance(max_flow, bool) or not isinstance(max_flow, (int, float)) or max_flow <= 0
        ):
            raise ValueError(
                f"{name}: max_flow must be a positive number of pixels or null, got {max_flow!r}"
            )
        self.split, self.skip_bad, self.max_flow = split, bool(skip_bad), max_flow
        self.root = Path(root if root is not None else self.default_root).expanduser()
        if not self.root.is_dir():
            raise missing(self.root, f"{name} root")
        # the config is checked before any file is touched: a typo should not wait for a directory listing
        train = build_flow_augment(augment, sparse=self.sparse, targets=targets)
        self.augment = train if split == "train" else None
        self.listed = self.root
        self.files = self._samples(split)
        if self.augment is not None:
            self.augment.sparse = self.sparse  # FolderFlow learns whether its flow is sparse from the listing
        if not self.files:
            raise ValueError(f"{name}: split {split!r} is empty: no samples in {Path(self.listed).resolve()}")
        self.length = len(self.files) if length is None else int(length)
        self.skipped: dict[int, str] = {}  # index into files -> why it was skipped (this process)

    def _samples(self, split: str) -> list[FlowFiles]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.length

    # -- loading -------------------------------------------------------------------------------------
    @staticmethod
    def read_image(path: Path) -> np.ndarray:
        """An RGB frame as uint8 (H, W, 3); unreadable files are a ``BadSampleError`` naming the file."""
        try:
            with Image.open(path) as img:
                img.load()  # decode now: a truncated file fails here
                return np.asarray(img.convert("RGB"))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise BadSampleError(f"{path}: unreadable frame ({type(exc).__name__}: {exc})") from None

    @staticmethod
    def read_binary(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
        """A single-channel mask PNG (0 = False, anything else = True) of the frames' size."""
        try:
            with Image.open(path) as img:
                img.load()
                if img.mode not in ("1", "L", "P", "I", "I;16"):
                    raise BadSampleError(
                        f"{path}: expected a single-channel {what} mask, got mode {img.mode}"
                    )
                arr = np.asarray(img)
        except (OSError, SyntaxError, ValueError) as exc:
            if isinstance(exc, BadSampleError):
                raise
            raise BadSampleError(f"{path}: unreadable {what} mask ({type(exc).__name__}: {exc})") from None
        if arr.shape != shape:
            raise BadSampleError(
                f"{path}: {what} mask is {arr.shape[1]}x{arr.shape[0]} (WxH), "
                f"frames are {shape[1]}x{shape[0]}"
            )
        return arr > 0

    def read_flow(self, path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        try:
            flow, valid = read_flow(path)
        except ValueError as exc:  # the io message already names the file and what was expected
            raise BadSampleError(str(exc)) from None
        if flow.shape[:2] != shape:
            raise BadSampleError(
                f"{path}: flow is {flow.shape[1]}x{flow.shape[0]} (WxH) but its frames are "
                f"{shape[1]}x{shape[0]}"
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

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = load_or_skip(self, index, len(self.files))
        sample = apply_flow_augment(self.augment, sample)
        out = to_tensors(sample)
        if "noc" in sample:
            out["noc"] = torch.from_numpy(np.ascontiguousarray(sample["noc"])).bool()
        return check_sample(out, required=("image", "image2", "flow", "valid"))


def _pass_arg(kwargs: dict) -> str:
    """The rendering pass, from the config key ``pass`` (a Python keyword, so it arrives in **kwargs)."""
    value = kwargs.pop("pass", "clean")
    if value not in ("clean", "final"):
        raise ValueError(f"pass must be 'clean' or 'final', got {value!r}")
    return value


def _holdout(ids: list[str], val: list | None, what: str, source: Path) -> set[str] | None:
    if val is None:
        return None
    val = {str(v) for v in val}
    unknown = sorted(val - set(ids))
    if unknown:
        raise ValueError(f"{what} {unknown[:5]} not found in {source}; available: {sorted(ids)[:8]} ...")
    return val


class FlyingChairs(FlowDataset):
    """FlyingChairs: ``root/data/<n>_img1.ppm``, ``<n>_img2.ppm``, ``<n>_flow.flo`` (n = 00001 ... 22872) and
    the official ``root/FlyingChairs_train_val.txt``: line k is sample k (in file order), 1 = train,
    2 = val."""

    default_root = "datasets/FlyingChairs_release"
    split_file = "FlyingChairs_train_val.txt"

    def _samples(self, split):
        data = self.root / "data"
        flows = list_files(data, ("_flow.flo",), "FlyingChairs data folder")
        self.listed = data
        list_file = self.root / self.split_file
        if not list_file.is_file():
            raise missing(list_file, "FlyingChairs split list FlyingChairs_train_val.txt")
        marks = list_file.read_text().split()
        if len(marks) != len(flows) or set(marks) - {"1", "2"}:
            raise ValueError(
                f"{list_file}: expected one 1 (train) or 2 (val) per sample, {len(flows)} in all (one per "
                f"*_flow.flo in {data}); got {len(marks)} entries with values {sorted(set(marks))[:5]}"
            )
        want = "1" if split == "train" else "2"
        files = []
        for flow, mark in zip(flows, marks):
            if mark == want:
                stem = flow.name[: -len("_flow.flo")]
                files.append(FlowFiles(data / f"{stem}_img1.ppm", data / f"{stem}_img2.ppm", flow))
        _absent([p for f in files for p in (f.image1, f.image2) if not p.is_file()], data)
        return files


class FlyingThings3D(FlowDataset):
    """FlyingThings3D (Scene Flow "DispNet/FlowNet2.0 dataset subsets" full release):
    ``root/frames_{cleanpass,finalpass}/{TRAIN,TEST}/{A,B,C}/<seq>/{left,right}/<nnnn>.png`` and
    ``root/optical_flow/{TRAIN,TEST}/{A,B,C}/<seq>/{into_future,into_past}/{left,right}/
    OpticalFlowInto{Future,Past}_<nnnn>_{L,R}.pfm``. ``train`` = TRAIN, ``val`` = TEST.

    Pairs: into_future gives (frame n, frame n+1) with ``IntoFuture_n``; into_past gives (frame n+1, frame n)
    with ``IntoPast_n+1`` (both, and both cameras, by default, as RAFT trains). ``max_samples`` keeps that
    many pairs evenly spread over the (sorted) list, so every sequence stays represented.
    """

    default_root = "datasets/FlyingThings3D"

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        cameras: tuple[str, ...] = ("left", "right"),
        directions: tuple[str, ...] = ("into_future", "into_past"),
        max_samples: int | None = None,
        **kwargs,
    ):
        self.pass_name = _pass_arg(kwargs)
        self.cameras, self.directions = tuple(cameras), tuple(directions)
        if not self.cameras or set(self.cameras) - {"left", "right"}:
            raise ValueError(f"cameras must be a non-empty subset of ['left', 'right'], got {list(cameras)}")
        if not self.directions or set(self.directions) - {"into_future", "into_past"}:
            raise ValueError(
                "directions must be a non-empty subset of ['into_future', 'into_past'], "
                f"got {list(directions)}"
            )
        if max_samples is not None and (
            isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
        ):
            raise ValueError(f"max_samples must be a positive int or null, got {max_samples!r}")
        self.max_samples = max_samples
        super().__init__(split=split, root=root, **kwargs)

    def _samples(self, split):
        part = "TRAIN" if split == "train" else "TEST"
        frames_root = self.root / f"frames_{self.pass_name}pass" / part
        flow_root = self.root / "optical_flow" / part
        for path, what in (
            (frames_root, f"FlyingThings3D frames_{self.pass_name}pass"),
            (flow_root, "FlyingThings3D optical_flow"),
        ):
            if not path.is_dir():
                raise missing(path, what)
        self.listed = frames_root
        files = []
        for letter in sorted(p for p in frames_root.iterdir() if p.is_dir()):
            for seq in sorted(p for p in letter.iterdir() if p.is_dir()):
                for cam in self.cameras:
                    listed = list_files(seq / cam, (".png", ".webp"), "FlyingThings3D camera folder")
                    frames = {int(p.stem): p for p in listed if p.stem.isdigit()}
                    c = cam[0].upper()
                    for n in sorted(frames):
                        if n + 1 not in frames:
                            continue
                        flow_dir = flow_root / letter.name / seq.name
                        if "into_future" in self.directions:
                            flow = flow_dir / "into_future" / cam / f"OpticalFlowIntoFuture_{n:04d}_{c}.pfm"
                            files.append(FlowFiles(frames[n], frames[n + 1], flow))
                        if "into_past" in self.directions:
                            flow = flow_dir / "into_past" / cam / f"OpticalFlowIntoPast_{n + 1:04d}_{c}.pfm"
                            files.append(FlowFiles(frames[n + 1], frames[n], flow))
        absent = [f.flow for f in files if not f.flow.is_file()]
        _absent(absent, f"the frames in {frames_root} (their flow under {flow_root})")
        if self.max_samples is not None and len(files) > self.max_samples:
            keep = np.unique(np.linspace(0, len(files) - 1, self.max_samples).round().astype(int))
            files = [files[k] for k in keep]
        return files


class MPISintel(FlowDataset):
    """MPI-Sintel (MPI-Sintel-complete): ``root/training/{clean,final}/<scene>/frame_<nnnn>.png``,
    ``training/flow/<scene>/frame_<nnnn>.flo`` (frame n -> n+1), ``training/invalid/<scene>/frame_<nnnn>.png``
    (white = no ground truth: excluded from ``valid``) and ``training/occlusions/<scene>/frame_<nnnn>.png``
    (white = occluded: ``noc`` is its complement). Only ``training`` has ground truth: ``train`` and ``val``
    both read all of it (the C+T -> Sintel generalization protocol), unless ``val_scenes`` holds scenes out:
    then ``val`` is those scenes and ``train`` the rest."""

    default_root = "datasets/Sintel"

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        val_scenes: list[str] | None = None,
        **kwargs,
    ):
        self.pass_name = _pass_arg(kwargs)
        self.val_scenes = None if val_scenes is None else list(val_scenes)
        super().__init__(split=split, root=root, **kwargs)

    def _samples(self, split):
        base = self.root / "training"
        frames_root, flow_root = base / self.pass_name, base / "flow"
        for path in (frames_root, flow_root, base / "invalid", base / "occlusions"):
            if not path.is_dir():
                raise missing(path, f"MPI-Sintel training/{path.name} folder")
        self.listed = flow_root
        scenes = sorted(p.name for p in flow_root.iterdir() if p.is_dir())
        held = _holdout(scenes, self.val_scenes, "val_scenes", flow_root)
        if held is not None:
            scenes = [s for s in scenes if (s in held) == (split == "val")]
        files = []
        for scene in scenes:
            for flow in list_files(flow_root / scene, (".flo",), "MPI-Sintel flow scene folder"):
                m = re.fullmatch(r"frame_(\d+)\.flo", flow.name)
                if m is None:
                    continue
                n = int(m.group(1))
                width = len(m.group(1))
                files.append(FlowFiles(
                    frames_root / scene / f"frame_{n:0{width}d}.png",
                    frames_root / scene / f"frame_{n + 1:0{width}d}.png",
                    flow,
                    invalid=base / "invalid" / scene / f"frame_{n:0{width}d}.png",
                    occlusion=base / "occlusions" / scene / f"frame_{n:0{width}d}.png",
                ))
        needed = [p for f in files for p in (f.image1, f.image2, f.invalid, f.occlusion)]
        _absent([p for p in needed if not p.is_file()], flow_root)
        return files


class KITTI2015(FlowDataset):
    """KITTI 2015 flow: ``root/training/image_2/<nnnnnn>_10.png`` (frame 1) and ``_11.png`` (frame 2),
    ``training/flow_occ/<nnnnnn>_10.png`` (all pixels) and ``training/flow_noc/<nnnnnn>_10.png``
    (non-occluded only), 16-bit KITTI PNGs. ``flow_gt: occ`` (default, the benchmark's "all") or ``noc``
    picks the ground truth; ``noc`` (the valid pixels of flow_noc) is always yielded. Sparse: augmentation
    never interpolates it. Only ``training`` has ground truth: ``train`` and ``val`` both read all 200 pairs
    unless ``val_ids`` (frame numbers, e.g. [0, 5]) holds some out: then ``val`` is those, ``train`` the
    rest."""

    default_root = "datasets/KITTI2015"
    sparse = True

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        flow_gt: str = "occ",
        val_ids: list[int] | None = None,
        **kwargs,
    ):
        if flow_gt not in ("occ", "noc"):
            raise ValueError(f"flow_gt must be 'occ' (all pixels) or 'noc' (non-occluded), got {flow_gt!r}")
        self.flow_gt = flow_gt
        self.val_ids = None if val_ids is None else [f"{int(v):06d}" for v in val_ids]
        super().__init__(split=split, root=root, **kwargs)

    def _samples(self, split):
        base = self.root / "training"
        gt_dir = base / f"flow_{self.flow_gt}"
        flows = list_files(gt_dir, ("_10.png",), f"KITTI 2015 training/flow_{self.flow_gt} folder")
        for path in (base / "image_2", base / "flow_noc"):
            if not path.is_dir():
                raise missing(path, f"KITTI 2015 training/{path.name} folder")
        self.listed = gt_dir
        ids = [p.name[: -len("_10.png")] for p in flows]
        held = _holdout(ids, self.val_ids, "val_ids", gt_dir)
        files = []
        for frame, flow in zip(ids, flows):
            if held is not None and (frame in held) != (split == "val"):
                continue
            files.append(FlowFiles(
                base / "image_2" / f"{frame}_10.png",
                base / "image_2" / f"{frame}_11.png",
                flow,
                flow_noc=base / "flow_noc" / f"{frame}_10.png",
            ))
        _absent([p for f in files for p in (f.image1, f.image2, f.flow_noc) if not p.is_file()], gt_dir)
        return files


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

    def __init__(
        self, split: str = "train", root: str | Path | None = None, sparse: bool | None = None, **kwargs
    ):
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
                    f"{list_file}:{k}: expected 'img1 img2 flow' (3 paths), "
                    f"got {len(parts)} field(s): {line!r}"
                )
            p1, p2, pf = (Path(p) if Path(p).is_absolute() else self.root / p for p in parts)
            if pf.suffix.lower() not in FLOW_SUFFIXES:
                raise ValueError(
                    f"{list_file}:{k}: flow file {pf.name} must end in one of {list(FLOW_SUFFIXES)}"
                )
            files.append(FlowFiles(p1, p2, pf))
        _absent([p for f in files for p in (f.image1, f.image2, f.flow) if not p.is_file()], list_file)
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
                raise ValueError(
                    f"{folder}: two {role} files for {stem!r}: {roles[role][stem].name}, {path.name}"
                )
            roles[role][stem] = path
        stems = set().union(*roles.values())
        incomplete = sorted(s for s in stems if any(s not in r for r in roles.values()))
        if incomplete:
            lacks = {s: [role for role, r in roles.items() if s not in r] for s in incomplete[:5]}
            raise ValueError(
                f"{folder}: {len(incomplete)} sample(s) lack files (stem: missing roles): {lacks}"
            )
        return [FlowFiles(roles["img1"][s], roles["img2"][s], roles["flow"][s]) for s in sorted(stems)]


__all__ = [
    "FlowDataset", "FlowFiles", "FlyingChairs", "FlyingThings3D", "FolderFlow", "KITTI2015", "MPISintel",
]


class StereoMotorcycle(Dataset):
    """A real image pair with dense ground truth that ships with scikit-image (no download): the
    Middlebury 2014 "Motorcycle" stereo pair (Scharstein et al., GCPR 2014) at 500x741, left -> right.

    A rectified stereo pair is a flow pair with purely horizontal motion: a left-image pixel at x appears
    at x - d in the right image, so u = -disparity, v = 0 (checked by warping: the right image sampled
    at x - d matches the left image with 3x less error than at x + d). Disparities span 7-60 px (up to
    0.08 x width); about 7 % of pixels have no ground truth (occluded or unmeasured) and are invalid.
    Used to check that a model trained only on the embedded scenes transfers to real photographs.
    ``split`` is accepted for the common interface; every split is this one pair (``length`` repeats it).
    """

    def __init__(self, split: str = "val", targets: tuple[str, ...] = ("flow",), length: int = 1, augment=None):
        bad = [t for t in targets if t != "flow"]
        if bad:
            raise ValueError(f"StereoMotorcycle provides only the 'flow' target; the task asked for {list(targets)}")
        if augment:
            raise ValueError("StereoMotorcycle is an evaluation pair: augment must be empty")
        self.split, self.length = split, int(length)
        from skimage import data as skdata

        left, right, disp = skdata.stereo_motorcycle()
        valid = np.isfinite(disp)
        flow = np.zeros(disp.shape + (2,), np.float32)
        flow[..., 0] = np.where(valid, -disp, 0.0)  # (H, W, 2): u = -d, v = 0
        self.sample = {"image": left.astype(np.float32) / 255, "image2": right.astype(np.float32) / 255,
                       "flow": flow, "valid": valid}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        return check_sample(to_tensors(self.sample), required=("image", "image2", "flow", "valid"))
