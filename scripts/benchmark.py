"""Benchmarks, measured side by side in one run and reported as medians and ratios.

    python scripts/benchmark.py data [--backbone mci2] [--size 128] [--batch 8] [--steps 5]
    python scripts/benchmark.py heads [--size 512] [--steps 5] [--backbones ...] [--heads ...]
    python scripts/benchmark.py backbones [--sizes 256 512] [--steps 5] [--backbones ...]
    python scripts/benchmark.py scan [bench_scan.py options]   (selective scan vs mambapy vs recurrence)

``data``: time to generate one batch of the embedded synthetic scenes vs one training step of
backbone + LR-ASPP on that batch. The ratio says whether data can ever starve training.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


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


def count_macs(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Multiply-accumulates of one forward (torch's FlopCounterMode counts 2 FLOPs per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2


def bench_heads(args) -> list[dict]:
    """LR-ASPP fidelity cost vs torchvision side by side, then params/MACs/latency per backbone x head."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    from densekit import create_model

    x = torch.rand(1, 3, args.size, args.size)
    torch.manual_seed(0)
    ours = create_model("seg", backbone={"name": "mobilenetv3_large", "dilated": True, "pretrained": False},
                        head="lraspp", num_classes=21).eval()
    tv = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
    with torch.no_grad():
        ours(x), tv(x)  # warm-up
        # interleave the two so machine noise hits both alike
        t_ours, t_tv = [], []
        for _ in range(args.steps):
            t_ours.append(_median_time(lambda: ours(x), 1))
            t_tv.append(_median_time(lambda: tv(x), 1))
    m_ours, m_tv = statistics.median(t_ours), statistics.median(t_tv)
    print(f"\nLR-ASPP MobileNetV3-Large at {args.size}x{args.size}, median of {args.steps}:")
    print(f"  densekit {m_ours * 1000:.1f} ms | torchvision {m_tv * 1000:.1f} ms | ratio {m_ours / m_tv:.3f}")

    rows = []
    print(f"\n| backbone | head | params (M) | GMACs | CPU latency (ms, median of {args.steps}) |")
    print("|---|---|---|---|---|")
    for bb in args.backbones:
        for head in args.heads:
            torch.manual_seed(0)
            model = create_model("seg", backbone={"name": bb, "pretrained": False}, head=head, num_classes=19).eval()
            params = sum(p.numel() for p in model.parameters()) / 1e6
            macs = count_macs(model, x) / 1e9
            with torch.no_grad():
                model(x)
                ms = _median_time(lambda: model(x), args.steps) * 1000
            rows.append({"backbone": bb, "head": head, "params_M": params, "GMACs": macs, "latency_ms": ms})
            print(f"| {bb} | {head} | {params:.2f} | {macs:.2f} | {ms:.1f} |", flush=True)
    return rows


_PEAK_RSS = """
import sys, torch
sys.path.insert(0, {root!r})
from densekit import create_backbone
torch.manual_seed(0)
bb = create_backbone({name!r}, pretrained=False).eval()
x = torch.rand(1, 3, {size}, {size})
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])  # kB
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
base = status("VmRSS:")
with torch.no_grad():
    bb(x)
print((status("VmHWM:") - base) / 1024)
"""


def peak_forward_mib(name: str, size: int) -> float:
    """Extra peak resident memory (MiB) of one inference forward, measured in a fresh process."""
    import subprocess

    code = _PEAK_RSS.format(root=str(Path(__file__).resolve().parents[1]), name=name, size=size)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_backbones(args) -> list[dict]:
    """Params, MACs, CPU latency (median) and peak forward memory per backbone and input size."""
    from densekit import create_backbone

    rows = []
    print(f"\n| backbone | input | params (M) | GMACs | CPU latency (ms, median of {args.steps}) | peak fwd memory (MiB) |")
    print("|---|---|---|---|---|---|")
    for name in args.backbones:
        torch.manual_seed(0)
        bb = create_backbone(name, pretrained=False).eval()
        params = sum(p.numel() for p in bb.parameters()) / 1e6
        for size in args.sizes:
            x = torch.rand(1, 3, size, size)
            macs = count_macs(bb, x) / 1e9
            with torch.no_grad():
                bb(x)
                ms = _median_time(lambda: bb(x), args.steps) * 1000
            mem = peak_forward_mib(name, size)
            rows.append({"backbone": name, "size": size, "params_M": params, "GMACs": macs, "latency_ms": ms, "peak_MiB": mem})
            print(f"| {name} | {size}² | {params:.2f} | {macs:.2f} | {ms:.1f} | {mem:.0f} |", flush=True)
    return rows


def main():
    if sys.argv[1:2] == ["scan"]:  # its own options: see scripts/bench_scan.py
        import runpy

        sys.argv = [str(Path(__file__).with_name("bench_scan.py"))] + sys.argv[2:]
        runpy.run_path(sys.argv[0], run_name="__main__")
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["data", "heads", "backbones"])
    parser.add_argument("--backbone", default="mci2")
    parser.add_argument("--size", type=int, default=None, help="default: 128 for data, 512 for heads")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--backbones", nargs="+", default=["mci0", "mci1", "mci2", "mobilenetv3_large", "mobilesam"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--heads", nargs="+", default=["lraspp", "unet", "fpn", "deeplabv3plus", "ffnet"])
    args = parser.parse_args()
    args.size = args.size or (128 if args.what == "data" else 512)
    {"data": bench_data, "heads": bench_heads, "backbones": bench_backbones}[args.what](args)


if __name__ == "__main__":
    main()
