"""The one timing helper of the benchmarks: warm-up, repeats, median, ratio.

Medians, not means: on a shared machine a single slow run (another process, a page fault) moves a mean but
not a median. Implementations compared side by side are timed in turn within each repeat
(``interleaved_medians``), so a load change hits every one of them alike and their ratio stays meaningful.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping


def median_time(
    fn: Callable[[], object], repeats: int, warmup: int = 0, sync: Callable[[], object] | None = None
) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls. ``sync``
    (e.g. ``torch.cuda.synchronize``) runs after each call inside the timed region, so asynchronous work is
    counted."""
    for _ in range(warmup):
        fn()
        if sync is not None:
            sync()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_times(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of every call, per name: ``warmup`` untimed calls of each function, then ``repeats``
    rounds in which each function runs once, in turn."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def interleaved_medians(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per name of ``interleaved_times``."""
    return {name: statistics.median(ts) for name, ts in interleaved_times(fns, repeats, warmup).items()}


def ratio(value: float, reference: float) -> float:
    """``value / reference``; NaN when the reference is 0 or missing (a ratio that cannot be formed)."""
    if reference is None or value is None or reference == 0 or not math.isfinite(reference):
        return math.nan
    return value / reference


def load_average() -> str:
    """The 1/5/15-minute load average as text (for the table headers: how busy the machine was); "n/a"
    where /proc is not available."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"
