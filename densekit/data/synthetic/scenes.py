"""The embedded procedural scenes: textured 2D scenes with exact targets for the seg, depth and flow tasks,
and ``SyntheticScenes``, the dataset that serves them (the volumes: ``densekit.data.synthetic.volumes``).

One generator, seeded per sample, yields at once:
  * a class mask (background + 4 shape classes), occlusion resolved by depth;
  * a metric depth map (objects are fronto-parallel at their own depth, the background a slanted plane);
  * a second frame where every object moved by a known similarity transform (translation, rotation,
    and the scale change its depth change implies), plus the exact forward flow and an occlusion-aware
    valid mask (a pixel is valid when the surface it shows is still the visible one in frame 2).

Textures are real photographs shipped inside scikit-image (no downloads). Object classes carry a
class-typical hue, but a fraction of objects is "camouflaged" with a random hue, so shape has to be
learned as well as colour. Everything is numpy + OpenCV remaps so generation stays far below a
training step's cost (see ``scripts/benchmark.py data``).
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ...schema import check_sample
from ..readers.base import to_tensors
from ..registry import DATASETS
from ..transforms.flow import apply_flow_augment, build_flow_augment
from ..transforms.image import apply_augment, build_augment

CLASS_NAMES = ("background", "disc", "box", "triangle", "star")
# Typical hue per object class (HSV hue in [0, 1)); background photographs are desaturated.
CLASS_HUES = (None, 0.0, 0.33, 0.62, 0.14)

_TEXTURE_NAMES = (
    "astronaut",
    "camera",
    "coins",
    "moon",
    "chelsea",
    "coffee",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "cat",
    "clock",
    "text",
    "page",
)


@functools.lru_cache(maxsize=1)
def texture_bank() -> tuple[np.ndarray, ...]:
    """The real photographs used as textures: float32 RGB in [0, 1], one array each (cached per process)."""
    import skimage.data

    bank = []
    for name in _TEXTURE_NAMES:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        bank.append(np.ascontiguousarray(img[..., :3], dtype=np.float32) / 255.0)
    return tuple(bank)


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of the scene generator (all sizes in pixels of the generated image)."""

    height: int = 128
    width: int = 128
    min_objects: int = 3
    max_objects: int = 6
    camouflage: float = 0.15  # probability that an object gets a random hue instead of its class hue
    hue_jitter: float = 0.06
    min_depth: float = 1.5  # metres, object depth range
    max_depth: float = 6.0
    focal: float = 0.9  # focal length as a fraction of the image width
    max_flow: float = 0.125  # largest object translation as a fraction of the width (64 px at 512 px)
    max_rotation: float = 0.15  # radians between frames
    max_depth_change: float = 0.15  # relative depth change between frames (gives the scale change)
    background_pan: float = 0.04  # camera pan, fraction of the width
    noise: float = 0.01
    # How translations are drawn. "uniform": each of the x and y shifts uniform in +-max_flow (objects) or
    # +-background_pan (camera). "heavy": a uniform direction and a log-uniform length between min_flow
    # and max_flow (background_pan for the camera): as many motions per octave of length, so small motions
    # stay common while lengths of tens of pixels are no longer rare -- the long-tailed speed statistics of
    # real footage (Sintel's s40+ pixels; AutoFlow, Sun et al. CVPR 2021, learns such wide ranges).
    motion: str = "uniform"
    min_flow: float = 0.002  # "heavy": shortest translation, fraction of the width (1 px at 512)
    background_rotation: float = 0.0  # camera roll between frames, radians (0: none; drawn only when > 0)

    def __post_init__(self):
        if self.height < 16 or self.width < 16:
            raise ValueError(f"scene size must be at least 16x16 pixels, got {self.height}x{self.width}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got min_objects={self.min_objects}, "
                f"max_objects={self.max_objects}"
            )
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        if self.motion not in ("uniform", "heavy"):
            raise ValueError(f"scene motion must be 'uniform' or 'heavy', got {self.motion!r}")
        if self.motion == "heavy" and not 0 < self.min_flow < min(self.max_flow, self.background_pan):
            raise ValueError(
                f"motion='heavy' needs 0 < min_flow < max_flow and background_pan, got min_flow={self.min_flow}, "
                f"max_flow={self.max_flow}, background_pan={self.background_pan}"
            )
        if self.background_rotation < 0:
            raise ValueError(f"background_rotation must be >= 0 radians, got {self.background_rotation}")


def _shape_mask(kind: int, u: np.ndarray, v: np.ndarray, aspect: float) -> np.ndarray:
    """Inside-test of the unit shape of class ``kind`` in its local coordinates (u right, v down)."""
    if kind == 1:  # disc
        return u * u + v * v <= 1.0
    if kind == 2:  # box with a per-instance aspect ratio
        return (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85 * aspect)
    if kind == 3:  # equilateral triangle, circumradius 1: the edges lie 0.5 from the centre
        inside = np.ones_like(u, dtype=bool)
        for ang in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            inside &= u * np.cos(ang) + v * np.sin(ang) <= 0.5
        return inside
    if kind == 4:  # five-pointed star (smooth polar profile)
        r = np.sqrt(u * u + v * v)
        phi = np.arctan2(v, u)
        return r <= 0.78 + 0.22 * np.cos(5 * phi)
    raise ValueError(f"unknown shape class {kind}")


def _tint(gray: np.ndarray, hue: float, sat: float) -> np.ndarray:
    """Colour a luminance texture (H, W) with a hue/saturation: returns (H, W, 3) float32 in [0, 1]."""
    hsv = np.stack([np.full_like(gray, hue * 360.0), np.full_like(gray, sat), np.clip(gray, 0.0, 1.0)], axis=-1)
    return cv2.cvtColor(hsv.astype(np.float32), cv2.COLOR_HSV2RGB)


def _random_patch(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop of a random photograph, resized to size x size: (size, size, 3) float32."""
    bank = texture_bank()
    img = bank[rng.integers(len(bank))]
    h, w = img.shape[:2]
    side = int(rng.uniform(0.3, 1.0) * min(h, w))
    y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    patch = img[y0 : y0 + side, x0 : x0 + side]  # a view: OpenCV reads the rows in place, no copy
    if rng.random() < 0.5:
        patch = cv2.flip(patch, 1)  # the same pixels as patch[:, ::-1], copied twice as fast as numpy does
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def _rot(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


@dataclass
class _Layer:
    """One textured surface: image point p = centre + radius * R(theta) @ u for local coords u."""

    kind: int  # 0 background, else object class
    centre: np.ndarray  # (2,) x, y in pixels
    radius: float
    theta: float
    aspect: float
    depth: float
    texture: np.ndarray  # (T, T, 3); local coords [-extent, extent] span the texture
    extent: float
    # motion to frame 2: translation, scale, rotation, new depth
    shift: np.ndarray
    scale: float
    dtheta: float
    depth2: float

    def local(self, xs: np.ndarray, ys: np.ndarray, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Local coordinates (u, v) of image points in frame 0 or 1."""
        if frame == 0:
            c, r, th = self.centre, self.radius, self.theta
        else:
            c, r, th = self.centre + self.shift, self.radius * self.scale, self.theta + self.dtheta
        inv = _rot(-th) / r
        dx, dy = xs - c[0], ys - c[1]
        return inv[0, 0] * dx + inv[0, 1] * dy, inv[1, 0] * dx + inv[1, 1] * dy

    def sample(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        t = self.texture.shape[0]
        mx = ((u / self.extent + 1.0) * 0.5 * (t - 1)).astype(np.float32)
        my = ((v / self.extent + 1.0) * 0.5 * (t - 1)).astype(np.float32)
        return cv2.remap(self.texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    def window(self, cfg: SceneConfig, frame: int) -> tuple[slice, slice]:
        """Rows and columns of the image that can hold this surface in ``frame``: the background covers
        everything; an object lies within 1.21 radii of its centre (the box's corner, 0.85 * sqrt(2), is the
        farthest point of any shape), plus a pixel of margin. Rendering only there changes no pixel."""
        if self.kind == 0:
            return slice(0, cfg.height), slice(0, cfg.width)
        c = self.centre if frame == 0 else self.centre + self.shift
        reach = 1.21 * self.radius * (1.0 if frame == 0 else self.scale) + 1.0
        x0, x1 = max(0, int(np.floor(c[0] - reach))), min(cfg.width, int(np.ceil(c[0] + reach)) + 1)
        y0, y1 = max(0, int(np.floor(c[1] - reach))), min(cfg.height, int(np.ceil(c[1] + reach)) + 1)
        return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))

    def inside(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        if self.kind == 0:
            return np.ones(u.shape, dtype=bool)
        return _shape_mask(self.kind, u, v, self.aspect)

    def forward_map(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where frame-0 points of this surface land in frame 1: p' = c + t + s R(dtheta) (p - c)."""
        m = self.scale * _rot(self.dtheta)
        dx, dy = xs - self.centre[0], ys - self.centre[1]
        cx, cy = self.centre + self.shift
        return cx + m[0, 0] * dx + m[0, 1] * dy, cy + m[1, 0] * dx + m[1, 1] * dy


def _translation(rng: np.random.Generator, cfg: SceneConfig, largest: float) -> np.ndarray:
    """A translation (2,) in pixels, at most ``largest`` (a fraction of the width) per ``cfg.motion``; the
    "uniform" draw is the generator's original one (same random numbers, same scenes)."""
    if cfg.motion == "uniform":
        return rng.uniform(-1, 1, size=2) * largest * cfg.width
    length = np.exp(rng.uniform(np.log(cfg.min_flow), np.log(largest))) * cfg.width
    angle = rng.uniform(0, 2 * np.pi)
    return length * np.array([np.cos(angle), np.sin(angle)])


def _make_layers(rng: np.random.Generator, cfg: SceneConfig) -> list[_Layer]:
    h, w = cfg.height, cfg.width
    f = cfg.focal * w
    bg_tex = _random_patch(rng, max(h, w))
    bg_tex = _desaturate(bg_tex, rng.uniform(0.0, 0.35)) * rng.uniform(0.7, 1.1)
    pan = _translation(rng, cfg, cfg.background_pan)
    layers = [
        _Layer(
            kind=0,
            centre=np.array([w / 2, h / 2]),
            radius=max(h, w) / 2,
            theta=0.0,
            aspect=1.0,
            depth=np.inf,
            texture=np.clip(bg_tex, 0, 1).astype(np.float32),
            extent=1.0,
            shift=pan,
            scale=float(rng.uniform(0.97, 1.03)),
            dtheta=0.0,
            depth2=np.inf,
        )
    ]
    if cfg.background_rotation > 0:  # drawn only then: scenes without camera roll stay as they were
        layers[0].dtheta = float(rng.uniform(-1, 1) * cfg.background_rotation)
    for _ in range(rng.integers(cfg.min_objects, cfg.max_objects + 1)):
        kind = int(rng.integers(1, len(CLASS_NAMES)))
        depth = rng.uniform(cfg.min_depth, cfg.max_depth)
        size_m = rng.uniform(0.5, 1.0)  # object radius in metres; its image size follows from depth
        radius = f * size_m / depth
        gray = _random_patch(rng, 64).mean(axis=2)
        gray = (gray - gray.mean()) * rng.uniform(0.8, 1.6) + rng.uniform(0.45, 0.8)
        hue = rng.random() if rng.random() < cfg.camouflage else CLASS_HUES[kind] + rng.normal(0, cfg.hue_jitter)
        tex = _tint(gray, hue % 1.0, rng.uniform(0.45, 0.9))
        depth2 = depth * (1.0 + rng.uniform(-1, 1) * cfg.max_depth_change)
        layers.append(
            _Layer(
                kind=kind,
                centre=np.array([rng.uniform(0, w), rng.uniform(0, h)]),
                radius=radius,
                theta=rng.uniform(0, 2 * np.pi),
                aspect=rng.uniform(0.45, 1.0),
                depth=depth,
                texture=tex,
                extent=1.0,
                shift=_translation(rng, cfg, cfg.max_flow),
                scale=depth / depth2,  # pinhole: image size is inversely proportional to depth
                dtheta=rng.uniform(-1, 1) * cfg.max_rotation,
                depth2=depth2,
            )
        )
    return layers


def _desaturate(rgb: np.ndarray, sat: float) -> np.ndarray:
    gray = rgb.mean(axis=2, keepdims=True)
    return gray + sat * (rgb - gray)


def _render(layers: list[_Layer], cfg: SceneConfig, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Painter's algorithm (far to near): returns image (H, W, 3) and visible layer index (H, W)."""
    ys, xs = np.mgrid[0 : cfg.height, 0 : cfg.width].astype(np.float64)
    xs += 0.5  # pixel centres
    ys += 0.5
    image = np.zeros((cfg.height, cfg.width, 3), np.float32)
    ids = np.zeros((cfg.height, cfg.width), np.int64)
    order = sorted(range(len(layers)), key=lambda i: -(layers[i].depth if frame == 0 else layers[i].depth2))
    for i in order:
        rows, cols = layers[i].window(cfg, frame)
        u, v = layers[i].local(xs[rows, cols], ys[rows, cols], frame)
        inside = layers[i].inside(u, v)
        if not inside.any():
            continue
        image[rows, cols][inside] = layers[i].sample(u, v)[inside]
        ids[rows, cols][inside] = i
    return image, ids


def generate_scene(seed, cfg: SceneConfig = SceneConfig(), with_flow: bool = True) -> dict[str, np.ndarray]:
    """One scene, fully determined by ``seed`` (an int or a sequence of ints for numpy's SeedSequence).

    Returns numpy arrays (H, W = cfg.height, cfg.width):
      image (H,W,3) float32 [0,1]; mask (H,W) int64 class ids; depth (H,W) float32 metres;
      and when ``with_flow``: image2 (H,W,3), flow (H,W,2) float32 pixels (u right, v down),
      valid (H,W) bool — the flow is exact and valid where the surface is visible in both frames.
    """
    rng = np.random.default_rng(seed)
    layers = _make_layers(rng, cfg)
    image, ids = _render(layers, cfg, 0)
    kinds = np.array([layer.kind for layer in layers])
    ys, xs = np.mgrid[0 : cfg.height, 0 : cfg.width].astype(np.float64)
    # Background depth: a slanted plane, far at the top (20-30 m) and nearer (12-15 m) at the bottom,
    # always behind every object so the occlusion order and the depth map agree.
    far, near = rng.uniform(20, 30), rng.uniform(12, 15)
    depth = far + (near - far) * (ys + 0.5) / cfg.height
    obj_depth = np.array([layer.depth for layer in layers])
    depth = np.where(ids > 0, obj_depth[ids], depth).astype(np.float32)
    out = {"image": image, "mask": kinds[ids], "depth": depth}
    if with_flow:
        image2, ids2 = _render(layers, cfg, 1)
        gain = rng.uniform(0.9, 1.1)  # brightness change between the frames
        image2 = image2 * gain
        # every pixel moves with the surface it shows: p' = c + t + s R(dtheta) (p - c), the layers'
        # parameters gathered per pixel by its visible layer id
        m = np.stack([layer.scale * _rot(layer.dtheta) for layer in layers])[ids]  # (H, W, 2, 2)
        c = np.stack([layer.centre for layer in layers])[ids]  # (H, W, 2)
        c2 = np.stack([layer.centre + layer.shift for layer in layers])[ids]
        px, py = xs + 0.5, ys + 0.5
        dx, dy = px - c[..., 0], py - c[..., 1]
        flow = np.empty((cfg.height, cfg.width, 2), np.float64)
        flow[..., 0] = (c2[..., 0] + m[..., 0, 0] * dx + m[..., 0, 1] * dy) - px
        flow[..., 1] = (c2[..., 1] + m[..., 1, 0] * dx + m[..., 1, 1] * dy) - py
        tx = np.floor(xs + 0.5 + flow[..., 0]).astype(np.int64)
        ty = np.floor(ys + 0.5 + flow[..., 1]).astype(np.int64)
        inb = (tx >= 0) & (tx < cfg.width) & (ty >= 0) & (ty < cfg.height)
        valid = np.zeros_like(inb)
        valid[inb] = ids2[ty[inb], tx[inb]] == ids[inb]  # occluded or out of view -> invalid
        out.update(image2=image2, flow=flow.astype(np.float32), valid=valid)
    for key in ("image", "image2"):
        if key in out:
            noisy = out[key] + rng.normal(0, cfg.noise, out[key].shape)
            out[key] = np.clip(noisy, 0.0, 1.0).astype(np.float32)
    return out


_TARGETS = ("mask", "depth", "flow")


@DATASETS.register("synthetic", tasks=("seg", "depth", "flow"), dims=2)
class SyntheticScenes(Dataset):
    """The embedded procedural scenes (``generate_scene``): sample ``i`` of ``split`` is always the
    same scene for the same ``seed``; train and val draw from disjoint seed streams.

    ``targets`` picks what the task needs ("mask", "depth", "flow"); the flow frame is only rendered when
    asked for, since it costs a second render.
    """

    class_names = CLASS_NAMES

    def __init__(
        self,
        split: str = "train",
        length: int = 1000,
        size: tuple[int, int] = (128, 128),
        seed: int = 0,
        targets: tuple[str, ...] = ("mask",),
        augment: dict | None = None,
        scene: dict | None = None,
    ):
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        bad = [t for t in targets if t not in _TARGETS]
        if bad:
            raise ValueError(f"unknown target(s) {bad}; the synthetic scenes provide {list(_TARGETS)}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.split, self.length, self.seed, self.targets = split, int(length), int(seed), tuple(targets)
        knobs = {f.name for f in dataclasses.fields(SceneConfig)} - {"height", "width"}
        unknown = sorted(set(scene or {}) - knobs)
        if unknown:
            raise ValueError(f"unknown scene key(s) {unknown}; the generator's knobs are {sorted(knobs)}")
        self.cfg = SceneConfig(height=int(size[0]), width=int(size[1]), **(scene or {}))
        # flow vectors must move with the pixels (scaled, negated on flips): the flow-aware augmenter
        if "flow" in self.targets:
            self.augment = build_flow_augment(augment, targets=self.targets) if split == "train" else None
            self._apply = apply_flow_augment
        else:
            self.augment = build_augment(augment) if split == "train" else None
            self._apply = apply_augment
        self._split_code = zlib.crc32(split.encode())  # stable across processes, unlike hash()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        scene = generate_scene([self.seed, self._split_code, index], self.cfg, with_flow="flow" in self.targets)
        keep = {"image"} | set(self.targets)
        if "flow" in self.targets:
            keep |= {"image2", "valid"}
        sample = {k: v for k, v in scene.items() if k in keep}
        if "valid" not in sample:
            sample["valid"] = np.ones(sample["image"].shape[:2], bool)
        sample = self._apply(self.augment, sample)
        return check_sample(to_tensors(sample))


__all__ = ["CLASS_NAMES", "SceneConfig", "SyntheticScenes", "generate_scene", "texture_bank"]
