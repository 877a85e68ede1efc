"""Depth maps on disk: 16-bit PNG (integer value / scale = metres, 0 = no measurement) and ``.npy``.

One convention for every format: ``metres = stored value / scale``. The usual scales:
  * KITTI depth annotations (``proj_depth/groundtruth``): 256 (value / 256 = metres)
  * NYUv2 extracted PNGs (BTS / AdaBins ``sync`` folders): 1000 (millimetres)
  * ``.npy`` files are expected to hold metres already (scale defaults to 1; give 1000 for millimetres)

A stored 0 is "no measurement" and stays 0 (invalid) whatever the scale; NaN/inf in a ``.npy`` are returned
as they are, so that the caller can count and mask them (``densekit.data.readers.depth`` does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DEPTH_SUFFIXES", "read_depth", "write_depth_png"]

DEPTH_SUFFIXES = (".png", ".npy")
_UINT16_MAX = 65535
_PNG16_MODES = ("I;16", "I;16B", "I;16L", "I")  # how Pillow opens a 16-bit greyscale PNG


def _check_scale(scale, path: Path) -> float:
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: depth scale must be a positive number, got {scale!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{path}: depth scale must be a positive number, got {scale!r}")
    return value


def _read_png(path: Path, scale) -> np.ndarray:
    if scale is None:
        raise ValueError(
            f"{path}: a depth PNG stores integers; give its scale (metres = value / scale), e.g. 256 for "
            "KITTI depth annotations, 1000 for millimetre PNGs (NYUv2)"
        )
    scale = _check_scale(scale, path)
    img = None
    try:
        img = Image.open(path)
        img.load()  # decode now: a truncated file fails here with its name, not later
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if img is not None:
            img.close()
        raise ValueError(f"{path}: unreadable depth PNG ({type(exc).__name__}: {exc})") from None
    with img:
        if img.mode not in _PNG16_MODES:
            hint = " (8-bit: too coarse for depth; a colour rendering of it?)" if img.mode in ("L", "P", "RGB") else ""
            raise ValueError(
                f"{path}: expected a single-channel 16-bit PNG (metres = value / {scale:g}), got mode {img.mode}{hint}"
            )
        raw = np.asarray(img)
    # mode "I" is 32-bit in Pillow; a real 16-bit PNG never holds values outside [0, 65535]
    if raw.dtype != np.uint16 and raw.size and (raw.min() < 0 or raw.max() > _UINT16_MAX):
        raise ValueError(f"{path}: values in [{raw.min()}, {raw.max()}] do not fit a 16-bit depth PNG")
    return (raw.astype(np.float32) / np.float32(scale)).astype(np.float32)


def _read_npy(path: Path, scale) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: unreadable .npy depth map ({type(exc).__name__}: {exc})") from None
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:-1])  # (1,H,W)/(H,W,1) -> (H,W)
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a depth map of shape (H, W) (or (1, H, W) / (H, W, 1)), got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{path}: expected a numeric depth map, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if scale is not None:
        arr = arr / np.float32(_check_scale(scale, path))
    return arr


def read_depth(path: str | Path, scale: float | None = None) -> np.ndarray:
    """Depth map in metres, float32 (H, W), chosen by extension.

    ``.png``: single-channel 16-bit PNG; ``scale`` is required (metres = value / scale; 0 stays 0 = invalid).
    ``.npy``: (H, W) numeric array in metres; ``scale`` optional (metres = value / scale, default 1).
    Non-finite values of a ``.npy`` are returned as they are (the caller decides what is valid).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"depth map not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".png":
        return _read_png(path, scale)
    if suffix == ".npy":
        return _read_npy(path, scale)
    raise ValueError(f"{path}: unsupported depth format {suffix!r}; expected one of {list(DEPTH_SUFFIXES)}")


def write_depth_png(path: str | Path, depth: np.ndarray, scale: float) -> None:
    """Write metres as a 16-bit PNG holding ``round(depth * scale)``; NaN/inf/<=0 are written as 0 (invalid).

    A depth that does not fit (``depth * scale`` rounds above 65535) is an error, not a silent wrap-around:
    the largest storable depth is ``65535 / scale`` metres (256 m at KITTI's 256, 65.5 m at 1000).
    """
    path = Path(path)
    scale = _check_scale(scale, path)
    depth = np.asarray(depth)
    if depth.ndim == 3 and depth.shape[0] == 1:
        depth = depth[0]
    if depth.ndim != 2:
        raise ValueError(f"{path}: expected a depth map of shape (H, W), got {depth.shape}")
    depth = depth.astype(np.float64)
    good = np.isfinite(depth) & (depth > 0)
    values = np.zeros(depth.shape, np.float64)
    values[good] = np.rint(depth[good] * scale)
    if values.size and values.max() > _UINT16_MAX:
        raise ValueError(
            f"{path}: depth up to {depth[good].max():.6g} m does not fit a 16-bit PNG at scale {scale:g} "
            f"(largest storable: {_UINT16_MAX / scale:.6g} m); use a smaller scale or .npy"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)
