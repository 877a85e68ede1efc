"""``benchmark.py report``: every speed and memory ratio the README quotes, measured in one process and one
sitting, printed as one table (so the README's numbers can be reproduced with one command).

Each row comes from the benchmark that owns it (flow, heads, train, models, memory3d, scan, data, settings),
run here with the options the README's figures were measured with (``--quick``: tiny sizes, one repeat — a
check that every row can be formed, not a measurement). A benchmark that fails gives a "failed" row with its
error and the report exits non-zero; it never drops a row silently. The load average before and after is
printed: on a busy machine (load above the core count) the ratios are not the idle machine's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .timing import load_average, ratio


@dataclass
class Row:
    benchmark: str
    measure: str
    value: str  # densekit's figure, with its unit
    baseline: str  # what it is compared with, with its figure
    ratio: float  # value / baseline (NaN where there is no ratio)
    goal: str = ""
    failed: str = ""  # the error, when the benchmark could not run

    def cells(self) -> list[str]:
        if self.failed:
            return [self.benchmark, self.measure, "failed", self.failed, "-", self.goal]
        shown = "-" if math.isnan(self.ratio) else f"{self.ratio:.3g}"
        return [self.benchmark, self.measure, self.value, self.baseline, shown, self.goal]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks the rows, measures nothing")
    p.add_argument(
        "--only", nargs="+", default=None, metavar="SECTION", help=f"run these sections only: {', '.join(SECTIONS)}"
    )
    p.add_argument("--verbose", action="store_true", help="also print each benchmark's own tables")


def _call(argv: list[str], verbose: bool):
    """Run one benchmark in this process (``benchmark.py <argv>``); its own printout only with ``verbose``."""
    from . import main

    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    threads = torch.get_num_threads()
    try:
        with sink:
            return main(argv)
    finally:
        torch.set_num_threads(threads)  # a benchmark that sets its own threads does not change the next one's


def flow_rows(quick: bool, verbose: bool) -> list[Row]:
    h, w = (128, 128) if quick else (384, 512)  # RAFT-small needs at least 128 pixels a side
    rows = _call(["flow", "--height", str(h), "--width", str(w), *(["--repeats", "1"] if quick else [])], verbose)
    ours, raft = rows[0], rows[-1]
    return [
        Row(
            "flow",
            f"CompactFlowNet CPU latency at {h}x{w} (1 thread)",
            f"{ours['latency_ms']:.0f} ms",
            f"torchvision RAFT-small (12 updates) {raft['latency_ms']:.0f} ms",
            ours["ratio"],
        )
    ]


def heads_rows(quick: bool, verbose: bool) -> list[Row]:
    from .heads import lraspp_vs_torchvision

    size = 64 if quick else 512
    with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO()):
        t = lraspp_vs_torchvision(size, 1 if quick else 5)
    return [
        Row(
            "heads",
            f"LR-ASPP MobileNetV3-Large latency at {size}² (numerically torchvision's)",
            f"{t['densekit'] * 1000:.1f} ms",
            f"torchvision lraspp_mobilenet_v3_large {t['torchvision'] * 1000:.1f} ms",
            ratio(t["densekit"], t["torchvision"]),
            "≈ 1",
        )
    ]


def train_rows(quick: bool, verbose: bool) -> list[Row]:
    size, batch = (32, 2) if quick else (128, 8)
    small = ["--steps", "2", "--rounds", "2", "--warmup", "1"] if quick else []
    out = _call(["train", "--size", str(size), "--batch", str(batch), *small], verbose)
    lit, bare = out["rows"]["lightning"], out["rows"]["bare"]
    setting = f"threads={out['threads']}, data.num_workers={out['workers']}"
    return [
        Row(
            "train",
            f"Lightning loop step, mobilenetv3_large+lraspp {size}² batch {batch} ({setting})",
            f"{lit['step_ms']:.0f} ms ({lit['images_per_s']:.1f} img/s)",
            f"bare PyTorch loop {bare['step_ms']:.0f} ms",
            ratio(lit["step_ms"], bare["step_ms"]),
            "≤ 1.03",
        ),
        Row(
            "train",
            f"data wait, share of a step (default settings: {setting})",
            f"{100 * lit['data_wait_frac']:.1f} %",
            "the step",
            lit["data_wait_frac"],
            "≤ 0.10",
        ),
    ]


def models_rows(quick: bool, verbose: bool) -> list[Row]:
    size = 64 if quick else 512
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["models", "--size", str(size), "--backbones", "mci2", "--heads", "lraspp", "--tasks", "seg"]
        argv += ["--repeats", "1" if quick else "5", "--no-memory", "--no-unfused", "--out", f"{tmp}/models.csv"]
        (row,) = _call(argv, verbose)
    return [
        Row(
            "models",
            f"mci2+lraspp (branches fused) at {size}², ONNX Runtime ({row['threads']} threads)",
            f"{row['ort_ms']:.1f} ms (max abs diff {row['ort_max_abs_diff']:.1e})",
            f"eager PyTorch {row['eager_ms']:.1f} ms",
            ratio(row["ort_ms"], row["eager_ms"]),
        )
    ]


def memory3d_rows(quick: bool, verbose: bool) -> list[Row]:
    sizes = ["16"] if quick else ["64", "80"]
    out = _call(["memory3d", "--sizes", *sizes, "--no-search"], verbose)
    rows = []
    for r in out["rows"]:
        st, rv = r["stored"], r["reversible"]
        if not (st and rv):
            raise RuntimeError(f"the {r['size']}³ step failed (stored: {bool(st)}, reversible: {bool(rv)})")
        rows.append(
            Row(
                "memory3d",
                f"reversible 3D U-Net peak training memory at {r['size']}³",
                f"{rv['peak_mib']:.0f} MiB",
                f"stored activations {st['peak_mib']:.0f} MiB",
                ratio(rv["peak_mib"], st["peak_mib"]),
                "≤ 0.4",
            )
        )
    return rows


def scan_rows(quick: bool, verbose: bool) -> list[Row]:
    quick_argv = ["scan", "--length", "256", "--dim", "16", "--repeats", "1", "--no-models"]  # models are full size
    argv = quick_argv if quick else ["scan"]
    out = _call(argv, verbose)
    length, dim = (256, 16) if quick else (4096, 128)
    ours, naive = out["densekit.ops.selective_scan fwd"], out["naive recurrence fwd"]
    rows = [
        Row(
            "scan",
            f"selective scan forward, L={length} d={dim} n=16 float32 ({torch.get_num_threads()} threads)",
            f"{ours * 1000:.1f} ms",
            f"plain recurrence {naive * 1000:.1f} ms",
            ratio(ours, naive),
            "≤ 0.1",
        )
    ]
    if "chunked PyTorch scan fwd" in out:
        chunked = out["chunked PyTorch scan fwd"]
        rows.append(
            Row(
                "scan",
                "selective scan forward, compiled (numba) vs the pure-PyTorch fallback",
                f"{ours * 1000:.1f} ms",
                f"chunked PyTorch scan {chunked * 1000:.1f} ms",
                ratio(ours, chunked),
            )
        )
    fwd = out.get("lightm 2D fwd 256^2 (B=1) compiled")
    if fwd is not None:  # the goal is on the forward time itself; the chunked scan's time where it was run
        chunked = out.get("lightm 2D fwd 256^2 (B=1) PyTorch scan", math.nan)
        rows.append(
            Row(
                "scan",
                f"LightM-UNet 2D forward at 256² (B=1, {torch.get_num_threads()} threads, compiled scan)",
                f"{fwd:.3f} s",
                f"with the chunked PyTorch scan {chunked:.3f} s" if math.isfinite(chunked) else "-",
                ratio(fwd, chunked) if math.isfinite(chunked) else math.nan,
                "≤ 0.5 s",
            )
        )
    return rows


def data_rows(quick: bool, verbose: bool) -> list[Row]:
    argv = ["data", "--backbone", "mobilenetv3_large"] + (
        ["--size", "32", "--batch", "2", "--steps", "1"] if quick else []
    )
    out = _call(argv, verbose)
    gen, step = out["seg batch generation (s)"], out["mobilenetv3_large+lraspp train step (s)"]
    return [
        Row(
            "data",
            "generating one batch of embedded scenes (1 core) vs one training step",
            f"{gen * 1000:.0f} ms",
            f"mobilenetv3_large+lraspp step {step * 1000:.0f} ms",
            ratio(gen, step),
        )
    ]


def settings_rows(quick: bool, verbose: bool) -> list[Row]:
    small = ["--backbones", "mobilenetv3_large", "--size", "32", "--batch", "2", "--forward-size", "32"]
    argv = ["settings", *(small + ["--repeats", "1", "--inner", "1"] if quick else [])]
    rows, results = [], _call(argv, verbose)
    fp32 = {r["backbone"]: r for r in results if r["setting"] == "fp32"}
    for r in results:
        if r["setting"] == "fp32":
            continue
        ref = fp32.get(r["backbone"], {}).get("step_ms", math.nan)
        value = f"{r['step_ms']:.0f} ms" if r["status"] == "ok" else r["status"]
        rows.append(
            Row(
                "settings",
                f"{r['backbone']} train step, {r['setting']} (forward x{r['forward_ratio']:.2f})",
                value,
                f"fp32 contiguous {ref:.0f} ms",
                r["step_ratio"],
            )
        )
    return rows


SECTIONS = {
    "flow": flow_rows,
    "heads": heads_rows,
    "train": train_rows,
    "data": data_rows,
    "models": models_rows,
    "memory3d": memory3d_rows,
    "scan": scan_rows,
    "settings": settings_rows,
}


def markdown(rows: list[Row]) -> str:
    lines = ["| benchmark | measure | densekit | baseline | ratio | goal |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[Row]:
    sections = args.only or list(SECTIONS)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"benchmark.py report: unknown section(s) {unknown}; the sections are {list(SECTIONS)}")
    start, t0 = load_average(), time.perf_counter()
    rows: list[Row] = []
    for name in sections:
        print(f"[report] {name} ...", file=sys.stderr, flush=True)
        try:
            rows += SECTIONS[name](args.quick, args.verbose)
        except Exception as err:  # a failing benchmark is a row of the table, never a missing one
            rows.append(Row(name, "(the whole benchmark)", "", "", math.nan, failed=f"{type(err).__name__}: {err}"))
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    print(
        f"\ndensekit speed report{' (--quick: tiny sizes, not a measurement)' if args.quick else ''}: "
        f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}; "
        f"{time.perf_counter() - t0:.0f} s; load average {start} at the start, {load_average()} at the end"
    )
    print("ratio = densekit / baseline (time or memory: below 1 is better)\n")
    print(markdown(rows))
    failed = [r for r in rows if r.failed]
    if failed:
        print(f"\n{len(failed)} benchmark(s) failed: {', '.join(r.benchmark for r in failed)}", file=sys.stderr)
        raise SystemExit(1)
    return rows
