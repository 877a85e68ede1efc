"""Flow building blocks: backward warping, the local correlation (cost volume) and convex upsampling.

Flow (B, 2, H, W) is in pixels, channel 0 = u (to the right), channel 1 = v (down); frame 1's pixel p
moves to p + flow(p) in frame 2, so frame 2 sampled at p + flow(p) matches frame 1 at p.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def warp(x: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward-warp ``x`` (B, C, H, W) by ``flow`` (B, 2, H, W), in pixels of x's own grid (u right, v down).

    ``out(p) = x(p + flow(p))``, bilinear. Returns ``(out, mask)`` with mask (B, 1, H, W) = 1 where all four
    bilinear taps lie inside the map, else 0, and ``out`` zeroed where the mask is 0: a sample that falls
    partly or wholly outside the frame carries no (or half-faded, zero-padded) features, which would give a
    false low-but-nonzero match in the cost volume; PWC-Net masks the same way.
    """
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w)
    gx = xs + flow[:, 0].float()  # (B, H, W) sample positions in pixels
    gy = ys + flow[:, 1].float()
    # align_corners=True: -1 and +1 are the centres of the first/last pixel, so index i -> 2i/(n-1) - 1
    grid = torch.stack((2 * gx / max(w - 1, 1) - 1, 2 * gy / max(h - 1, 1) - 1), dim=-1)  # (B, H, W, 2)
    out = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
    inside = (gx >= 0) & (gx <= w - 1) & (gy >= 0) & (gy <= h - 1)
    mask = inside.unsqueeze(1).to(x.dtype)  # (B, 1, H, W)
    return out * mask, mask


def local_correlation(f1: torch.Tensor, f2: torch.Tensor, radius: int) -> torch.Tensor:
    """Cost volume over the (2r+1)**2 displacements d = (dx, dy), |dx|, |dy| <= r (PWC-Net Eq. 3).

    f1, f2 (B, C, H, W) -> (B, (2r+1)**2, H, W) with channel ``(dy + r) * (2r + 1) + (dx + r)`` holding
    ``mean_c f1[c, y, x] * f2[c, y + dy, x + dx]`` (zero where y + dy or x + dx is outside the map). Plain
    shift-and-multiply: on CPU it measured 6x faster than an unfold/einsum formulation (no (2r+1)**2 x C
    intermediate), and it exports anywhere slicing does.
    """
    if f1.shape != f2.shape or f1.dim() != 4:
        raise ValueError(
            f"local_correlation expects two (B, C, H, W) maps of one shape, got {tuple(f1.shape)} and {tuple(f2.shape)}"
        )
    _, c, h, w = f1.shape
    k = 2 * radius + 1
    f2p = F.pad(f2, (radius, radius, radius, radius))  # (B, C, H + 2r, W + 2r), zeros outside
    costs = [(f1 * f2p[:, :, dy : dy + h, dx : dx + w]).sum(1) for dy in range(k) for dx in range(k)]
    return torch.stack(costs, dim=1) / c  # (B, (2r+1)**2, H, W)


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor, factor: int) -> torch.Tensor:
    """RAFT's convex upsampling (Teed & Deng, ECCV 2020, Sec. 3.3): each fine pixel is a softmax-weighted
    combination of its coarse 3x3 neighbourhood. flow (B, 2, h, w) (values are kept: the caller's units),
    mask (B, 9 * factor**2, h, w) logits -> (B, 2, h * factor, w * factor)."""
    b, _, h, w = flow.shape
    weights = mask.view(b, 1, 9, factor, factor, h, w).softmax(dim=2)
    # replicate padding: a border pixel's missing neighbours repeat it instead of pulling the flow to 0
    neighbours = F.unfold(F.pad(flow, (1, 1, 1, 1), mode="replicate"), 3)  # (B, 2 * 9, h * w)
    neighbours = neighbours.view(b, 2, 9, 1, 1, h, w)
    up = (weights * neighbours).sum(2)  # (B, 2, factor, factor, h, w)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(b, 2, h * factor, w * factor)  # (B, 2, h*f, w*f)


def cost_volume(f1: torch.Tensor, f2: torch.Tensor, radius: int) -> torch.Tensor:
    """PWC-Net's cost volume as the estimators see it: the local correlation, LeakyReLU(0.1) activated."""
    return F.leaky_relu(local_correlation(f1, f2, radius), 0.1)  # (B, (2r+1)**2, h, w)
