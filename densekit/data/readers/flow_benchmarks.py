"""The optical-flow benchmarks, each in its official on-disk layout (datasets/README.md): FlyingChairs,
FlyingThings3D, MPI-Sintel and KITTI 2015. Shared arguments, valid pixels and the bad-sample policy:
``densekit.data.readers.flow``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..registry import DATASETS
from .base import list_files, missing
from .flow import FlowDataset, FlowFiles, absent_files


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


@DATASETS.register("chairs", tasks=("flow",), dims=2)
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
        absent_files([p for f in files for p in (f.image1, f.image2) if not p.is_file()], data)
        return files


@DATASETS.register("things", tasks=("flow",), dims=2)
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
                f"directions must be a non-empty subset of ['into_future', 'into_past'], got {list(directions)}"
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
        absent_files(absent, f"the frames in {frames_root} (their flow under {flow_root})")
        if self.max_samples is not None and len(files) > self.max_samples:
            keep = np.unique(np.linspace(0, len(files) - 1, self.max_samples).round().astype(int))
            files = [files[k] for k in keep]
        return files


@DATASETS.register("sintel", tasks=("flow",), dims=2)
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
                files.append(
                    FlowFiles(
                        frames_root / scene / f"frame_{n:0{width}d}.png",
                        frames_root / scene / f"frame_{n + 1:0{width}d}.png",
                        flow,
                        invalid=base / "invalid" / scene / f"frame_{n:0{width}d}.png",
                        occlusion=base / "occlusions" / scene / f"frame_{n:0{width}d}.png",
                    )
                )
        needed = [p for f in files for p in (f.image1, f.image2, f.invalid, f.occlusion)]
        absent_files([p for p in needed if not p.is_file()], flow_root)
        return files


@DATASETS.register("kitti15", tasks=("flow",), dims=2)
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
            files.append(
                FlowFiles(
                    base / "image_2" / f"{frame}_10.png",
                    base / "image_2" / f"{frame}_11.png",
                    flow,
                    flow_noc=base / "flow_noc" / f"{frame}_10.png",
                )
            )
        absent_files([p for f in files for p in (f.image1, f.image2, f.flow_noc) if not p.is_file()], gt_dir)
        return files


__all__ = ["FlyingChairs", "FlyingThings3D", "KITTI2015", "MPISintel"]
