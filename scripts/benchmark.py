"""Benchmarks, measured side by side in one run and reported as medians and ratios.

    python scripts/benchmark.py data [--backbone mci2] [--size 128] [--batch 8] [--steps 5]

``data``: time to generate one batch of the embedded synthetic scenes vs one training step of
backbone + LR-ASPP on that batch. The ratio says whether data can ever starve training.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_data(args) -> dict[str, float]:
    from densekit import create_model
    from densekit.data import SyntheticScenes
    from densekit.losses import seg_loss

    size = (args.size, args.size)
    seg = SyntheticScenes("train", length=10_000, size=size, targets=("mask",), augment={"hflip": 0.5})
    full = SyntheticScenes("train", length=10_000, size=size, targets=("mask", "depth", "flow"))
    counter = iter(range(10_000))

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

    step()  # warm-up
    t_seg = _median_time(lambda: batch(seg), args.steps)
    t_full = _median_time(lambda: batch(full), args.steps)
    t_step = _median_time(step, args.steps)
    rows = {
        "seg batch generation (s)": t_seg,
        "all-targets batch generation (s)": t_full,
        f"{args.backbone}+lraspp train step (s)": t_step,
        "generation / step (seg)": t_seg / t_step,
        "generation / step (all targets)": t_full / t_step,
    }
    print(f"\nbatch {args.batch} at {args.size}x{args.size}, median of {args.steps}, {torch.get_num_threads()} threads")
    for k, v in rows.items():
        print(f"  {k:<40} {v:.4f}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["data"])
    parser.add_argument("--backbone", default="mci2")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    {"data": bench_data}[args.what](args)


if __name__ == "__main__":
    main()
