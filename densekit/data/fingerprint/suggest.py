"""``suggest(fp, data_cfg, task)``: config overrides from a fingerprint, each with its reason (nnU-Net's
fingerprint -> plan idea): crop/patch, batch size, workers, class weights, label map, channels, intensity."""

from __future__ import annotations

import math
import os

import numpy as np

from ...config_types import select
from .measure import INTENSITY_KEY, INTENSITY_VALUE, binary_map

# Memory budget of one training step, in pixels (2D: batch x H x W) or voxels (3D: batch x D x H x W).
# CPU: about the scale the embedded runs train at (batch 8 at 128^2; 2 x 48^3 patches: ~1.8 s a step on
# 2 cores);
# GPU: the public recipes' scale (8 x 512^2 for 2D, nnU-Net's 2 x 128^3 for 3D).
CPU_BUDGET = {2: 8 * 256 * 256, 3: 2 * 64**3}
GPU_BUDGET = {2: 8 * 512 * 512, 3: 2 * 128**3}
MAX_BATCH_2D = 16
BATCH_3D = 2  # nnU-Net's batch: patches, not cases, fill an epoch
IMBALANCE_RATIO = 10.0  # largest / smallest class pixel share above which class weights are suggested


def splits_of(fp: dict) -> dict[str, dict]:
    return fp["splits"] if "splits" in fp else {fp.get("split") or "train": fp}


def train_split(fp: dict) -> dict | None:
    splits = {k: v for k, v in splits_of(fp).items() if "error" not in v}
    return splits.get("train") or next(iter(splits.values()), None)


def _floor_to(x: float, m: int) -> int:
    return max(m, int(x // m) * m)


def _side(x: float, m: int) -> int:
    """A crop/patch side for a median side ``x``: the multiple of ``m`` below it, unless that drops more
    than a quarter of the side (then the one above, padding less than it would cut)."""
    down = _floor_to(x, m)
    return down if down >= 0.75 * x else down + m


def suggest(
    fp: dict,
    data_cfg: dict,
    task: str,
    *,
    config: dict | None = None,
    budget: int | None = None,
    cpus: int | None = None,
) -> dict[str, dict]:
    """Config overrides from a fingerprint (one split's, or ``{"splits": {...}}``: the train split's
    numbers are used): ``{override key: {"value", "reason", "current"}}``. ``data_cfg`` is the data config
    (plain dict), ``task`` the task name, ``config`` the whole plain config (backbone/loss keys; optional),
    ``budget`` pixels (2D) or voxels (3D) per training step (default ``CPU_BUDGET``), ``cpus`` the CPUs this
    process may use (default ``os.sched_getaffinity``)."""
    train = train_split(fp)
    out: dict[str, dict] = {}
    if train is None or not train.get("size"):
        return out
    config = dict(config or {})
    config.setdefault("data", data_cfg)

    def add(key: str, value, reason: str) -> None:
        out[key] = {"value": value, "reason": reason, "current": select(config, key)}

    ndim = train["ndim"]
    budget = int(budget or CPU_BUDGET[ndim])
    median = train["size"]["median"]
    n_train = train["samples"]
    files = train["source"] == "files"
    if ndim == 2:
        multiple = 64 if train["kind"] == "flow" else 32
        h, w = (_side(s, multiple) for s in median)
        if h * w * 2 > budget:  # at least batch 2 must fit: shrink both sides alike
            f = math.sqrt(budget / 2 / (h * w))
            h, w = _floor_to(h * f, multiple), _floor_to(w * f, multiple)
        crop_now = select(data_cfg, "augment.crop")
        if files or crop_now is not None:
            reason = f"median image {median[0]:g} x {median[1]:g} (H x W) to a multiple of {multiple}"
            if isinstance(crop_now, (list, tuple)) and len(crop_now) == 2:
                ch, cw = int(crop_now[0]), int(crop_now[1])
                if select(data_cfg, "fit_crop"):  # the reader cuts the crop to the largest train image
                    big = train["size"]["max"]
                    ch, cw = min(ch, int(big[0])), min(cw, int(big[1]))
                pad = 1 - min(median[0], ch) * min(median[1], cw) / (ch * cw)
                if pad > 0.05:
                    reason += f"; the configured {ch} x {cw} crop would be {100 * pad:.0f}% padding"
            add("data.augment.crop", [h, w], reason)
        batch = max(1, min(MAX_BATCH_2D, budget // (h * w), n_train))
        add(
            "data.batch_size",
            batch,
            f"{budget} px per step (batch x crop) fit {budget // (h * w)} crops of "
            f"{h} x {w}; at most {MAX_BATCH_2D}, at most the {n_train} training "
            f"samples",
        )
    else:
        d, h, w = (_side(s, 16) for s in median)
        patch = [d, h, w]
        while patch[0] * patch[1] * patch[2] * BATCH_3D > budget and max(patch) > 16:
            axis = int(np.argmax(patch))
            patch[axis] -= 16  # shrink the longest side first (nnU-Net's rule)
        add(
            "data.patch",
            patch,
            f"median volume {' x '.join(f'{s:g}' for s in median)} (D x H x W) to "
            f"multiples of 16, {BATCH_3D} patches within {budget} voxels per step",
        )
        add("data.batch_size", BATCH_3D, "patches, not cases, fill an epoch: nnU-Net's batch of 2")
        channels = train.get("in_channels")
        if channels:
            add("backbone.in_channels", int(channels), f"the volumes have {channels} channel(s)")
    cpus = int(cpus or len(os.sched_getaffinity(0)))
    # generated volumes cost far less than a 3D step; generated 2D scenes about half a 2D step on one core,
    # so they get a worker like files do (scripts/benchmark.py train measures the data wait)
    generated_volumes = not files and task == "volume"
    workers = 0 if generated_volumes else min(8, max(0, cpus - 1))
    add(
        "data.num_workers",
        workers,
        f"{cpus} CPU(s) available to this process"
        + (
            "; generated volumes need no workers"
            if generated_volumes
            else "; one is left to the training loop (threads=auto gives it the CPUs the workers leave)"
        ),
    )
    labels = train.get("labels")
    if labels:
        names = labels["class_names"]
        given = select(data_cfg, "num_classes")
        if given == "???" or (isinstance(given, int) and given != len(names)):
            add("data.num_classes", len(names), f"the class list has {len(names)} names: {names[:6]}")
        pixels = list(labels["class_pixels"])
        fix = binary_map(train)
        if fix:
            ((v, _),) = fix.items()
            add(
                "data.label_map",
                {v: 1},
                f"masks hold only {{0, {v}}} with 2 classes ({', '.join(names)}): {v} marks the foreground",
            )
            pixels = [labels["raw_values"].get("0", 0), labels["raw_values"].get(str(v), 0)]
        total = sum(pixels)
        shares = [p / total for p in pixels] if total else []
        present = [s for s in shares if s > 0]
        # 2D only: the volume recipe's Dice + CE and foreground oversampling already balance the classes
        if ndim == 2 and len(present) >= 2 and max(present) / min(present) > IMBALANCE_RATIO:
            med = float(np.median(present))
            weights = [round(med / s, 4) if s > 0 else 1.0 for s in shares]
            add(
                "task.loss.class_weights",
                weights,
                f"class pixel shares {[round(s, 4) for s in shares]} (largest/smallest "
                f"{max(present) / min(present):.0f}x): median-frequency weights",
            )
            if task == "seg" and not select(config, "task.loss.dice_weight"):
                add("task.loss.dice_weight", 1.0, "imbalanced classes: Dice counts every class alike")
    if ndim == 2:
        intensity = train.get("intensity", {})
        wide = set(train.get("dtypes", {})) & {"uint16", "int32", "float32"}
        if files and wide:
            chans = intensity.get("channels") or [[0, 0, 0]]
            lo, hi = min(p[0] for p in chans), max(p[-1] for p in chans)
            top = {"uint16": 65535}.get(next(iter(wide)))
            used = f" ({100 * hi / top:.2f}% of 0..{top})" if top else ""
            add(
                INTENSITY_KEY,
                INTENSITY_VALUE,
                f"{'/'.join(sorted(wide))} images with p0.5..p99.5 = {lo:g}..{hi:g}{used}: scaled by "
                f"percentiles of the train split, not by the dtype maximum",
            )
    return out


__all__ = [
    "BATCH_3D",
    "CPU_BUDGET",
    "GPU_BUDGET",
    "IMBALANCE_RATIO",
    "MAX_BATCH_2D",
    "splits_of",
    "suggest",
    "train_split",
]
