"""Datasets: each yields dicts following ``densekit.data.schema`` (tensors, CHW images in [0, 1])."""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch.utils.data import Dataset

from .flow_transforms import apply_flow_augment, build_flow_augment
from .schema import check_sample
from .synthetic import CLASS_NAMES, SceneConfig, generate_scene
from .transforms import apply_augment, build_augment

_TARGETS = ("mask", "depth", "flow")


def to_tensors(sample: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """numpy HWC sample -> schema tensors: image(s) (3,H,W), mask (H,W) int64, depth (1,H,W), flow (2,H,W)."""
    out = {}
    for key, value in sample.items():
        if key in ("image", "image2", "flow"):
            out[key] = torch.from_numpy(np.ascontiguousarray(value.transpose(2, 0, 1))).float()
        elif key == "depth":
            out[key] = torch.from_numpy(np.ascontiguousarray(value))[None].float()
        elif key == "mask":
            out[key] = torch.from_numpy(np.ascontiguousarray(value)).long()
        elif key == "valid":
            out[key] = torch.from_numpy(np.ascontiguousarray(value)).bool()
    return out


class SyntheticScenes(Dataset):
    """The embedded procedural scenes (``densekit.data.synthetic``): sample ``i`` of ``split`` is always the
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
