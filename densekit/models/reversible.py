"""Reversible 3D MBConv layers: inverted bottlenecks and RevNet additive couplings that store no activations.

``InvertedBottleneck3d`` is the MobileNetV2 block (Sandler et al., CVPR 2018) in 3D: 1x1x1 expansion,
norm/act, depthwise kxkxk, norm/act, linear 1x1x1 projection. ``ReversibleCoupling`` is RevNet's additive
coupling (Gomez et al., NeurIPS 2017) with such bottlenecks as F and G, as in the reversible MBConv
3D U-Net of Pendse et al. (BrainLes 2020, arXiv 2104.09648)::

    x = (x1, x2)  (channel halves)      y1 = x1 + F(x2)      y2 = x2 + G(y1)
    inverse:                            x2 = y2 - G(y1)      x1 = y1 - F(x2)

``ReversibleSequence`` runs a stack of couplings through one ``torch.autograd.Function`` that keeps only
the stack's output: the forward runs under ``no_grad``; the backward walks the stack from the end,
rebuilding each coupling's input from its output and recomputing F and G once with grad enabled
(RevNet, Alg. 1), so activation memory no longer grows with the number of blocks. The gradients are
those of the ordinary network, up to the rounding of the reconstruction (exact in float64 to ~1e-12).
With ``reversible=False`` the same modules (same ``state_dict`` keys) run with ordinary autograd.

Conventions: tensors are (B, C, D, H, W); C must be even for a coupling (x1 = first C/2 channels).
The blocks must be deterministic (no dropout): the backward recomputes them. Batch norm is allowed:
the backward's recomputation normalises with the same batch statistics as the forward (train mode),
and its running statistics are restored afterwards, so they are updated exactly once per step, as in the
stored network. Under autocast (float16/bfloat16) the reconstruction is only as exact as that precision;
keep the coupling stream (the stack's input) in float32.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.autograd.function import once_differentiable

NORMS = ("group", "instance", "batch")
ACTS = ("relu6", "silu", "leaky_relu")


def norm3d(kind: str, channels: int, num_groups: int = 8) -> nn.Module:
    """A 3D normalisation layer: GroupNorm(num_groups), InstanceNorm3d (affine) or BatchNorm3d."""
    if kind == "group":
        if channels % num_groups:
            raise ValueError(
                f"group norm needs channels divisible by num_groups: {channels} channels, num_groups={num_groups}"
            )
        return nn.GroupNorm(num_groups, channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    raise ValueError(f"norm must be one of {list(NORMS)}, got {kind!r}")


def activation(kind: str) -> nn.Module:
    """ReLU6 (MobileNetV2), SiLU (EfficientNet) or LeakyReLU(0.01). ReLU6/LeakyReLU run in place: their
    backward needs only their output, so the stored (non-reversible) baseline keeps one tensor fewer."""
    if kind == "relu6":
        return nn.ReLU6(inplace=True)
    if kind == "silu":
        return nn.SiLU()  # its backward needs the input: not in place
    if kind == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    raise ValueError(f"act must be one of {list(ACTS)}, got {kind!r}")


class InvertedBottleneck3d(nn.Module):
    """MobileNetV2 inverted bottleneck in 3D, same channels in and out, no residual of its own (the
    coupling adds it): expand 1x1x1 (C -> expand_ratio*C) -> norm -> act -> depthwise kxkxk -> norm -> act
    -> linear 1x1x1 projection back to C (no norm or activation after it: the linear bottleneck of
    Sandler et al., Sec. 3.2; its bias lets the block shift its output)."""

    def __init__(
        self,
        channels: int,
        expand_ratio: int = 4,
        kernel: int = 3,
        norm: str = "group",
        act: str = "relu6",
        num_groups: int = 8,
    ):
        super().__init__()
        channels, expand_ratio, kernel = int(channels), int(expand_ratio), int(kernel)
        if channels < 1 or expand_ratio < 1:
            raise ValueError(
                f"InvertedBottleneck3d needs channels >= 1 and expand_ratio >= 1, got {channels}, {expand_ratio}"
            )
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"InvertedBottleneck3d needs an odd kernel (same-size output), got {kernel}")
        hidden = channels * expand_ratio
        self.channels, self.hidden = channels, hidden
        self.expand = nn.Conv3d(channels, hidden, 1, bias=False)
        self.norm1 = norm3d(norm, hidden, num_groups)
        self.act1 = activation(act)
        self.depthwise = nn.Conv3d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden, bias=False)
        self.norm2 = norm3d(norm, hidden, num_groups)
        self.act2 = activation(act)
        self.project = nn.Conv3d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(self.expand(x)))  # (B, hidden, D, H, W)
        x = self.act2(self.norm2(self.depthwise(x)))  # (B, hidden, D, H, W)
        return self.project(x)  # (B, C, D, H, W)


def _bn_buffers(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, copy) of every batch-norm running statistic that a train-mode forward would update."""
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            for buf in (m.running_mean, m.running_var, m.num_batches_tracked):
                if buf is not None:
                    saved.append((buf, buf.clone()))
    return saved


class _KeepRunningStats:
    """Context manager: batch-norm running statistics are the same after the block as before it (the
    backward's recomputation must not count a step twice)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.saved = _bn_buffers(self.module)

    def __exit__(self, *exc):
        with torch.no_grad():
            for buf, copy in self.saved:
                buf.copy_(copy)
        return False


class ReversibleCoupling(nn.Module):
    """RevNet additive coupling on (B, C, D, H, W): y1 = x1 + F(x2), y2 = x2 + G(y1), x1/x2 = the first/
    second C/2 channels. F and G default to ``InvertedBottleneck3d(C/2, **bottleneck)``; any pair of
    shape-preserving deterministic modules on C/2 channels may be passed instead."""

    def __init__(self, channels: int, f: nn.Module | None = None, g: nn.Module | None = None, **bottleneck):
        super().__init__()
        channels = int(channels)
        if channels < 2 or channels % 2:
            raise ValueError(
                f"a reversible coupling splits the channels in two halves: channels must be even, got {channels}"
            )
        self.channels = channels
        self.f = f if f is not None else InvertedBottleneck3d(channels // 2, **bottleneck)
        self.g = g if g is not None else InvertedBottleneck3d(channels // 2, **bottleneck)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.channels:
            raise ValueError(
                f"ReversibleCoupling({self.channels}) expects volumes (B, {self.channels}, D, H, W), "
                f"got shape {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        x1, x2 = x.chunk(2, dim=1)  # (B, C/2, D, H, W) each
        y1 = x1 + self.f(x2)
        y2 = x2 + self.g(y1)
        return torch.cat([y1, y2], dim=1)  # (B, C, D, H, W)

    @torch.no_grad()
    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """x from y = forward(x): x2 = y2 - G(y1), x1 = y1 - F(x2). Leaves batch-norm statistics alone."""
        self._check(y)
        y1, y2 = y.chunk(2, dim=1)
        with _KeepRunningStats(self):
            x2 = y2 - self.g(y1)
            x1 = y1 - self.f(x2)
        return torch.cat([x1, x2], dim=1)

    def backward_pass(
        self, y: torch.Tensor, dy: torch.Tensor, params: list[nn.Parameter]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
        """From the output y and dL/dy: the input x, dL/dx and dL/dp for ``params`` (a subset of this
        coupling's parameters, in ``self.parameters()`` order). G and F each run once with grad enabled
        (RevNet, Alg. 1): dy1 collects G's input gradient before it flows into F."""
        y1, y2 = y.detach().chunk(2, dim=1)
        dy1, dy2 = dy.chunk(2, dim=1)
        own = {id(p) for p in self.g.parameters()}
        g_params = [p for p in params if id(p) in own]
        f_params = [p for p in params if id(p) not in own]
        with _KeepRunningStats(self):
            with torch.enable_grad():
                y1_ = y1.detach().requires_grad_(True)
                gy = self.g(y1_)
                d_y1_g, *dg = torch.autograd.grad(gy, [y1_, *g_params], dy2, allow_unused=True)
            with torch.no_grad():
                x2 = y2 - gy  # (B, C/2, D, H, W): G's graph is released with gy
                del gy
                dy1 = dy1 + d_y1_g if d_y1_g is not None else dy1  # dL/dy1 in total (direct + through G)
            with torch.enable_grad():
                x2_ = x2.detach().requires_grad_(True)
                fx = self.f(x2_)
                d_x2_f, *df = torch.autograd.grad(fx, [x2_, *f_params], dy1, allow_unused=True)
            with torch.no_grad():
                x1 = y1 - fx
                del fx
                dx2 = dy2 + d_x2_f if d_x2_f is not None else dy2
                x = torch.cat([x1, x2], dim=1)
                dx = torch.cat([dy1, dx2], dim=1)  # dL/dx1 = dL/dy1 (total)
        by_id = {id(p): d for p, d in zip(f_params + g_params, df + dg)}
        return x, dx, [by_id[id(p)] for p in params]


class _ReversibleStack(torch.autograd.Function):
    """A sequence of couplings that saves only its output. The parameters are passed as inputs so that
    autograd routes their gradients (accumulation into ``.grad`` is autograd's, as for any layer)."""

    @staticmethod
    def forward(ctx, x, blocks, groups, *params):
        with torch.no_grad():
            for block in blocks:
                x = block(x)  # the previous block's output is dropped here: nothing intermediate is kept
        ctx.blocks, ctx.groups = blocks, groups
        device = x.device.type
        ctx.autocast = (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device), device)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        enabled, dtype, device = ctx.autocast
        grads: list[torch.Tensor | None] = []
        with torch.autocast(device, dtype=dtype, enabled=enabled):  # recompute as the forward computed
            for block, params in zip(reversed(ctx.blocks), reversed(ctx.groups)):
                y, dy, dp = block.backward_pass(y, dy, params)
                grads = dp + grads
        return (dy, None, None, *grads)


class ReversibleSequence(nn.Module):
    """A stack of ``ReversibleCoupling``s. ``reversible=True``: activations are not stored during
    training (see module docstring); ``reversible=False``: ordinary autograd on the same modules. The
    flag is an attribute, not state, so a checkpoint loads into either mode and it may be flipped later.
    Without grad (inference) both modes run the plain loop."""

    def __init__(self, blocks: Iterable[nn.Module], reversible: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        for i, block in enumerate(self.blocks):
            if not (hasattr(block, "backward_pass") and hasattr(block, "inverse")):
                raise TypeError(
                    f"ReversibleSequence block {i} is a {type(block).__name__}; expected a "
                    "ReversibleCoupling (a module with inverse() and backward_pass())"
                )
        self.reversible = bool(reversible)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.blocks:
            return x
        params = [[p for p in b.parameters() if p.requires_grad] for b in self.blocks]
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(params))
        if not (self.reversible and needs_grad) or torch.jit.is_tracing():
            for block in self.blocks:
                x = block(x)
            return x
        self.blocks[0]._check(x)  # a clear error here rather than inside the Function
        flat = [p for group in params for p in group]
        return _ReversibleStack.apply(x, tuple(self.blocks), tuple(params), *flat)

    @torch.no_grad()
    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for block in reversed(self.blocks):
            y = block.inverse(y)
        return y


def set_reversible(module: nn.Module, reversible: bool) -> nn.Module:
    """Switch every ``ReversibleSequence`` inside ``module`` (e.g. for a memory comparison)."""
    for m in module.modules():
        if isinstance(m, ReversibleSequence):
            m.reversible = bool(reversible)
    return module
