"""Parity and latency of an exported file against the eager model (onnxruntime CPU or ``torch.jit.load``)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .common import check_inputs, quiet_export
from .onnx import ort_run, ort_session


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def latency_pair(eager_fn, exported_fn, repeats: int = 5, warmup: int = 1) -> tuple[float, float]:
    """Median ms of two callables, measured interleaved (one of each per round) so that machine noise hits
    both alike; ``warmup`` rounds first (allocator, ORT's first-run arena and kernel selection)."""
    for _ in range(warmup):
        eager_fn(), exported_fn()
    a, b = [], []
    for _ in range(repeats):
        a.append(_median_ms(eager_fn, 1))
        b.append(_median_ms(exported_fn, 1))
    return statistics.median(a), statistics.median(b)


def check_parity(
    model: nn.Module,
    exported_path: str | Path,
    inputs: tuple,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    optimization: str = "all",
) -> dict:
    """Run the exported file (``.onnx``: onnxruntime CPUExecutionProvider; else ``torch.jit.load``) and the
    eager model on ``inputs``; returns ``{"runtime", "max_abs_diff", "max_abs_ref", "eager_ms",
    "exported_ms", "speedup", "repeats", "threads"}`` (``speedup`` = eager / exported, medians of
    ``repeats`` interleaved runs after ``warmup``; ``repeats=0`` skips timing). Eager and ORT use the same
    number of intra-op threads (``threads``, default torch.get_num_threads()).
    """
    inputs = check_inputs(inputs)
    path = Path(exported_path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    model = model.eval()
    threads = int(threads or torch.get_num_threads())
    if path.suffix == ".onnx":
        runtime = "onnxruntime"
        session = ort_session(path, threads=threads, optimization=optimization)

        def run_exported():
            return ort_run(session, inputs)
    else:
        runtime = "torchscript"
        with quiet_export():
            scripted = torch.jit.load(str(path), map_location="cpu").eval()

        def run_exported():
            with torch.no_grad():
                return scripted(*inputs).numpy()

    def run_eager():
        with torch.no_grad():
            return model(*inputs).cpu().numpy()

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ref, got = run_eager(), run_exported()
        if ref.shape != got.shape:
            raise ValueError(f"{path}: exported output shape {got.shape} differs from eager {ref.shape}")
        result = {
            "runtime": runtime,
            "max_abs_diff": float(np.abs(got - ref).max()),
            "max_abs_ref": float(np.abs(ref).max()),
            "output_shape": list(ref.shape),
            "repeats": int(repeats),
            "threads": threads,
        }
        if repeats > 0:
            eager_ms, exported_ms = latency_pair(run_eager, run_exported, repeats, warmup)
            result.update(eager_ms=eager_ms, exported_ms=exported_ms, speedup=eager_ms / exported_ms)
    finally:
        torch.set_num_threads(previous)
    return result


def ort_latency(
    path: str | Path,
    inputs: tuple,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    optimization: str = "all",
) -> float:
    """Median ms of an ONNX file under onnxruntime (CPU) on ``inputs``."""
    session = ort_session(path, threads=threads, optimization=optimization)
    inputs = check_inputs(inputs)
    for _ in range(warmup):
        ort_run(session, inputs)
    return _median_ms(lambda: ort_run(session, inputs), repeats)
