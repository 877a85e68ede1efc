"""The pure-PyTorch chunked selective scan (``densekit.ops`` dispatches to it where neither the CUDA
kernel nor the numba scan runs: tracing, export, torch.compile, or without numba).

The sequence is cut into chunks; one sequential step per position *inside* a chunk advances all chunks at
once, the chunk-to-chunk carries are themselves a (shorter) scan, and a second in-chunk pass adds each
carry. Only products of the per-step decays are formed (never ``exp(-cumsum)``), so it is as stable as the
plain recurrence. Backward is the same scan run in reverse (the adjoint of a linear recurrence), so
autograd does not keep one node per step.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F

__all__ = ["CHUNK", "scan_block"]


# Chunk length of the scan. Short chunks and a recursive carry scan keep the number of PyTorch ops
# per scan small (~4T per level, log_T(L) levels), which matters more than op size on a busy CPU.
CHUNK = 8


def scan_block(u, dt, A, B, C, h0):
    """y (B, D, L) and the final state (B, D, N) of h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t from h0."""
    batch, dim, length = u.shape
    n = A.shape[1]
    pad = (-length) % CHUNK
    lp = length + pad
    # dt = 0 in the padding gives decay 1 and input 0: the state is unchanged, outputs are cropped.
    # Small (Lp, B, D) inputs made contiguous so that every (Lp, B, D, N) product below is laid out
    # sequence-major (elementwise outputs follow their inputs' memory order).
    dt_s = F.pad(dt, (0, pad)).permute(2, 0, 1).contiguous()  # (Lp, B, D)
    du_s = F.pad(dt * u, (0, pad)).permute(2, 0, 1).contiguous()  # (Lp, B, D)
    a = (dt_s[..., None] * A).exp_()  # (Lp, B, D, N); in place: the product is a temporary
    gb, Bs = _seq_major(B, pad, dim)
    b = (du_s.reshape(lp, batch, gb, dim // gb, 1) * Bs).reshape(lp, batch, dim, n)  # (Lp, B, D, N)
    if h0 is not None:  # the carried state enters through the first step's input: b_0 += a_0 h0
        b = torch.cat([b[:1] + a[:1] * h0, b[1:]], dim=0)
    a2, b2 = a.reshape(lp, -1), b.reshape(lp, -1)  # (Lp, B*D*N)
    if torch.is_grad_enabled() and (a2.requires_grad or b2.requires_grad):
        h = _LinearScan.apply(a2, b2)
    else:  # inference: scan in place, b is a temporary
        _scan_(b2, a2, reverse=False)
        h = b2
    gc, Cs = _seq_major(C, pad, dim)
    hg = h.view(lp, batch, gc, dim // gc, n)  # (Lp, B, G, D/G, N)
    if C.dim() == 2:
        y = (hg * Cs).sum(-1)  # (Lp, B, D, 1)
    else:  # one (1, N) @ (N, D/G) product per (step, batch, group): CPU bmm is ~3x faster this way round
        rows = Cs.reshape(-1, 1, n)  # (Lp*B*G, 1, N)
        y = torch.bmm(rows, hg.reshape(-1, dim // gc, n).transpose(1, 2))  # (Lp*B*G, 1, D/G)
    y = y.reshape(lp, batch, dim)[:length].permute(1, 2, 0)  # (B, D, L)
    h = h.view(lp, batch, dim, n)
    return y, h[length - 1].clone()  # a copy: a view would keep the whole (Lp, B, D, N) buffer alive


def _seq_major(X, pad, dim):
    """(groups, X broadcastable to (Lp, B, G, 1, N)) for the three layouts of B and C."""
    if X.dim() == 2:  # time-invariant (D, N): one group per channel
        return dim, X[None, None, :, None, :]  # (1, 1, D, 1, N)
    if X.dim() == 3:
        return 1, F.pad(X, (0, pad)).permute(2, 0, 1).contiguous()[:, :, None, None, :]  # (Lp, B, 1, 1, N)
    return X.shape[1], F.pad(X, (0, pad)).permute(3, 0, 1, 2).contiguous()[:, :, :, None, :]  # (Lp, B, G, 1, N)


class _LinearScan(torch.autograd.Function):
    """h_t = a_t h_{t-1} + b_t along dim 0 of (L, M) tensors, h_{-1} = 0.

    Backward is the adjoint recurrence g_t = dL/dh_t + a_{t+1} g_{t+1}, run by the same chunked scan
    in reverse; then dL/db_t = g_t and dL/da_t = g_t h_{t-1}.
    """

    @staticmethod
    def forward(ctx, a, b):
        h = b.clone(memory_format=torch.contiguous_format)
        _scan_(h, a.contiguous(), reverse=False)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        a, h = ctx.saved_tensors
        g = grad_h.clone(memory_format=torch.contiguous_format)
        if g.shape[0] > 1:
            # g_t += a_{t+1} g_{t+1} is the reverse scan of (g[:-1], a[1:]) whose last input also takes
            # the final step's contribution: views, no shifted copy of a.
            g[-2].addcmul_(a[-1], g[-1])
            _scan_(g[:-1], a[1:], reverse=True)
        grad_a = torch.empty_like(g)
        grad_a[0].zero_()
        torch.mul(g[1:], h[:-1], out=grad_a[1:])
        return grad_a, g


@torch.no_grad()
def _scan_(h, a, reverse: bool) -> None:
    """In place on h (holding b): h_t += a_t h_{t-1} (forward) or h_t += a_t h_{t+1} (reverse).

    Chunked: (1) a local scan inside every chunk at once (zero initial state); (2) the chunk boundary
    states are a scan of length L/T over (chunk decay, local end), done recursively; (3) each chunk's
    carry decays through the chunk and is added. Few, large ops: the loops run T steps per level.
    """
    length = h.shape[0]
    T = CHUNK
    h, a = h.view(length, -1), a.view(length, -1)  # (L, M); contiguous along M
    if length <= 2 * T:  # short: the plain loop is cheapest
        steps, av = h.unbind(0), a.unbind(0)
        order = range(length - 2, -1, -1) if reverse else range(1, length)
        for t in order:
            steps[t].addcmul_(av[t], steps[t + 1 if reverse else t - 1])
        return
    main = length - length % T
    if main < length:  # a tail shorter than a chunk: plain steps after (forward) / before (reverse) the rest
        steps, av = h.unbind(0), a.unbind(0)
        if reverse:
            for t in range(length - 2, main - 2, -1):  # the last step also feeds the chunked part
                steps[t].addcmul_(av[t], steps[t + 1])
            _scan_(h[:main], a[:main], reverse)
        else:
            _scan_(h[:main], a[:main], reverse)
            for t in range(main, length):
                steps[t].addcmul_(av[t], steps[t - 1])
        return
    nc = length // T
    hv = h.view(nc, T, -1).unbind(1)  # T views (nc, M): step t of every chunk
    av = a.view(nc, T, -1).unbind(1)
    order = list(range(T - 1, -1, -1)) if reverse else list(range(T))
    for prev, t in pairwise(order):
        hv[t].addcmul_(av[t], hv[prev])  # (nc, M)
    # Boundary states: a scan over chunks, coefficient = the chunk's total decay, input = its local end.
    decay = a.view(nc, T, -1).prod(dim=1)  # (nc, M)
    ends = hv[order[-1]].clone()  # (nc, M)
    _scan_(ends, decay, reverse)
    # Carry into chunk c: the boundary state of its predecessor (successor in reverse).
    carry, sl = (ends[1:], slice(0, nc - 1)) if reverse else (ends[:-1], slice(1, nc))
    f = carry.clone()  # (nc-1, M), decayed step by step through the chunk
    for t in order:
        f.mul_(av[t][sl])
        hv[t][sl].add_(f)
