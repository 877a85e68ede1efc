"""``benchmark.py data``: can data generation starve training?

Time to generate one batch of the embedded synthetic scenes (segmentation targets only, and all targets:
mask, depth, flow) against one training step of backbone + LR-ASPP on such a batch, and their ratio. A ratio
well below 1 means one loader worker keeps up with the model.
"""

from __future__ import annotations

import argparse

import torch

from .timing import median_time, ratio


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="mci2")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed repeats (median reported)")


def run(args: argparse.Namespace) -> dict[str, float]:
    from densekit import create_model
    from densekit.data import SyntheticScenes
    from densekit.losses import seg_loss

    size = (args.size, args.size)
    seg = SyntheticScenes("train", length=10_000, size=size, targets=("mask",), augment={"hflip": 0.5})
    full = SyntheticScenes("train", length=10_000, size=size, targets=("mask", "depth", "flow"))
    counter = iter(range(10_000))  # a new sample index per call: no cache can answer

    def batch(ds):
        return torch.utils.data.default_collate([ds[next(counter)] for _ in range(args.batch)])

    model = create_model("seg", backbone=args.backbone, head="lraspp", num_classes=5).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fixed = batch(seg)

    def step():
        loss = seg_loss(model(fixed["image"]), fixed["mask"])
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_seg = median_time(lambda: batch(seg), args.steps)
    t_full = median_time(lambda: batch(full), args.steps)
    t_step = median_time(step, args.steps, warmup=1)
    rows = {
        "seg batch generation (s)": t_seg,
        "all-targets batch generation (s)": t_full,
        f"{args.backbone}+lraspp train step (s)": t_step,
        "generation / step (seg)": ratio(t_seg, t_step),
        "generation / step (all targets)": ratio(t_full, t_step),
    }
    print(f"\nbatch {args.batch} at {args.size}x{args.size}, median of {args.steps}, {torch.get_num_threads()} threads")
    for k, v in rows.items():
        print(f"  {k:<40} {v:.4f}")
    return rows
