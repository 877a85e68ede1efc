"""``benchmark.py heads``: decoder heads side by side.

First densekit's LR-ASPP on MobileNetV3-Large (dilated, 21 classes) against torchvision's
``lraspp_mobilenet_v3_large`` at the same input, timed interleaved (the cost of our fidelity to the reference
architecture, as a latency ratio); then params, MACs and CPU latency for every backbone x head.
"""

from __future__ import annotations

import argparse

import torch

from .cost import count_macs, params_millions
from .timing import interleaved_medians, median_time, ratio


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=5, help="timed repeats (median reported)")
    p.add_argument("--backbones", nargs="+", default=["mci0", "mci1", "mci2", "mobilenetv3_large", "mobilesam"])
    p.add_argument("--heads", nargs="+", default=["lraspp", "unet", "fpn", "deeplabv3plus", "ffnet"])


def lraspp_vs_torchvision(size: int, steps: int) -> dict[str, float]:
    """Median seconds of densekit's LR-ASPP MobileNetV3-Large (dilated, 21 classes) and torchvision's, timed
    in turn at ``size``², batch 1; printed as a line."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    from densekit import create_model

    x = torch.rand(1, 3, size, size)
    torch.manual_seed(0)
    ours = create_model(
        "seg",
        backbone={"name": "mobilenetv3_large", "dilated": True, "pretrained": False},
        head="lraspp",
        num_classes=21,
    ).eval()
    tv = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
    with torch.no_grad():
        t = interleaved_medians({"densekit": lambda: ours(x), "torchvision": lambda: tv(x)}, steps)
    print(f"\nLR-ASPP MobileNetV3-Large at {size}x{size}, median of {steps}:")
    print(
        f"  densekit {t['densekit'] * 1000:.1f} ms | torchvision {t['torchvision'] * 1000:.1f} ms | "
        f"ratio {ratio(t['densekit'], t['torchvision']):.3f}"
    )
    return t


def run(args: argparse.Namespace) -> list[dict]:
    from densekit import create_model

    lraspp_vs_torchvision(args.size, args.steps)
    x = torch.rand(1, 3, args.size, args.size)

    rows = []
    print(f"\n| backbone | head | params (M) | GMACs | CPU latency (ms, median of {args.steps}) |")
    print("|---|---|---|---|---|")
    for bb in args.backbones:
        for head in args.heads:
            torch.manual_seed(0)
            model = create_model("seg", backbone={"name": bb, "pretrained": False}, head=head, num_classes=19).eval()
            params, macs = params_millions(model), count_macs(model, x) / 1e9
            with torch.no_grad():
                ms = median_time(lambda model=model: model(x), args.steps, warmup=1) * 1000
            rows.append({"backbone": bb, "head": head, "params_M": params, "GMACs": macs, "latency_ms": ms})
            print(f"| {bb} | {head} | {params:.2f} | {macs:.2f} | {ms:.1f} |", flush=True)
    return rows
