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

The Mamba block's token-major kernels (``tokens_forward`` / ``tokens_backward``, ``conv_forward`` /
``conv_backward``; see their section) take (B, L, X) views in place and fuse the block's elementwise
work into the scan; they share the exp and add a vectorisable float32 softplus.
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

__all__ = [
    "scan_forward",
    "scan_backward",
    "tokens_forward",
    "tokens_backward",
    "conv_forward",
    "conv_backward",
    "set_threads",
    "CACHE_DIR",
]


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


# --- softplus: vectorisable float32 (Cephes logf + Goldberg's log1p), libm float64 ---------------
# The code from here on is compiled with numpy's error model: in numba's default (Python) model every
# float division checks for a zero divisor and raises, and that branch keeps LLVM from vectorising the
# loop (measured 20x slower softplus / SiLU). A zero divisor here gives inf/NaN, as in torch.


@intrinsic
def _f32_bits(typingctx, x):
    """The bits of a float32 as an int32."""
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def _bits_f32(typingctx, i):
    """The float32 with the given int32 bits."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


_I23, _I126, _EXP_MASK = np.int32(23), np.int32(126), np.int32(0xFF)
_MANT_MASK, _HALF_BITS = np.int32(-2139095041), np.int32(0x3F000000)  # 0x807FFFFF (sign + mantissa), 0.5
_SQRTHF = np.float32(0.707106781186547524)
_L0, _L1, _L2 = np.float32(7.0376836292e-2), np.float32(-1.1514610310e-1), np.float32(1.1676998740e-1)
_L3, _L4, _L5 = np.float32(-1.2420140846e-1), np.float32(1.4249322787e-1), np.float32(-1.6668057665e-1)
_L6, _L7, _L8 = np.float32(2.0000714765e-1), np.float32(-2.4999993993e-1), np.float32(3.3333331174e-1)
_TWENTY = np.float32(20.0)  # torch's softplus threshold (beta = 1): above it softplus(x) = x


@njit(error_model="numpy")
def _logf(x):
    """Cephes logf for a positive normal float32: x = m 2**e, m in [sqrt(1/2), sqrt(2)), log(m) by a
    degree-9 polynomial (<= 1 ulp); the exponent split by bit operations (vectorisable)."""
    i = _f32_bits(x)
    e = np.float32(((i >> _I23) & _EXP_MASK) - _I126)
    m = _bits_f32((i & _MANT_MASK) | _HALF_BITS)  # in [0.5, 1)
    small = m < _SQRTHF
    e = e - _ONE if small else e
    m = (m + m - _ONE) if small else (m - _ONE)
    z = m * m
    y = ((((((((_L0 * m + _L1) * m + _L2) * m + _L3) * m + _L4) * m + _L5) * m + _L6) * m + _L7) * m + _L8) * m * z
    y = y + e * _LN2_LO
    y = y - _HALF * z
    return m + y + e * _LN2_HI


@njit(error_model="numpy")
def _softplusf(x):
    """torch.nn.functional.softplus (beta 1, threshold 20) in float32: x above 20, else log1p(exp(x)),
    log1p(e) = log(1 + e) * e / ((1 + e) - 1) (Goldberg: exact to a few ulp where 1 + e rounds)."""
    e = _expf(x)
    w = _ONE + e
    lp = _logf(w) * (e / (w - _ONE))  # both sides computed, then selected: the loop stays vectorised
    lp = e if w == _ONE else lp
    return x if x > _TWENTY else lp


def _softplus(x):  # typed dispatch, see the overload below
    return math.log1p(math.exp(x))


@overload(_softplus)
def _softplus_overload(x):
    if x == types.float32:
        return lambda x: _softplusf(x)
    return lambda x: x if x > 20.0 else math.log1p(math.exp(x))


@_jit(error_model="numpy")
def softplusf_vector(x, out):
    """The kernels' softplus over an array (for tests)."""
    for i in range(x.size):
        out[i] = _softplus(x[i])


# --- helpers ---------------------------------------------------------------------------------------


@njit(error_model="numpy")
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


@njit(error_model="numpy")
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


@_jit(parallel=True, fastmath=False, error_model="numpy")
def _forward(uT, dtT, AT, Bx, b_pc, Cx, c_pc, W, K, yT, ckpt, save):
    nblk = uT.shape[2] // W
    for job in prange(uT.shape[0] * nblk):
        _forward_job(uT, dtT, AT, Bx, b_pc, Cx, c_pc, W, K, yT, ckpt, save, job)


@_jit(fastmath=False, error_model="numpy")
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


@_jit(parallel=True, fastmath=False, error_model="numpy")
def _backward(uT, dtT, AT, Bx, b_pc, Cx, c_pc, W, K, ckpt, dyT, duT, ddtT, dA_part, dB_part, dC_part):
    nblk = uT.shape[2] // W
    for job in prange(uT.shape[0] * nblk):
        _backward_job(uT, dtT, AT, Bx, b_pc, Cx, c_pc, W, K, ckpt, dyT, duT, ddtT, dA_part, dB_part, dC_part, job)


@_jit(fastmath=False, error_model="numpy")
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


# --- token-major kernels of the Mamba block -------------------------------------------------------
# Everything (B, L, X), as the block's linear layers produce it: u, delta, z (B, L, D) and B, C
# (B, L, N) shared by all channels. Each goes in as a flat 1-D array and its (batch, row) strides,
# columns contiguous, so that views into in_proj's / x_proj's outputs need no copies and the channel
# loops still vectorise (numba's strided 'A' arrays have a runtime inner stride: measured 3x slower
# there, the fused softplus / SiLU not vectorised at all). delta + delta_bias, softplus, the D skip
# and the SiLU(z) gate are fused into the scan's per-step channel loops: out_t = (<h_t, C_t> + D u_t)
# * silu(z_t). The block width W is a compile-time constant in the jobs: the parallel entry points
# take W at run time and call the job with a literal 64, 32, 16 or 8 (numba compiles a variant per
# literal argument; any other W gets a generic variant). With a constant W LLVM drops the vector
# loops' remainders and runtime alias checks: measured 2-4x faster than a runtime W (W = 16 most of
# all). numba.literally at the entry point would do the same but re-runs type inference on every
# call from Python (~7 ms each).
# st = the strides (u_b, u_row, delta_b, delta_row, z_b, z_row, B_b, B_row, C_b, C_row).


def _silu_parts(z):  # typed dispatch: silu(z) = z / (1 + exp(-z)) (torch's formula), sigmoid(z)
    q = 1.0 + math.exp(-z)
    return z / q, 1.0 / q


@overload(_silu_parts)
def _silu_parts_overload(z):
    one = np.float32(1.0) if z == types.float32 else 1.0

    def impl(z):
        q = one + _exp(-z)
        return z / q, one / q

    return impl


def _dsilu(z, sig):  # typed dispatch: silu'(z) = sigmoid(z) (1 + z (1 - sigmoid(z))), as torch's backward
    return sig * (1.0 + z * (1.0 - sig))


@overload(_dsilu)
def _dsilu_overload(z, sig):
    one = np.float32(1.0) if z == types.float32 else 1.0
    return lambda z, sig: sig * (one + z * (one - sig))


def _dsoftplus(x):  # typed dispatch: softplus'(x) = e / (e + 1), e = exp(x); 1 above the threshold 20
    e = math.exp(x)
    return e / (e + 1.0)


@overload(_dsoftplus)
def _dsoftplus_overload(x):
    one = np.float32(1.0) if x == types.float32 else 1.0
    lim = np.float32(20.0) if x == types.float32 else 20.0

    def impl(x):
        e = _exp(x)
        return one if x > lim else e / (e + one)

    return impl


# The token-major jobs let LLVM fuse a multiply and the add of its product into one FMA (fastmath
# "contract" alone: no sum is reordered, each channel's operations stay in the same order in every block
# width; the rounding is that of the exact product). Measured 20-25% faster forward; the exp helpers
# keep fastmath off (separately compiled: the exp is the same as the other kernels').
_CONTRACT = {"contract"}


@njit(error_model="numpy")
def _row(X, b, W):
    """The W elements X[b:] as a view: indexed by the loop variable alone, which is provably >= 0, so
    numba's negative-index wraparound (a select per element, no vectorisation) is optimised away."""
    return X[b : b + W]


_TILE = 32  # time steps whose per-channel work (softplus, SiLU) runs as one flat loop


@njit(error_model="numpy")
def _gather(X, b0, sr, c0, tn, W, out):
    """out[j * W + c] = X's row t0 + j (flat X, b0 its offset of (batch, t0), row stride sr) at
    channel c0 + c, for j < tn."""
    for j in range(tn):
        src = _row(X, b0 + j * sr + c0, W)
        dst = _row(out, j * W, W)
        for c in range(W):
            dst[c] = src[c]


@njit(error_model="numpy")
def _tile_pre(delta, b0, sr, c0, WT, has_proj, brow, has_bias, tn, W, xt):
    """xt[j * W + c] = the softplus input delta + bias for the tile's tn steps. With has_proj, delta
    holds the low-rank (B, L, R) input of the dt projection and WT (R, D) its transposed weight: the
    (B, L, D) delta is never formed. The flags are tested outside the loops (LLVM does not unswitch
    them, and a branch in a loop body stops its vectorisation)."""
    if has_proj:
        rank = WT.shape[0]
        for j in range(tn):
            lrow = _row(delta, b0 + j * sr, rank)
            dst = _row(xt, j * W, W)
            w = _row(WT[0], c0, W)
            lv = lrow[0]
            for c in range(W):
                dst[c] = lv * w[c]
            for r in range(1, rank):
                w = _row(WT[r], c0, W)
                lv = lrow[r]
                for c in range(W):
                    dst[c] = dst[c] + lv * w[c]
    else:
        _gather(delta, b0, sr, c0, tn, W, xt)
    if has_bias:
        for j in range(tn):
            r = _row(xt, j * W, W)
            for c in range(W):
                r[c] = r[c] + brow[c]


@njit(error_model="numpy")
def _tile_dt(delta, b0, sr, c0, WT, has_proj, brow, has_bias, softplus, tn, W, dtt):
    """dtt[j * W + c] = softplus(delta + bias) for the tile's tn steps; the softplus is one flat loop
    over tn * W values (as a W-long loop it does not vectorise for W = 16)."""
    _tile_pre(delta, b0, sr, c0, WT, has_proj, brow, has_bias, tn, W, dtt)
    if softplus:
        for i in range(tn * W):
            dtt[i] = _softplus(dtt[i])


@njit(error_model="numpy")
def _tree_sum(p, o, W):
    """sum(p[o : o + W]) by pairwise halving in place (p is scratch); W a power of two or not."""
    m = W
    while m > 1:
        half = m // 2
        lo = _row(p, o, half)
        hi = _row(p, o + m - half, half)  # the odd element of an odd m stays in place, at o + half
        for c in range(half):
            lo[c] = lo[c] + hi[c]
        m -= half
    return p[o]


@_jit(parallel=True, fastmath=False, error_model="numpy")
def _tok_forward(
    u, delta, z, Bm, Cm, st, AT, WT, Dv, bias, has_z, has_D, has_proj, has_bias, softplus, W, K, out, ckpt, save
):
    nblk = out.shape[2] // W
    for job in prange(out.shape[0] * nblk):
        a = (u, delta, z, Bm, Cm, st, AT, WT, Dv, bias, has_z, has_D, has_proj, has_bias, softplus)
        if W == 64:  # constant widths: each call compiles a variant specialised on it (see above)
            _tok_forward_job(*a, 64, K, out, ckpt, save, job)
        elif W == 32:
            _tok_forward_job(*a, 32, K, out, ckpt, save, job)
        elif W == 16:
            _tok_forward_job(*a, 16, K, out, ckpt, save, job)
        elif W == 8:
            _tok_forward_job(*a, 8, K, out, ckpt, save, job)
        else:
            _tok_forward_job(*a, W, K, out, ckpt, save, job)


@_jit(fastmath=_CONTRACT, error_model="numpy")
def _tok_forward_job(
    u, delta, z, Bm, Cm, st, AT, WT, Dv, bias, has_z, has_D, has_proj, has_bias, softplus, W, K, out, ckpt, save, job
):
    """One (batch row, block of W channels): the recurrence step by step, the per-channel work before
    (softplus) and after it (D skip, SiLU gate) over tiles of _TILE steps."""
    length, d = out.shape[1], out.shape[2]
    n = AT.shape[0]
    nblk = d // W
    bi = job // nblk
    c0 = (job % nblk) * W
    f = out.dtype
    TT = _TILE
    Ab = np.empty(n * W, dtype=f)  # the block's A
    for k in range(n):
        arow = _row(AT[k], c0, W)
        for c in range(W):
            Ab[k * W + c] = arow[c]
    Drow = _row(Dv, c0 if has_D else 0, W if has_D else 1)
    brow = _row(bias, c0 if has_bias else 0, W if has_bias else 1)
    h = np.zeros(n * W, dtype=f)
    du = np.empty(W, dtype=f)
    y = np.empty(W, dtype=f)
    dtt = np.empty(TT * W, dtype=f)  # the tile's dt, u, outputs and z, (step, channel)
    ut = np.empty(TT * W, dtype=f)
    yt = np.empty(TT * W, dtype=f)
    gt = np.empty(TT * W, dtype=f)
    for ts in range(0, length, TT):
        tn = min(TT, length - ts)
        _tile_dt(delta, bi * st[2] + ts * st[3], st[3], c0, WT, has_proj, brow, has_bias, softplus, tn, W, dtt)
        _gather(u, bi * st[0] + ts * st[1], st[1], c0, tn, W, ut)
        for j in range(tn):
            t = ts + j
            if save and t % K == 0:
                s = t // K
                for k in range(n):
                    crow = _row(ckpt[bi, s, k], c0, W)
                    for c in range(W):
                        crow[c] = h[k * W + c]
            dt = _row(dtt, j * W, W)
            uj = _row(ut, j * W, W)
            Brow = _row(Bm, bi * st[6] + t * st[7], n)
            Crow = _row(Cm, bi * st[8] + t * st[9], n)
            for c in range(W):
                du[c] = dt[c] * uj[c]
                y[c] = 0
            for k in range(n):
                o = k * W
                bk = Brow[k]
                ck = Crow[k]
                for c in range(W):
                    hk = _exp(dt[c] * Ab[o + c]) * h[o + c] + du[c] * bk
                    h[o + c] = hk
                    y[c] += hk * ck
            yj = _row(yt, j * W, W)
            for c in range(W):
                yj[c] = y[c]
        if has_D:
            for j in range(tn):
                yj = _row(yt, j * W, W)
                uj = _row(ut, j * W, W)
                for c in range(W):
                    yj[c] = yj[c] + uj[c] * Drow[c]
        if has_z:
            _gather(z, bi * st[4] + ts * st[5], st[5], c0, tn, W, gt)
            for i in range(tn * W):
                yt[i] = yt[i] * _silu_parts(gt[i])[0]
        for j in range(tn):
            orow = _row(out[bi, ts + j], c0, W)
            yj = _row(yt, j * W, W)
            for c in range(W):
                orow[c] = yj[c]


@_jit(parallel=True, fastmath=False, error_model="numpy")
def _tok_backward(
    u, delta, z, Bm, Cm, st, AT, WT, Dv, bias, has_z, has_D, has_proj, has_bias, softplus, W, K, ckpt, gout, du,
    ddelta, dz, parts,
):  # fmt: skip
    nblk = gout.shape[2] // W
    for job in prange(gout.shape[0] * nblk):
        a = (u, delta, z, Bm, Cm, st, AT, WT, Dv, bias, has_z, has_D, has_proj, has_bias, softplus)
        b = (K, ckpt, gout, du, ddelta, dz, parts, job)
        if W == 64:
            _tok_backward_job(*a, 64, *b)
        elif W == 32:
            _tok_backward_job(*a, 32, *b)
        elif W == 16:
            _tok_backward_job(*a, 16, *b)
        elif W == 8:
            _tok_backward_job(*a, 8, *b)
        else:
            _tok_backward_job(*a, W, *b)


@_jit(fastmath=_CONTRACT, error_model="numpy")
def _tok_backward_job(
    u, delta, z, Bm, Cm, st, AT, WT, Dv, bias, has_z, has_D, has_proj, has_bias, softplus, W, K, ckpt, gout, du_o,
    ddelta, dz, parts, job,
):  # fmt: skip
    """The adjoint of _tok_forward_job, one K-step segment at a time: its per-channel inputs gathered
    (step, channel) into segment tiles, the states recomputed from the checkpoint, the adjoint run
    backwards, then the per-channel outputs (SiLU and softplus derivatives) as flat loops.
    gout, du_o, ddelta, dz: (B, L, D); parts = (dA (B, N, D), dB (B, nblk, L, N), dC (B, nblk, L, N),
    dD (B, D), dbias (B, D)): per batch row / per block partial sums, reduced by the caller."""
    dA_part, dB_part, dC_part, dD_part, dbias_part = parts
    length, d = gout.shape[1], gout.shape[2]
    n = AT.shape[0]
    nblk = d // W
    nseg = (length + K - 1) // K
    bi = job // nblk
    blk = job % nblk
    c0 = blk * W
    f = du_o.dtype
    nw = n * W
    kw = K * W
    Ab = np.empty(nw, dtype=f)
    for k in range(n):
        arow = _row(AT[k], c0, W)
        for c in range(W):
            Ab[k * W + c] = arow[c]
    Drow = _row(Dv, c0 if has_D else 0, W if has_D else 1)
    brow = _row(bias, c0 if has_bias else 0, W if has_bias else 1)
    hs = np.empty((K + 1) * nw, dtype=f)  # the segment's states h_{t0-1} .. h_{t1-1}
    ab = np.empty(K * nw, dtype=f)  # and decays a_t
    g = np.zeros(nw, dtype=f)  # a_{t+1} g_{t+1}, carried backwards
    dA_acc = np.zeros(nw, dtype=f)
    dD_acc = np.zeros(W, dtype=f)
    db_acc = np.zeros(W, dtype=f)
    pB = np.empty(nw, dtype=f)
    pC = np.empty(nw, dtype=f)
    du = np.empty(W, dtype=f)
    dy = np.empty(W, dtype=f)  # the step's dL/dy and sums over k: small local arrays (see the adjoint)
    ys = np.empty(W, dtype=f)
    sgB = np.empty(W, dtype=f)
    sdA = np.empty(W, dtype=f)
    # per segment, (step, channel): dt, u, dL/dy, gout, z (then silu'(z), then dL/dz), <h, C> (then
    # y), sum_k g B (then dL/du), sum_k dL/d(dt A) (then dL/d(delta + bias)), the softplus input
    dtt = np.empty(kw, dtype=f)
    ut = np.empty(kw, dtype=f)
    dyt = np.empty(kw, dtype=f)
    got = np.empty(kw, dtype=f)
    zt = np.empty(kw, dtype=f)
    yst = np.empty(kw, dtype=f)
    sgt = np.empty(kw, dtype=f)
    sdt = np.empty(kw, dtype=f)
    xt = np.empty(kw, dtype=f)
    for s in range(nseg - 1, -1, -1):
        t0 = s * K
        tn = min(length, t0 + K) - t0
        m = tn * W
        _tile_pre(delta, bi * st[2] + t0 * st[3], st[3], c0, WT, has_proj, brow, has_bias, tn, W, xt)
        if softplus:  # dt, exactly as the forward computed it
            for i in range(m):
                dtt[i] = _softplus(xt[i])
        else:
            for i in range(m):
                dtt[i] = xt[i]
        _gather(u, bi * st[0] + t0 * st[1], st[1], c0, tn, W, ut)
        for j in range(tn):
            src = _row(gout[bi, t0 + j], c0, W)
            dst = _row(got, j * W, W)
            for c in range(W):
                dst[c] = src[c]
        if has_z:
            _gather(z, bi * st[4] + t0 * st[5], st[5], c0, tn, W, zt)
            for i in range(m):
                sq = _silu_parts(zt[i])
                dyt[i] = got[i] * sq[0]  # dL/dy_t, y_t = <h_t, C_t> + D u_t
                zt[i] = _dsilu(zt[i], sq[1])
        else:
            for i in range(m):
                dyt[i] = got[i]
        for k in range(n):
            crow = _row(ckpt[bi, s, k], c0, W)
            for c in range(W):
                hs[k * W + c] = crow[c]
        for j in range(tn):  # recompute the segment's states, exactly as the forward did
            t = t0 + j
            dt = _row(dtt, j * W, W)
            uj = _row(ut, j * W, W)
            Brow = _row(Bm, bi * st[6] + t * st[7], n)
            for c in range(W):
                du[c] = dt[c] * uj[c]
            for k in range(n):
                o = k * W
                oj = j * nw + o
                bk = Brow[k]
                for c in range(W):
                    a = _exp(dt[c] * Ab[o + c])
                    ab[oj + c] = a
                    hs[oj + nw + c] = a * hs[oj + c] + du[c] * bk
        for j in range(tn - 1, -1, -1):  # the adjoint, backwards
            t = t0 + j
            dt = _row(dtt, j * W, W)
            uj = _row(ut, j * W, W)
            dyj = _row(dyt, j * W, W)
            Brow = _row(Bm, bi * st[6] + t * st[7], n)
            Crow = _row(Cm, bi * st[8] + t * st[9], n)
            for c in range(W):
                du[c] = dt[c] * uj[c]
                dy[c] = dyj[c]
                sgB[c] = 0
                sdA[c] = 0
                ys[c] = 0
            for k in range(n):
                o = k * W
                oj = j * nw + o
                bk = Brow[k]
                ck = Crow[k]
                for c in range(W):
                    hk = hs[oj + nw + c]
                    ys[c] += hk * ck  # the forward's <h_t, C_t>, same order: same value
                    gk = g[o + c] + dy[c] * ck  # dL/dh_t
                    pC[o + c] = dy[c] * hk  # dL/dC_t
                    pB[o + c] = gk * du[c]  # dL/dB_t
                    sgB[c] += gk * bk  # dL/d(dt u)
                    a = ab[oj + c]
                    ga = gk * hs[oj + c] * a  # dL/d(dt A)
                    sdA[c] += ga * Ab[o + c]
                    dA_acc[o + c] += ga * dt[c]
                    g[o + c] = a * gk
            ysj = _row(yst, j * W, W)
            sgj = _row(sgt, j * W, W)
            sdj = _row(sdt, j * W, W)
            for c in range(W):
                ysj[c] = ys[c]
                sgj[c] = sgB[c]
                sdj[c] = sdA[c]
            # the block's channels summed: a pairwise tree over the W channels (fixed order, so still
            # deterministic), each level one vectorised loop; summing in channel order (a k-inner loop
            # with stride-W loads into the output row) measured as slow as the adjoint itself
            rB = dB_part[bi, blk, t]
            rC = dC_part[bi, blk, t]
            for k in range(n):
                rB[k] = _tree_sum(pB, k * W, W)
                rC[k] = _tree_sum(pC, k * W, W)
        # the segment's per-channel gradients: sdt becomes dL/d dt, sgt dL/du, yst y
        for i in range(m):
            sdt[i] = sdt[i] + ut[i] * sgt[i]
            sgt[i] = dtt[i] * sgt[i]
        if has_D:
            for j in range(tn - 1, -1, -1):  # backwards in time, as the adjoint: the sums' order
                r = j * W
                for c in range(W):
                    sgt[r + c] = sgt[r + c] + dyt[r + c] * Drow[c]
                    dD_acc[c] += dyt[r + c] * ut[r + c]
                    yst[r + c] = yst[r + c] + ut[r + c] * Drow[c]
        if has_z:
            for i in range(m):
                zt[i] = got[i] * yst[i] * zt[i]  # dL/dz = gout y silu'(z)
            for j in range(tn):
                dst = _row(dz[bi, t0 + j], c0, W)
                src = _row(zt, j * W, W)
                for c in range(W):
                    dst[c] = src[c]
        if softplus:
            for i in range(m):
                sdt[i] = sdt[i] * _dsoftplus(xt[i])
        for j in range(tn - 1, -1, -1):
            r = j * W
            urow_o = _row(du_o[bi, t0 + j], c0, W)
            drow_o = _row(ddelta[bi, t0 + j], c0, W)
            for c in range(W):
                urow_o[c] = sgt[r + c]
                drow_o[c] = sdt[r + c]
                db_acc[c] += sdt[r + c]
    for k in range(n):
        arow = _row(dA_part[bi, k], c0, W)
        for c in range(W):
            arow[c] = dA_acc[k * W + c]
    Drow_o = _row(dD_part[bi], c0, W)
    brow_o = _row(dbias_part[bi], c0, W)
    for c in range(W):
        Drow_o[c] = dD_acc[c]
        brow_o[c] = db_acc[c]


def tokens_forward(u, delta, z, Bm, Cm, st, AT, WT, Dv, bias, flags, W, K, out, ckpt, save):
    """Flat numpy arrays u, delta, z, B, C with their strides st (see the section comment); out (B, L, D)
    (and the checkpoints (B, nseg, N, D), when save) written in place. flags = (has_z, has_D,
    has_proj, has_bias, softplus); has_proj: delta is (B, L, R), projected by WT (R, D) in the kernel.
    An absent z / D / bias is any 1-D array of the dtype, an absent WT any 2-D one."""
    with _LOCK:
        _tok_forward(u, delta, z, Bm, Cm, st, AT, WT, Dv, bias, *flags, W, K, out, ckpt, save)


def tokens_backward(u, delta, z, Bm, Cm, st, AT, WT, Dv, bias, flags, W, K, ckpt, gout, du, ddelta, dz, parts):
    """The gradients of tokens_forward written in place: du, ddelta (of the (B, L, D) delta + bias, also
    with has_proj), dz (B, L, D) and the partial sums parts = (dA (B, N, D), dB (B, nblk, L, N),
    dC (B, nblk, L, N), dD (B, D), dbias (B, D))."""
    with _LOCK:
        _tok_backward(u, delta, z, Bm, Cm, st, AT, WT, Dv, bias, *flags, W, K, ckpt, gout, du, ddelta, dz, parts)


# --- the block's causal depthwise conv1d + SiLU, token-major --------------------------------------
# s_t = bias + sum_j w_j x_{t-(K-1)+j} (x_t = 0 for t < 0), out_t = silu(s_t): nn.Conv1d(groups=D,
# padding=K-1) cropped to the first L outputs, then SiLU, on (B, L, D) without transposing. x is flat
# with strides (xs_b, xs_row) as above. Jobs are (batch row, span of steps); the inner loops run over
# all D channels.


@njit(error_model="numpy")
def _conv_pre(x, xsb, xsr, wT, b, has_bias, bi, t, acc):
    """acc[c] = the conv's pre-activation s_t of every channel."""
    kk, d = wT.shape
    if has_bias:
        for c in range(d):
            acc[c] = b[c]
    else:
        for c in range(d):
            acc[c] = 0
    for j in range(kk):
        tt = t - (kk - 1) + j
        if tt >= 0:
            xrow = _row(x, bi * xsb + tt * xsr, d)
            wrow = wT[j]
            for c in range(d):
                acc[c] += wrow[c] * xrow[c]


@njit
def _spans(length, nspan):
    return (length + nspan - 1) // nspan


@_jit(parallel=True, fastmath=False, error_model="numpy")
def _conv_forward(x, xsb, xsr, wT, b, has_bias, nspan, out):
    batch, length, d = out.shape
    span = _spans(length, nspan)
    for job in prange(batch * nspan):
        bi = job // nspan
        t0 = (job % nspan) * span
        _conv_forward_job(x, xsb, xsr, wT, b, has_bias, bi, t0, min(length, t0 + span), out)


@_jit(fastmath=False, error_model="numpy")
def _conv_forward_job(x, xsb, xsr, wT, b, has_bias, bi, t0, t1, out):
    d = out.shape[2]
    acc = np.empty(d, dtype=out.dtype)
    for t in range(t0, t1):
        _conv_pre(x, xsb, xsr, wT, b, has_bias, bi, t, acc)
        orow = out[bi, t]
        for c in range(d):
            orow[c] = _silu_parts(acc[c])[0]


@_jit(parallel=True, fastmath=False, error_model="numpy")
def _conv_backward(x, xsb, xsr, wT, b, has_bias, nspan, gout, gx, gw_part, gb_part):
    batch, length, d = gout.shape
    span = _spans(length, nspan)
    for job in prange(batch * nspan):
        bi = job // nspan
        t0 = (job % nspan) * span
        _conv_backward_job(
            x, xsb, xsr, wT, b, has_bias, bi, t0, min(length, t0 + span), gout, gx, gw_part, gb_part, job
        )


@_jit(fastmath=False, error_model="numpy")
def _conv_backward_job(x, xsb, xsr, wT, b, has_bias, bi, t0, t1, gout, gx, gw_part, gb_part, job):
    """gs_t = gout_t silu'(s_t) for t in [t0, t1 + K - 1) (the span's own steps and the K - 1 after it,
    whose inputs reach back into it); gx_t = sum_j w_j gs_{t+(K-1)-j}; per-job sums of gw, gb."""
    kk, d = wT.shape
    length = gout.shape[1]
    f = gx.dtype
    t0 = min(t0, t1)
    te = min(length, t1 + kk - 1)
    gs = np.zeros((te - t0 + kk - 1) * d, dtype=f)  # gs_t at (t - t0) * d, zeros past te
    acc = np.empty(d, dtype=f)
    gw = np.zeros(kk * d, dtype=f)
    gb = np.zeros(d, dtype=f)
    for t in range(t0, te):
        _conv_pre(x, xsb, xsr, wT, b, has_bias, bi, t, acc)
        grow = gout[bi, t]
        srow = _row(gs, (t - t0) * d, d)
        for c in range(d):
            srow[c] = grow[c] * _dsilu(acc[c], _silu_parts(acc[c])[1])
    for t in range(t0, t1):
        srow = _row(gs, (t - t0) * d, d)
        for c in range(d):
            acc[c] = 0
        for j in range(kk):  # gx_t: the outputs t + (K-1) - j that read x_t through w_j
            sj = _row(gs, (t - t0 + kk - 1 - j) * d, d)
            wrow = wT[j]
            for c in range(d):
                acc[c] += wrow[c] * sj[c]
        xrow_o = gx[bi, t]
        for c in range(d):
            xrow_o[c] = acc[c]
            gb[c] += srow[c]
        for j in range(kk):  # gw_j += gs_t x_{t-(K-1)+j}
            tt = t - (kk - 1) + j
            if tt >= 0:
                xrow = _row(x, bi * xsb + tt * xsr, d)
                gwj = _row(gw, j * d, d)
                for c in range(d):
                    gwj[c] += srow[c] * xrow[c]
    for j in range(kk):
        gr = gw_part[job, j]
        for c in range(d):
            gr[c] = gw[j * d + c]
    gbr = gb_part[job]
    for c in range(d):
        gbr[c] = gb[c]


def conv_forward(x, xsb, xsr, wT, b, has_bias, nspan, out):
    """Flat numpy x with strides (xsb, xsr), wT (K, D), b (D,): out (B, L, D) = silu(causal conv) in
    place; the work split into B * nspan jobs."""
    with _LOCK:
        _conv_forward(x, xsb, xsr, wT, b, has_bias, nspan, out)


def conv_backward(x, xsb, xsr, wT, b, has_bias, nspan, gout, gx, gw_part, gb_part):
    """gx (B, L, D) and per-job partial sums gw_part (B * nspan, K, D), gb_part (B * nspan, D) in place."""
    with _LOCK:
        _conv_backward(x, xsb, xsr, wT, b, has_bias, nspan, gout, gx, gw_part, gb_part)


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
