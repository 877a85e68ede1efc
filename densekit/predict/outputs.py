"""The files ``scripts/predict.py`` writes, per task, into ``output=``:

  seg     <name>_labels.png   the class ids as a palette PNG (8-bit; 16-bit grey above 256 classes)
          <name>_overlay.png  the class colours blended over the image
  depth   <name>_depth.png    16-bit PNG of round(metres * depth_scale) (1000: millimetres; 0 = no value),
                              or <name>_depth.npy (float32 metres) with format=npy
          <name>_depth_color.png
  flow    <name>_flow.flo     Middlebury .flo (u, v pixels) of the pair (<name>, the next frame)
          <name>_flow.png     the flow on the Middlebury colour wheel
          <video>_flow.mp4    for a video input: the colour-coded flow as a video
  volume  <case>.nii.gz       the labels in the input's voxel grid, with its affine (nnU-Net's name)

``<name>`` is the input's file name without its suffix; when two inputs share one (a.png, a.jpg) their
suffix is kept in the name (a_png_labels.png, a_jpg_labels.png), so no output replaces another.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .. import viz
from ..io.depth import write_depth_png
from ..io.flow import write_flo
from ..io.nifti import write_nifti
from .sources import stem

# what each task writes for one input, as suffixes after <name>
SUFFIXES = {
    "seg": ("_labels.png", "_overlay.png"),
    "depth": ("_depth.png", "_depth_color.png"),
    "depth_npy": ("_depth.npy", "_depth_color.png"),
    "flow": ("_flow.flo", "_flow.png"),
    "volume": (".nii.gz",),
}


def unique_names(paths: list[Path]) -> dict[Path, str]:
    """input path -> the <name> its outputs start with (its stem, or stem_suffix where stems collide)."""
    stems = [stem(p) for p in paths]
    counts = {s: stems.count(s) for s in stems}
    names = {}
    for path, s in zip(paths, stems):
        names[path] = s if counts[s] == 1 else f"{s}_{path.name[len(s) :].lstrip('.').replace('.', '_')}"
    return names


def save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def write_seg(out: Path, name: str, image: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float):
    if num_classes <= 256:
        img = Image.fromarray(labels.astype(np.uint8), mode="P")
        img.putpalette(viz.palette(num_classes).reshape(-1).tolist())
    else:
        img = Image.fromarray(labels.astype(np.uint16))
    img.save(out / f"{name}_labels.png")
    save_png(out / f"{name}_overlay.png", viz.overlay(image, labels, num_classes, alpha))


def write_depth(out: Path, name: str, depth: np.ndarray, fmt: str, scale: float):
    if fmt == "npy":
        np.save(out / f"{name}_depth.npy", depth.astype(np.float32))
    else:
        write_depth_png(out / f"{name}_depth.png", depth, scale)
    save_png(out / f"{name}_depth_color.png", viz.colorize_depth(depth))


def write_flow(out: Path, name: str, flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    write_flo(out / f"{name}_flow.flo", flow)
    color = viz.flow_to_color(flow, max_flow=max_flow)
    save_png(out / f"{name}_flow.png", color)
    return color


def write_volume(out: Path, name: str, labels_dhw: np.ndarray, affine: np.ndarray):
    from ..data.readers.volume import dhw_to_nifti

    write_nifti(
        out / f"{name}.nii.gz",
        dhw_to_nifti(labels_dhw).astype(np.uint8 if labels_dhw.max() < 256 else np.int32),
        affine,
    )


class FlowVideo:
    """The colour-coded flow of a video input as an mp4 (OpenCV's mp4v codec), opened at the first frame."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps, self.writer = path, fps, None

    def add(self, color: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            h, w = color.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened():
                raise OSError(f"{self.path}: OpenCV could not open an mp4 writer")
        self.writer.write(np.ascontiguousarray(color[..., ::-1]))  # RGB -> OpenCV's BGR

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
