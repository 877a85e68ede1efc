"""Optical-flow metrics: end-point error, n-pixel accuracies and the KITTI outlier rate Fl.

Conventions (stated once, used everywhere):
  * Shapes: pred and target (B, 2, H, W) in pixels (u right, v down); valid / noc (B, H, W) bool.
  * EPE = ||pred - target||_2 per pixel. A target pixel counts when ``valid`` is True (default: all) and
    it is finite and below the 1e9 "unknown" marker (NaN/inf ground truth is simply invalid). A NaN in the
    *prediction* is not hidden: it makes the EPE NaN, so a diverged model shows.
  * Pixel-averaged over the whole evaluated set (the KITTI devkit and Sintel convention): every counted
    pixel weighs the same, whichever image it is in. (RAFT's KITTI script averages EPE per image first, so
    its KITTI EPE can differ slightly; its Fl is pixel-averaged like ours.)
  * ``epe`` in pixels; ``1px``, ``3px``, ``5px`` the *fraction* in [0, 1] of counted pixels with EPE below
    1, 3, 5 px; ``fl_all`` in *percent*: pixels with EPE > 3 px AND EPE > 5 % of the ground-truth magnitude
    (KITTI 2015's Fl, as the devkit and ptlflow report it).
  * With ``noc`` (True = not occluded in frame 2), the same five scores also for ``_noc`` (valid & noc)
    and ``_occ`` (valid & ~noc) pixels. A region without pixels scores NaN.
  * Motion-magnitude bins (MPI-Sintel's s0-10 / s10-40 / s40+, Butler et al., ECCV 2012): ``epe_s0-10``,
    ``epe_s10-40``, ``epe_s40+`` over the counted pixels whose *ground-truth* magnitude lies in [0, 10),
    [10, 40), [40, inf) px, and ``frac_s...`` the share of counted pixels in each bin. A bin without pixels
    has EPE NaN (never 0): training logs and evaluate.py leave it out instead of averaging over nothing.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

UNKNOWN_FLOW = 1e9
THRESHOLDS = (1, 3, 5)
_SCORES = ("epe", "1px", "3px", "5px", "fl_all")
_REGIONS = ("", "_noc", "_occ")
# ground-truth magnitude bins [lo, hi) in pixels, named as MPI-Sintel's table names them
MAGNITUDE_BINS = (("s0-10", 0.0, 10.0), ("s10-40", 10.0, 40.0), ("s40+", 40.0, float("inf")))
_BIN_KEYS = tuple(f"{k}_{name}" for name, _, _ in MAGNITUDE_BINS for k in ("count", "epe"))


def _check(pred: torch.Tensor, target: torch.Tensor, valid, noc) -> tuple[torch.Tensor, torch.Tensor | None]:
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 2:
        raise ValueError(
            f"pred and target must both be (B, 2, H, W) flow, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    b, _, h, w = target.shape
    finite = torch.isfinite(target).all(dim=1) & (target.abs() < UNKNOWN_FLOW).all(dim=1)  # (B, H, W)
    for name, mask in (("valid", valid), ("noc", noc)):
        if mask is not None and tuple(mask.shape) != (b, h, w):
            raise ValueError(f"{name} must be (B, H, W) = {(b, h, w)} like the flow, got {tuple(mask.shape)}")
    keep = finite if valid is None else finite & valid.bool()
    return keep, None if noc is None else noc.bool()


def flow_sums(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    noc: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-region sums (float64 scalars): ``count``, ``epe``, ``1px``, ``3px``, ``5px``, ``fl`` (counts),
    keys suffixed by region ("", "_noc", "_occ"; the last two only with ``noc``), and ``count_<bin>`` /
    ``epe_<bin>`` per ground-truth magnitude bin (``MAGNITUDE_BINS``, over the counted pixels). Summing these
    over batches and processes and dividing by the counts gives the dataset-level, pixel-averaged scores."""
    keep, noc = _check(pred, target, valid, noc)
    target = torch.where(keep[:, None], target, torch.zeros_like(target))  # NaN ground truth must not leak
    epe = torch.linalg.vector_norm((pred - target).double(), dim=1)  # (B, H, W)
    mag = torch.linalg.vector_norm(target.double(), dim=1)  # (B, H, W)
    outlier = (epe > 3.0) & (epe > 0.05 * mag)
    regions = {"": keep}
    if noc is not None:
        regions.update(_noc=keep & noc, _occ=keep & ~noc)
    sums = {}
    for suffix, region in regions.items():
        e = epe[region]
        sums[f"count{suffix}"] = region.sum().double()
        sums[f"epe{suffix}"] = e.sum()
        for t in THRESHOLDS:
            sums[f"{t}px{suffix}"] = (e < t).sum().double()
        sums[f"fl{suffix}"] = outlier[region].sum().double()
    for name, lo, hi in MAGNITUDE_BINS:
        in_bin = keep & (mag >= lo) & (mag < hi)  # (B, H, W)
        sums[f"count_{name}"] = in_bin.sum().double()
        sums[f"epe_{name}"] = epe[in_bin].sum()
    return sums


def scores_from_sums(sums: dict[str, torch.Tensor]) -> dict[str, float]:
    """Sums (``flow_sums``) -> epe, 1px, 3px, 5px (fractions), fl_all (percent), per region present; per
    magnitude bin present in the sums ``epe_<bin>`` (NaN without pixels) and ``frac_<bin>``."""
    out = {}
    for suffix in _REGIONS:
        if f"count{suffix}" not in sums:
            continue
        n = float(sums[f"count{suffix}"])
        div = (lambda x, n=n: float(x) / n) if n > 0 else (lambda x: float("nan"))  # n bound per region
        out[f"epe{suffix}"] = div(sums[f"epe{suffix}"])
        for t in THRESHOLDS:
            out[f"{t}px{suffix}"] = div(sums[f"{t}px{suffix}"])
        out[f"fl_all{suffix}"] = 100.0 * div(sums[f"fl{suffix}"])
    total = float(sums["count"]) if "count" in sums else 0.0
    for name, _, _ in MAGNITUDE_BINS:
        if f"count_{name}" not in sums:
            continue
        n = float(sums[f"count_{name}"])
        out[f"epe_{name}"] = float(sums[f"epe_{name}"]) / n if n > 0 else float("nan")
        out[f"frac_{name}"] = n / total if total > 0 else float("nan")
    return out


def flow_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    noc: torch.Tensor | None = None,
) -> dict[str, float]:
    """epe, 1px, 3px, 5px, fl_all (and per magnitude bin: epe_s0-10, ..., frac_s0-10, ...) over the counted
    pixels of one batch (conventions: module docstring)."""
    return scores_from_sums(flow_sums(pred, target, valid, noc))


class FlowMetrics(Metric):
    """Accumulates the ``flow_sums`` over batches (and processes: sum-reduced); ``compute`` gives the
    pixel-averaged scores over everything seen. ``with_noc=True`` adds the _noc/_occ regions (then every
    ``update`` must pass ``noc``)."""

    full_state_update = False

    def __init__(self, with_noc: bool = False):
        super().__init__()
        self.with_noc = bool(with_noc)
        regions = _REGIONS if with_noc else ("",)
        self._keys = [f"{k}{s}" for s in regions for k in ("count", "epe", "1px", "3px", "5px", "fl")]
        self._keys += list(_BIN_KEYS)
        for key in self._keys:
            zero = torch.zeros((), dtype=torch.float64)
            self.add_state(self._state(key), default=zero, dist_reduce_fx="sum")

    @staticmethod
    def _state(key: str) -> str:
        # attribute names cannot start with a digit ("1px"); the bins' "-" / "+" are not identifier characters
        return "s_" + key.replace("-", "_to_").replace("+", "_up")

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        valid: torch.Tensor | None = None,
        noc: torch.Tensor | None = None,
    ) -> None:
        if self.with_noc and noc is None:
            raise ValueError("FlowMetrics(with_noc=True) needs the noc mask in every update")
        sums = flow_sums(pred, target, valid, noc if self.with_noc else None)
        for key in self._keys:
            setattr(self, self._state(key), getattr(self, self._state(key)) + sums[key].to(self.device))

    def compute(self) -> dict[str, float]:
        return scores_from_sums({key: getattr(self, self._state(key)) for key in self._keys})


__all__ = ["MAGNITUDE_BINS", "FlowMetrics", "flow_metrics", "flow_sums", "scores_from_sums"]
