"""Tensor ops shared by models: the Mamba selective scan.

``selective_scan`` has the semantics of ``selective_scan_ref`` in state-spaces/mamba
(``mamba_ssm/ops/selective_scan_interface.py``), i.e. of the discretised SSM of the Mamba paper
(Gu & Dao 2023, Alg. 2 / Eq. 2a-2b with zero-order-hold A and Euler B):

    dt_t = softplus(delta_t + delta_bias)          (softplus and bias optional)
    h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t,   h_{-1} = 0     # h: (B, D, N)
    y_t  = <h_t, C_t> + D * u_t,   out = y * silu(z)

On a GPU with ``mamba_ssm`` installed the fused CUDA kernel runs. On the CPU the scan compiled with
numba runs (``densekit/ops_numba.py``, forward and backward; ``DENSEKIT_NUMBA=0`` turns it off), except
under tracing, export or torch.compile. Everywhere else the pure-PyTorch chunked scan of
``densekit/ops_torch.py`` runs, in blocks of time steps that bound its memory.

``selective_scan_tokens`` and ``causal_conv1d_silu`` are the Mamba block's token-major (B, L, channels)
forms: on the CPU compiled kernels that read the linear layers' outputs in place and fuse the dt
projection, delta_bias, softplus, D and the SiLU(z) gate into the scan (and SiLU into the conv); on any
other path they reduce to ``selective_scan`` / ``F.conv1d`` on transposed views (the same decision,
``uses_compiled``).
"""

from __future__ import annotations

import importlib
import math
import os

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .ops_torch import CHUNK, scan_block

__all__ = ["selective_scan", "selective_scan_ref", "selective_scan_tokens", "causal_conv1d_silu", "uses_compiled"]

# Working-set cap (elements of one (L, B, D, N) tensor). Longer sequences are processed in blocks of
# time steps carrying the state, recomputed in backward (checkpointing), so memory stays bounded
# where the CUDA kernel is not available (e.g. LightM-UNet's stage 0 has L = H*W tokens).
_BLOCK_ELEMENTS = 1 << 24
_fused_fn = None  # mamba_ssm's selective_scan_fn once imported; False when not installed


def _fused_scan():
    global _fused_fn
    if _fused_fn is None:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except Exception:  # noqa: BLE001 - not installed, or built without its CUDA extension
            selective_scan_fn = False
        _fused_fn = selective_scan_fn
    return _fused_fn or None


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Selective scan. u, delta, z: (B, D, L); A: (D, N) real; B, C: (B, N, L), (B, G, N, L) with G
    dividing D (channel d uses group d // (D/G)), or (D, N) time-invariant; D, delta_bias: (D,).
    Returns (B, D, L) in u's dtype (computed in float32 at least, like the reference)."""
    _check(u, delta, A, B, C, D, z, delta_bias)
    if u.is_cuda:
        fused = _fused_scan()
        if fused is not None:
            return fused(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if A.is_complex():
        raise ValueError("selective_scan: complex A needs the mamba_ssm CUDA kernel; the PyTorch scan takes real A")
    if _use_compiled(u, delta, A, B, C, D, z, delta_bias):
        return _selective_scan_compiled(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return _selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def selective_scan_tokens(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, delta_proj=None
):  # fmt: skip
    """``selective_scan`` in the token-major layout of the Mamba block's linear layers: u, delta, z
    (B, L, D); B, C (B, L, N) (shared by all channels); returns (B, L, D). With ``delta_proj`` (D, R)
    delta is the low-rank (B, L, R) input of the block's dt projection: delta := F.linear(delta,
    delta_proj). Any strides: views into in_proj's / x_proj's outputs go in without copies. On the CPU
    the compiled kernel fuses the dt projection, delta_bias, softplus, D and the SiLU(z) gate; elsewhere
    (GPU, tracing, export, torch.compile, no numba) this is ``selective_scan`` on the transposed views."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan_tokens: u must be (B, L, D), got shape {tuple(u.shape)}")
    if B.dim() != 3 or C.dim() != 3:
        raise ValueError(f"selective_scan_tokens: B and C must be (B, L, N), got {tuple(B.shape)}, {tuple(C.shape)}")
    if delta_proj is not None and (
        delta_proj.dim() != 2 or delta.dim() != 3 or delta.shape[-1] != delta_proj.shape[1]
        or delta_proj.shape[0] != u.shape[-1] or delta.shape[:2] != u.shape[:2]
    ):  # fmt: skip
        raise ValueError(
            f"selective_scan_tokens: delta_proj must be (D, R) for delta (B, L, R) and u (B, L, D); got "
            f"{tuple(delta_proj.shape)}, {tuple(delta.shape)}, {tuple(u.shape)}"
        )
    if uses_compiled(u, delta, A, B, C, D, z, delta_bias, delta_proj) and not A.is_complex():
        dt_shape = delta.transpose(1, 2) if delta_proj is None else u.transpose(1, 2)  # for the checks only
        _check(u.transpose(1, 2), dt_shape, A, B.transpose(1, 2), C.transpose(1, 2), D,
               None if z is None else z.transpose(1, 2), delta_bias)  # fmt: skip
        ct = torch.promote_types(u.dtype, torch.float32)
        args = [None if X is None else X.to(ct) for X in (u, delta, A, B, C, D, z, delta_bias, delta_proj)]
        save = torch.is_grad_enabled() and any(X is not None and X.requires_grad for X in args)
        return _TokenScan.apply(*args, bool(delta_softplus), save).to(u.dtype)
    if delta_proj is not None:
        delta = F.linear(delta, delta_proj)  # (B, L, D)
    t = [None if X is None else X.transpose(1, 2) for X in (u, delta, B, C, z)]  # (B, D or N, L) views
    y = selective_scan(t[0], t[1], A, t[2], t[3], D, t[4], delta_bias, delta_softplus)  # (B, D, L)
    return y.transpose(1, 2)  # (B, L, D)


def causal_conv1d_silu(x, weight, bias=None):
    """silu(causal depthwise conv1d) on token-major x (B, L, D), weight (D, 1, K) and bias (D,) of an
    ``nn.Conv1d(D, D, K, groups=D, padding=K-1)`` whose first L outputs are kept (the Mamba block's
    conv). Returns (B, L, D), contiguous. Compiled on the CPU; elsewhere F.conv1d on the transposed view."""
    if uses_compiled(x, weight, bias) and x.dtype == weight.dtype and (bias is None or bias.dtype == x.dtype):
        return _CausalConvSilu.apply(x, weight, bias)
    length = x.shape[1]
    k = weight.shape[-1]
    y = F.conv1d(x.transpose(1, 2), weight, bias, padding=k - 1, groups=weight.shape[0])  # (B, D, L + K - 1)
    return F.silu(y[..., :length]).transpose(1, 2)  # (B, L, D)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The plain recurrence, one Python step per time step (for tests and benchmarks). Float64 inputs
    stay float64 (the upstream reference casts everything to float32)."""
    _check(u, delta, A, B, C, D, z, delta_bias)
    dtype_in, ct = u.dtype, torch.promote_types(u.dtype, torch.float32)
    u, delta, A = u.to(ct), delta.to(ct), A.to(ct)
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape
    Bx, Cx = _per_channel(B.to(ct), batch, dim), _per_channel(C.to(ct), batch, dim)  # (B or 1, D, N, L or 1)
    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(length):
        bt, ct_ = Bx[..., min(t, Bx.shape[-1] - 1)], Cx[..., min(t, Cx.shape[-1] - 1)]
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * bt
        ys.append((h * ct_).sum(-1))  # (B, D)
    y = torch.stack(ys, dim=-1)  # (B, D, L)
    return _finish(y, u, D, z).to(dtype_in)


def _per_channel(X, batch, dim):
    """B or C as (B or 1, D, N, L or 1): time-invariant (D, N), shared (B, N, L), grouped (B, G, N, L)."""
    if X.dim() == 2:
        return X[None, :, :, None]  # (1, D, N, 1)
    if X.dim() == 3:
        return X[:, None]  # (B, 1, N, L)
    return X.repeat_interleave(dim // X.shape[1], dim=1)  # (B, D, N, L): group g serves d // (D/G) == g


def _finish(y, u, D, z):
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


def _check(u, delta, A, B, C, D, z, delta_bias):
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (B, D, L), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta must match u {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A must be (D={dim}, N), got shape {tuple(A.shape)}")
    n = A.shape[1]
    for name, X in (("B", B), ("C", C)):
        ok = (
            (X.dim() == 2 and tuple(X.shape) == (dim, n))
            or (X.dim() == 3 and tuple(X.shape) == (batch, n, length))
            or (
                X.dim() == 4
                and X.shape[0] == batch
                and X.shape[1] >= 1
                and dim % X.shape[1] == 0
                and tuple(X.shape[2:]) == (n, length)
            )
        )
        if not ok:
            raise ValueError(
                f"selective_scan: {name} must be ({dim}, {n}), ({batch}, {n}, {length}) or "
                f"({batch}, G, {n}, {length}) with G dividing {dim}; got shape {tuple(X.shape)}"
            )
    for name, X, shape in (("D", D, (dim,)), ("delta_bias", delta_bias, (dim,)), ("z", z, tuple(u.shape))):
        if X is not None and tuple(X.shape) != shape:
            raise ValueError(f"selective_scan: {name} must have shape {shape}, got {tuple(X.shape)}")


# --- compiled CPU scan (numba) --------------------------------------------------------------------

_numba_mod = None  # densekit.ops_numba once imported; False when numba is missing or disabled
# Segment length of the backward's checkpoints: the state is kept every K steps (K times less memory
# than all states) and each segment is recomputed once in backward.
_CKPT_STEPS = 64
_MAX_BLOCK = 64  # channels per parallel job at most (4 AVX-512 vectors of float32)


def _compiled():
    """densekit.ops_numba, or None when numba is not installed or DENSEKIT_NUMBA=0."""
    global _numba_mod
    if _numba_mod is None:
        _numba_mod = False
        if os.environ.get("DENSEKIT_NUMBA", "1") != "0":
            try:
                _numba_mod = importlib.import_module(f"{__package__}.ops_numba")
            except ImportError:
                pass
    return _numba_mod or None


def _use_compiled(*tensors) -> bool:
    """The compiled scan takes real CPU tensors outside tracing/export/torch.compile (numba cannot be
    traced); anything else goes to the PyTorch scan."""
    ts = [t for t in tensors if t is not None]
    if any(t.device.type != "cpu" or t.is_complex() or not (t.is_floating_point()) for t in ts):
        return False
    if ts[0].numel() == 0 or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return False
    if any(type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter) for t in ts):
        return False  # tensor subclasses (fake/functional tensors, torch.func transforms) have no storage
    return _compiled() is not None


def uses_compiled(*tensors) -> bool:
    """Whether these tensors (None skipped) take the compiled CPU kernels (see ``_use_compiled``)."""
    return _use_compiled(*tensors)


def _selective_scan_compiled(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    ct = torch.promote_types(u.dtype, torch.float32)
    dt = delta.to(ct)
    if delta_bias is not None:
        dt = dt + delta_bias.to(ct)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    uc = u.to(ct)
    args = (uc, dt, A.to(ct), B.to(ct), C.to(ct))
    save = torch.is_grad_enabled() and any(t.requires_grad for t in args)
    y = _CompiledScan.apply(*args, save)
    return _finish(y, uc, D, z).to(u.dtype)


def _bc_layout(X, batch, dim, length):
    """B or C for the kernels: (per_channel, array, groups). Per channel: (Bb, Lb, N, D); per group:
    (B, L, G, N)."""
    if X.dim() == 2:  # (D, N) time-invariant
        return True, X.t().contiguous().view(1, 1, X.shape[1], dim), dim  # (1, 1, N, D)
    if X.dim() == 3:  # (B, N, L) shared by all channels
        return False, X.permute(0, 2, 1).contiguous().view(batch, length, 1, X.shape[1]), 1  # (B, L, 1, N)
    if X.shape[1] == dim:  # (B, D, N, L): one channel per group
        return True, X.permute(0, 3, 2, 1).contiguous(), dim  # (B, L, N, D)
    return False, X.permute(0, 3, 1, 2).contiguous(), X.shape[1]  # (B, L, G, N)


def _block_width(batch, dim, groups_b, groups_c, threads):
    """Channels per job: divides every group size (a block never straddles groups), at most _MAX_BLOCK,
    and small enough to give each thread about two jobs unless that means fewer than 8 channels."""
    cw = math.gcd(dim // groups_b if groups_b < dim else dim, dim // groups_c if groups_c < dim else dim)
    divs = [w for w in range(1, min(cw, _MAX_BLOCK) + 1) if cw % w == 0]
    floor_w = max(w for w in divs if w <= 8)
    good = [w for w in divs if w >= floor_w and batch * (dim // w) >= 2 * threads]
    return max(good) if good else floor_w


class _CompiledScan(torch.autograd.Function):
    """y = scan(u, dt, A, B, C) (no D, z: torch autograd handles those), forward and backward by the
    numba kernels in densekit/ops_numba.py."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C, save):
        nb = _compiled()
        batch, dim, length = u.shape
        n = A.shape[1]
        threads = nb.set_threads(torch.get_num_threads())
        b_pc, Bx, gb = _bc_layout(B.detach(), batch, dim, length)
        c_pc, Cx, gc = _bc_layout(C.detach(), batch, dim, length)
        W = _block_width(batch, dim, gb if not b_pc else dim, gc if not c_pc else dim, threads)
        K = _CKPT_STEPS
        uT = u.detach().transpose(1, 2).contiguous()  # (B, L, D)
        dtT = dt.detach().transpose(1, 2).contiguous()  # (B, L, D)
        AT = A.detach().t().contiguous()  # (N, D)
        yT = torch.empty_like(uT)  # (B, L, D)
        nseg = (length + K - 1) // K if save else 0
        ckpt = uT.new_empty(batch, nseg, n, dim)  # the state at the start of each K-step segment
        nb.scan_forward(
            uT.numpy(),
            dtT.numpy(),
            AT.numpy(),
            Bx.numpy(),
            b_pc,
            Cx.numpy(),
            c_pc,
            W,
            K,
            yT.numpy(),
            ckpt.numpy(),
            save,
        )
        if save:
            ctx.save_for_backward(uT, dtT, AT, Bx, Cx, ckpt)
            ctx.meta = (b_pc, c_pc, gb, gc, W, K, tuple(B.shape), tuple(C.shape))
        return yT.transpose(1, 2)  # (B, D, L), a view of the (B, L, D) buffer

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        nb = _compiled()
        uT, dtT, AT, Bx, Cx, ckpt = ctx.saved_tensors
        b_pc, c_pc, gb, gc, W, K, b_shape, c_shape = ctx.meta
        batch, length, dim = uT.shape
        n = AT.shape[0]
        nb.set_threads(torch.get_num_threads())
        nblk = dim // W
        dyT = grad_y.transpose(1, 2).to(uT.dtype).contiguous()  # (B, L, D)
        duT, ddtT = torch.empty_like(uT), torch.empty_like(uT)
        dA_part = uT.new_empty(batch, n, dim)

        def part(pc, X):  # per channel: (B, Lb, N, D); per group: the blocks' sums (B, nblk, L, N)
            return uT.new_zeros(batch, X.shape[1], n, dim) if pc else uT.new_zeros(batch, nblk, length, n)

        dB_part, dC_part = part(b_pc, Bx), part(c_pc, Cx)
        nb.scan_backward(
            uT.numpy(),
            dtT.numpy(),
            AT.numpy(),
            Bx.numpy(),
            b_pc,
            Cx.numpy(),
            c_pc,
            W,
            K,
            ckpt.numpy(),
            dyT.numpy(),
            duT.numpy(),
            ddtT.numpy(),
            dA_part.numpy(),
            dB_part.numpy(),
            dC_part.numpy(),
        )
        dA = dA_part.sum(0).t()  # (D, N)
        return (
            duT.transpose(1, 2),
            ddtT.transpose(1, 2),
            dA,
            _bc_grad(dB_part, b_pc, Bx, b_shape, gb, dim),
            _bc_grad(dC_part, c_pc, Cx, c_shape, gc, dim),
            None,
        )


def _bc_grad(part, per_channel, X, shape, groups, dim):
    """The gradient of B or C in its original shape from the kernel's partial sums."""
    batch = part.shape[0]
    if per_channel:
        if len(shape) == 2:  # (D, N) from (B, 1, N, D): summed over the batch
            return part.sum(0)[0].t()
        return part.permute(0, 3, 2, 1)  # (B, D, N, L) from (B, L, N, D)
    nblk, length, n = part.shape[1:]
    g = part.view(batch, groups, nblk // groups, length, n).sum(2)  # (B, G, L, N): blocks summed per group
    if len(shape) == 3:
        return g[:, 0].transpose(1, 2)  # (B, N, L)
    return g.permute(0, 1, 3, 2)  # (B, G, N, L)


# --- token-major compiled kernels of the Mamba block ----------------------------------------------

_WIDTHS = (64, 32, 16, 8)  # block widths the kernels are compiled for as constants (ops_numba.py)


def _token_width(batch, dim, threads):
    """Channels per job for the token-major scan: the widest of 64/32/16/8 dividing D that still gives
    each thread about two jobs (else the narrowest that divides D); D not a multiple of 8: its largest
    divisor <= 8."""
    fits = [w for w in _WIDTHS if dim % w == 0]
    if not fits:
        return max(w for w in range(1, 9) if dim % w == 0)
    good = [w for w in fits if batch * (dim // w) >= 2 * threads]
    return good[0] if good else fits[-1]


def _np(X, like):
    """X as a numpy array for the kernels; when X is None a 1-element placeholder of like's dtype (the
    kernels are typed on it and read it only when the matching flag is set)."""
    return like.new_empty(1).numpy() if X is None else X.detach().numpy()


def _flat(X, like):
    """A (B, L, C) tensor for the token-major kernels: (flat 1-D numpy array from its first to its last
    element, batch stride, row stride). Columns must be contiguous (else a copy is made); any row and
    batch strides go in as they are, so column slices of a linear layer's output are not copied."""
    if X is None:
        return like.new_empty(1).numpy(), 0, 0
    X = X.detach()
    if X.stride(-1) != 1 and X.shape[-1] > 1:
        X = X.contiguous()
    sb, sr = (X.stride(0) if X.shape[0] > 1 else 0), (X.stride(1) if X.shape[1] > 1 else 0)
    span = (X.shape[0] - 1) * sb + (X.shape[1] - 1) * sr + X.shape[2]
    return X.as_strided((span,), (1,), X.storage_offset()).numpy(), sb, sr


def _token_arrays(u, delta, z, B, C, AT, WT, D, delta_bias):
    """The kernels' leading arguments: the flat u, delta, z, B, C, their strides, A^T, the dt
    projection's W^T (a 2-D placeholder without one), D, delta_bias."""
    flats = [_flat(X, u) for X in (u, delta, z, B, C)]
    st = tuple(v for _, sb, sr in flats for v in (sb, sr))
    WT = u.new_empty(1, 1) if WT is None else WT
    return (*(f for f, _, _ in flats), st, AT.numpy(), WT.numpy(), _np(D, u), _np(delta_bias, u))


class _TokenScan(torch.autograd.Function):
    """out = (scan(u, softplus(delta' + delta_bias), A, B, C) + D u) * silu(z), delta' = delta or
    F.linear(delta, delta_proj), token-major, forward and backward by the numba kernels
    (densekit/ops_numba.py: tokens_forward / tokens_backward). Saves the inputs and the state every
    _CKPT_STEPS steps; backward recomputes the rest."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_proj, softplus, save):
        nb = _compiled()
        batch, length, dim = u.shape
        n = A.shape[1]
        threads = nb.set_threads(torch.get_num_threads())
        W, K = _token_width(batch, dim, threads), _CKPT_STEPS
        AT = A.detach().t().contiguous()  # (N, D)
        WT = None if delta_proj is None else delta_proj.detach().t().contiguous()  # (R, D)
        out = u.new_empty(batch, length, dim)  # (B, L, D)
        ckpt = u.new_empty(batch, (length + K - 1) // K if save else 0, n, dim)  # state at each segment start
        flags = (z is not None, D is not None, delta_proj is not None, delta_bias is not None, softplus)
        arrays = _token_arrays(u, delta, z, B, C, AT, WT, D, delta_bias)
        nb.tokens_forward(*arrays, flags, W, K, out.numpy(), ckpt.numpy(), save)
        if save:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, delta_proj, AT, WT, ckpt)
            ctx.meta = (flags, W, K)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        nb = _compiled()
        u, delta, A, B, C, D, z, delta_bias, delta_proj, AT, WT, ckpt = ctx.saved_tensors
        flags, W, K = ctx.meta
        batch, length, dim = u.shape
        n = A.shape[1]
        nb.set_threads(torch.get_num_threads())
        nblk = dim // W
        go = grad_out.to(u.dtype).contiguous()  # (B, L, D)
        du, ddelta = u.new_empty(batch, length, dim), u.new_empty(batch, length, dim)  # (B, L, D)
        dz = u.new_empty(batch, length, dim) if z is not None else u.new_empty(1, 1, 1)
        parts = (
            u.new_empty(batch, n, dim),  # dA
            u.new_empty(batch, nblk, length, n),  # dB: each block's channels summed
            u.new_empty(batch, nblk, length, n),  # dC
            u.new_empty(batch, dim),  # dD
            u.new_empty(batch, dim),  # d delta_bias
        )
        arrays = _token_arrays(u, delta, z, B, C, AT, WT, D, delta_bias)
        nb.tokens_backward(
            *arrays, flags, W, K, ckpt.numpy(), go.detach().numpy(), du.numpy(), ddelta.numpy(), dz.numpy(),
            tuple(p.numpy() for p in parts),
        )  # fmt: skip
        dA, dB, dC, dD, dbias = parts
        dproj = None
        if delta_proj is not None:  # ddelta is the gradient of the projected (B, L, D) delta
            dproj = ddelta.reshape(-1, dim).t() @ delta.reshape(-1, delta.shape[-1])  # (D, R)
            ddelta = ddelta @ delta_proj  # (B, L, R)
        return (
            du,
            ddelta,
            dA.sum(0).t(),  # (D, N)
            dB.sum(1),  # (B, L, N)
            dC.sum(1),
            dD.sum(0) if D is not None else None,
            dz if z is not None else None,
            dbias.sum(0) if delta_bias is not None else None,
            dproj,
            None,
            None,
        )


# Steps per job of the compiled conv at most (backward recomputes K - 1 steps per span).
_CONV_SPAN = 1024


class _CausalConvSilu(torch.autograd.Function):
    """silu(causal depthwise conv1d) token-major by the numba kernels (ops_numba.conv_forward/backward);
    saves the input, recomputes the pre-activation in backward."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        nb = _compiled()
        batch, length, dim = x.shape
        threads = nb.set_threads(torch.get_num_threads())
        # spans of at most _CONV_SPAN steps, and at least two jobs per thread where L allows
        nspan = max(1, -(-length // _CONV_SPAN), min(length, -(-2 * threads // batch)))
        wT = weight.detach().reshape(dim, -1).t().contiguous()  # (K, D)
        out = x.new_empty(batch, length, dim)  # (B, L, D)
        xf, sb, sr = _flat(x, x)
        nb.conv_forward(xf, sb, sr, wT.numpy(), _np(bias, x), bias is not None, nspan, out.numpy())
        ctx.save_for_backward(x, weight, bias, wT)
        ctx.nspan = nspan
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        nb = _compiled()
        x, weight, bias, wT = ctx.saved_tensors
        batch, length, dim = x.shape
        nspan = ctx.nspan
        nb.set_threads(torch.get_num_threads())
        gx = x.new_empty(batch, length, dim)
        gw = x.new_empty(batch * nspan, wT.shape[0], dim)  # per job
        gb = x.new_empty(batch * nspan, dim)
        xf, sb, sr = _flat(x, x)
        nb.conv_backward(
            xf, sb, sr, wT.numpy(), _np(bias, x), bias is not None, nspan,
            grad_out.to(x.dtype).contiguous().numpy(), gx.numpy(), gw.numpy(), gb.numpy(),
        )  # fmt: skip
        dw = gw.sum(0).t().reshape(weight.shape)  # (D, 1, K) from (K, D)
        return gx, dw, gb.sum(0) if bias is not None else None


# --- pure-PyTorch scan (the chunked engine: densekit/ops_torch.py) --------------------------------


def _selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    ct = torch.promote_types(u.dtype, torch.float32)
    batch, dim, length = u.shape
    n = A.shape[1]
    dt = delta.to(ct)
    if delta_bias is not None:
        dt = dt + delta_bias.to(ct)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    uc, A, B, C = u.to(ct), A.to(ct), B.to(ct), C.to(ct)
    block = max(1, _BLOCK_ELEMENTS // max(1, batch * dim * n))
    if length <= block:
        y, _ = scan_block(uc, dt, A, B, C, None)
    else:
        # Long sequence: blocks of time steps, the state carried between them; under autograd each
        # block is recomputed in backward instead of keeping its (L, B, D, N) intermediates.
        block = CHUNK * max(1, block // CHUNK)
        h, ys = uc.new_zeros(batch, dim, n), []
        for s in range(0, length, block):
            part = [X[..., s : s + block] if X.dim() >= 3 else X for X in (uc, dt, A, B, C)]
            if torch.is_grad_enabled():
                y_s, h = checkpoint(scan_block, *part, h, use_reentrant=False)
            else:
                y_s, h = scan_block(*part, h)
            ys.append(y_s)
        y = torch.cat(ys, dim=-1)  # (B, D, L)
    return _finish(y, uc, D, z).to(u.dtype)
