"""A real image pair with dense flow ground truth that ships with scikit-image: nothing to download."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ...schema import check_sample
from ..readers.base import to_tensors
from ..registry import DATASETS


@DATASETS.register("motorcycle", tasks=("flow",), dims=2)
class StereoMotorcycle(Dataset):
    """A real image pair with dense ground truth that ships with scikit-image (no download): the
    Middlebury 2014 "Motorcycle" stereo pair (Scharstein et al., GCPR 2014) at 500x741, left -> right.

    A rectified stereo pair is a flow pair with purely horizontal motion: a left-image pixel at x appears
    at x - d in the right image, so u = -disparity, v = 0 (checked by warping: the right image sampled
    at x - d matches the left image with 3x less error than at x + d). Disparities span 7-60 px (up to
    0.08 x width); about 7 % of pixels have no ground truth (occluded or unmeasured) and are invalid.
    Used to check that a model trained only on the embedded scenes transfers to real photographs.
    ``split`` is accepted for the common interface; every split is this one pair (``length`` repeats it).
    """

    def __init__(self, split: str = "val", targets: tuple[str, ...] = ("flow",), length: int = 1, augment=None):
        bad = [t for t in targets if t != "flow"]
        if bad:
            raise ValueError(f"StereoMotorcycle provides only the 'flow' target; the task asked for {list(targets)}")
        if augment:
            raise ValueError("StereoMotorcycle is an evaluation pair: augment must be empty")
        self.split, self.length = split, int(length)
        from skimage import data as skdata

        left, right, disp = skdata.stereo_motorcycle()
        valid = np.isfinite(disp)
        flow = np.zeros(disp.shape + (2,), np.float32)
        flow[..., 0] = np.where(valid, -disp, 0.0)  # (H, W, 2): u = -d, v = 0
        self.sample = {
            "image": left.astype(np.float32) / 255,
            "image2": right.astype(np.float32) / 255,
            "flow": flow,
            "valid": valid,
        }

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        return check_sample(to_tensors(self.sample), required=("image", "image2", "flow", "valid"))


__all__ = ["StereoMotorcycle"]
