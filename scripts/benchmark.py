"""Benchmarks, measured side by side in one run and reported as medians and ratios.

    python scripts/benchmark.py data [--backbone mci2] [--size 128] [--batch 8] [--steps 5]
    python scripts/benchmark.py heads [--size 512] [--steps 5] [--backbones ...] [--heads ...]
    python scripts/benchmark.py backbones [--sizes 256 512] [--steps 5] [--backbones ...]
    python scripts/benchmark.py scan [bench_scan.py options]   (compiled / chunked selective scan vs mambapy vs recurrence; --models: LightM-UNet)
    python scripts/benchmark.py flow [--height 384 --width 512] [--repeats 5] [--threads 1] [--backbones flow_pyramid mci0]
        (CompactFlowNet vs torchvision RAFT-small: params, MACs, CPU latency and ratio)
    python scripts/benchmark.py models [--size 512] [--backbones ...] [--heads ...] [--tasks seg depth] [--out x.csv]
    python scripts/benchmark.py train [--backbone mobilenetv3_large] [--head lraspp] [--size 128] [--batch 8]
        [--steps 30] [--rounds 3] [--threads 1] [--workers N] [hydra overrides ...]
        (our Lightning training loop vs a bare PyTorch loop: images/s, overhead %, data-wait fraction)
    python scripts/benchmark.py memory3d [--sizes 64 96 128] [--budget-gb 2] [--device cpu|cuda]
        (reversible vs stored revmb3d+revunet3d: peak training memory, largest cube in a budget)

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


# ---- memory3d: reversible vs stored 3D U-Net training memory (densekit issue "3D volumes") ----------------

def _proc_status_kib(key: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1])  # kB
    except OSError:
        return None
    return None


def memory3d_step(cfg: dict) -> dict:
    """One training step (forward + cross-entropy + backward) of revmb3d + revunet3d on a (1, 4, s, s, s)
    volume, in this process. Peak memory is the extra over the state after model and input creation:
    CUDA: ``torch.cuda.max_memory_allocated`` (tensor memory; the caching allocator's slack excluded);
    CPU: peak resident set size (VmHWM, reset through /proc/self/clear_refs; falls back to
    ``getrusage(RUSAGE_SELF).ru_maxrss`` where that reset is not allowed). MiB."""
    import resource

    import torch.nn.functional as F
    from torch import nn

    from densekit.models.revunet3d import RevMB3dEncoder, RevUNet3dHead

    torch.set_num_threads(int(cfg.get("threads", 2)))
    torch.manual_seed(0)  # same weights and data for both modes
    device, size = torch.device(cfg["device"]), int(cfg["size"])
    block = {k: cfg[k] for k in ("expand_ratio", "norm", "act", "num_groups")}
    enc = RevMB3dEncoder(4, cfg["widths"], cfg["depths"], reversible=cfg["reversible"], **block)
    head = RevUNet3dHead(enc.channels, enc.reductions, cfg["classes"], cfg["decoder_depths"],
                         reversible=cfg["reversible"], **block)
    model = nn.Sequential(enc, head).to(device).train()
    x = torch.randn(1, 4, size, size, size, device=device)
    target = torch.randint(0, cfg["classes"], (1, size, size, size), device=device)
    method = "cuda max_memory_allocated"
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM (the peak) to the current RSS
            base, method = _proc_status_kib("VmRSS:") * 1024, "peak RSS (VmHWM after clear_refs)"
        except OSError:
            base, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS (ru_maxrss)"
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(x), target)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    elif method.startswith("peak RSS (VmHWM"):
        peak = _proc_status_kib("VmHWM:") * 1024 - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    seconds = time.perf_counter() - t0
    grad_norm = torch.sqrt(sum(p.grad.double().pow(2).sum() for p in model.parameters())).item()
    return {"peak_mib": peak / 2**20, "seconds": seconds, "loss": loss.item(), "grad_norm": grad_norm,
            "method": method}


def _memory3d_subprocess(cfg: dict, timeout: float) -> dict | None:
    """``memory3d_step`` in a fresh interpreter (an honest peak); None when it dies (e.g. out of memory)."""
    import json
    import subprocess

    import os

    cmd = [sys.executable, str(Path(__file__).resolve()), "memory3d", "--worker", json.dumps(cfg)]
    # A fixed mmap threshold stops glibc from serving freed tensor-sized blocks from its heap, which it keeps
    # resident: with the default dynamic threshold the CPU peak RSS overstated live memory (measured +67 %
    # for the reversible net at 48^3), and unequally between the two modes.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "131072")}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        if "out of memory" not in out.stderr.lower() and out.returncode > 0:
            raise RuntimeError(f"memory3d worker failed for {cfg}:\n{out.stderr[-2000:]}")
        return None  # CUDA OOM, or killed by the kernel's OOM killer (negative return code)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_memory3d(argv: list[str]) -> dict:
    """Peak training memory of the reversible vs the stored network (same weights) side by side, then
    the largest cube edge (multiple of 16) each fits in ``--budget-gb``. Every measurement runs in its
    own process."""
    import json

    p = argparse.ArgumentParser(prog="benchmark.py memory3d", description=bench_memory3d.__doc__)
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
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(memory3d_step(json.loads(args.worker))))
        return {}
    if any(s % 16 for s in args.sizes):
        raise SystemExit(f"memory3d: --sizes must be multiples of 16 (the encoder stride), got {args.sizes}")
    base = {"device": args.device, "threads": args.threads, "widths": args.widths, "depths": args.depths,
            "decoder_depths": args.decoder_depths, "expand_ratio": args.expand_ratio, "norm": args.norm,
            "act": args.act, "num_groups": args.num_groups, "classes": args.classes}
    cache: dict[tuple[bool, int], dict | None] = {}

    def measure(reversible: bool, size: int) -> dict | None:
        if (reversible, size) not in cache:
            cfg = {**base, "reversible": reversible, "size": size}
            cache[reversible, size] = _memory3d_subprocess(cfg, args.timeout)
        return cache[reversible, size]

    print(f"\nrevmb3d + revunet3d, widths {args.widths}, depths {args.depths}, decoder {args.decoder_depths},"
          " "
          f"expand {args.expand_ratio}, {args.norm}/{args.act}; batch 1, 4 channels, one forward+backward on "
          f"{args.device}" + (f" ({args.threads} threads)" if args.device == "cpu" else ""))
    print("| edge | stored peak (MiB) | reversible peak (MiB) | reversible / stored | stored step (s) "
          "| reversible step (s) | same loss |")
    print("|---|---|---|---|---|---|---|")
    rows, method = [], ""
    for size in args.sizes:
        st, rv = measure(False, size), measure(True, size)
        method = (st or rv or {}).get("method", method)
        fmt = lambda r, k, f: format(r[k], f) if r else "failed (out of memory?)"  # noqa: E731
        ratio = f"{rv['peak_mib'] / st['peak_mib']:.3f}" if st and rv else "-"
        same = f"{abs(st['loss'] - rv['loss']) <= 1e-5 * abs(st['loss'])}" if st and rv else "-"
        print(f"| {size}³ | {fmt(st, 'peak_mib', '.0f')} | {fmt(rv, 'peak_mib', '.0f')} | {ratio} | "
              f"{fmt(st, 'seconds', '.2f')} | {fmt(rv, 'seconds', '.2f')} | {same} |", flush=True)
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
    print(f"\nlargest cube edge (multiple of 16, up to {args.search_max}) whose training step fits in "
          f"{args.budget_gb:g} GiB:")
    for label, reversible, edge in (("stored    ", False, st_edge), ("reversible", True, rv_edge)):
        print(f"  {label} {edge}³" + (f"  ({cache[reversible, edge]['peak_mib']:.0f} MiB)" if edge else ""))
    if st_edge:
        print(f"  edge ratio {rv_edge / st_edge:.2f}, voxel ratio {(rv_edge / st_edge) ** 3:.2f} "
              f"(Pendse et al.: up to 3x larger input volumes)")
    result["largest_edge"] = {"stored": st_edge, "reversible": rv_edge}
    return result


# ---- flow: CompactFlowNet vs torchvision RAFT-small, CPU latency side by side (issue "Optical flow") --


def bench_flow(argv: list[str]) -> list[dict]:
    """Params, MACs and CPU latency (eval, no_grad, median) of CompactFlowNet on each backbone vs
    torchvision's ``raft_small(weights=None)`` at ``--flow-updates`` iterations, at one input size, in one
    run; the runs are interleaved (one forward of each model per round) so machine noise hits all alike."""
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.models.optical_flow import raft_small

    from densekit.models import create_flow_model

    p = argparse.ArgumentParser(prog="benchmark.py flow", description=bench_flow.__doc__)
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5, help="timed forwards per model (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--backbones", nargs="+", default=["flow_pyramid"], help="e.g. flow_pyramid mci0 mci2")
    p.add_argument("--flow-updates", type=int, default=12, help="RAFT-small refinement iterations")
    p.add_argument("--head", nargs="*", default=[], metavar="KEY=VALUE",
                   help="CompactFlowNet overrides as YAML values, e.g. output_stride=8 upsample=convex")
    args = p.parse_args(argv)
    import yaml

    head_kw = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.head)}
    torch.set_num_threads(args.threads)
    x = torch.rand(1, 3, args.height, args.width)
    models = {}
    for name in args.backbones:
        torch.manual_seed(0)
        net = create_flow_model({"name": name, "pretrained": False}, **head_kw).eval()
        models[f"CompactFlowNet ({name})"] = (net, lambda net=net: net(x, x))
    raft = raft_small(weights=None).eval()
    x_raft = x * 2 - 1  # torchvision's RAFT takes images in [-1, 1]
    models["RAFT-small (torchvision)"] = (
        raft, lambda: raft(x_raft, x_raft, num_flow_updates=args.flow_updates)
    )
    times: dict[str, list[float]] = {k: [] for k in models}
    macs = {}
    with torch.no_grad():
        for key, (_, fn) in models.items():
            with FlopCounterMode(display=False) as counter:
                fn()  # also the warm-up
            macs[key] = counter.get_total_flops() / 2
        for _ in range(args.repeats):
            for key, (_, fn) in models.items():
                times[key].append(_median_time(fn, 1))
    ref = statistics.median(times["RAFT-small (torchvision)"])
    print(f"\nflow at {args.height}x{args.width}, batch 1, CPU, {args.threads} thread(s), eval + no_grad, "
          f"median of {args.repeats}; RAFT-small with {args.flow_updates} updates")
    print("| model | params (M) | GMACs | CPU latency (ms) | latency / RAFT-small |")
    print("|---|---|---|---|---|")
    rows = []
    for key, (net, _) in models.items():
        med = statistics.median(times[key])
        params = sum(q.numel() for q in net.parameters()) / 1e6
        row = {"model": key, "params_M": params, "GMACs": macs[key] / 1e9, "latency_ms": med * 1000,
               "ratio": med / ref}
        rows.append(row)
        print(f"| {key} | {params:.2f} | {row['GMACs']:.2f} | {row['latency_ms']:.0f} | {row['ratio']:.3f} |")
    return rows


# ---- train: our Lightning training loop vs a bare PyTorch loop over the same model and data (issue 8) ----


def bench_train(argv: list[str]) -> dict:
    """Images/s of the real training loop (the Hydra-composed config, densekit.train's builders, a
    pl.Trainer with logger=False, no checkpointing, no validation, progress bar off) vs a bare PyTorch loop
    over the same model, data loader, batch, optimiser, LR schedule and gradient clipping. The two run in
    alternating rounds (warm-up steps of each round discarded) so machine noise hits both alike; a step is
    the time from the end of one step to the end of the next (data fetch included). Data wait = the part
    spent getting the next batch (bare: in next(iterator); Lightning: between on_train_batch_end and the next
    on_train_batch_start, which also holds Lightning's between-step hooks)."""
    import pytorch_lightning as pl
    from hydra import compose, initialize_config_dir

    from densekit.tasks.base import make_schedule
    from densekit.train import build_datamodule, build_task, check_data

    p = argparse.ArgumentParser(prog="benchmark.py train", description=bench_train.__doc__)
    p.add_argument("--task", default="seg")
    p.add_argument("--backbone", default="mobilenetv3_large")
    p.add_argument("--head", default="lraspp")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=30, help="timed steps per loop (over all rounds)")
    p.add_argument("--rounds", type=int, default=3, help="alternations Lightning / bare")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of every round")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--workers", type=int, default=None, help="data.num_workers (default: the data config's)")
    p.add_argument("overrides", nargs="*", help="more Hydra overrides, e.g. trainer.precision=bf16-mixed")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    per_round = max(1, -(-args.steps // args.rounds))  # ceil
    n_round = args.warmup + per_round
    overrides = [
        f"task={args.task}", f"backbone={args.backbone}", f"head={args.head}", "backbone.pretrained=false",
        f"data.size=[{args.size},{args.size}]", f"data.batch_size={args.batch}",
        f"data.train_length={(n_round + 1) * args.batch}",  # one epoch covers a round
        *([f"data.num_workers={args.workers}"] if args.workers is not None else []), *args.overrides,
    ]
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    names = check_data(cfg, datamodule)
    module = build_task(cfg, names).train()
    trainer_cfg = cfg.trainer
    clip = trainer_cfg.get("gradient_clip_val")

    class StepTimer(pl.Callback):
        def __init__(self):
            self.starts, self.ends = [], []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.starts.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.ends.append(time.perf_counter())

    def lightning_round() -> tuple[list[float], list[float]]:
        timer = StepTimer()
        trainer = pl.Trainer(
            accelerator=trainer_cfg.accelerator, devices=1, precision=trainer_cfg.precision,
            max_steps=n_round, max_epochs=1, logger=False, enable_checkpointing=False, limit_val_batches=0,
            num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
            gradient_clip_val=clip, use_distributed_sampler=False, callbacks=[timer],
        )
        trainer.fit(module, datamodule=datamodule)
        ends, starts = timer.ends, timer.starts
        keep = range(max(1, args.warmup), len(ends))  # step i: from the end of step i-1 to the end of step i
        return [ends[i] - ends[i - 1] for i in keep], [starts[i] - ends[i - 1] for i in keep]

    optim = dict(cfg.optim)
    if optim.get("name", "adamw") != "adamw":
        raise SystemExit(
            f"benchmark.py train: the bare loop mirrors optim=adamw only, got optim.name={optim['name']}"
        )

    def bare_round() -> tuple[list[float], list[float]]:
        params = [q for q in module.parameters() if q.requires_grad]
        # the same optimiser and per-step schedule as DenseTask.configure_optimizers (adamw)
        betas = tuple(optim.get("betas", (0.9, 0.999)))
        opt = torch.optim.AdamW(params, lr=optim.get("lr", 1e-3), betas=betas,
                                weight_decay=optim.get("weight_decay", 0.01))
        schedule = optim.get("scheduler", "cosine")
        sched = None
        if schedule not in (None, "none"):
            sched = torch.optim.lr_scheduler.LambdaLR(opt, make_schedule(
                schedule, n_round, optim.get("warmup_steps", 0), optim.get("min_lr_ratio", 0.0),
                optim.get("power", 0.9)))
        autocast = "bf16" in str(trainer_cfg.precision) and "mixed" in str(trainer_cfg.precision)
        steps, waits = [], []
        it = iter(datamodule.train_dataloader())
        prev = time.perf_counter()
        for i in range(n_round):
            t0 = time.perf_counter()
            batch = next(it)
            t1 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = module.compute_loss(module.forward_batch(batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            if sched is not None:
                sched.step()
            end = time.perf_counter()
            if i >= max(1, args.warmup):
                steps.append(end - prev)
                waits.append(t1 - t0)
            prev = end
        return steps, waits

    import logging
    import warnings

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # no per-round Trainer banners
    times = {"lightning": ([], []), "bare": ([], [])}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
        for r in range(args.rounds):
            order = ("lightning", "bare") if r % 2 == 0 else ("bare", "lightning")
            for name in order:
                s, w = lightning_round() if name == "lightning" else bare_round()
                times[name][0].extend(s)
                times[name][1].extend(w)
    rows = {}
    for name, (steps, waits) in times.items():
        step = statistics.median(steps)
        rows[name] = {"step_ms": step * 1000, "images_per_s": args.batch / step,
                      "data_wait_ms": statistics.median(waits) * 1000,
                      "data_wait_frac": sum(waits) / sum(steps), "n": len(steps)}
    overhead = rows["lightning"]["step_ms"] / rows["bare"]["step_ms"] - 1
    print(f"\ntraining throughput: task={args.task} {args.backbone}+{args.head} at {args.size}x{args.size}, "
          f"batch {args.batch}, precision={trainer_cfg.precision}, data.num_workers={cfg.data.num_workers}, "
          f"{args.threads} thread(s); {args.rounds} alternating rounds, medians of "
          f"{rows['bare']['n']} steps per loop after {args.warmup} warm-up steps per round")
    print("| loop | step (ms) | images/s | data wait (ms) | data wait (% of step time) |")
    print("|---|---|---|---|---|")
    labels = {"lightning": "densekit (Lightning Trainer)", "bare": "bare PyTorch loop"}
    for name, row in rows.items():
        print(f"| {labels[name]} | {row['step_ms']:.1f} | {row['images_per_s']:.2f} | "
              f"{row['data_wait_ms']:.1f} | {100 * row['data_wait_frac']:.1f} |")
    print(f"Lightning overhead: {100 * overhead:+.1f} % of the bare loop's step time (goal <= 3 %)")
    return {"rows": rows, "overhead": overhead}


def main():
    if sys.argv[1:2] == ["scan"]:  # its own options: see scripts/bench_scan.py
        import runpy

        sys.argv = [str(Path(__file__).with_name("bench_scan.py"))] + sys.argv[2:]
        runpy.run_path(sys.argv[0], run_name="__main__")
        return
    if sys.argv[1:2] == ["flow"]:  # its own options: see bench_flow
        bench_flow(sys.argv[2:])
        return
    if sys.argv[1:2] == ["train"]:  # its own options: see bench_train
        bench_train(sys.argv[2:])
        return
    if sys.argv[1:2] == ["memory3d"]:  # its own options: see bench_memory3d
        bench_memory3d(sys.argv[2:])
        return
    if sys.argv[1:2] == ["models"]:  # its own options: see scripts/bench_models.py
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_models import main as bench_models

        bench_models(sys.argv[2:])
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
