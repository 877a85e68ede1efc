"""``benchmark.py flow``: CompactFlowNet against torchvision's RAFT-small on CPU.

Params, MACs and CPU latency (eval, no_grad, median) of CompactFlowNet on each ``--backbones`` entry and of
``raft_small(weights=None)`` at ``--flow-updates`` refinement iterations, at one input size, in one run. The
models are timed interleaved (one forward of each per round) so machine noise hits all alike; the last
column is each model's latency over RAFT-small's.
"""

from __future__ import annotations

import argparse

import torch

from .cost import count_macs, params_millions
from .timing import interleaved_medians, ratio

RAFT = "RAFT-small (torchvision)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5, help="timed forwards per model (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--backbones", nargs="+", default=["flow_pyramid"], help="e.g. flow_pyramid mci0 mci2")
    p.add_argument("--flow-updates", type=int, default=12, help="RAFT-small refinement iterations")
    p.add_argument(
        "--head",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="CompactFlowNet overrides as YAML values, e.g. output_stride=8 upsample=convex",
    )


def run(args: argparse.Namespace) -> list[dict]:
    import yaml
    from torchvision.models.optical_flow import raft_small

    from densekit import create_model

    head_kw = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.head)}
    torch.set_num_threads(args.threads)
    x = torch.rand(1, 3, args.height, args.width)
    models = {}
    for name in args.backbones:
        torch.manual_seed(0)
        net = create_model(
            "flow", backbone={"name": name, "pretrained": False}, head={"name": "flow", **head_kw}
        ).eval()
        models[f"CompactFlowNet ({name})"] = (net, lambda net=net: net(x, x))
    raft = raft_small(weights=None).eval()
    x_raft = x * 2 - 1  # torchvision's RAFT takes images in [-1, 1]
    models[RAFT] = (raft, lambda: raft(x_raft, x_raft, num_flow_updates=args.flow_updates))
    with torch.no_grad():
        macs = {key: count_macs(fn) for key, (_, fn) in models.items()}  # also the warm-up
        medians = interleaved_medians({key: fn for key, (_, fn) in models.items()}, args.repeats, warmup=0)
    print(
        f"\nflow at {args.height}x{args.width}, batch 1, CPU, {args.threads} thread(s), eval + no_grad, "
        f"median of {args.repeats}; RAFT-small with {args.flow_updates} updates"
    )
    print("| model | params (M) | GMACs | CPU latency (ms) | latency / RAFT-small |")
    print("|---|---|---|---|---|")
    rows = []
    for key, (net, _) in models.items():
        row = {
            "model": key,
            "params_M": params_millions(net),
            "GMACs": macs[key] / 1e9,
            "latency_ms": medians[key] * 1000,
            "ratio": ratio(medians[key], medians[RAFT]),
        }
        rows.append(row)
        print(f"| {key} | {row['params_M']:.2f} | {row['GMACs']:.2f} | {row['latency_ms']:.0f} | {row['ratio']:.3f} |")
    return rows
