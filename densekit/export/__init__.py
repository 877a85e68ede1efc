"""Deployment: re-parameterisation, ONNX / TorchScript export, and parity + latency checks against eager.

    model = reparameterize(model, example_inputs)              # fused copy, outputs checked
    export_onnx(model, "model.onnx", (image,), task="seg")     # dynamic batch, height and width
    report = check_parity(model, "model.onnx", (image,))       # max_abs_diff, eager_ms, exported_ms, speedup

Inputs and outputs are named by the task (its ``inputs`` and ``output_name`` facts): seg ``image -> logits``,
depth ``image -> depth``, flow ``image1, image2 -> flow``, volume ``volume -> logits``. Images are float32
(B, 3, H, W) in [0, 1] (the model normalises), volumes (B, C, D, H, W); outputs are at the input size, as in
eager mode. ``export_onnx`` / ``export_torchscript`` trace at odd sizes and verify the dynamic graph at a
second size, falling back to a fixed size with a warning when the model's shape logic cannot be captured
(``densekit.export.common`` says why).

Modules: ``common`` (re-parameterisation, names, example inputs, sizes, the output path), ``onnx``,
``torchscript``, ``parity`` (eager vs exported, latency), ``command`` (what scripts/export.py runs: a
checkpoint in, a checked file out).
"""

from .common import (
    DEFAULT_OPSET,
    PARITY_ATOL,
    check_output_path,
    example_inputs_for,
    io_names,
    reparameterize,
)
from .onnx import export_onnx, onnx_metadata, ort_session
from .parity import check_parity, latency_pair, ort_latency
from .torchscript import export_torchscript, torchscript_metadata

__all__ = [
    "DEFAULT_OPSET",
    "PARITY_ATOL",
    "check_output_path",
    "check_parity",
    "example_inputs_for",
    "export_onnx",
    "export_torchscript",
    "io_names",
    "latency_pair",
    "onnx_metadata",
    "ort_latency",
    "ort_session",
    "reparameterize",
    "torchscript_metadata",
]
