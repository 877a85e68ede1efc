"""Model cost that does not depend on the machine: parameter count and multiply-accumulates (MACs)."""

from __future__ import annotations

import torch
from torch import nn


def params_millions(model: nn.Module) -> float:
    """Parameters in millions."""
    return sum(p.numel() for p in model.parameters()) / 1e6


def count_macs(fn, *inputs: torch.Tensor) -> float:
    """Multiply-accumulates of one call ``fn(*inputs)`` under ``no_grad`` (a module or any callable).

    ``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per MAC, for convolutions, matmuls and
    attention; element-wise ops and cumulative sums (the pure-PyTorch selective scan) are not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*inputs)
    return counter.get_total_flops() / 2
