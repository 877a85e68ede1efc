"""``benchmark.py models``: one table over backbone x head x task at a stated input size.

Per combination (random init, batch 1, eval mode, float32 on CPU unless said otherwise):

- params (M) and MACs (G) of the deployed model: MobileOne/RepMixer branches fused
  (``densekit.export.reparameterize``); MACs as ``cost.count_macs`` counts them.
- CPU latency, medians of ``--repeats`` interleaved runs after one warm-up: eager PyTorch on the fused model,
  ONNX Runtime (CPUExecutionProvider, graph optimisation 'all', same intra-op threads as torch) on its export
  (fixed size), and eager on the un-fused training-mode graph (where it differs).
- max abs difference ORT vs eager (a sanity check of the export).
- peak memory: the extra resident memory of one eager forward of the fused model (activations + workspace),
  measured in a fresh process (``memory.PeakMemory``).
- GPU fp16 latency (wall clock around each forward, after ``torch.cuda.synchronize``) when CUDA is
  available, else "n/a".

Combinations a head cannot serve (e.g. LR-ASPP needs a stride-8 level) are skipped with the reason. Writes
the CSV (``--out``) and a PNG of latency vs params (``--plot``, default next to the CSV).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import torch

from .cost import count_macs
from .memory import PeakMemory, in_fresh_process
from .timing import median_time

BACKBONES = ["mci0", "mci1", "mci2", "mobilenetv3_large", "mobilesam", "lightm"]
HEADS = ["lraspp", "fpn", "unet", "deeplabv3plus", "ffnet"]
COLUMNS = [
    "task",
    "backbone",
    "head",
    "size",
    "params_M",
    "GMACs",
    "eager_ms",
    "ort_ms",
    "ort_speedup",
    "eager_unfused_ms",
    "ort_max_abs_diff",
    "peak_MiB",
    "gpu_fp16_ms",
    "threads",
    "repeats",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--backbones", nargs="+", default=BACKBONES)
    p.add_argument("--heads", nargs="+", default=HEADS)
    p.add_argument("--tasks", nargs="+", default=["seg", "depth"], choices=["seg", "depth"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--threads", type=int, default=None, help="intra-op threads for torch and ORT alike (default: torch's)"
    )
    p.add_argument("--num-classes", type=int, default=19)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("outputs") / "benchmarks" / "models.csv",
        help="the CSV (default: outputs/benchmarks/models.csv under the current directory)",
    )
    p.add_argument("--plot", type=Path, default=None, help="default: the CSV path with .png")
    p.add_argument("--no-onnx", dest="onnx", action="store_false")
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--no-unfused", dest="unfused", action="store_false")


def build(task: str, backbone: str, head: str, num_classes: int) -> torch.nn.Module:
    from densekit import create_model
    from densekit.tasks import get_task

    torch.manual_seed(0)
    kwargs = {"num_classes": num_classes} if get_task(task).has_classes else {}
    return create_model(task, backbone={"name": backbone, "pretrained": False}, head=head, **kwargs).eval()


def peak_forward(cfg: dict) -> dict:
    """Extra peak memory (MiB) of one eager inference forward of the fused model (run by
    ``in_fresh_process``)."""
    from densekit.export import reparameterize

    torch.set_num_threads(cfg["threads"])
    model = reparameterize(build(cfg["task"], cfg["backbone"], cfg["head"], cfg["num_classes"]))
    x = torch.rand(1, 3, cfg["size"], cfg["size"])
    with torch.no_grad(), PeakMemory("cpu") as peak:  # it first hands back the heap the un-fused copy held
        model(x)
    return {"peak_mib": peak.mib}


def gpu_fp16_ms(model: torch.nn.Module, size: int, repeats: int) -> float | None:
    if not torch.cuda.is_available():
        return None
    import copy

    m = copy.deepcopy(model).half().cuda().eval()
    x = torch.rand(1, 3, size, size, device="cuda", dtype=torch.half)
    with torch.no_grad():
        return median_time(lambda: m(x), repeats, warmup=3, sync=torch.cuda.synchronize) * 1000


def bench_one(task, backbone, head, args, workdir: Path) -> dict:
    from densekit.export import check_parity, export_onnx, reparameterize

    model = build(task, backbone, head, args.num_classes)
    info: dict = {}
    fused = reparameterize(model, report=info)
    x = torch.rand(1, 3, args.size, args.size)
    row = {
        "task": task,
        "backbone": backbone,
        "head": head,
        "size": args.size,
        "params_M": info["params_after"] / 1e6,
        "GMACs": count_macs(fused, x) / 1e9,
        "threads": args.threads,
        "repeats": args.repeats,
    }
    if args.onnx:
        path = workdir / f"{task}_{backbone}_{head}.onnx"
        export_onnx(fused, path, (x,), dynamic_hw=False, task=task)
        res = check_parity(fused, path, (x,), repeats=args.repeats, threads=args.threads)
        row.update(
            eager_ms=res["eager_ms"],
            ort_ms=res["exported_ms"],
            ort_speedup=res["speedup"],
            ort_max_abs_diff=res["max_abs_diff"],
        )
        path.unlink()
    else:
        with torch.no_grad():
            row["eager_ms"] = median_time(lambda: fused(x), args.repeats, warmup=1) * 1000
    if args.unfused and info["fused_modules"]:
        with torch.no_grad():
            row["eager_unfused_ms"] = median_time(lambda: model(x), args.repeats, warmup=1) * 1000
    if args.memory:
        cfg = {
            "task": task,
            "backbone": backbone,
            "head": head,
            "size": args.size,
            "num_classes": args.num_classes,
            "threads": args.threads,
        }
        row["peak_MiB"] = in_fresh_process(peak_forward, cfg)["peak_mib"]
    row["gpu_fp16_ms"] = gpu_fp16_ms(fused, args.size, args.repeats)
    return row


def _fmt(value, digits=1) -> str:
    if value is None or value == "":
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _sci(value) -> str:
    return "n/a" if value is None else f"{value:.1e}"


def markdown(rows: list[dict], args) -> str:
    gpu = "GPU fp16 (ms)" if torch.cuda.is_available() else "GPU fp16 (ms; no CUDA here)"
    lines = [
        f"Input {args.size}x{args.size}, batch 1, random init, MobileOne/RepMixer branches fused; "
        f"CPU: medians "
        f"of {args.repeats} runs, {args.threads} thread(s) for torch and ONNX Runtime alike.",
        "",
        "| task | backbone | head | params (M) | GMACs | eager (ms) | ORT (ms) | ORT speedup "
        f"| eager un-fused (ms) | ORT max abs diff | peak fwd mem (MiB) | {gpu} |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['backbone']} | {r['head']} | {_fmt(r['params_M'], 2)} | "
            f"{_fmt(r['GMACs'], 2)} | "
            f"{_fmt(r.get('eager_ms'))} | {_fmt(r.get('ort_ms'))} | {_fmt(r.get('ort_speedup'), 2)} | "
            f"{_fmt(r.get('eager_unfused_ms'))} | {_sci(r.get('ort_max_abs_diff'))} | "
            f"{_fmt(r.get('peak_MiB'), 0)} | {_fmt(r.get('gpu_fp16_ms'), 2)} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, marker, label in (("eager_ms", "o", "eager PyTorch"), ("ort_ms", "s", "ONNX Runtime")):
        pts = [(r["params_M"], r[key], f"{r['backbone']}+{r['head']}") for r in rows if r.get(key)]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label)
            for px, py, name in pts:
                ax.annotate(name, (px, py), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("params (M)")
    ax.set_ylabel(f"CPU latency at {args.size}x{args.size} (ms, median)")
    ax.set_title(f"densekit models: latency vs params ({args.threads} thread(s))")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> list[dict]:
    if args.size < 32 or args.repeats < 1:
        raise SystemExit(
            f"benchmark.py models: --size must be >= 32 and --repeats >= 1, got {args.size} and {args.repeats}"
        )
    args.threads = args.threads or torch.get_num_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    rows, skipped = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for task in args.tasks:
                for backbone in args.backbones:
                    for head in args.heads:
                        try:
                            row = bench_one(task, backbone, head, args, Path(tmp))
                        except (ValueError, TypeError) as err:  # the head cannot serve this backbone
                            skipped.append(f"{task} {backbone}+{head}: {str(err).splitlines()[0]}")
                            print(f"skip {skipped[-1]}", flush=True)
                            continue
                        rows.append(row)
                        print(
                            f"done {task} {backbone}+{head}: eager {_fmt(row.get('eager_ms'))} ms, "
                            f"ORT {_fmt(row.get('ort_ms'))} ms",
                            flush=True,
                        )
    finally:
        torch.set_num_threads(previous)
    print()
    print(markdown(rows, args))
    if skipped:
        print("\nSkipped (invalid combinations):\n" + "\n".join(f"- {s}" for s in skipped))
    if not torch.cuda.is_available():
        print("\nGPU fp16 latency: skipped, CUDA is not available on this machine.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, "") if r.get(k) is not None else "" for k in COLUMNS})
    png = args.plot or args.out.with_suffix(".png")
    if rows:
        plot(rows, png, args)
    print(f"\nwrote {args.out}" + (f" and {png}" if rows else ""))
    return rows
