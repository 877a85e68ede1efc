"""TorchScript export: a ``torch.jit.trace`` taken at odd sizes and checked at a second one."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from .common import (
    PARITY_ATOL,
    check_inputs,
    io_names,
    probe_sizes,
    quiet_export,
    resize_spatial,
    trace_sizes,
)


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    example_inputs: tuple,
    task: str | None = None,
    dynamic_hw: bool = True,
    atol: float = PARITY_ATOL,
) -> Path:
    """Save a ``torch.jit.trace`` of ``model`` (eval mode) to ``path``; returns the path.

    Trace, not script: timm's ``forward_intermediates`` and our heads use Python (lists of features, kwargs,
    shape checks) that ``torch.jit.script`` rejects, while a trace records the tensor ops that ran, with shape
    arithmetic kept symbolic. As for ONNX the trace is taken at odd spatial sizes so the padding to the stride
    is recorded, then checked at a second size; where the model's shape logic cannot be captured a warning
    says the file holds a fixed-size trace (``dynamic_hw=False``: traced at the example size, no probe). The
    file carries ``densekit.json`` (task, dynamic_hw, size), read
    back with ``torch.jit.load(path, _extra_files={"densekit.json": ""})``.
    """
    inputs = check_inputs(example_inputs)
    io_names(task, inputs)  # validates the task against the number of inputs
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    spatial = list(inputs[0].shape[2:])
    trace_inputs = resize_spatial(inputs, trace_sizes(spatial)) if dynamic_hw else inputs
    try:
        with torch.no_grad():
            model(*trace_inputs)
    except Exception:  # noqa: BLE001 - the model only takes certain sizes
        trace_inputs = inputs
    with quiet_export(), torch.no_grad():
        traced = torch.jit.trace(model, trace_inputs, check_trace=False)
    dynamic, reason = bool(dynamic_hw), None
    second = probe_sizes(spatial, list(trace_inputs[0].shape[2:]))
    probes = (inputs, resize_spatial(inputs, second)) if dynamic else ()
    for probe in probes:
        try:
            # the profiling executor's first runs per shape are slow (it records, then optimises): not needed
            with torch.no_grad(), torch.jit.optimized_execution(False):
                ref, got = model(*probe), traced(*probe)
            diff = float((ref - got).abs().max()) if ref.shape == got.shape else float("inf")
            if not diff <= atol * max(1.0, float(ref.abs().max())):
                reason = f"max abs diff {diff:.3g} at {list(probe[0].shape[2:])}"
        except Exception as err:  # noqa: BLE001
            reason = f"{type(err).__name__} at {list(probe[0].shape[2:])}: {str(err).splitlines()[0][:200]}"
        if reason:
            break
    if reason:
        with quiet_export(), torch.no_grad():
            traced = torch.jit.trace(model, inputs, check_trace=False)
        warnings.warn(
            f"{type(model).__name__} cannot be traced for dynamic height/width ({reason}); saved a trace at "
            f"the FIXED size {spatial}: run it at exactly that size.",
            UserWarning,
            stacklevel=2,
        )
        dynamic = False
    meta = {"task": task, "dynamic_hw": dynamic, "export_size": spatial, "method": "torch.jit.trace"}
    with quiet_export():
        torch.jit.save(traced, str(path), _extra_files={"densekit.json": json.dumps(meta)})
    return path


def torchscript_metadata(path: str | Path) -> dict:
    """The ``densekit.json`` a file from ``export_torchscript`` carries (task, dynamic_hw, size)."""
    extra = {"densekit.json": ""}
    with quiet_export():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra["densekit.json"] or "{}")
