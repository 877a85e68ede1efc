"""Flow-aware joint augmentation of a frame pair, its flow and its masks, from a plain config.

albumentations moves pixels but not flow *vectors*, so the geometry is done here by hand (the vectors
are rescaled / negated with the pixels); only the colour jitter is albumentations' ``ColorJitter``. The
ops and their defaults follow RAFT's augmentors (Teed & Deng, ECCV 2020, ``core/utils/augmentor.py``).

Config keys (``augment:`` in conf/data/{chairs,things,sintel,kitti15,flow_folder,synthetic}.yaml):

  crop: [h, w]            random crop, the same window on both frames. Where the (scaled) pair is smaller
                          than the crop it is padded: images 0, flow 0, valid/noc False, mask 255.
  scale: [lo, hi]         zoom factor drawn log-uniformly in [lo, hi] (factors, not exponents: RAFT's
                          ``2**U(min_scale, max_scale)`` with chairs' [-0.1, 1.0] is ``scale: [0.933, 2.0]``).
                          With ``crop`` the factor is raised to at least max((h+8)/H, (w+8)/W) so the
                          scaled pair still covers the crop (RAFT's rule). Flow vectors are multiplied by the
                          realised factors (new size / old size), u by sx and v by sy.
  scale_prob: p           probability that the zoom is applied at all (default 1.0; RAFT uses 0.8)
  stretch: s              independent x/y stretch: sx, sy = scale * 2**U(-s, s) each (default 0 = none;
                          RAFT uses 0.2 on dense data, none on sparse KITTI)
  stretch_prob: p         probability of the stretch (default 0.8, RAFT's)
  hflip: p                mirror left-right and negate u
  vflip: p                mirror top-bottom and negate v
  photometric:            per-frame colour jitter (albumentations ColorJitter; ranges as in torchvision):
    brightness, contrast, saturation: factor ranges [max(0, 1-s), 1+s]; hue: shift in [-h, h] turns (<= 0.5)
    asymmetric_prob: p    probability that the two frames get independent jitter (else one draw for both)
  erase: p                occlusion erasing (RAFT): with probability p, 1..erase_count rectangles of frame 2
                          with sides in erase_size are filled with frame 2's mean colour; flow and valid
                          are kept (frame-1 pixels whose match is hidden is what occlusion looks like)
  erase_size: [lo, hi]    rectangle side range in pixels (default [50, 100], RAFT's)
  erase_count: n          at most n rectangles (default 2, RAFT's)
  blur: p                 Gaussian blur of both frames (one sigma in [0.1, 2.0] px) with probability p

Dense vs sparse flow (``sparse=True`` for KITTI-style ground truth): dense flow is resized bilinearly
(valid/noc/mask by nearest neighbour). Sparse flow is not interpolated, since blending a valid vector with
an invalid neighbour's 0 would invent a vector: each valid pixel's vector (scaled) is scattered to the
nearest pixel of the resized grid (pixel centres map as x' = (x + 0.5) * sx - 0.5), as RAFT's
``resize_sparse_flow_map`` does; no other pixel becomes valid. When the pair shrinks, several vectors can
land on one pixel: one of them is kept.

Extra per-pixel keys travel with the geometry: ``noc`` (bool non-occluded mask), ``mask`` (class ids; pad
255) and ``depth`` (metres; crops and flips only -- ``scale`` would falsify metric depth and is refused).

Randomness: one numpy Generator per augmenter, seeded from ``torch.initial_seed()`` (reproducible under
``pl.seed_everything``) and reseeded in a DataLoader worker (a new pid), whose ``torch.initial_seed()``
differs per worker -- as in ``densekit.data.transforms.image``. ``aug(sample, rng=...)`` takes an explicit
one.
"""

from __future__ import annotations

import math
import os

import albumentations as A
import cv2
import numpy as np
import torch

from ...schema import IGNORE_INDEX
from .image import pair_option, to_float

_KNOWN = {
    "crop",
    "scale",
    "scale_prob",
    "stretch",
    "stretch_prob",
    "hflip",
    "vflip",
    "photometric",
    "erase",
    "erase_size",
    "erase_count",
    "blur",
}
_PHOTO_KEYS = {"brightness", "contrast", "saturation", "hue", "asymmetric_prob"}
_IMAGES = ("image", "image2")
_BOOL_MASKS = ("valid", "noc")
_PIXEL_KEYS = ("image", "image2", "flow", "valid", "noc", "mask", "depth")
_PAD = dict(image=0, image2=0, flow=0.0, valid=False, noc=False, mask=IGNORE_INDEX, depth=0.0)


def _prob(cfg: dict, key: str, default: float = 0.0) -> float:
    value = cfg.get(key, default)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"augment.{key} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _nonneg(cfg: dict, key: str, what: str, default: float = 0.0, upper: float = math.inf) -> float:
    value = cfg.get(key, default)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= upper:
        raise ValueError(f"{what} must be a number in [0, {upper}], got {value!r}")
    return float(value)


# -- deterministic ops on numpy samples (HWC images, (H, W, 2) flow, (H, W) masks) ---------------------------
def hflip(sample: dict) -> dict:
    """Mirror left-right: every per-pixel array flips, and u changes sign (rightward becomes leftward)."""
    out = {k: (v[:, ::-1] if k in _PIXEL_KEYS else v) for k, v in sample.items()}
    if "flow" in out:
        out["flow"] = out["flow"] * np.array([-1.0, 1.0], np.float32)
    return out


def vflip(sample: dict) -> dict:
    """Mirror top-bottom: every per-pixel array flips, and v changes sign."""
    out = {k: (v[::-1] if k in _PIXEL_KEYS else v) for k, v in sample.items()}
    if "flow" in out:
        out["flow"] = out["flow"] * np.array([1.0, -1.0], np.float32)
    return out


def crop(sample: dict, y0: int, x0: int, h: int, w: int) -> dict:
    """The window [y0, y0+h) x [x0, x0+w) of every per-pixel array; parts outside the sample are padded
    (images 0, flow 0, valid/noc False, mask 255, depth 0). Flow vectors are unchanged by a crop."""
    H, W = sample["image"].shape[:2]
    out = dict(sample)
    for key in _PIXEL_KEYS:
        if key not in sample:
            continue
        arr = sample[key]
        piece = np.full((h, w) + arr.shape[2:], _PAD[key], arr.dtype)
        ys, ye, xs, xe = max(y0, 0), min(y0 + h, H), max(x0, 0), min(x0 + w, W)
        if ye > ys and xe > xs:
            piece[ys - y0 : ye - y0, xs - x0 : xe - x0] = arr[ys:ye, xs:xe]
        out[key] = piece
    return out


def resize_sparse_flow(
    flow: np.ndarray, valid: np.ndarray, size: tuple[int, int], masks: tuple[np.ndarray, ...] = ()
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Resize sparse flow to ``size`` = (h', w') without interpolation.

    Each valid pixel (x, y) moves to round((x + 0.5) * sx - 0.5), round((y + 0.5) * sy - 0.5) with
    sx = w'/w, sy = h'/h, carrying its vector times (sx, sy); every other output pixel is invalid with flow 0.
    ``masks`` (bool, e.g. ``noc``) are carried to the same positions. Returns (flow, valid, masks).
    """
    h, w = valid.shape
    h2, w2 = size
    sx, sy = w2 / w, h2 / h
    ys, xs = np.nonzero(valid)
    x2 = np.floor((xs + 0.5) * sx - 0.5 + 0.5).astype(np.int64)  # nearest pixel centre
    y2 = np.floor((ys + 0.5) * sy - 0.5 + 0.5).astype(np.int64)
    inside = (x2 >= 0) & (x2 < w2) & (y2 >= 0) & (y2 < h2)
    xs, ys, x2, y2 = xs[inside], ys[inside], x2[inside], y2[inside]
    out_flow = np.zeros((h2, w2, 2), np.float32)
    out_valid = np.zeros((h2, w2), bool)
    out_flow[y2, x2] = flow[ys, xs] * np.array([sx, sy], np.float32)
    out_valid[y2, x2] = True
    out_masks = []
    for m in masks:
        om = np.zeros((h2, w2), bool)
        om[y2, x2] = m[ys, xs]  # same index order as the flow: a collision keeps the same source pixel
        out_masks.append(om)
    return out_flow, out_valid, out_masks


def resize(sample: dict, size: tuple[int, int], sparse: bool = False) -> dict:
    """Rescale a sample to ``size`` = (h', w'): images bilinear, flow vectors times the realised factors
    (sx = w'/w for u, sy = h'/h for v); dense flow bilinear, sparse flow scattered (``resize_sparse_flow``);
    masks nearest. ``depth`` is refused: a zoom would no longer match the metric distance."""
    if "depth" in sample:
        raise ValueError("a flow-sample rescale would falsify the metric depth target; drop augment.scale")
    h, w = sample["image"].shape[:2]
    h2, w2 = int(size[0]), int(size[1])
    sx, sy = w2 / w, h2 / h
    out = dict(sample)
    for key in _IMAGES:
        if key in sample:
            out[key] = cv2.resize(sample[key], (w2, h2), interpolation=cv2.INTER_LINEAR)
    nearest = [k for k in ("noc", "mask") if k in sample]
    if sparse:
        extra = ["noc"] if "noc" in sample else []
        flow, valid, masks = resize_sparse_flow(
            sample["flow"], sample["valid"], (h2, w2), tuple(sample[k] for k in extra)
        )
        out.update(flow=flow, valid=valid, **dict(zip(extra, masks)))
        nearest = [k for k in nearest if k not in extra]
    else:
        # dense ground truth is defined at invalid (e.g. occluded) pixels too: only non-finite values go
        flow = np.nan_to_num(sample["flow"].astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        flow = cv2.resize(flow, (w2, h2), interpolation=cv2.INTER_LINEAR)  # (h', w', 2)
        out["flow"] = flow * np.array([sx, sy], np.float32)
        nearest.append("valid")
    for key in nearest:
        arr = sample[key].astype(np.uint8)  # OpenCV cannot warp bool / int64
        res = cv2.resize(arr, (w2, h2), interpolation=cv2.INTER_NEAREST_EXACT)
        out[key] = res.astype(bool) if key in _BOOL_MASKS else res.astype(sample[key].dtype)
    return out


def erase(image2: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Fill rectangles (y0, x0, h, w) of frame 2 with its mean colour (computed before any fill)."""
    out = image2.copy()
    mean = image2.reshape(-1, image2.shape[-1]).mean(axis=0)
    for y0, x0, h, w in boxes:
        out[y0 : y0 + h, x0 : x0 + w] = mean.astype(out.dtype) if out.dtype != np.uint8 else np.round(mean)
    return out


# -- the random augmenter ---------------------------------------------------------------------------------
class FlowAugment:
    """Random flow-aware augmentation (keys in the module docstring). ``sparse``: KITTI-style flow."""

    def __init__(self, cfg: dict | None, *, sparse: bool = False, targets: tuple[str, ...] = ("flow",)):
        cfg = dict(cfg or {})
        unknown = set(cfg) - _KNOWN
        if unknown:
            raise ValueError(f"unknown flow augmentation(s) {sorted(unknown)}; expected any of {sorted(_KNOWN)}")
        self.sparse = bool(sparse)
        self.crop = pair_option(cfg, "crop", int, 8) if cfg.get("crop") is not None else None
        self.scale = None
        if cfg.get("scale") is not None:
            lo, hi = pair_option(cfg, "scale", float, 0.05)
            if lo > hi:
                raise ValueError(f"augment.scale must be [lo, hi] with lo <= hi, got {cfg['scale']!r}")
            if "depth" in targets:
                raise ValueError("augment.scale would falsify the metric depth target; remove it for this task")
            self.scale = (lo, hi)
        self.scale_prob = _prob(cfg, "scale_prob", 1.0)
        self.stretch = _nonneg(cfg, "stretch", "augment.stretch (log2 of the largest x/y stretch)", 0.0, 2.0)
        self.stretch_prob = _prob(cfg, "stretch_prob", 0.8)
        if self.stretch and self.scale is None:
            raise ValueError("augment.stretch modulates augment.scale; set scale: [lo, hi] as well")
        self.hflip, self.vflip = _prob(cfg, "hflip"), _prob(cfg, "vflip")
        self.erase = _prob(cfg, "erase")
        self.erase_size = pair_option(cfg, "erase_size", int, 1) if cfg.get("erase_size") is not None else (50, 100)
        if self.erase_size[0] > self.erase_size[1]:
            raise ValueError(f"augment.erase_size must be [lo, hi] with lo <= hi, got {cfg['erase_size']!r}")
        count = cfg.get("erase_count", 2)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"augment.erase_count must be an int >= 1, got {count!r}")
        self.erase_count = count
        self.blur = _prob(cfg, "blur")
        self.jitter, self.asymmetric = None, 0.0
        photo = cfg.get("photometric")
        if photo:
            if not isinstance(photo, dict):
                raise ValueError(f"augment.photometric must be a mapping of {sorted(_PHOTO_KEYS)}, got {photo!r}")
            bad = set(photo) - _PHOTO_KEYS
            if bad:
                raise ValueError(
                    f"unknown augment.photometric key(s) {sorted(bad)}; expected any of {sorted(_PHOTO_KEYS)}"
                )
            b, c, s = (_nonneg(photo, k, f"augment.photometric.{k}") for k in ("brightness", "contrast", "saturation"))
            hue = _nonneg(photo, "hue", "augment.photometric.hue", 0.0, 0.5)
            self.asymmetric = _prob(photo, "asymmetric_prob")
            self.jitter = A.Compose(
                [A.ColorJitter(brightness=b, contrast=c, saturation=s, hue=hue, p=1.0)],
                additional_targets={"image2": "image"},  # one call on both frames = one draw for both
                seed=0,  # reseeded from our generator before every call
            )
        self._rng = np.random.default_rng(torch.initial_seed() % 2**32)
        self._pid = os.getpid()

    def set_random_seed(self, seed: int) -> None:
        """Restart the generator from ``seed`` (per-sample seeding,
        ``densekit.data.samplers.SeededSamples``)."""
        self._rng = np.random.default_rng(seed)
        self._pid = os.getpid()

    def _generator(self) -> np.random.Generator:
        if self._pid != os.getpid():
            # A forked DataLoader worker inherits the parent's generator state: without a reseed every worker
            # would draw the same augmentations. torch seeds each worker differently (base_seed + worker id).
            self._rng = np.random.default_rng(torch.initial_seed() % 2**32)
            self._pid = os.getpid()
        return self._rng

    @staticmethod
    def check(sample: dict) -> None:
        """Shapes of a numpy flow sample: image/image2 (H, W, 3), flow (H, W, 2), masks (H, W)."""
        image = sample["image"]
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3), got {image.shape}")
        h, w = image.shape[:2]
        expected = {"image2": (h, w, 3), "flow": (h, w, 2)}
        expected.update({key: (h, w) for key in ("valid", "noc", "mask", "depth")})
        for key, shape in expected.items():
            if key in sample and sample[key].shape != shape:
                raise ValueError(f"sample[{key!r}] must be {shape} to match the image, got {sample[key].shape}")
        for key in ("image2", "flow", "valid"):
            if key not in sample:
                raise ValueError(f"a flow sample needs image, image2, flow and valid; {key!r} is missing")

    def _photometric(self, sample: dict, rng: np.random.Generator) -> dict:
        out = dict(sample)
        if rng.random() < self.asymmetric:
            for key in _IMAGES:
                self.jitter.set_random_seed(int(rng.integers(2**31)))
                out[key] = self.jitter(image=sample[key])["image"]
        else:
            self.jitter.set_random_seed(int(rng.integers(2**31)))
            res = self.jitter(image=sample["image"], image2=sample["image2"])
            out["image"], out["image2"] = res["image"], res["image2"]
        return out

    def _scale_size(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int] | None:
        lo, hi = self.scale
        s = 2.0 ** rng.uniform(math.log2(lo), math.log2(hi))
        sx = sy = s
        if self.stretch and rng.random() < self.stretch_prob:
            sx *= 2.0 ** rng.uniform(-self.stretch, self.stretch)
            sy *= 2.0 ** rng.uniform(-self.stretch, self.stretch)
        if self.crop is not None:
            # RAFT: never shrink below the crop plus a margin, so the crop window always holds real pixels
            least = max((self.crop[0] + 8) / h, (self.crop[1] + 8) / w)
            sx, sy = max(sx, least), max(sy, least)
        if rng.random() >= self.scale_prob:
            return None
        return max(1, int(round(h * sy))), max(1, int(round(w * sx)))

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        """Augment a numpy sample (images uint8 or float in [0, 1]); images come back float32 in [0, 1]."""
        self.check(sample)
        rng = self._generator() if rng is None else rng
        out = dict(sample)
        out["valid"] = np.asarray(out["valid"], bool)
        if self.jitter is not None:
            out = self._photometric(out, rng)
        if self.erase and rng.random() < self.erase:
            h, w = out["image2"].shape[:2]
            lo, hi = self.erase_size
            boxes = []  # (y0, x0, height, width) of each rectangle
            for _ in range(int(rng.integers(1, self.erase_count + 1))):
                y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
                boxes.append((y0, x0, int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))))
            out["image2"] = erase(out["image2"], boxes)
        if self.scale is not None:
            size = self._scale_size(*out["image"].shape[:2], rng)
            if size is not None:
                out = resize(out, size, sparse=self.sparse)
        if self.hflip and rng.random() < self.hflip:
            out = hflip(out)
        if self.vflip and rng.random() < self.vflip:
            out = vflip(out)
        if self.crop is not None:
            ch, cw = self.crop
            h, w = out["image"].shape[:2]
            y0 = int(rng.integers(0, h - ch + 1)) if h > ch else 0
            x0 = int(rng.integers(0, w - cw + 1)) if w > cw else 0
            out = crop(out, y0, x0, ch, cw)
        if self.blur and rng.random() < self.blur:
            sigma = float(rng.uniform(0.1, 2.0))
            for key in _IMAGES:
                out[key] = cv2.GaussianBlur(np.ascontiguousarray(out[key]), (0, 0), sigma)
        for key in out:
            if isinstance(out[key], np.ndarray):
                out[key] = np.ascontiguousarray(out[key])
        for key in _IMAGES:
            out[key] = to_float(out[key])
        out["flow"] = out["flow"].astype(np.float32)
        return out


def build_flow_augment(
    cfg: dict | None, *, sparse: bool = False, targets: tuple[str, ...] = ("flow",)
) -> FlowAugment | None:
    """Config -> ``FlowAugment``, or None when the config is empty (checked here, before any data is read)."""
    if not cfg:
        return None
    return FlowAugment(cfg, sparse=sparse, targets=targets)


def apply_flow_augment(aug: FlowAugment | None, sample: dict) -> dict:
    """Run ``aug`` (or nothing) on a numpy flow sample; images always come back float32 in [0, 1]."""
    if aug is not None:
        return aug(sample)
    out = dict(sample)
    for key in _IMAGES:
        if key in out:
            out[key] = to_float(out[key])
    return out
