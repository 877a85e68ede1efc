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
