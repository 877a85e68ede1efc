"""``fingerprint(dataset)``: what one dataset split holds, measured on an evenly spread sample, with the
warnings it deserves; ``quick_check(dataset)`` is the cheap variant for the start of a training run."""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from ...schema import IGNORE_INDEX
from .collect import (
    DTYPE_MAX,
    PERCENTILES,
    BadFile,
    Collector,
    axis_stats,
    num,
    percentiles_of,
    sample_indices,
)
from .listing import RawFolder
from .sources import READERS, source_kind

# inspect_data's default per split; volumes are decoded whole (a 4 x 240 x 240 x 155 BraTS case: ~2 s here)
DEFAULT_MAX_SAMPLES = {2: 64, 3: 8}
# The data key that selects percentile intensity scaling for 16-bit / float images
# (densekit.data.transforms.intensity: "auto" = 8-bit / 255, anything wider by the train split's percentiles)
INTENSITY_KEY = "data.intensity.mode"
INTENSITY_VALUE = "auto"


def unwrap(dataset):
    """The reader inside a wrapper that repeats it (the datamodule's ``Repeated``), which hides its files;
    not through a ``Subset``, whose files are only some of the reader's."""
    while (
        source_kind(dataset) == "samples"
        and not hasattr(dataset, "indices")
        and isinstance(getattr(dataset, "dataset", None), torch.utils.data.Dataset)
    ):
        dataset = dataset.dataset
    return dataset


def fingerprint(dataset, max_samples: int | None = 64) -> dict:
    """The fingerprint of one dataset split (module docstring), from up to ``max_samples`` items spread
    evenly over it (None = all). Never raises for bad samples: they are counted and listed."""
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise ValueError(f"max_samples must be a positive int or null, got {max_samples!r}")
    start = time.perf_counter()
    outer_length = len(dataset) if hasattr(dataset, "__len__") else None
    dataset = unwrap(dataset)
    kind = source_kind(dataset)
    if kind == "volume":
        n = len(dataset.cases)
    elif kind in ("seg", "depth", "flow"):
        n = len(dataset.files)
    else:
        n = len(dataset)
    names = getattr(dataset, "class_names", None)
    names = list(names) if names else None
    num_classes = len(names) if names else None
    col = Collector(None)
    for file, reason in getattr(dataset, "unpaired", []):
        col.add_bad(-1, file, reason)
    reader = READERS[kind]
    caught_messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in sample_indices(n, max_samples):
            try:
                reader(dataset, i, col, num_classes)
            except BadFile as exc:
                col.add_bad(i, exc.file, exc.reason)
            except Exception as exc:  # never fatal: a sample the reader cannot take is a finding
                col.add_bad(i, f"sample {i}", f"{type(exc).__name__}: {exc}")
            col.read += 1
    for w in caught:
        msg = str(w.message)
        if msg not in caught_messages:
            caught_messages.append(msg)
    fp = _result(dataset, kind, n, col, names, time.perf_counter() - start)
    if outer_length is not None:
        fp["length"] = int(outer_length)  # samples per epoch as the wrapper serves them
    fp["warnings"] = _warnings(fp) + [f"while reading: {m}" for m in caught_messages[:5]]
    return fp


def _result(dataset, kind: str, n: int, col: Collector, names, seconds: float) -> dict:
    ndim = len(col.sizes[0]) if col.sizes else (3 if kind == "volume" else 2)
    source = "samples" if kind == "samples" else "files"
    if kind == "samples":
        kind = "volume" if ndim == 3 else ("seg" if col.label_samples else "image")
        if col.targets.get("depth"):
            kind = "depth"
        elif col.targets.get("flow_magnitude"):
            kind = "flow"
    fp: dict = {
        "dataset": f"{kind} folder (raw files)" if isinstance(dataset, RawFolder) else type(dataset).__name__,
        "split": str(getattr(dataset, "split", "")),
        "root": str(getattr(dataset, "root", "")) or None,
        "kind": kind,
        "ndim": ndim,
        "source": source,
        "samples": int(n),
        "length": int(len(dataset)),
        "read": col.read,
        "seconds": num(seconds, 3),
        "axes": "DHW" if ndim == 3 else "HW",
        "size": axis_stats(col.sizes),
        "channels": {str(k): v for k, v in sorted(col.channels.items())},
        "modes": dict(col.modes),
        "dtypes": dict(col.dtypes),
        "target_dtypes": dict(col.mask_dtypes),
        "reader_error": getattr(dataset, "reader_error", None),
    }
    if ndim == 3:
        fp["spacing"] = axis_stats(col.spacings)
        fp["orientation"] = dict(col.orientations)
        said = getattr(dataset, "channels", None)  # the reader's count (dataset.json, or data.channels)
        found = int(max(col.channels)) if col.channels else None
        fp["in_channels"] = said if isinstance(said, int) else found
    intensity: dict = {
        "percentiles": list(PERCENTILES),
        "channels": [percentiles_of(col.values[c]) for c in sorted(col.values)],
    }
    # the stored range: the dtype's maximum when every sample has the same integer dtype
    intensity["dtype_max"] = DTYPE_MAX.get(next(iter(col.dtypes))) if len(col.dtypes) == 1 else None
    if ndim == 3 and col.values:
        intensity["nonzero_fraction"] = num(col.nonzero_voxels[0] / max(col.nonzero_voxels[1], 1), 4)
        intensity["nonzero"] = [
            percentiles_of(col.nonzero[c]) if c in col.nonzero else None for c in sorted(col.values)
        ]
        fg = []
        for c in sorted(col.values):
            if c in col.foreground:
                v = np.concatenate(col.foreground[c])
                fg.append(
                    {"percentiles": percentiles_of(col.foreground[c]), "mean": num(v.mean(), 5), "std": num(v.std(), 5)}
                )
            else:
                fg.append(None)
        intensity["foreground"] = fg
        # CT intensities are calibrated (air -1000 HU): a strongly negative low percentile says CT
        intensity["modality_guess"] = ["CT" if p[0] <= -500 else "MR/other" for p in intensity["channels"]]
    fp["intensity"] = intensity
    if col.label_samples:
        k = len(names) if names else max([v for v in col.ids if v not in (-1, IGNORE_INDEX)], default=0) + 1
        pixels = [int(col.ids.get(c, 0)) for c in range(k)]
        labelled = sum(pixels)
        total = sum(col.ids.values())
        fp["labels"] = {
            "class_names": names or [str(c) for c in range(k)],
            "raw_values": {str(v): int(c) for v, c in sorted(col.raw_labels.items())},
            "class_pixels": pixels,
            "class_frequency": [num(p / labelled, 5) if labelled else 0.0 for p in pixels],
            "class_presence": [int(col.presence.get(c, 0)) for c in range(k)],
            "labelled_samples": col.label_samples,
            "ignore_fraction": num(col.ids.get(IGNORE_INDEX, 0) / total, 5) if total else 0.0,
            "unknown_fraction": num(col.ids.get(-1, 0) / total, 5) if total else 0.0,
            "unknown_files": col.unknown_files[:10],
            "foreground_fraction": num(sum(pixels[1:]) / labelled, 5) if labelled else 0.0,
        }
    for name, chunks in col.targets.items():
        fp[name] = {
            "percentiles": list(PERCENTILES),
            "values": percentiles_of(chunks),
            "valid_fraction": num(col.target_valid[0] / max(col.target_valid[1], 1), 4),
        }
        if name == "depth":
            metres = getattr(dataset, "depth_scale", None) or source == "samples"
            fp[name]["unit"] = "m" if metres else "stored"
    fp["bad"] = {"count": col.bad_count, "listed": col.bad}
    return fp


def _fmt_values(values: set[int]) -> str:
    return "{" + ", ".join(str(v) for v in sorted(values)) + "}"


def binary_map(fp: dict) -> dict[int, int] | None:
    """{v: 1} when a 2-class split's masks hold only {0, v} (v != 1) and v is not mapped to class 1."""
    labels = fp.get("labels")
    if not labels or len(labels["class_names"]) != 2:
        return None
    raw = {int(v) for v in labels["raw_values"]}
    others = raw - {0}
    if len(others) != 1 or others == {1} or not raw <= {0} | others:
        return None
    # already mapped (a label_map the reader applied): class 1 then has pixels
    if labels["class_pixels"][1] > 0:
        return None
    return {others.pop(): 1}


def _warnings(fp: dict) -> list[str]:
    out = []
    if fp.get("reader_error"):
        out.append(f"the reader refused this split ({fp['reader_error']}); the raw files were measured")
    if fp["bad"]["count"]:
        out.append(f"{fp['bad']['count']} bad sample(s) among {fp['read']} read (listed under bad samples)")
    labels = fp.get("labels")
    if labels:
        fix = binary_map(fp)
        if fix:
            ((v, _),) = fix.items()
            seen = _fmt_values({int(x) for x in labels["raw_values"]})
            out.append(
                f"masks hold only {seen} with 2 classes: "
                f"{v} is not class 1 ({'ignored' if v == IGNORE_INDEX else 'unknown'}); "
                f"set data.label_map={{{v}:1}}"
            )
        if labels["ignore_fraction"] > 0.5:
            out.append(f"{100 * labels['ignore_fraction']:.1f}% of the label pixels are ignore ({IGNORE_INDEX})")
        if labels["unknown_fraction"] > 0:
            known = len(labels["class_names"])
            out.append(
                f"label values outside 0..{known - 1} and {IGNORE_INDEX} in "
                f"{len(labels['unknown_files'])}+ file(s), e.g. {labels['unknown_files'][0]}"
            )
        if labels["foreground_fraction"] == 0 and not fix:
            out.append("no foreground pixels (class > 0) in the samples read")
        absent = [n for n, p in zip(labels["class_names"], labels["class_presence"]) if p == 0]
        if absent and labels["labelled_samples"] and not fix:
            out.append(f"class(es) {absent[:8]} absent from the {labels['labelled_samples']} samples read")
    intensity = fp.get("intensity", {})
    if intensity.get("dtype_max") == 65535 and intensity.get("channels"):
        top = max(p[-1] for p in intensity["channels"])
        out.append(
            f"16-bit images: p99.5 = {top:g} of 0..65535 ({100 * top / 65535:.2f}% of the range): "
            f"they need percentile scaling ({INTENSITY_KEY}=auto or percentile); divided by 65535 "
            f"they would be near black"
        )
    size = fp.get("size")
    if fp["ndim"] == 3 and fp.get("spacing"):
        sp = fp["spacing"]["median"]
        if min(sp) > 0 and max(sp) / min(sp) > 3:
            out.append(f"anisotropic voxels: median spacing {sp} mm (D, H, W)")
    if size and size["distinct"] > 1 and fp["ndim"] == 2:
        pass  # different sizes are normal for photographs; the crop batches them
    return out


def quick_check(dataset, max_samples: int = 8) -> dict:
    """A cheap fingerprint for the start of a run (volumes: ``max(1, max_samples // 8)`` cases, as a
    BraTS-sized case takes ~2 s to decode):
    the fingerprint dict, whose ``warnings`` belong in the log. Never raises: a failure to inspect is
    returned as ``{"error": ...}``."""
    try:
        n = max_samples
        if source_kind(unwrap(dataset)) == "volume":
            n = max(1, max_samples // 8)
        return fingerprint(dataset, max_samples=n)
    except Exception as exc:  # the run must not fail because its data could not be described
        return {"error": f"{type(exc).__name__}: {exc}", "warnings": [f"data fingerprint failed: {exc}"]}


__all__ = [
    "DEFAULT_MAX_SAMPLES",
    "INTENSITY_KEY",
    "INTENSITY_VALUE",
    "binary_map",
    "fingerprint",
    "quick_check",
    "unwrap",
]
