"""Visualisation helpers: colour class maps, overlays and side-by-side panels (numpy uint8 HWC out)."""

from __future__ import annotations

import numpy as np

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


def colorize_mask(mask: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
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


def overlay(image, mask: np.ndarray, num_classes: int, alpha: float = 0.5, ignore_index: int = 255) -> np.ndarray:
    """Class colours blended over the image (ignored pixels show the image)."""
    img = to_uint8(image).astype(np.float32)
    col = colorize_mask(mask, num_classes, ignore_index).astype(np.float32)
    keep = (np.asarray(mask) != ignore_index)[..., None]
    return np.where(keep, (1 - alpha) * img + alpha * col, img).astype(np.uint8)


def seg_panel(image, target: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """image | ground truth | prediction, side by side: (H, 3W, 3) uint8."""
    return np.concatenate(
        [to_uint8(image), colorize_mask(target, num_classes, ignore_index), colorize_mask(pred, num_classes, ignore_index)],
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
