"""``backend=onnx``: the Predictor's network replaced by an ONNX Runtime session on an exported file
(``scripts/export.py``), after checking that the file was exported from this task and that it matches the
eager network on a test input at a size of its own (the export's parity tolerance)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError


class OrtModule(nn.Module):
    """``forward(*inputs)`` through an onnxruntime session: tensors in, a float32 tensor out."""

    def __init__(self, session):
        super().__init__()
        self.session = session

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        from ..export.onnx import ort_run

        return torch.from_numpy(ort_run(self.session, inputs))


def use_onnx(predictor, onnx_path: str | None, ckpt: Path) -> None:
    from ..export.common import PARITY_ATOL, example_inputs_for, tolerance
    from ..export.onnx import onnx_metadata, ort_session

    path = Path(onnx_path).expanduser() if onnx_path else ckpt.with_suffix(".onnx")
    if not path.is_file():
        raise FileNotFoundError(
            f"backend=onnx: {path} not found; export it first (python scripts/export.py ckpt={ckpt}) "
            "or give onnx=<file>"
        )
    meta = onnx_metadata(path)
    if meta.get("task") not in (None, predictor.task):
        raise ConfigError(f"{path} was exported from a task={meta['task']!r} model; {ckpt} is task={predictor.task!r}")
    if meta.get("dynamic_hw") is False:
        raise ConfigError(f"{path} was exported at a fixed size; export with dynamic=true to predict on any size")
    session = ort_session(path)
    inputs = example_inputs_for(predictor.config, 96, 128)
    with torch.no_grad():
        ref = predictor.model(*inputs).float()
    got = OrtModule(session)(*inputs)
    diff = float((got - ref).abs().max()) if got.shape == ref.shape else float("inf")
    if not diff <= tolerance(ref, PARITY_ATOL):
        raise ValueError(
            f"{path} does not match {ckpt} (max abs difference {diff:.3g} on a test input, allowed "
            f"{tolerance(ref, PARITY_ATOL):.3g}): it was exported from other weights; export it again"
        )
    print(f"backend=onnx: {path.name} matches the checkpoint (max abs difference {diff:.2g})")
    predictor.model = OrtModule(session)
