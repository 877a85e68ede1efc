"""Peak memory of a piece of work, and running a measurement in a fresh interpreter.

``PeakMemory`` measures the extra memory a block needs over the state at its start: on CUDA
``torch.cuda.max_memory_allocated`` (tensor memory, the caching allocator's slack excluded); on CPU the peak
resident set size (Linux VmHWM, reset through /proc/self/clear_refs; ``getrusage`` ru_maxrss where that reset
is not allowed, which can only say how far the process's all-time peak rose).

A process's peak RSS only grows, so an honest CPU number needs a fresh process per configuration:
``in_fresh_process(fn, cfg)`` runs a measurement function of a ``densekit.benchmarks`` module in a new
interpreter (``python -m densekit.benchmarks.memory <module>:<function> <json>``) and returns its JSON result.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import resource
import subprocess
import sys

import torch


def proc_status_kib(key: str) -> int | None:
    """A /proc/self/status field in kB (``"VmRSS:"``, ``"VmHWM:"``); None where /proc is not available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_heap() -> None:
    """Collect garbage and hand freed heap back to the OS, so that later allocations show in the RSS instead of
    reusing pages that were resident before the measurement started."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class PeakMemory:
    """``with PeakMemory(device) as peak: work()`` -> ``peak.mib`` (extra peak memory of the block, MiB) and
    ``peak.method`` (how it was measured)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.mib: float = float("nan")
        self.method = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base, self.method = torch.cuda.memory_allocated(self.device), "cuda max_memory_allocated"
            return self
        _release_heap()
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM (the peak) to the current RSS
            self._base, self.method = proc_status_kib("VmRSS:") * 1024, "peak RSS (VmHWM after clear_refs)"
        except (OSError, TypeError):
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.method = "peak RSS (ru_maxrss)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("peak RSS (VmHWM"):
            peak = proc_status_kib("VmHWM:") * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.mib = (peak - self._base) / 2**20


def fixed_mmap_env() -> dict[str, str]:
    """The environment with a fixed glibc mmap threshold: with the default dynamic threshold glibc serves
    freed tensor-sized blocks from its heap, which stays resident, so the CPU peak RSS overstated live memory,
    and unequally between the configurations compared."""
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "131072")}


def in_fresh_process(
    fn, cfg: dict, timeout: float | None = None, env: dict | None = None, none_on_oom: bool = False
) -> dict | None:
    """``fn(cfg)`` (a function of a ``densekit.benchmarks`` module returning a JSON-able dict) in a new
    interpreter. With ``none_on_oom``, a run that ran out of memory (CUDA OOM, or killed by the kernel's OOM
    killer) or past ``timeout`` returns None instead of raising."""
    module = fn.__module__
    if not module.startswith(__package__ + "."):
        raise ValueError(f"in_fresh_process runs densekit.benchmarks functions, got {module}.{fn.__name__}")
    cmd = [sys.executable, "-m", __name__, f"{module}:{fn.__name__}", json.dumps(cfg)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        if none_on_oom:
            return None
        raise
    if out.returncode != 0:
        oom = out.returncode < 0 or "out of memory" in out.stderr.lower()
        if none_on_oom and oom:
            return None
        raise RuntimeError(f"{fn.__name__}({cfg}) failed in its subprocess:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _worker(argv: list[str]) -> None:
    target, cfg = argv
    module, _, name = target.partition(":")
    if not module.startswith(__package__ + "."):
        raise SystemExit(f"not a densekit.benchmarks function: {target}")
    fn = getattr(importlib.import_module(module), name)
    print(json.dumps(fn(json.loads(cfg))))


if __name__ == "__main__":
    _worker(sys.argv[1:])
