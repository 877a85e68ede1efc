"""How the fingerprint reads one item of each kind of dataset: the raw files of the segmentation, depth,
flow and NIfTI readers (dtypes and values as stored), or the loaded samples of any other dataset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from ...io.flow import read_flow
from ..readers.depth import DepthDataset
from ..readers.flow import FlowDataset
from ..readers.seg import SegDataset
from ..readers.volume import VolumeFiles, nifti_to_dhw
from ..transforms.volume import VolumeSampling
from .collect import BadFile, Collector, read_image_raw, read_mask_raw, read_nifti_raw
from .listing import RawFolder


def source_kind(dataset) -> str:
    """How ``fingerprint`` reads ``dataset``: seg / volume / depth / flow files, or samples."""
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


def _read_seg(ds, i: int, col: Collector, num_classes) -> None:
    image_path, mask_path = ds.files[i]
    image, mode, dtype = read_image_raw(Path(image_path))
    col.add_image(np.moveaxis(image, -1, 0), mode, dtype)  # (H, W, C) -> (C, H, W)
    reader = getattr(ds, "read_mask", None)
    if reader is not None and not isinstance(ds, RawFolder):
        try:
            mask = np.asarray(reader(Path(mask_path)))
        except ValueError as exc:  # the reader's BadSampleError names the file
            raise BadFile(mask_path, str(exc)) from None
    else:
        mask = read_mask_raw(Path(mask_path))
    col.mask_dtypes[str(mask.dtype)] += 1
    if mask.shape != image.shape[:2]:
        raise BadFile(
            mask_path,
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
            f"{image_path} is {image.shape[1]}x{image.shape[0]}",
        )
    col.add_labels(mask, getattr(ds, "lut", None), num_classes, mask_path)


def _read_volume(ds, i: int, col: Collector, num_classes) -> None:
    case, image_paths, label_path = ds.cases[i]
    arrays, ref = [], None
    for path in list(image_paths) + [label_path]:
        array, affine, dtype, zooms = read_nifti_raw(Path(path))
        if ref is None:
            ref = (Path(path), array.shape, affine, zooms)
        elif array.shape != ref[1]:
            raise BadFile(
                path, f"case {case}: {Path(path).name} has shape {array.shape} but {ref[0].name} has {ref[1]}"
            )
        elif not np.allclose(affine, ref[2], rtol=0, atol=getattr(ds, "affine_atol", 1e-3)):
            raise BadFile(path, f"case {case}: {Path(path).name} has a different affine than {ref[0].name}")
        arrays.append((array, dtype))
    label, label_dtype = arrays.pop()
    image = nifti_to_dhw(np.stack([a.astype(np.float32) for a, _ in arrays]))  # (C, i, j, k) -> (C, D, H, W)
    col.add_image(image, None, Counter(d for _, d in arrays).most_common(1)[0][0])
    col.spacings.append(tuple(reversed(ref[3])))  # (i, j, k) mm -> (D, H, W) = (k, j, i)
    col.orientations["".join(nib.aff2axcodes(ref[2]))] += 1
    col.mask_dtypes[label_dtype] += 1
    if not np.isfinite(image).all():
        raise BadFile(image_paths[0], f"case {case}: a channel holds NaN or infinite values")
    ids = col.add_labels(nifti_to_dhw(label), getattr(ds, "lut", None), num_classes, label_path)
    col.add_volume_masks(image, ids)


def _read_depth(ds, i: int, col: Collector, num_classes) -> None:
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
            raise BadFile(depth_path, f"{depth_path}: unreadable depth map ({type(exc).__name__}: {exc})") from None
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
        raise BadFile(where, f"{where}: depth is {depth.shape} but its image is {shape}")
    col.add_target("depth", depth, np.isfinite(depth) & (depth > 0))


def _read_flow(ds, i: int, col: Collector, num_classes) -> None:
    f = ds.files[i]
    image, mode, dtype = read_image_raw(Path(f.image1))
    col.add_image(np.moveaxis(image, -1, 0), mode, dtype)  # (H, W, C) -> (C, H, W)
    image2, _, _ = read_image_raw(Path(f.image2))
    if image2.shape[:2] != image.shape[:2]:
        raise BadFile(
            f.image2,
            f"{f.image2}: frame 2 is {image2.shape[1]}x{image2.shape[0]} (WxH) but frame 1 "
            f"is {image.shape[1]}x{image.shape[0]}",
        )
    try:
        flow, valid = read_flow(f.flow)
    except (ValueError, OSError) as exc:
        raise BadFile(f.flow, str(exc)) from None
    col.mask_dtypes[Path(f.flow).suffix.lower()] += 1
    if flow.shape[:2] != image.shape[:2]:
        raise BadFile(
            f.flow,
            f"{f.flow}: flow is {flow.shape[1]}x{flow.shape[0]} (WxH) but its frames are "
            f"{image.shape[1]}x{image.shape[0]}",
        )
    max_flow = getattr(ds, "max_flow", None)
    if max_flow is not None:
        valid = valid & (np.abs(flow) < max_flow).all(axis=-1)
    col.add_target("flow_magnitude", np.linalg.norm(flow, axis=-1), valid)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _read_sample(ds, i: int, col: Collector, num_classes) -> None:
    """A loaded sample's arrays (the embedded data, or any dataset without files)."""
    # volumes: the whole volume before patch sampling; 2D: the sample as a task sees it
    item = ds.load(i) if isinstance(ds, VolumeSampling) and hasattr(ds, "load") else ds[i]
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
        col.add_target(
            "flow_magnitude",
            np.linalg.norm(flow, axis=0),
            valid if valid is not None else np.ones(flow.shape[1:], bool),
        )


READERS = {"seg": _read_seg, "volume": _read_volume, "depth": _read_depth, "flow": _read_flow, "samples": _read_sample}


__all__ = ["READERS", "source_kind"]
