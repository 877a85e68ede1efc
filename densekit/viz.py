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
