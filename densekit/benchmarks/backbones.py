"""``benchmark.py backbones``: params, MACs, CPU latency (median) and peak forward memory per backbone and
input size. The memory of each configuration is measured in its own fresh process (``memory.PeakMemory``:
a process's peak only grows)."""

from __future__ import annotations

import argparse

import torch

from .cost import count_macs, params_millions
from .memory import PeakMemory, in_fresh_process
from .timing import median_time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    p.add_argument("--steps", type=int, default=5, help="timed repeats (median reported)")
    p.add_argument("--backbones", nargs="+", default=["mci0", "mci1", "mci2", "mobilenetv3_large", "mobilesam"])


def peak_forward(cfg: dict) -> dict:
    """Extra peak memory (MiB) of one inference forward of backbone ``cfg["name"]`` at ``cfg["size"]``²
    (run by ``in_fresh_process``)."""
    from densekit import create_backbone

    torch.manual_seed(0)
    bb = create_backbone(cfg["name"], pretrained=False).eval()
    x = torch.rand(1, 3, cfg["size"], cfg["size"])
    with torch.no_grad(), PeakMemory("cpu") as peak:
        bb(x)
    return {"peak_mib": peak.mib, "method": peak.method}


def run(args: argparse.Namespace) -> list[dict]:
    from densekit import create_backbone

    rows = []
    print(
        f"\n| backbone | input | params (M) | GMACs | CPU latency (ms, median of {args.steps}) "
        "| peak fwd memory (MiB) |"
    )
    print("|---|---|---|---|---|---|")
    for name in args.backbones:
        torch.manual_seed(0)
        bb = create_backbone(name, pretrained=False).eval()
        params = params_millions(bb)
        for size in args.sizes:
            x = torch.rand(1, 3, size, size)
            macs = count_macs(bb, x) / 1e9
            with torch.no_grad():
                ms = median_time(lambda bb=bb, x=x: bb(x), args.steps, warmup=1) * 1000
            mem = in_fresh_process(peak_forward, {"name": name, "size": size})["peak_mib"]
            rows.append(
                {"backbone": name, "size": size, "params_M": params, "GMACs": macs, "latency_ms": ms, "peak_MiB": mem}
            )
            print(f"| {name} | {size}² | {params:.2f} | {macs:.2f} | {ms:.1f} | {mem:.0f} |", flush=True)
    return rows
