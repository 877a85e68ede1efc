"""Visualisation helpers: colour class maps, overlays and side-by-side panels (numpy uint8 HWC out)."""

from __future__ import annotations

import numpy as np

from .schema import IGNORE_INDEX

IGNORE_COLOR = (0, 0, 0)


def palette(num_classes: int) -> np.ndarray:
    """A fixed, well-separated colour per class (the PASCAL VOC bit-interleaving scheme): (K, 3) uint8."""
    cmap = np.zeros((max(num_classes, 1), 3), np.uint8)
    for i in range(num_classes):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def colorize_mask(mask: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(H, W) int class ids -> (H, W, 3) uint8; ignored pixels black; ids >= num_classes are an error."""
    mask = np.asarray(mask)
    keep = mask != ignore_index
    if keep.any() and (mask[keep].min() < 0 or mask[keep].max() >= num_classes):
        raise ValueError(f"mask holds ids outside [0, {num_classes}) other than the ignore index {ignore_index}")
    out = np.zeros(mask.shape + (3,), np.uint8)
    out[keep] = palette(num_classes)[mask[keep]]
    out[~keep] = IGNORE_COLOR
    return out


def to_uint8(image) -> np.ndarray:
    """(3, H, W) or (H, W, 3) float in [0, 1] (tensor or array) -> (H, W, 3) uint8."""
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return np.repeat(arr, 3, axis=2) if arr.shape[-1] == 1 else arr


def overlay(
    image, mask: np.ndarray, num_classes: int, alpha: float = 0.5, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Class colours blended over the image (ignored pixels show the image)."""
    img = to_uint8(image).astype(np.float32)
    col = colorize_mask(mask, num_classes, ignore_index).astype(np.float32)
    keep = (np.asarray(mask) != ignore_index)[..., None]
    return np.where(keep, (1 - alpha) * img + alpha * col, img).astype(np.uint8)


def seg_panel(
    image, target: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """image | ground truth | prediction, side by side: (H, 3W, 3) uint8."""
    return np.concatenate(
        [
            to_uint8(image),
            colorize_mask(target, num_classes, ignore_index),
            colorize_mask(pred, num_classes, ignore_index),
        ],
        axis=1,
    )


# -- depth ----------------------------------------------------------------------------------------------
INVALID_COLOR = (0, 0, 0)


def _colormap(name: str):
    import matplotlib  # imported lazily: only the pictures need it

    return matplotlib.colormaps[name]


def colorize_depth(
    depth,
    valid: np.ndarray | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "magma_r",
) -> np.ndarray:
    """(H, W) or (1, H, W) depth (metres) -> (H, W, 3) uint8: near bright, far dark (``magma_r``).

    The range defaults to the 2nd-98th percentile of the valid, finite, positive values, so one far outlier
    does not wash the picture out; pass the same ``vmin``/``vmax`` to compare two maps. Invalid pixels
    (``valid`` False, non-finite or <= 0) are black.
    """
    d = np.asarray(depth.detach().cpu() if hasattr(depth, "detach") else depth, dtype=np.float64)
    d = d.reshape(d.shape[-2:]) if d.ndim == 3 and d.shape[0] == 1 else d
    if d.ndim != 2:
        raise ValueError(f"colorize_depth expects an (H, W) or (1, H, W) map, got shape {d.shape}")
    keep = np.isfinite(d) & (d > 0)
    if valid is not None:
        keep &= np.asarray(valid, bool).reshape(d.shape)
    if keep.any():
        lo, hi = np.percentile(d[keep], [2, 98])
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    vmin, vmax = (0.0 if vmin is None else float(vmin)), (1.0 if vmax is None else float(vmax))
    t = np.clip((np.where(keep, d, vmin) - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    out = (_colormap(cmap)(t)[..., :3] * 255 + 0.5).astype(np.uint8)
    out[~keep] = INVALID_COLOR
    return out


def depth_error_map(pred, target, valid: np.ndarray | None = None, max_rel: float = 0.5) -> np.ndarray:
    """Absolute relative error |pred - gt| / gt as colours (0 = dark, >= ``max_rel`` = bright yellow,
    ``inferno``); pixels without ground truth are black."""
    p = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred, dtype=np.float64).squeeze()
    t = np.asarray(target.detach().cpu() if hasattr(target, "detach") else target, dtype=np.float64).squeeze()
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {t.shape} must have the same shape")
    keep = np.isfinite(t) & (t > 0) & np.isfinite(p)
    if valid is not None:
        keep &= np.asarray(valid, bool).reshape(t.shape)
    rel = np.zeros_like(t)
    rel[keep] = np.abs(p[keep] - t[keep]) / t[keep]
    out = (_colormap("inferno")(np.clip(rel / max_rel, 0, 1))[..., :3] * 255 + 0.5).astype(np.uint8)
    out[~keep] = INVALID_COLOR
    return out


def depth_panel(image, target, pred, valid: np.ndarray | None = None) -> np.ndarray:
    """image | ground truth | prediction | abs-rel error, side by side (H, 4W, 3) uint8; ground truth and
    prediction share one colour range (the ground truth's) so their colours compare."""
    t = np.asarray(target.detach().cpu() if hasattr(target, "detach") else target, dtype=np.float64).squeeze()
    keep = np.isfinite(t) & (t > 0)
    if valid is not None:
        keep &= np.asarray(valid, bool).reshape(t.shape)
    lo, hi = np.percentile(t[keep], [2, 98]) if keep.any() else (None, None)
    return np.concatenate(
        [
            to_uint8(image),
            colorize_depth(t, keep, lo, hi),
            colorize_depth(pred, None, lo, hi),
            depth_error_map(pred, t, keep),
        ],
        axis=1,
    )


# -- optical flow ---------------------------------------------------------------------------------------
# The Middlebury colour wheel (Baker et al., "A Database and Evaluation Methodology for Optical Flow",
# IJCV 2011): hue = direction, saturation = magnitude. Segment lengths between the six primaries/secondaries.
WHEEL_SEGMENTS = (("RY", 15), ("YG", 6), ("GC", 4), ("CB", 11), ("BM", 13), ("MR", 6))


def color_wheel() -> np.ndarray:
    """The 55 colours of the Middlebury wheel, (55, 3) uint8 RGB: red -> yellow -> green -> cyan -> blue ->
    magenta -> back to red, each segment ramping one channel in floor(255 * i / n) steps."""
    cols = []
    for name, n in WHEEL_SEGMENTS:
        ramp = np.floor(255 * np.arange(n) / n)
        seg = np.zeros((n, 3))
        # (channel held at 255, channel ramping, up (+1) or down (-1))
        held, moving, up = {
            "RY": (0, 1, 1),
            "YG": (1, 0, -1),
            "GC": (1, 2, 1),
            "CB": (2, 1, -1),
            "BM": (2, 0, 1),
            "MR": (0, 2, -1),
        }[name]
        seg[:, held] = 255
        seg[:, moving] = ramp if up > 0 else 255 - ramp
        cols.append(seg)
    return np.concatenate(cols).astype(np.uint8)


def _flow_hw2(flow) -> np.ndarray:
    arr = np.asarray(flow.detach().cpu() if hasattr(flow, "detach") else flow, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] == 2 and arr.shape[-1] != 2:
        arr = arr.transpose(1, 2, 0)  # (2, H, W) -> (H, W, 2)
    if arr.ndim != 3 or arr.shape[-1] != 2:
        raise ValueError(f"flow must be (H, W, 2) or (2, H, W) (u, v), got shape {arr.shape}")
    return arr


def _flow_keep(f: np.ndarray, valid) -> np.ndarray:
    keep = np.isfinite(f).all(-1) & (np.abs(f) < 1e9).all(-1)
    if valid is not None:
        v = np.asarray(valid.detach().cpu() if hasattr(valid, "detach") else valid, bool)
        keep &= v.reshape(keep.shape)
    return keep


def flow_to_color(flow, max_flow: float | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 2) or (2, H, W) flow (pixels, u right, v down) -> (H, W, 3) uint8 RGB on the Middlebury wheel.

    Direction picks the hue: (1, 0) (rightwards) is red, (0, 1) (down) orange-yellow, (-1, 0) cyan-blue,
    (0, -1) blue-violet. Magnitudes are divided by ``max_flow`` (default: the largest valid magnitude), so
    a vector of that length gets the wheel's full colour and zero motion is white; longer ones (only with
    an explicit ``max_flow``) are darkened to 75 %. Invalid pixels (``valid`` False, NaN/inf, >= 1e9) are
    black.
    """
    f = _flow_hw2(flow)
    keep = _flow_keep(f, valid)
    f = np.where(keep[..., None], f, 0.0)
    rad = np.hypot(f[..., 0], f[..., 1])
    if max_flow is None:
        max_flow = rad[keep].max() if keep.any() else 0.0
    if max_flow > 0:
        f = f / max_flow
        rad = rad / max_flow
    wheel = color_wheel().astype(np.float64) / 255
    ncols = len(wheel)
    angle = np.arctan2(-f[..., 1], -f[..., 0]) / np.pi  # in [-1, 1]; (1, 0) -> -1 -> colour 0 (red)
    fk = (angle + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = (k0 + 1) % ncols
    frac = (fk - k0)[..., None]
    col = (1 - frac) * wheel[k0] + frac * wheel[k1]  # (H, W, 3)
    small = (rad <= 1)[..., None]
    col = np.where(small, 1 - rad[..., None] * (1 - col), col * 0.75)  # towards white as the motion shrinks
    out = np.floor(255 * col).astype(np.uint8)
    out[~keep] = INVALID_COLOR
    return out


def flow_error_map(pred, gt, valid: np.ndarray | None = None, max_epe: float = 5.0) -> np.ndarray:
    """End-point error |pred - gt| (pixels) as colours (``inferno``: 0 dark, >= ``max_epe`` bright yellow);
    pixels without ground truth are black."""
    p, t = _flow_hw2(pred), _flow_hw2(gt)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {t.shape} must have the same shape")
    keep = _flow_keep(t, valid) & np.isfinite(p).all(-1)
    epe = np.where(keep, np.hypot(*(p - np.where(keep[..., None], t, 0.0)).transpose(2, 0, 1)), 0.0)
    out = (_colormap("inferno")(np.clip(epe / max_epe, 0, 1))[..., :3] * 255 + 0.5).astype(np.uint8)
    out[~keep] = INVALID_COLOR
    return out


def flow_panel(image1, gt, pred, valid: np.ndarray | None = None, max_epe: float = 5.0) -> np.ndarray:
    """frame 1 | ground truth | prediction | end-point error, side by side (H, 4W, 3) uint8. Ground truth and
    prediction share one normalisation (the largest valid ground-truth magnitude) so their colours compare;
    the prediction is drawn everywhere, the ground truth only where valid."""
    t = _flow_hw2(gt)
    keep = _flow_keep(t, valid)
    max_flow = float(np.hypot(t[keep, 0], t[keep, 1]).max()) if keep.any() else None
    return np.concatenate(
        [
            to_uint8(image1),
            flow_to_color(t, max_flow, keep),
            flow_to_color(pred, max_flow),
            flow_error_map(pred, t, keep, max_epe),
        ],
        axis=1,
    )
