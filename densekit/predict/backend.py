"""``backend=onnx``: the Predictor's network replaced by an ONNX Runtime session on an exported file
(``scripts/export.py``), after checking that the file was exported from this task and that it matches the
eager network on the user's first input (first two frames for flow; the export's seeded test input for videos
and volumes), within the export's parity tolerance."""

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


def _first_input(predictor, inputs) -> tuple[torch.Tensor, ...] | None:
    """The user's first image (two frames for flow) as the model's input tensors, or None when it cannot be
    read here (then the export's seeded test input is used; the unreadable file is reported by the run)."""
    from ..inference import _load_image

    cls = predictor.task_class
    if inputs.kind != "image" or cls.dims != 2:
        return None
    n = len(cls.inputs)
    try:
        frames = [_load_image(p, predictor.intensity) for p in inputs.items[:n]]
    except (ValueError, OSError):
        return None
    if len(frames) < n or len({f.shape for f in frames}) > 1:
        return None
    return tuple(torch.from_numpy(f).permute(2, 0, 1)[None] for f in frames)  # (1, 3, H, W) each


def use_onnx(predictor, onnx_path: str | None, ckpt: Path, inputs=None) -> None:
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
    sample = (_first_input(predictor, inputs) if inputs is not None else None) or example_inputs_for(
        predictor.config, 96, 128
    )
    with torch.no_grad():
        ref = predictor.model(*sample).float()
    got = OrtModule(session)(*sample)
    diff = float((got - ref).abs().max()) if got.shape == ref.shape else float("inf")
    if not diff <= tolerance(ref, PARITY_ATOL):
        raise ValueError(
            f"{path} does not match {ckpt} (max abs difference {diff:.3g} on a test input, allowed "
            f"{tolerance(ref, PARITY_ATOL):.3g}): it was exported from other weights; export it again"
        )
    size = "x".join(str(v) for v in sample[0].shape[2:])
    print(f"backend=onnx: {path.name} matches the checkpoint (max abs difference {diff:.2g} at {size})")
    predictor.model = OrtModule(session)
