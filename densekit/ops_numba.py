"""The selective scan compiled for the CPU with numba (forward and backward).

Imported lazily by ``densekit.ops`` (importing numba costs ~0.3 s); raises ImportError when numba is
missing, and ``densekit.ops`` then uses its pure-PyTorch chunked scan.

Layout. Work is split into jobs of (batch row, block of W channels), run in parallel (``prange``).
Inside a job the loops run time-major, then state index k, then channel c innermost: every inner
loop is over W independent channels, so LLVM vectorises it without reassociating any sum (the code
keeps ``fastmath=False``: every sum is accumulated in a fixed order). Tensors go in as
(B, L, D) (channels contiguous), A as (N, D); B and C in one of two forms:

* per channel, (Bb, Lb, N, D) with Bb in {1, B} and Lb in {1, L} (time-invariant (D, N), or grouped
  with one channel per group);
* per group, (B, L, G, N): a block never straddles two groups, so each (t, k) has one value per block.

Backward is the adjoint recurrence run backwards in time, g_t = dy_t C_t + a_{t+1} g_{t+1}. The
forward keeps the state at the start of every K-step segment (checkpoints, K times less memory than
all states); backward recomputes each segment's K states from its checkpoint, then walks it
backwards. float32 uses a vectorisable exp (Cephes' expf polynomial, <= 2 ulp); float64 uses libm.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

__all__ = ["scan_forward", "scan_backward", "set_threads", "CACHE_DIR"]


def _cache_dir() -> str | None:
    """Where compiled kernels are cached. numba writes next to this file, or, when that is read-only
    (a site-packages install), under NUMBA_CACHE_DIR / ~/.cache; if neither can be written, a
    per-user temporary directory. None: no writable place at all (then no on-disk cache)."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    candidates = [
        os.environ.get("NUMBA_CACHE_DIR"),
        here,
        os.path.join(os.path.expanduser("~"), ".cache", "numba"),
        os.path.join(tempfile.gettempdir(), f"densekit-numba-{os.getuid() if hasattr(os, 'getuid') else 0}"),
    ]
    for path in candidates:
        if not path:
            continue
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK | os.X_OK):
            return path
    return None


CACHE_DIR = _cache_dir()
if CACHE_DIR is not None and CACHE_DIR != os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__"):
    # numba reads NUMBA_CACHE_DIR into its config at import; setting the config is what counts now
    numba.config.CACHE_DIR = CACHE_DIR
_CACHE = CACHE_DIR is not None

# numba's default pick here is its OpenMP layer, whose idle workers spin after each kernel: measured on
# a busy 2-core machine, the torch ops between two scans ran 5-30x slower. The workqueue layer sleeps;
# it may not be entered from two threads at once, hence the lock around every kernel call.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"
_LOCK = threading.Lock()


def _jit(**kw):
    def wrap(fn):
        try:
            return njit(cache=_CACHE, **kw)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available": compile per process
            return njit(cache=False, **kw)(fn)

    return wrap


# --- exp: vectorisable float32, libm float64 -------------------------------------------------------


@intrinsic
def _pow2f(typingctx, n):
    """2**n for an integer-valued float32 n in [-126, 127], by building the exponent bits."""
    sig = types.float32(types.float32)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        e = builder.fptosi(args[0], i32)
        e = builder.add(e, ir.Constant(i32, 127))
        e = builder.shl(e, ir.Constant(i32, 23))
        return builder.bitcast(e, ir.FloatType())

    return sig, codegen


_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_MAXLOG = np.float32(88.3762626647949)  # above: inf (exp(88.72) is the true float32 limit)
_MINLOG = np.float32(-87.3365478515625)  # below: 0 (the true value is a denormal < 1.2e-38)
_HALF, _ONE, _ZERO, _INF = np.float32(0.5), np.float32(1.0), np.float32(0.0), np.float32(np.inf)
_P0, _P1, _P2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
_P3, _P4, _P5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)


@njit
def _expf(x):
    """Cephes expf: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-7 polynomial, times 2**n."""
    xc = min(max(x, _MINLOG), _MAXLOG)
    n = np.floor(xc * _LOG2E + _HALF)
    r = xc - n * _LN2_HI - n * _LN2_LO
    z = r * r
    p = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * z + r + _ONE
    y = p * _pow2f(n)
    y = _ZERO if x < _MINLOG else y
    y = _INF if x > _MAXLOG else y
    return x if x != x else y  # NaN stays NaN


def _exp(x):  # typed dispatch, see the overload below
    return math.exp(x)


@overload(_exp)
def _exp_overload(x):
    if x == types.float32:
        return lambda x: _expf(x)
    return lambda x: math.exp(x)


@_jit()
def expf_vector(x, out):
    """The float32 exp of the kernels over an array (for tests)."""
    for i in range(x.size):
        out[i] = _exp(x[i])


# --- helpers ---------------------------------------------------------------------------------------


@njit
def _rows(X, per_channel, bi, t, c0, W, d, out):
    """out[k * W + c] = the B (or C) value of channel c0 + c at time t, for every state index k."""
    n = out.shape[0] // W
    if per_channel:  # X: (Bb, Lb, N, D)
        bb = bi if X.shape[0] > 1 else 0
        tb = t if X.shape[1] > 1 else 0
        for k in range(n):
            for c in range(W):
                out[k * W + c] = X[bb, tb, k, c0 + c]
    else:  # X: (B, L, G, N); the block lies in group c0 // (D / G)
        g = c0 // (d // X.shape[2])
        for k in range(n):
            v = X[bi, t, g, k]
            for c in range(W):
                out[k * W + c] = v


@njit
def _scatter(X, per_channel, part, prod, acc, row, bi, blk, t, c0, W):
    """Add one step's gradient contributions prod[k * W + c] of B (or C) to their partial sums."""
    n = prod.shape[0] // W
    if per_channel:
        if X.shape[1] > 1:  # time-varying: part (B, L, N, D), one entry per (t, k, channel)
            for k in range(n):
                for c in range(W):
                    part[bi, t, k, c0 + c] = prod[k * W + c]
        else:  # time-invariant: summed over t in acc, written at the end
            for i in range(n * W):
                acc[i] += prod[i]
    else:  # part (B, nblk, L, N): the block's channels summed, in channel order (n independent sums)
        for k in range(n):
            row[k] = 0
        for c in range(W):
            for k in range(n):
                row[k] += prod[k * W + c]
        for k in range(n):
            part[bi, blk, t, k] = row[k]


# --- kernels ---------------------------------------------------------------------------------------
# Each job's loops are a serial function of their own: inside a parfor body (prange) LLVM does not
# vectorise them (measured 10x slower), as its own function it does. The per-job buffers are flat
# (index k * W + c): measured 2x faster than 2-D local arrays.


@_jit(parallel=True, fastmath=False)
def _forward(uT, dtT, AT, Bx, b_pc, Cx, c_pc, W, K, yT, ckpt, save):
    nblk = uT.shape[2] // W
    for job in prange(uT.shape[0] * nblk):
        _forward_job(uT, dtT, AT, Bx, b_pc, Cx, c_pc, W, K, yT, ckpt, save, job)


@_jit(fastmath=False)
def _forward_job(uT, dtT, AT, Bx, b_pc, Cx, c_pc, W, K, yT, ckpt, save, job):
    batch, length, d = uT.shape
    n = AT.shape[0]
    nblk = d // W
    bi = job // nblk
    c0 = (job % nblk) * W
    f = uT.dtype
    Ab = np.empty(n * W, dtype=f)  # the block's A
    for k in range(n):
        for c in range(W):
            Ab[k * W + c] = AT[k, c0 + c]
    h = np.zeros(n * W, dtype=f)
    Bt = np.empty(n * W, dtype=f)
    Ct = np.empty(n * W, dtype=f)
    dt = np.empty(W, dtype=f)
    du = np.empty(W, dtype=f)
    y = np.empty(W, dtype=f)
    for t in range(length):
        if save and t % K == 0:
            s = t // K
            for k in range(n):
                for c in range(W):
                    ckpt[bi, s, k, c0 + c] = h[k * W + c]
        for c in range(W):
            dt[c] = dtT[bi, t, c0 + c]
            du[c] = dt[c] * uT[bi, t, c0 + c]
            y[c] = 0
        if not b_pc and not c_pc:  # Mamba's case: one B and C value per (t, k) for the block
            gB = c0 // (d // Bx.shape[2])
            gC = c0 // (d // Cx.shape[2])
            for k in range(n):
                o = k * W
                bk = Bx[bi, t, gB, k]
                ck = Cx[bi, t, gC, k]
                for c in range(W):
                    hk = _exp(dt[c] * Ab[o + c]) * h[o + c] + du[c] * bk
                    h[o + c] = hk
                    y[c] += hk * ck
        else:
            _rows(Bx, b_pc, bi, t, c0, W, d, Bt)
            _rows(Cx, c_pc, bi, t, c0, W, d, Ct)
            for k in range(n):
                o = k * W
                for c in range(W):
                    hk = _exp(dt[c] * Ab[o + c]) * h[o + c] + du[c] * Bt[o + c]
                    h[o + c] = hk
                    y[c] += hk * Ct[o + c]
        for c in range(W):
            yT[bi, t, c0 + c] = y[c]


@_jit(parallel=True, fastmath=False)
def _backward(uT, dtT, AT, Bx, b_pc, Cx, c_pc, W, K, ckpt, dyT, duT, ddtT, dA_part, dB_part, dC_part):
    nblk = uT.shape[2] // W
    for job in prange(uT.shape[0] * nblk):
        _backward_job(uT, dtT, AT, Bx, b_pc, Cx, c_pc, W, K, ckpt, dyT, duT, ddtT, dA_part, dB_part, dC_part, job)


@_jit(fastmath=False)
def _backward_job(uT, dtT, AT, Bx, b_pc, Cx, c_pc, W, K, ckpt, dyT, duT, ddtT, dA_part, dB_part, dC_part, job):
    batch, length, d = uT.shape
    n = AT.shape[0]
    nblk = d // W
    nseg = (length + K - 1) // K
    bi = job // nblk
    blk = job % nblk
    c0 = blk * W
    f = uT.dtype
    nw = n * W
    Ab = np.empty(nw, dtype=f)
    for k in range(n):
        for c in range(W):
            Ab[k * W + c] = AT[k, c0 + c]
    hs = np.empty((K + 1) * nw, dtype=f)  # the segment's states h_{t0-1} .. h_{t1-1}
    ab = np.empty(K * nw, dtype=f)  # and decays a_t
    g = np.zeros(nw, dtype=f)  # a_{t+1} g_{t+1}, carried backwards
    dA_acc = np.zeros(nw, dtype=f)
    dB_acc = np.zeros(nw, dtype=f)
    dC_acc = np.zeros(nw, dtype=f)
    Bt = np.empty(nw, dtype=f)
    Ct = np.empty(nw, dtype=f)
    pB = np.empty(nw, dtype=f)
    pC = np.empty(nw, dtype=f)
    dt = np.empty(W, dtype=f)
    uv = np.empty(W, dtype=f)
    du = np.empty(W, dtype=f)
    dy = np.empty(W, dtype=f)
    sgB = np.empty(W, dtype=f)
    sdA = np.empty(W, dtype=f)
    row = np.empty(n, dtype=f)
    for s in range(nseg - 1, -1, -1):
        t0 = s * K
        t1 = min(length, t0 + K)
        for k in range(n):
            for c in range(W):
                hs[k * W + c] = ckpt[bi, s, k, c0 + c]
        for t in range(t0, t1):  # recompute the segment's states
            j = t - t0
            for c in range(W):
                dt[c] = dtT[bi, t, c0 + c]
                du[c] = dt[c] * uT[bi, t, c0 + c]
            if not b_pc:  # one B value per (t, k) for the block
                gB = c0 // (d // Bx.shape[2])
                for k in range(n):
                    o = k * W
                    oj = j * nw + o
                    bk = Bx[bi, t, gB, k]
                    for c in range(W):
                        a = _exp(dt[c] * Ab[o + c])
                        ab[oj + c] = a
                        hs[oj + nw + c] = a * hs[oj + c] + du[c] * bk
            else:
                _rows(Bx, b_pc, bi, t, c0, W, d, Bt)
                for k in range(n):
                    o = k * W
                    oj = j * nw + o
                    for c in range(W):
                        a = _exp(dt[c] * Ab[o + c])
                        ab[oj + c] = a
                        hs[oj + nw + c] = a * hs[oj + c] + du[c] * Bt[o + c]
        for t in range(t1 - 1, t0 - 1, -1):  # the adjoint, backwards
            j = t - t0
            for c in range(W):
                dt[c] = dtT[bi, t, c0 + c]
                uv[c] = uT[bi, t, c0 + c]
                du[c] = dt[c] * uv[c]
                dy[c] = dyT[bi, t, c0 + c]
                sgB[c] = 0
                sdA[c] = 0
            if not b_pc and not c_pc:  # Mamba's case: one B and C value per (t, k) for the block
                gB = c0 // (d // Bx.shape[2])
                gC = c0 // (d // Cx.shape[2])
                for k in range(n):
                    o = k * W
                    oj = j * nw + o
                    bk = Bx[bi, t, gB, k]
                    ck = Cx[bi, t, gC, k]
                    for c in range(W):
                        gk = g[o + c] + dy[c] * ck
                        pC[o + c] = dy[c] * hs[oj + nw + c]
                        pB[o + c] = gk * du[c]
                        sgB[c] += gk * bk
                        a = ab[oj + c]
                        ga = gk * hs[oj + c] * a
                        sdA[c] += ga * Ab[o + c]
                        dA_acc[o + c] += ga * dt[c]
                        g[o + c] = a * gk
            else:  # the same with per-channel rows
                _rows(Bx, b_pc, bi, t, c0, W, d, Bt)
                _rows(Cx, c_pc, bi, t, c0, W, d, Ct)
                for k in range(n):
                    o = k * W
                    oj = j * nw + o
                    for c in range(W):
                        gk = g[o + c] + dy[c] * Ct[o + c]  # dL/dh_t
                        pC[o + c] = dy[c] * hs[oj + nw + c]  # dL/dC_t
                        pB[o + c] = gk * du[c]  # dL/dB_t
                        sgB[c] += gk * Bt[o + c]  # dL/d(dt u)
                        a = ab[oj + c]
                        ga = gk * hs[oj + c] * a  # dL/d(dt A)
                        sdA[c] += ga * Ab[o + c]
                        dA_acc[o + c] += ga * dt[c]
                        g[o + c] = a * gk
            for c in range(W):
                duT[bi, t, c0 + c] = dt[c] * sgB[c]
                ddtT[bi, t, c0 + c] = sdA[c] + uv[c] * sgB[c]
            _scatter(Bx, b_pc, dB_part, pB, dB_acc, row, bi, blk, t, c0, W)
            _scatter(Cx, c_pc, dC_part, pC, dC_acc, row, bi, blk, t, c0, W)
    for k in range(n):
        for c in range(W):
            dA_part[bi, k, c0 + c] = dA_acc[k * W + c]
    if b_pc and Bx.shape[1] == 1:
        for k in range(n):
            for c in range(W):
                dB_part[bi, 0, k, c0 + c] = dB_acc[k * W + c]
    if c_pc and Cx.shape[1] == 1:
        for k in range(n):
            for c in range(W):
                dC_part[bi, 0, k, c0 + c] = dC_acc[k * W + c]


def set_threads(n: int) -> int:
    """Use n threads (capped by numba's pool size); returns the number in use. numba's setting is per
    calling thread, so it is set on every call."""
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


def scan_forward(uT, dtT, AT, Bx, b_pc, Cx, c_pc, W, K, yT, ckpt, save):
    """numpy arrays in, yT (and the checkpoints, when save) written in place."""
    with _LOCK:
        _forward(uT, dtT, AT, Bx, b_pc, Cx, c_pc, W, K, yT, ckpt, save)


def scan_backward(uT, dtT, AT, Bx, b_pc, Cx, c_pc, W, K, ckpt, dyT, duT, ddtT, dA_part, dB_part, dC_part):
    """numpy arrays in, the gradients (partial sums for A, B, C) written in place."""
    with _LOCK:
        _backward(uT, dtT, AT, Bx, b_pc, Cx, c_pc, W, K, ckpt, dyT, duT, ddtT, dA_part, dB_part, dC_part)
