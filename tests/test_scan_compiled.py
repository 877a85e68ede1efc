"""The compiled (numba) CPU selective scan: exact against the recurrence, gradchecked, and its fallbacks."""

import threading

import numpy as np
import pytest
import torch

from densekit import ops
from densekit.ops import selective_scan, selective_scan_ref

nb = pytest.importorskip("densekit.ops_numba")
F64 = torch.float64
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    yield


@pytest.fixture
def calls(monkeypatch):
    """Counts the compiled kernels' and the PyTorch scan's calls."""
    seen = {"compiled": 0, "torch": 0}
    fwd, torch_scan = nb.scan_forward, ops._selective_scan_torch

    def count_fwd(*a):
        seen["compiled"] += 1
        return fwd(*a)

    def count_torch(*a):
        seen["torch"] += 1
        return torch_scan(*a)

    monkeypatch.setattr(nb, "scan_forward", count_fwd)
    monkeypatch.setattr(ops, "_selective_scan_torch", count_torch)
    return seen


def _inputs(batch, dim, length, n, layout, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    B, C = {
        "shared": lambda: (r(batch, n, length), r(batch, n, length)),
        "grouped": lambda: (r(batch, 2, n, length), r(batch, 2, n, length)),
        "per_channel": lambda: (r(batch, dim, n, length), r(batch, dim, n, length)),  # G == D
        "mixed": lambda: (r(batch, n, length), r(dim, n)),
        "mixed_groups": lambda: (r(batch, 2, n, length), r(batch, dim // 2, n, length)),
        "constant": lambda: (r(dim, n), r(dim, n)),
    }[layout]()
    return {
        "u": r(batch, dim, length),
        # positive step sizes even without softplus: a growing state would overflow float32
        "delta": r(batch, dim, length).abs() * 0.5,
        "A": -torch.rand(dim, n, generator=g, dtype=dtype) * 3,
        "B": B,
        "C": C,
        "D": r(dim),
        "z": r(batch, dim, length),
        "delta_bias": r(dim).abs() * 0.1,
    }


LAYOUTS = ["shared", "grouped", "per_channel", "mixed", "mixed_groups", "constant"]
EXTRAS = [(), ("D",), ("z",), ("delta_bias",), ("D", "z", "delta_bias", "softplus")]


def _call(fn, kw, extras):
    opt = {k: kw[k] for k in extras if k != "softplus"}
    return fn(*[kw[k] for k in ("u", "delta", "A", "B", "C")], **opt, delta_softplus="softplus" in extras)


# 70 > 64 = one checkpoint segment: the backward crosses a segment boundary
@pytest.mark.parametrize("length", [1, 7, 70])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_compiled_forward_equals_recurrence(length, layout, calls):
    kw = _inputs(2, 16, length, 3, layout, seed=length)
    kw32 = {k: v.float() for k, v in kw.items()}
    for extras in EXTRAS:
        ref = _call(selective_scan_ref, kw, extras)
        y = _call(selective_scan, kw, extras)
        assert y.dtype == F64 and y.shape == (2, 16, length)
        assert ((y - ref).abs().max() / ref.abs().max()).item() <= 1e-12, extras
        y32 = _call(selective_scan, kw32, extras)
        assert y32.dtype == torch.float32
        assert ((y32.double() - ref).abs().max() / ref.abs().max()).item() <= 1e-5, extras
    assert calls == {"compiled": 2 * len(EXTRAS), "torch": 0}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_compiled_gradcheck(layout, monkeypatch):
    # K = 2 steps per checkpoint: 5 steps are 3 segments, the last a partial one
    monkeypatch.setattr(ops, "_CKPT_STEPS", 2)
    kw = _inputs(2, 4, 5, 2, layout, seed=3)
    leaves = [kw[k].clone().requires_grad_(True) for k in NAMES]

    def f(u, delta, A, B, C, D, z, delta_bias):
        return selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=True)

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("layout", ["shared", "grouped", "per_channel", "constant"])
def test_compiled_gradients_equal_recurrence_float32(layout, monkeypatch):
    monkeypatch.setattr(ops, "_CKPT_STEPS", 16)
    kw = _inputs(2, 16, 50, 4, layout, seed=2)
    grads = {}
    for name, dtype, fn in (("ref", F64, selective_scan_ref), ("ours", torch.float32, selective_scan)):
        leaves = {k: v.detach().to(dtype).clone().requires_grad_(True) for k, v in kw.items()}
        y = _call(fn, leaves, ("D", "z", "delta_bias", "softplus"))
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=F64).to(dtype)
        (y * w).sum().backward()
        grads[name] = {k: leaves[k].grad.double() for k in NAMES}
    for k in NAMES:
        a, b = grads["ours"][k], grads["ref"][k]
        assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-5, k


def test_expf_matches_libm():
    x = np.concatenate([np.linspace(-87.3, 88.3, 200001), [-1e-30, 0.0, 1e-30]]).astype(np.float32)
    out = np.empty_like(x)
    nb.expf_vector(x, out)
    rel = np.abs(out.astype(np.float64) / np.exp(x.astype(np.float64)) - 1)
    assert rel.max() <= 2.5e-7, rel.max()  # ~2 ulp
    special = np.array([-200.0, -88.0, 89.0, np.inf, -np.inf, np.nan], dtype=np.float32)
    out = np.empty_like(special)
    nb.expf_vector(special, out)
    assert out[0] == 0 and 0 <= out[1] < 1.2e-38 and out[2] == np.inf and out[3] == np.inf and out[4] == 0
    assert np.isnan(out[5])


def test_nan_propagates():
    kw = _inputs(1, 8, 6, 2, "shared", dtype=torch.float32)
    kw["u"][0, 3, 2] = float("nan")
    y = _call(selective_scan, kw, ())
    ref = _call(selective_scan_ref, kw, ())
    assert torch.equal(torch.isnan(y), torch.isnan(ref)) and torch.isnan(y[0, 3, 2:]).all()


def test_half_precision_inputs_run_in_float32(calls):
    kw = {k: v.to(torch.bfloat16) for k, v in _inputs(1, 8, 20, 4, "shared").items()}
    y = _call(selective_scan, kw, ("D", "softplus"))
    ref = _call(selective_scan_ref, kw, ("D", "softplus"))
    assert y.dtype == torch.bfloat16 and calls["compiled"] == 1
    torch.testing.assert_close(y, ref, rtol=1e-2, atol=1e-2)


def test_threads_follow_torch():
    import numba

    kw = _inputs(1, 16, 8, 2, "shared", dtype=torch.float32)
    torch.set_num_threads(2)
    try:
        _call(selective_scan, kw, ())
        assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    finally:
        torch.set_num_threads(1)
    _call(selective_scan, kw, ())
    assert numba.get_num_threads() == 1


def test_concurrent_calls_from_threads():
    kw = _inputs(2, 16, 40, 4, "grouped", dtype=torch.float32)
    want = _call(selective_scan, kw, ("D",))
    results, errors = [], []

    def work():
        try:
            results.append(_call(selective_scan, kw, ("D",)))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    for y in results:
        assert torch.equal(y, want)


def test_disabled_or_missing_numba_falls_back(monkeypatch, calls):
    kw = _inputs(1, 4, 10, 2, "shared")
    want = _call(selective_scan_ref, kw, ("D",))
    monkeypatch.setattr(ops, "_numba_mod", None)
    monkeypatch.setenv("DENSEKIT_NUMBA", "0")
    torch.testing.assert_close(_call(selective_scan, kw, ("D",)), want, rtol=1e-12, atol=0)
    assert calls == {"compiled": 0, "torch": 1}
    monkeypatch.delenv("DENSEKIT_NUMBA")
    monkeypatch.setattr(ops, "_numba_mod", None)
    monkeypatch.setitem(__import__("sys").modules, "densekit.ops_numba", None)  # import fails
    torch.testing.assert_close(_call(selective_scan, kw, ("D",)), want, rtol=1e-12, atol=0)
    assert calls == {"compiled": 0, "torch": 2}
    monkeypatch.setattr(ops, "_numba_mod", None)  # later tests import it again


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_tracing_uses_the_pytorch_scan(calls):
    kw = _inputs(1, 4, 10, 2, "shared")
    args = [kw[k] for k in ("u", "delta", "A", "B", "C")]
    traced = torch.jit.trace(lambda *a: selective_scan(*a), args, check_trace=False)
    torch.testing.assert_close(traced(*args), selective_scan_ref(*args), rtol=1e-12, atol=0)
    assert calls["compiled"] == 0 and calls["torch"] >= 1


def test_cache_dir_falls_back_when_unwritable(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(nb.tempfile, "gettempdir", lambda: str(tmp_path))
    real_access = nb.os.access
    monkeypatch.setattr(nb.os, "access", lambda p, m: str(p).startswith(str(tmp_path)) and real_access(p, m))
    path = nb._cache_dir()  # source tree and ~/.cache refused: a per-user directory under the temp dir
    assert path is not None and path.startswith(str(tmp_path / "densekit-numba-"))
    monkeypatch.setattr(nb.os, "access", lambda p, m: False)
    assert nb._cache_dir() is None  # nowhere to write: no on-disk cache, the import still works
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setattr(nb.os, "access", real_access)
    assert nb._cache_dir() == str(tmp_path / "mine")


# --- the token-major kernels of the Mamba block (ops.selective_scan_tokens, ops.causal_conv1d_silu) ----

TOKEN_EXTRAS = [
    (),
    ("D",),
    ("z",),
    ("delta_bias",),
    ("D", "z", "delta_bias", "softplus"),
    ("proj", "softplus"),  # the block's case: dt_proj fused in (softplus keeps the decays below 1)
    ("proj", "D", "z", "delta_bias", "softplus"),
]


def _token_inputs(batch, dim, length, n, rank=3, seed=0, dtype=F64):
    """Token-major inputs laid out as the Mamba block makes them: u and z column halves of one
    (B, L, 2D) tensor, the low-rank dt and B, C column slices of one (B, L, R + 2N) tensor."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    xz = r(batch, length, 2 * dim)
    x_dbl = r(batch, length, rank + 2 * n)
    return {
        "u": xz[..., :dim],
        "z": xz[..., dim:],
        "delta": r(batch, length, dim).abs() * 0.5,  # positive: without softplus the state stays bounded
        "low": x_dbl[..., :rank],
        "B": x_dbl[..., rank : rank + n],
        "C": x_dbl[..., rank + n :],
        "A": -torch.rand(dim, n, generator=g, dtype=dtype) * 3,
        "D": r(dim),
        "delta_bias": r(dim).abs() * 0.1,
        "proj": r(dim, rank) * 0.5,
    }


def _call_tokens(kw, extras, fn=None):
    """selective_scan_tokens(**extras) or, with fn=selective_scan_ref, the recurrence on the (B, D, L)
    transposes (delta projected first)."""
    opt = {k: kw[k] for k in ("D", "z", "delta_bias") if k in extras}
    softplus = "softplus" in extras
    if fn is None:
        delta, proj = (kw["low"], kw["proj"]) if "proj" in extras else (kw["delta"], None)
        return ops.selective_scan_tokens(
            kw["u"], delta, kw["A"], kw["B"], kw["C"], **opt, delta_softplus=softplus, delta_proj=proj
        )
    delta = torch.nn.functional.linear(kw["low"], kw["proj"]) if "proj" in extras else kw["delta"]
    if "z" in opt:
        opt["z"] = opt["z"].transpose(1, 2)
    t = [X.transpose(1, 2) for X in (kw["u"], delta, kw["B"], kw["C"])]  # (B, D or N, L)
    return fn(t[0], t[1], kw["A"], t[2], t[3], **opt, delta_softplus=softplus).transpose(1, 2)  # (B, L, D)


@pytest.fixture
def token_calls(monkeypatch):
    """Counts the token-major kernels' calls."""
    seen = {"scan": 0, "conv": 0}
    fwd, conv = nb.tokens_forward, nb.conv_forward

    def count_scan(*a):
        seen["scan"] += 1
        return fwd(*a)

    def count_conv(*a):
        seen["conv"] += 1
        return conv(*a)

    monkeypatch.setattr(nb, "tokens_forward", count_scan)
    monkeypatch.setattr(nb, "conv_forward", count_conv)
    return seen


# 12 channels: not a multiple of 8, the generic (runtime-width) kernel; 16: a constant width
@pytest.mark.parametrize("dim", [12, 16])
@pytest.mark.parametrize("length", [1, 7, 70])
def test_tokens_forward_equals_recurrence(dim, length, token_calls):
    kw = _token_inputs(2, dim, length, 3, seed=length)
    kw32 = {k: v.float() for k, v in kw.items()}
    for extras in TOKEN_EXTRAS:
        ref = _call_tokens(kw, extras, selective_scan_ref)
        y = _call_tokens(kw, extras)
        assert y.dtype == F64 and y.shape == (2, length, dim)
        assert ((y - ref).abs().max() / ref.abs().max()).item() <= 1e-12, extras
        y32 = _call_tokens(kw32, extras)
        assert y32.dtype == torch.float32
        assert ((y32.double() - ref).abs().max() / ref.abs().max()).item() <= 1e-5, extras
    assert token_calls["scan"] == 2 * len(TOKEN_EXTRAS)


@pytest.mark.parametrize("extras", [(), ("D", "z", "delta_bias", "softplus"), TOKEN_EXTRAS[-1]])
@pytest.mark.parametrize("dim", [4, 8])  # a generic width and a constant one
def test_tokens_gradcheck(extras, dim, monkeypatch):
    # K = 2 steps per checkpoint: 5 steps are 3 segments, the last a partial one
    monkeypatch.setattr(ops, "_CKPT_STEPS", 2)
    kw = _token_inputs(2, dim, 5, 2, rank=2, seed=3)
    names = ["u", "A", "B", "C", "low" if "proj" in extras else "delta"]
    names += [k for k in ("D", "z", "delta_bias", "proj") if k in extras]
    leaves = [kw[k].detach().clone().requires_grad_(True) for k in names]

    def f(*xs):
        return _call_tokens({**kw, **dict(zip(names, xs))}, extras)

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-9, rtol=1e-7)


def test_tokens_gradients_equal_recurrence_float32(monkeypatch):
    monkeypatch.setattr(ops, "_CKPT_STEPS", 16)  # 50 steps: 4 segments
    extras = TOKEN_EXTRAS[-1]
    names = ["u", "z", "low", "B", "C", "A", "D", "delta_bias", "proj"]
    kw = _token_inputs(2, 16, 50, 4, seed=2)
    grads = {}
    for name, dtype, fn in (("ref", F64, selective_scan_ref), ("ours", torch.float32, None)):
        leaves = {k: kw[k].detach().to(dtype).clone().requires_grad_(True) for k in names}
        y = _call_tokens({**kw, **leaves}, extras, fn)
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=F64).to(dtype)
        (y * w).sum().backward()
        grads[name] = {k: leaves[k].grad.double() for k in names}
    for k in names:
        a, b = grads["ours"][k], grads["ref"][k]
        assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-5, k


def test_tokens_block_width_does_not_change_the_result(monkeypatch):
    # each channel's recurrence is the same sequence of operations in every width: equal bit for bit
    kw = {k: v.float() for k, v in _token_inputs(1, 64, 40, 4, seed=4).items()}
    extras = TOKEN_EXTRAS[-1]
    leaves = {k: kw[k].clone().requires_grad_(True) for k in ("u", "low", "B")}
    outs = {}
    for w in (64, 32, 16, 8, 4):
        monkeypatch.setattr(ops, "_token_width", lambda batch, dim, threads, w=w: w)
        y = _call_tokens({**kw, **leaves}, extras)
        y.square().sum().backward()
        outs[w] = (y.detach(), *(leaves[k].grad.clone() for k in ("u", "low", "B")))
        for v in leaves.values():
            v.grad = None
    for w, (y, du, dlow, dB) in outs.items():
        assert torch.equal(y, outs[64][0]), w
        assert torch.equal(du, outs[64][1]), w  # per channel too
        for a, b in ((dlow, outs[64][2]), (dB, outs[64][3])):  # sums over channels: their order differs
            assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-5, w


def test_tokens_fallback_is_the_pytorch_scan(monkeypatch, token_calls, calls):
    kw = _token_inputs(2, 8, 30, 3, seed=5)
    extras = TOKEN_EXTRAS[-1]
    want = _call_tokens(kw, extras)
    monkeypatch.setattr(ops, "_numba_mod", False)  # as DENSEKIT_NUMBA=0 / numba missing
    torch.testing.assert_close(_call_tokens(kw, extras), want, rtol=1e-12, atol=0)
    assert token_calls["scan"] == 1 and calls == {"compiled": 0, "torch": 1}


def test_tokens_bad_shapes():
    kw = _token_inputs(1, 8, 5, 2)
    with pytest.raises(ValueError, match=r"B and C must be \(B, L, N\)"):
        ops.selective_scan_tokens(kw["u"], kw["delta"], kw["A"], kw["B"][0], kw["C"])
    with pytest.raises(ValueError, match=r"delta_proj must be \(D, R\)"):
        ops.selective_scan_tokens(kw["u"], kw["low"], kw["A"], kw["B"], kw["C"], delta_proj=kw["proj"].t())


def _conv_reference(x, weight, bias):
    """nn.Conv1d(groups=D, padding=K-1) cropped to the first L outputs, then SiLU, on (B, L, D)."""
    k = weight.shape[-1]
    y = torch.nn.functional.conv1d(x.transpose(1, 2), weight, bias, padding=k - 1, groups=weight.shape[0])
    return torch.nn.functional.silu(y[..., : x.shape[1]]).transpose(1, 2)


@pytest.mark.parametrize("length", [1, 3, 50])  # shorter than the kernel, and several spans
def test_causal_conv1d_silu_equals_conv1d(length, monkeypatch, token_calls):
    monkeypatch.setattr(ops, "_CONV_SPAN", 7)  # span boundaries: a span's first steps read the previous span
    g = torch.Generator().manual_seed(length)
    xz = torch.randn(2, length, 24, generator=g, dtype=F64)
    x = xz[..., :12]  # a strided column half, as in the block
    weight, bias = torch.randn(12, 1, 4, generator=g, dtype=F64), torch.randn(12, generator=g, dtype=F64)
    for b in (bias, None):
        ref = _conv_reference(x, weight, b)
        y = ops.causal_conv1d_silu(x, weight, b)
        assert y.shape == (2, length, 12) and y.is_contiguous()
        assert ((y - ref).abs().max() / ref.abs().max()).item() <= 1e-12
        y32 = ops.causal_conv1d_silu(x.float(), weight.float(), None if b is None else b.float())
        assert ((y32.double() - ref).abs().max() / ref.abs().max()).item() <= 1e-5
    assert token_calls["conv"] == 4


def test_causal_conv1d_silu_gradcheck(monkeypatch):
    monkeypatch.setattr(ops, "_CONV_SPAN", 3)  # 8 steps: 3 spans
    g = torch.Generator().manual_seed(0)
    leaves = [
        torch.randn(2, 8, 5, generator=g, dtype=F64).requires_grad_(True),
        torch.randn(5, 1, 4, generator=g, dtype=F64).requires_grad_(True),
        torch.randn(5, generator=g, dtype=F64).requires_grad_(True),
    ]
    assert torch.autograd.gradcheck(ops.causal_conv1d_silu, leaves, eps=1e-6, atol=1e-9, rtol=1e-7)


def test_softplusf_matches_torch():
    x = np.concatenate([np.linspace(-100, 30, 200001), [-1e-30, 0.0, 1e-30, 19.99, 20.0, 20.01]]).astype(np.float32)
    out = np.empty_like(x)
    nb.softplusf_vector(x, out)
    ref = np.where(x > 20, x.astype(np.float64), np.log1p(np.exp(x.astype(np.float64))))
    ok = ref > 1e-37  # below: float32 denormals
    rel = np.abs(out[ok] - ref[ok]) / ref[ok]
    assert rel.max() <= 3e-7, rel.max()  # a few ulp, as torch's (Sleef) softplus
    special = np.array([np.nan, np.inf, -np.inf], dtype=np.float32)
    out = np.empty_like(special)
    nb.softplusf_vector(special, out)
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == 0


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_tracing_the_mamba_block_uses_the_pytorch_path(calls, token_calls):
    from densekit.models.mamba import Mamba

    torch.manual_seed(0)
    m = Mamba(8).double()
    x = torch.randn(1, 12, 8, dtype=F64)
    with torch.no_grad():  # as export runs (the chunked scan's in-place steps are not traced for autograd)
        want = m(x)  # compiled, token-major
        assert token_calls == {"scan": 1, "conv": 1}
        traced = torch.jit.trace(m, (x,), check_trace=False)
        torch.testing.assert_close(traced(x), want, rtol=1e-10, atol=1e-12)
    assert token_calls == {"scan": 1, "conv": 1} and calls["compiled"] == 0 and calls["torch"] >= 1
