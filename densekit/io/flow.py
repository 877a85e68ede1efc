"""Optical-flow files: Middlebury ``.flo``, KITTI 16-bit ``.png`` and ``.pfm`` (FlyingThings3D).

Conventions: a flow map is float32 (H, W, 2) in pixels, channel 0 = u (to the right), channel 1 = v
(down), at the pixel of frame 1 it starts from. Every reader returns ``(flow, valid)`` with ``valid``
(H, W) bool; a pixel is invalid when the format marks it so (KITTI's third channel) or when u or v is
NaN/inf or |value| >= 1e9 (the Middlebury "unknown flow" marker is 1e10, anything above 1e9). Invalid
pixels hold 0 in the returned flow, so downstream arithmetic never meets a NaN.

Formats (byte layouts from the formats' own definitions):
  * ``.flo`` (Middlebury, Baker et al.): float32 202021.25 (the bytes "PIEH"), int32 width, int32 height,
    then H*W*2 float32 (u, v interleaved, rows top to bottom), all little-endian.
  * KITTI ``.png``: 3-channel 16-bit PNG, channels in R, G, B order = u, v, valid; u, v = (value - 2^15) / 64,
    valid = B > 0. (OpenCV reads B, G, R: the channel order is reversed here.)
  * ``.pfm``: ASCII header "PF" (3 channels) or "Pf" (1 channel), "width height", a scale whose sign gives
    the byte order (negative = little-endian), then float32 rows stored bottom to top. FlyingThings3D flow
    PFMs have 3 channels (u, v, 0): the first two are the flow.

Errors are ``ValueError`` naming the file and what was expected (wrong magic, truncated data, a PNG that is
not 16-bit 3-channel, an unknown extension).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

FLO_MAGIC = 202021.25  # float32 little-endian: the bytes b"PIEH"
UNKNOWN_FLOW = 1e9  # |u| or |v| at or above this is "unknown" (Middlebury writes 1e10)
KITTI_OFFSET, KITTI_SCALE = 2**15, 64.0
FLOW_SUFFIXES = (".flo", ".png", ".pfm")

_PFM_HEADER = re.compile(rb"(P[Ff])\s+(\d+)\s+(\d+)\s+([-+0-9.eE]+)\s")


def flow_validity(flow: np.ndarray) -> np.ndarray:
    """(H, W, 2) flow -> (H, W) bool: both components finite and below the 1e9 "unknown" marker."""
    with np.errstate(invalid="ignore"):
        return (np.isfinite(flow) & (np.abs(flow) < UNKNOWN_FLOW)).all(axis=-1)


def _clean(flow: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    valid = valid & flow_validity(flow)
    flow = np.where(valid[..., None], flow, 0.0).astype(np.float32)
    return flow, valid


def _check_flow(flow, valid, path) -> tuple[np.ndarray, np.ndarray]:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"{path}: flow to write must be (H, W, 2) (u, v), got shape {flow.shape}")
    if valid is None:
        valid = flow_validity(flow)
    else:
        valid = np.asarray(valid, bool)
        if valid.shape != flow.shape[:2]:
            raise ValueError(f"{path}: valid must be {flow.shape[:2]} like the flow, got {valid.shape}")
        valid = valid & flow_validity(flow)
    return flow.astype(np.float32), valid


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read flow file ({type(exc).__name__}: {exc})") from None


# -- Middlebury .flo ------------------------------------------------------------------------------------
def read_flo(path) -> np.ndarray:
    """A Middlebury ``.flo`` file -> float32 (H, W, 2) exactly as stored (unknown markers included)."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 12:
        raise ValueError(f"{path}: truncated .flo file: {len(data)} bytes, expected a 12-byte header at least")
    magic, width, height = struct.unpack("<fii", data[:12])
    if magic != FLO_MAGIC:
        raise ValueError(
            f"{path}: not a .flo file: magic number {magic!r} (bytes {data[:4]!r}), expected {FLO_MAGIC} (b'PIEH')"
        )
    if width <= 0 or height <= 0:
        raise ValueError(f"{path}: .flo header gives an empty or negative size {width}x{height} (WxH)")
    expected = 12 + 4 * 2 * width * height
    if len(data) < expected:
        raise ValueError(
            f"{path}: truncated .flo file: header promises {width}x{height} (WxH) = {expected} bytes, got {len(data)}"
        )
    flow = np.frombuffer(data, "<f4", count=2 * width * height, offset=12)
    return flow.reshape(height, width, 2).astype(np.float32)  # (H, W, 2): u, v interleaved, row-major


def write_flo(path, flow: np.ndarray, valid: np.ndarray | None = None) -> None:
    """Write (H, W, 2) flow as ``.flo``; pixels where ``valid`` is False get the 1e10 unknown marker."""
    path = Path(path)
    flow, valid = _check_flow(flow, valid, path)
    out = np.where(valid[..., None], flow, np.float32(1e10)).astype("<f4")
    h, w = flow.shape[:2]
    path.write_bytes(struct.pack("<fii", FLO_MAGIC, w, h) + out.tobytes())


# -- KITTI 16-bit PNG -----------------------------------------------------------------------------------
def read_kitti_png(path) -> tuple[np.ndarray, np.ndarray]:
    """A KITTI flow PNG -> (flow (H, W, 2) float32, valid (H, W) bool)."""
    import cv2  # OpenCV decodes 16-bit RGB PNGs; Pillow truncates them to 8 bits

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: KITTI flow PNG does not exist")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"{path}: unreadable KITTI flow PNG (not a PNG, or truncated)")
    if raw.dtype != np.uint16 or raw.ndim != 3 or raw.shape[2] != 3:
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        raise ValueError(
            f"{path}: expected a KITTI flow PNG, 16-bit with 3 channels (u, v, valid), "
            f"got {raw.dtype} with {channels} channel(s)"
        )
    rgb = raw[..., ::-1]  # OpenCV gives B, G, R: back to the file's R, G, B = u, v, valid
    flow = (rgb[..., :2].astype(np.float32) - KITTI_OFFSET) / KITTI_SCALE
    return _clean(flow, rgb[..., 2] > 0)


def write_kitti_png(path, flow: np.ndarray, valid: np.ndarray | None = None) -> None:
    """Write flow as a KITTI 16-bit PNG; values are rounded to 1/64 px and must lie within +-512 px."""
    import cv2

    path = Path(path)
    flow, valid = _check_flow(flow, valid, path)
    enc = np.zeros(flow.shape[:2] + (3,), np.uint16)
    if valid.any():
        q = np.round(flow[valid] * KITTI_SCALE + KITTI_OFFSET)
        if q.min() < 0 or q.max() > 65535:
            raise ValueError(
                f"{path}: flow of up to {np.abs(flow[valid]).max():.1f} px does not fit the KITTI PNG range "
                f"(+-{KITTI_OFFSET / KITTI_SCALE:.0f} px)"
            )
        enc[valid, :2] = q.astype(np.uint16)
        enc[valid, 2] = 1
    if not cv2.imwrite(str(path), enc[..., ::-1]):  # R, G, B -> the B, G, R OpenCV writes
        raise ValueError(f"{path}: OpenCV could not write the PNG")


# -- PFM ------------------------------------------------------------------------------------------------
def read_pfm(path) -> np.ndarray:
    """A PFM file -> float32 (H, W, 3) for "PF" or (H, W) for "Pf", rows top to bottom."""
    path = Path(path)
    data = _read_bytes(path)
    m = _PFM_HEADER.match(data[:256])
    if m is None:
        raise ValueError(
            f"{path}: not a PFM file: expected the header 'PF' or 'Pf', width height, scale; got {data[:20]!r}"
        )
    channels = 3 if m.group(1) == b"PF" else 1
    width, height = int(m.group(2)), int(m.group(3))
    try:
        scale = float(m.group(4))
    except ValueError:
        raise ValueError(f"{path}: PFM scale {m.group(4)!r} is not a number") from None
    if width <= 0 or height <= 0 or scale == 0:
        raise ValueError(f"{path}: PFM header gives size {width}x{height} (WxH) and scale {scale}; expected > 0, != 0")
    count = width * height * channels
    start = m.end()
    if len(data) - start < 4 * count:
        raise ValueError(
            f"{path}: truncated PFM: header promises {width}x{height}x{channels} float32 = "
            f"{4 * count} bytes, "
            f"got {len(data) - start}"
        )
    dtype = "<f4" if scale < 0 else ">f4"
    arr = np.frombuffer(data, dtype, count=count, offset=start).reshape(height, width, channels)
    arr = arr[::-1].astype(np.float32)  # stored bottom row first
    return arr[..., 0] if channels == 1 else arr


def write_pfm(path, array: np.ndarray, little_endian: bool = True) -> None:
    """Write (H, W) as "Pf" or (H, W, 3) as "PF" (rows bottom to top, scale -1 = little-endian)."""
    path = Path(path)
    arr = np.asarray(array, np.float32)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"{path}: PFM holds (H, W) or (H, W, 3) arrays, got shape {arr.shape}")
    magic = b"PF" if arr.ndim == 3 else b"Pf"
    h, w = arr.shape[:2]
    header = magic + b"\n" + f"{w} {h}\n{-1.0 if little_endian else 1.0}\n".encode()
    body = np.ascontiguousarray(arr[::-1]).astype("<f4" if little_endian else ">f4").tobytes()
    path.write_bytes(header + body)


# -- by extension ---------------------------------------------------------------------------------------
def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FLOW_SUFFIXES:
        raise ValueError(f"{path}: unknown flow file extension {path.suffix!r}; expected one of {list(FLOW_SUFFIXES)}")
    return suffix


def read_flow(path) -> tuple[np.ndarray, np.ndarray]:
    """``.flo`` / KITTI ``.png`` / ``.pfm`` by extension -> (flow (H, W, 2) float32 pixels, valid (H, W)
    bool).

    Invalid pixels (format-marked, NaN/inf, |value| >= 1e9) are False in ``valid`` and 0 in ``flow``.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".png":
        return read_kitti_png(path)
    if suffix == ".flo":
        flow = read_flo(path)
    else:
        arr = read_pfm(path)
        if arr.ndim != 3:
            raise ValueError(f"{path}: a flow PFM needs 3 channels ('PF': u, v, unused), got a 1-channel 'Pf' map")
        flow = arr[..., :2]
    return _clean(flow, np.ones(flow.shape[:2], bool))


def write_flow(path, flow: np.ndarray, valid: np.ndarray | None = None) -> None:
    """Write (H, W, 2) flow by extension. Invalid pixels become the 1e10 marker (.flo), valid=0 (.png) or
    NaN (.pfm, which has no validity channel; ``read_flow`` reads NaN back as invalid)."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".flo":
        write_flo(path, flow, valid)
    elif suffix == ".png":
        write_kitti_png(path, flow, valid)
    else:
        flow, valid = _check_flow(flow, valid, path)
        out = np.zeros(flow.shape[:2] + (3,), np.float32)
        out[..., :2] = np.where(valid[..., None], flow, np.nan)
        write_pfm(path, out)


__all__ = [
    "FLO_MAGIC",
    "UNKNOWN_FLOW",
    "flow_validity",
    "read_flo",
    "read_flow",
    "read_kitti_png",
    "read_pfm",
    "write_flo",
    "write_flow",
    "write_kitti_png",
    "write_pfm",
]
