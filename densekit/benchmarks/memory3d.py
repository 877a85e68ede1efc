"""``benchmark.py memory3d``: reversible vs stored revmb3d + revunet3d, peak training memory.

One training step (forward + cross-entropy + backward) per configuration, batch 1, 4 channels, the same
weights and data in both modes; each measurement in its own fresh process (``memory.in_fresh_process``).
First the peak memory of both modes side by side at ``--sizes``, then the largest cube edge (a multiple of
16, the encoder stride) whose step fits in ``--budget-gb`` for each mode. The reversible network recomputes
activations in the backward pass instead of storing them, so it should fit larger volumes.
"""

from __future__ import annotations

import argparse
import time

import torch

from .memory import PeakMemory, fixed_mmap_env, in_fresh_process


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 96, 128], help="cube edges, multiples of 16")
    p.add_argument("--budget-gb", type=float, default=2.0, help="budget of the largest-edge search (GiB)")
    p.add_argument("--search-max", type=int, default=256, help="largest edge the search tries")
    p.add_argument("--no-search", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--widths", nargs="+", type=int, default=[16, 32, 64, 128, 256])
    p.add_argument("--depths", nargs="+", type=int, default=[1, 1, 2, 2, 2])
    p.add_argument("--decoder-depths", nargs="+", type=int, default=[1, 1, 1, 1])
    p.add_argument("--expand-ratio", type=int, default=4)
    p.add_argument("--norm", default="group")
    p.add_argument("--act", default="relu6")
    p.add_argument("--num-groups", type=int, default=8)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement")


def memory3d_step(cfg: dict) -> dict:
    """One training step of revmb3d + revunet3d on a (1, 4, s, s, s) volume, in this process: the extra
    peak memory over the state after model and input creation (``PeakMemory``, MiB), seconds, loss and
    gradient norm (equal in both modes: the reversible network computes the same function)."""
    import torch.nn.functional as F
    from torch import nn

    from densekit.models.revunet3d import RevMB3dEncoder, RevUNet3dHead

    torch.set_num_threads(int(cfg.get("threads", 2)))
    torch.manual_seed(0)  # same weights and data for both modes
    device, size = torch.device(cfg["device"]), int(cfg["size"])
    block = {k: cfg[k] for k in ("expand_ratio", "norm", "act", "num_groups")}
    enc = RevMB3dEncoder(4, cfg["widths"], cfg["depths"], reversible=cfg["reversible"], **block)
    head = RevUNet3dHead(
        enc.channels, enc.reductions, cfg["classes"], cfg["decoder_depths"], reversible=cfg["reversible"], **block
    )
    model = nn.Sequential(enc, head).to(device).train()
    x = torch.randn(1, 4, size, size, size, device=device)
    target = torch.randint(0, cfg["classes"], (1, size, size, size), device=device)
    t0 = time.perf_counter()
    with PeakMemory(device) as peak:
        loss = F.cross_entropy(model(x), target)
        loss.backward()
    seconds = time.perf_counter() - t0
    grad_norm = torch.sqrt(sum(p.grad.double().pow(2).sum() for p in model.parameters())).item()
    return {
        "peak_mib": peak.mib,
        "seconds": seconds,
        "loss": loss.item(),
        "grad_norm": grad_norm,
        "method": peak.method,
    }


def _cell(result: dict | None, key: str, fmt: str) -> str:
    return format(result[key], fmt) if result else "failed (out of memory?)"


def run(args: argparse.Namespace) -> dict:
    if any(s % 16 for s in args.sizes):
        raise SystemExit(f"memory3d: --sizes must be multiples of 16 (the encoder stride), got {args.sizes}")
    base = {
        "device": args.device,
        "threads": args.threads,
        "widths": args.widths,
        "depths": args.depths,
        "decoder_depths": args.decoder_depths,
        "expand_ratio": args.expand_ratio,
        "norm": args.norm,
        "act": args.act,
        "num_groups": args.num_groups,
        "classes": args.classes,
    }
    cache: dict[tuple[bool, int], dict | None] = {}
    env = fixed_mmap_env()

    def measure(reversible: bool, size: int) -> dict | None:
        if (reversible, size) not in cache:
            cfg = {**base, "reversible": reversible, "size": size}
            cache[reversible, size] = in_fresh_process(
                memory3d_step, cfg, timeout=args.timeout, env=env, none_on_oom=True
            )
        return cache[reversible, size]

    print(
        f"\nrevmb3d + revunet3d, widths {args.widths}, depths {args.depths}, decoder {args.decoder_depths}, "
        f"expand {args.expand_ratio}, {args.norm}/{args.act}; batch 1, 4 channels, one forward+backward on "
        f"{args.device}" + (f" ({args.threads} threads)" if args.device == "cpu" else "")
    )
    print(
        "| edge | stored peak (MiB) | reversible peak (MiB) | reversible / stored | stored step (s) "
        "| reversible step (s) | same loss |"
    )
    print("|---|---|---|---|---|---|---|")
    rows, method = [], ""
    for size in args.sizes:
        st, rv = measure(False, size), measure(True, size)
        method = (st or rv or {}).get("method", method)
        ratio = f"{rv['peak_mib'] / st['peak_mib']:.3f}" if st and rv else "-"
        same = f"{abs(st['loss'] - rv['loss']) <= 1e-5 * abs(st['loss'])}" if st and rv else "-"
        print(
            f"| {size}³ | {_cell(st, 'peak_mib', '.0f')} | {_cell(rv, 'peak_mib', '.0f')} | {ratio} | "
            f"{_cell(st, 'seconds', '.2f')} | {_cell(rv, 'seconds', '.2f')} | {same} |",
            flush=True,
        )
        rows.append({"size": size, "stored": st, "reversible": rv})
    print(f"(peak = extra memory over model + input: {method})")
    result = {"rows": rows}
    if args.no_search:
        return result
    budget_mib = args.budget_gb * 1024
    fits = {}
    for reversible in (False, True):
        known = [s for (r, s), v in cache.items() if r == reversible and v and v["peak_mib"] <= budget_mib]
        edge = max(known, default=0)
        size = edge + 16
        while size <= args.search_max:
            out = measure(reversible, size)
            peak = f"{out['peak_mib']:.0f} MiB" if out else "failed"
            print(f"  search: {'reversible' if reversible else 'stored'} {size}³ -> {peak}", flush=True)
            if not out or out["peak_mib"] > budget_mib:
                break
            edge, size = size, size + 16
        fits[reversible] = edge
    st_edge, rv_edge = fits[False], fits[True]
    print(
        f"\nlargest cube edge (multiple of 16, up to {args.search_max}) whose training step fits in "
        f"{args.budget_gb:g} GiB:"
    )
    for label, reversible, edge in (("stored    ", False, st_edge), ("reversible", True, rv_edge)):
        print(f"  {label} {edge}³" + (f"  ({cache[reversible, edge]['peak_mib']:.0f} MiB)" if edge else ""))
    if st_edge:
        print(
            f"  edge ratio {rv_edge / st_edge:.2f}, voxel ratio {(rv_edge / st_edge) ** 3:.2f} "
            f"(Pendse et al.: up to 3x larger input volumes)"
        )
    result["largest_edge"] = {"stored": st_edge, "reversible": rv_edge}
    return result
