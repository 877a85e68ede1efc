"""How an image file's pixel values become the batch schema's float32 RGB in [0, 1].

8-bit images (JPEG, PNG, BMP: Pillow modes L, P, RGB, RGBA, CMYK, ...) are what the pretrained stems saw;
they are converted to RGB and divided by 255, bit for bit as ever. Images that are not 8-bit -- 16-bit and
32-bit integer or float grey images (Pillow modes I;16*, I, F: microscopy, medical, scientific data) --
rarely use their dtype's range: a 16-bit camera image may hold 0..235 of 0..65535, which divided by the
dtype maximum would reach the network as a black image. They are normalised by a configurable rule
(``intensity:`` in conf/data/folder.yaml):

  mode: auto        8-bit images / 255; anything else by percentiles (the default)
        percentile  every image (8-bit too) by percentiles
        dtype       by the dtype's range: unsigned/signed integers / their maximum, float clipped to [0, 1]
  low, high         the percentiles (default 0.5 and 99.5) mapped to 0 and 1; values outside are clipped
  scope: dataset    percentiles measured once over a sample of the train split (up to ``SAMPLE`` images,
                    spread over it) and used for every split, so val/test see the same mapping as train
         image      percentiles of each image itself (contrast differs per image)
  range: [lo, hi]   a fixed raw range instead of measured percentiles (e.g. what a dataset-scope run logged)

Pillow reads 16-bit colour files (48/64-bit PNG, 16-bit or float RGB TIFF) as 8-bit RGB or not at all, so
those are read with OpenCV (PNG) or tifffile (TIFF) at their full depth (``read_wide_colour``) and follow the
same rule. Single-channel images are replicated to 3 channels (the RGB-pretrained stems take 3), so a dataset
says ``in_channels = 3`` and ``source_channels = 1``. Non-finite float values (NaN, inf) become 0 after
scaling.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ...errors import ConfigError

MODES = ("auto", "percentile", "dtype")
SCOPES = ("dataset", "image")
SAMPLE = 16  # train images measured for dataset-scope percentiles
_VALUES_PER_IMAGE = 1 << 16  # strided subsample per image: percentiles to ~0.01 % at any image size
# Pillow modes whose pixels are not 8-bit; every other mode converts losslessly to 8-bit RGB
WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")
GREY_MODES = ("1", "L", "LA", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")

DEFAULT = {"mode": "auto", "low": 0.5, "high": 99.5, "scope": "dataset", "range": None}

_CACHE: dict[tuple, tuple[float, float, int]] = {}  # (files, rule) -> measured (lo, hi, images)


def check_intensity(cfg: dict | None) -> dict:
    """The ``intensity`` config -> a complete, checked dict (defaults filled); ConfigError naming the key."""
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(DEFAULT)
    if unknown:
        raise ConfigError(f"data.intensity: unknown key(s) {sorted(unknown)}; expected any of {sorted(DEFAULT)}")
    out = {**DEFAULT, **{k: v for k, v in cfg.items() if v is not None or k == "range"}}
    if out["mode"] not in MODES:
        raise ConfigError(f"data.intensity.mode={out['mode']!r}: expected one of {list(MODES)}")
    if out["scope"] not in SCOPES:
        raise ConfigError(f"data.intensity.scope={out['scope']!r}: expected one of {list(SCOPES)}")
    for key in ("low", "high"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 100.0:
            raise ConfigError(f"data.intensity.{key}={v!r}: expected a percentile in [0, 100]")
    if out["low"] >= out["high"]:
        raise ConfigError(f"data.intensity: low={out['low']} must be below high={out['high']}")
    r = out["range"]
    if r is not None:
        ok = (
            isinstance(r, (list, tuple))
            and len(r) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)
        )
        if not ok or not r[0] < r[1]:
            raise ConfigError(f"data.intensity.range={r!r}: expected [lo, hi] with lo < hi (raw pixel values)")
        out["range"] = (float(r[0]), float(r[1]))
    return out


def is_wide(mode: str) -> bool:
    """Whether a Pillow mode holds values that are not 8-bit."""
    return mode in WIDE_MODES


def raw_pixels(image: Image.Image) -> np.ndarray:
    """A decoded image as numpy: (H, W, 3) uint8 RGB for 8-bit modes (the pretrained stems' input, and the
    few greyscale / CMYK JPEGs real datasets contain), (H, W) of the file's own dtype otherwise."""
    if is_wide(image.mode):
        return np.asarray(image)
    return np.asarray(image.convert("RGB"))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_wide_colour_file(path: Path) -> bool:
    """Whether ``path`` is a colour image with more than 8 bits per sample, which Pillow would cut to 8-bit
    RGB: a 16-bit RGB(A) PNG (from the IHDR header: 26 bytes) or a non-8-bit multi-channel TIFF."""
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        try:
            with open(path, "rb") as f:
                head = f.read(26)
        except OSError:
            return False
        # IHDR: bytes 24 (bit depth) and 25 (colour type: 2 RGB, 6 RGBA)
        return len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[24] == 16 and head[25] in (2, 6)
    if suffix in (".tif", ".tiff"):
        try:
            import tifffile
        except ImportError:  # not installed: Pillow's reading stands
            return False
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return page.dtype != np.uint8 and page.samplesperpixel >= 3
        except Exception:  # not a TIFF tifffile can parse: Pillow decides (and names the file if unreadable)
            return False
    return False


def read_wide_colour(path: Path) -> np.ndarray:
    """A file ``is_wide_colour_file`` accepted -> (H, W, 3) of its own dtype, RGB order (alpha dropped);
    ValueError naming the file when it cannot be read or has another channel count."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if bgr is None or bgr.ndim != 3:
            raise ValueError(f"{path}: unreadable 16-bit colour PNG")
        return np.ascontiguousarray(bgr[..., 2::-1])  # BGR(A) -> RGB
    import tifffile

    arr = tifffile.imread(path)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W) -> (H, W, C)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"{path}: a TIFF of shape {arr.shape}; expected (H, W, 3) or (H, W, 4) colour (or grey)")
    return np.ascontiguousarray(arr[..., :3])


def _subsample(values: np.ndarray) -> np.ndarray:
    flat = values.reshape(-1)
    flat = flat[:: max(1, flat.size // _VALUES_PER_IMAGE)]
    return flat[np.isfinite(flat)] if flat.dtype.kind == "f" else flat


def percentile_range(arrays: list[np.ndarray], low: float, high: float) -> tuple[float, float]:
    """The (low, high) percentiles of the pixel values of ``arrays`` together (NaN/inf left out)."""
    values = np.concatenate([_subsample(a).astype(np.float64) for a in arrays]) if arrays else np.zeros(0)
    if not values.size:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [low, high])
    return float(lo), float(hi)


def scale(raw: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Raw values -> float32 in [0, 1]: lo -> 0, hi -> 1, clipped; a flat range (hi <= lo) gives 0 and 1 at
    lo (a constant image stays constant, not NaN)."""
    span = hi - lo if hi > lo else 1.0
    out = (raw.astype(np.float32) - np.float32(lo)) / np.float32(span)
    return np.nan_to_num(np.clip(out, 0.0, 1.0), nan=0.0, posinf=1.0, neginf=0.0).astype(np.float32)


def dtype_scale(raw: np.ndarray) -> np.ndarray:
    """The dtype rule: integers / the dtype maximum (negatives clipped), float clipped to [0, 1]."""
    if raw.dtype.kind in "ui":
        return scale(raw, 0.0, float(np.iinfo(raw.dtype).max))
    return scale(raw, 0.0, 1.0)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 3) by replication; (H, W, 3) unchanged."""
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


class IntensityRule:
    """Applies a checked ``intensity`` config to decoded images; holds the dataset-scope range once measured.

    ``apply(raw)`` takes ``raw_pixels(image)`` and returns (H, W, 3): uint8 where the rule keeps 8-bit images
    as they are (the transforms then divide by 255 exactly as before), float32 in [0, 1] otherwise.
    """

    def __init__(self, cfg: dict | None = None):
        self.cfg = check_intensity(cfg)
        self.range: tuple[float, float] | None = self.cfg["range"]
        self.note = ""  # how the range was obtained, for the log

    def applies_to(self, raw: np.ndarray) -> bool:
        """Whether this image is rescaled (rather than 8-bit / 255)."""
        return self.cfg["mode"] == "percentile" or (self.cfg["mode"] == "auto" and raw.dtype != np.uint8)

    @property
    def needs_dataset_range(self) -> bool:
        return self.cfg["mode"] != "dtype" and self.cfg["scope"] == "dataset" and self.range is None

    def measure(self, paths: list, read) -> int:
        """Measure the dataset-scope range over ``paths`` (``read(path) -> raw``), only over the images the
        rule rescales; cached per process by file list and rule, so the val split reuses the train split's
        measurement. Returns how many images were measured (0: none needed rescaling)."""
        low, high = self.cfg["low"], self.cfg["high"]
        key = (tuple(str(p) for p in paths), self.cfg["mode"], low, high)
        if key not in _CACHE:
            arrays = [a for a in (read(p) for p in paths) if a is not None and self.applies_to(a)]
            lo, hi = percentile_range(arrays, low, high) if arrays else (0.0, 1.0)
            _CACHE[key] = (lo, hi, len(arrays))
        lo, hi, n = _CACHE[key]
        if n:
            self.range = (lo, hi)
            self.note = (
                f"intensity: {'all' if self.cfg['mode'] == 'percentile' else 'non-8-bit'} images scaled "
                f"by the "
                f"{low:g}-{high:g} percentiles of {n} train image(s), raw [{lo:.6g}, {hi:.6g}] -> [0, 1] "
                f"(fix it with data.intensity.range=[{lo:.6g},{hi:.6g}])"
            )
        return n

    def apply(self, raw: np.ndarray) -> np.ndarray:
        if not self.applies_to(raw):  # 8-bit kept for the / 255 later, or the dtype rule
            return to_rgb(raw) if raw.dtype == np.uint8 else to_rgb(dtype_scale(raw))
        if self.range is not None:
            lo, hi = self.range
        else:  # image scope, or dataset scope whose train sample held no image of this kind
            lo, hi = percentile_range([raw], self.cfg["low"], self.cfg["high"])
        return to_rgb(scale(raw, lo, hi))


__all__ = [
    "DEFAULT",
    "GREY_MODES",
    "IntensityRule",
    "MODES",
    "SAMPLE",
    "check_intensity",
    "dtype_scale",
    "is_wide",
    "is_wide_colour_file",
    "percentile_range",
    "raw_pixels",
    "read_wide_colour",
    "scale",
    "to_rgb",
]
