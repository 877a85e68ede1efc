"""Baselines: training-free models that evaluation scores with the same validation as a trained one
(``scripts/evaluate.py baseline=...``): no motion, OpenCV's DIS optical flow, a constant depth."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["ConstantDepth", "DISFlow", "ZeroFlow"]


class ZeroFlow(nn.Module):
    """No motion: a (B, 2, H, W) zero flow for any pair."""

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        return image1.new_zeros(image1.shape[0], 2, *image1.shape[-2:])


class DISFlow(nn.Module):
    """OpenCV's DIS optical flow (Kroeger et al. 2016, medium preset) on the grey frames: a classical,
    training-free reference. Runs on the CPU, one pair at a time."""

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        import cv2

        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        flows = []
        for a, b in zip(image1, image2):
            grey = [
                np.ascontiguousarray((f.float().mean(0).clamp(0, 1) * 255).round().byte().cpu().numpy()) for f in (a, b)
            ]  # (H, W) uint8
            flows.append(torch.from_numpy(dis.calc(grey[0], grey[1], None)).permute(2, 0, 1))  # (2, H, W)
        return torch.stack(flows).to(image1.device)


class ConstantDepth(nn.Module):
    """The same depth everywhere: the constant-prediction baseline."""

    def __init__(self, depth: float):
        super().__init__()
        self.depth = float(depth)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.new_full((image.shape[0], 1, *image.shape[-2:]), self.depth)
