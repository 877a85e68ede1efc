"""``benchmark.py scan``: selective-scan speed on CPU, and LightM-UNet's.

densekit's scan (compiled, numba) vs its chunked PyTorch scan vs mambapy's Blelloch pscan vs the plain
recurrence. All compute the same thing (u, delta, A, B, C, D -> y, as ``selective_scan_ref``), measured side
by side in one run: medians of ``--repeats`` interleaved runs, forward and forward+backward, with ratios and
the largest deviation from the recurrence; state updates per second against the bare compiled loop on one
core (the kernel alone, no layout copies: the single-core bound). The plain recurrence's forward+backward
(~30 s a run) only with ``--naive-backward``.

Then LightM-UNet (unless ``--no-models``): 2D forward at 256^2 (B=1, eval, no grad), one SGD training step
at 128^2 (B=2) and lightm3d's forward at 64^3, with the compiled CPU path (token-major Mamba blocks, fused
kernels) and, side by side, the chunked PyTorch scan (the path taken without numba or under tracing,
selected here as ``DENSEKIT_NUMBA=0`` would: ``--model-torch-repeats`` runs, default 1: it is ~10x
slower), and where the 2D forward's time goes, by op group (one profiled run). mambapy (``pip install
mambapy==1.2.0``) is optional. The default run takes ~1-3 minutes on 2 busy cores.
"""

from __future__ import annotations

import argparse
import time

import torch

from .timing import interleaved_medians, load_average, ratio


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--dim", type=int, default=128, help="channels D (Mamba's d_inner)")
    p.add_argument("--state", type=int, default=16, help="state size N")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--no-naive", action="store_true", help="skip the (slow) plain recurrence")
    p.add_argument("--naive-backward", action="store_true", help="also the plain recurrence's fwd+bwd (~30 s)")
    p.add_argument("--no-models", action="store_true", help="skip LightM-UNet 2D/3D forward and the training step")
    p.add_argument("--models", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old calls
    p.add_argument("--model-repeats", type=int, default=3, help="interleaved runs per LightM-UNet case (compiled)")
    p.add_argument(
        "--model-torch-repeats", type=int, default=1, help="runs per case with the chunked PyTorch scan (0: skip)"
    )


def _mambapy_scan():
    """mambapy's own selective scan (``MambaBlock.selective_scan``: exp/outer products + pscan + C
    contraction); it takes (B, L, D) tensors. None when mambapy is not installed."""
    try:
        from mambapy.mamba import MambaBlock
    except ImportError:
        return None
    return lambda x, delta, A, B, C, D: MambaBlock.selective_scan(None, x, delta, A, B, C, D)


def _no_grad(fn, fargs):
    def run():
        with torch.no_grad():
            fn(*fargs)

    return run


def _forward_backward(fn, fargs):
    leaves = [t.clone().requires_grad_(True) for t in fargs]

    def run():
        for t in leaves:
            t.grad = None
        fn(*leaves).sum().backward()

    return run


def run(args: argparse.Namespace) -> dict[str, float]:
    if args.threads:
        torch.set_num_threads(args.threads)

    from densekit.ops import selective_scan, selective_scan_ref

    g = torch.Generator().manual_seed(0)
    b, d, n, length = args.batch, args.dim, args.state, args.length
    u = torch.randn(b, d, length, generator=g)
    # softplus-range step sizes and Mamba's S4D-real A = -(1..N), as in a trained block
    delta = torch.nn.functional.softplus(torch.randn(b, d, length, generator=g) - 3.0)
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)
    B = torch.randn(b, n, length, generator=g)
    C = torch.randn(b, n, length, generator=g)
    D = torch.ones(d)
    ours_args = (u, delta, A, B, C, D)
    # mambapy layout: x, delta (B, L, D); B, C (B, L, N)
    mp_args = (
        u.transpose(1, 2).contiguous(),
        delta.transpose(1, 2).contiguous(),
        A,
        B.transpose(1, 2).contiguous(),
        C.transpose(1, 2).contiguous(),
        D,
    )

    from densekit import ops

    def chunked(*a):  # the pure-PyTorch fallback, called directly
        return ops._selective_scan_torch(*a, None, None, False)  # a = (u, delta, A, B, C, D)

    impls = {"densekit.ops.selective_scan": (lambda *a: selective_scan(*a), ours_args, False)}
    if ops._compiled() is not None:
        impls["chunked PyTorch scan"] = (chunked, ours_args, False)
    else:
        print("numba is not installed: densekit.ops.selective_scan is the chunked PyTorch scan")
    mp = _mambapy_scan()
    if mp is None:
        print("mambapy is not installed (pip install mambapy==1.2.0): its column is skipped")
    else:
        impls["mambapy pscan"] = (mp, mp_args, True)
    if not args.no_naive:
        impls["naive recurrence"] = (lambda *a: selective_scan_ref(*a), ours_args, False)
    no_backward = set() if args.naive_backward else {"naive recurrence"}

    # first calls in this process: numba loads the kernels from its cache (or compiles them once)
    t0 = time.perf_counter()
    with torch.no_grad():
        selective_scan(*ours_args)
    first_fwd = time.perf_counter() - t0
    t0 = time.perf_counter()
    _forward_backward(selective_scan, ours_args)()
    first_bwd = time.perf_counter() - t0
    print(f"first call in this process: forward {first_fwd:.2f} s, forward+backward {first_bwd:.2f} s")
    with torch.no_grad():
        reference = selective_scan_ref(*ours_args)
    rows, fwd, fwd_bwd = {}, {}, {}
    for name, (fn, fargs, transposed) in impls.items():
        with torch.no_grad():
            y = fn(*fargs)
        y = y.transpose(1, 2) if transposed else y
        rows[name] = {"err": ((y - reference).abs().max() / reference.abs().max()).item()}
        fwd[name] = _no_grad(fn, fargs)
        if name not in no_backward:
            fwd_bwd[name] = _forward_backward(fn, fargs)
        rows[name]["fwd+bwd"] = float("nan")
    for key, fns in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
        for name, t in interleaved_medians(fns, args.repeats).items():
            rows[name][key] = t

    ours = rows["densekit.ops.selective_scan"]
    print(
        f"\nselective scan, B={b} D={d} N={n} L={length}, threads={torch.get_num_threads()}, "
        f"median of {args.repeats} interleaved runs (seconds; ratio = time / densekit's time); "
        f"load {load_average()}"
    )
    print(f"{'implementation':32s} {'fwd':>9s} {'ratio':>7s} {'fwd+bwd':>9s} {'ratio':>7s} {'max rel err':>12s}")
    for name, r in rows.items():
        print(
            f"{name:32s} {r['fwd']:9.4f} {ratio(r['fwd'], ours['fwd']):7.2f} {r['fwd+bwd']:9.4f} "
            f"{ratio(r['fwd+bwd'], ours['fwd+bwd']):7.2f} {r['err']:12.2e}"
        )
    result = {f"{k} {m}": v[m] for k, v in rows.items() for m in ("fwd", "fwd+bwd")}
    updates = b * d * n * length
    bound = _single_core_bound(ours_args, args.repeats) if ops._compiled() is not None else None
    print(f"\nstate updates per second (B*D*N*L = {updates / 1e6:.1f} M per forward):")
    for name, r in rows.items():
        print(f"  {name:32s} {updates / r['fwd'] / 1e6:9.0f} M/s")
    if bound is not None:
        print(
            f"  {'bare compiled loop, 1 core':32s} {updates / bound / 1e6:9.0f} M/s  (the single-core bound; "
            f"densekit fwd = {ours['fwd'] / bound:.2f}x its time at {torch.get_num_threads()} threads)"
        )
        result["bound fwd"] = bound
    if "naive recurrence" in rows:
        print(f"  compiled vs plain recurrence, fwd: {ratio(rows['naive recurrence']['fwd'], ours['fwd']):.1f}x")
    if not args.no_models:
        result.update(_models(args.model_repeats, args.model_torch_repeats))
    return result


def _single_core_bound(fargs, repeats):
    """Seconds of the compiled forward kernel alone on one thread, inputs already in its layout."""
    import numba

    from densekit import ops
    from densekit.ops_numba import scan_forward, set_threads

    u, delta, A, B, C, _ = fargs
    batch, dim, length = u.shape
    b_pc, Bx, gb = ops._bc_layout(B, batch, dim, length)
    c_pc, Cx, gc = ops._bc_layout(C, batch, dim, length)
    W = ops._block_width(batch, dim, dim if b_pc else gb, dim if c_pc else gc, 1)
    uT, dtT = u.transpose(1, 2).contiguous().numpy(), delta.transpose(1, 2).contiguous().numpy()
    AT, yT = A.t().contiguous().numpy(), torch.empty(batch, length, dim).numpy()
    ck = torch.empty(batch, 0, A.shape[1], dim).numpy()
    threads = numba.get_num_threads()
    set_threads(1)
    try:
        t = interleaved_medians(
            {"k": lambda: scan_forward(uT, dtT, AT, Bx.numpy(), b_pc, Cx.numpy(), c_pc, W, 64, yT, ck, False)},
            repeats,
        )["k"]
    finally:
        set_threads(threads)
    return t


def _models(repeats, torch_repeats):
    """LightM-UNet 2D / lightm3d: the compiled CPU path (``repeats`` interleaved runs after a warm-up) and
    the chunked PyTorch scan (``torch_repeats`` runs, no warm-up: it compiles nothing), then the op-group
    breakdown of one compiled 2D forward."""
    import statistics

    import densekit
    from densekit import ops

    torch.manual_seed(0)
    seg = densekit.create_model("seg", backbone="lightm", head="lightm", num_classes=2).eval()
    vol = densekit.create_model("volume", backbone="lightm3d", head="lightm", num_classes=4).eval()
    train = densekit.create_model("seg", backbone="lightm", head="lightm", num_classes=2).train()
    opt = torch.optim.SGD(train.parameters(), lr=1e-3)
    x2, x3 = torch.rand(1, 3, 256, 256), torch.randn(1, 4, 64, 64, 64)
    xt, yt = torch.rand(2, 3, 128, 128), torch.randint(0, 2, (2, 128, 128))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(train(xt), yt).backward()
        opt.step()

    cases = {
        "lightm 2D fwd 256^2 (B=1)": _no_grad(seg, (x2,)),
        "lightm train step 128^2 (B=2)": step,
        "lightm3d fwd 64^3 (B=1)": _no_grad(vol, (x3,)),
    }
    compiled = ops._compiled()

    def with_backend(fn, mod):
        def run():
            saved, ops._numba_mod = ops._numba_mod, mod  # False: as DENSEKIT_NUMBA=0, the PyTorch scan path
            try:
                fn()
            finally:
                ops._numba_mod = saved

        return run

    t = {}
    if compiled is not None:
        t.update({(c, "compiled"): v for c, v in interleaved_medians(cases, repeats).items()})
    torch_fns = {c: with_backend(fn, False) for c, fn in cases.items()}
    for case, fn in torch_fns.items() if torch_repeats > 0 else ():
        times = []
        for _ in range(torch_repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        t[(case, "PyTorch scan")] = statistics.median(times)
    print(
        f"\nLightM-UNet (seconds; compiled: median of {repeats} interleaved runs, PyTorch scan: median of "
        f"{torch_repeats}), threads={torch.get_num_threads()}, load {load_average()}"
    )
    print(f"{'case':32s} {'compiled':>9s} {'PyTorch':>9s} {'speed-up':>9s}")
    for case in cases:
        c, p = t.get((case, "compiled"), float("nan")), t.get((case, "PyTorch scan"), float("nan"))
        print(f"{case:32s} {c:9.3f} {p:9.3f} {ratio(p, c):9.2f}")
    if compiled is not None:
        _breakdown(cases["lightm 2D fwd 256^2 (B=1)"])
    return {f"{case} {backend}": v for (case, backend), v in t.items()}


# Op groups of the breakdown: profiler event names (self time) -> group
_GROUPS = {
    "selective scan (compiled, fused)": ("_TokenScan", "_CompiledScan"),
    "causal conv1d + SiLU (compiled)": ("_CausalConvSilu",),
    "linear layers (mm, addmm)": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"),
    "2-D convolutions": ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::thnn_conv2d"),
    "Layer/GroupNorm": ("aten::native_layer_norm", "aten::native_group_norm", "aten::layer_norm"),
    "copies": ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat"),
    "elementwise": (
        "aten::add",
        "aten::mul",
        "aten::addcmul",
        "aten::silu",
        "aten::softplus",
        "aten::exp",
        "aten::neg",
        "aten::clamp_min_",
        "aten::relu_",
        "aten::sub",
        "aten::div",
        "aten::add_",
    ),  # fmt: skip
    "pooling, upsampling": ("aten::max_pool2d_with_indices", "aten::upsample_bilinear2d"),
}


def _breakdown(fn):
    """Where one (compiled) 2D forward spends its time: self CPU time by op group, one profiled run."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    groups = dict.fromkeys([*_GROUPS, "other"], 0.0)
    lookup = {name: g for g, names in _GROUPS.items() for name in names}
    for e in prof.key_averages():
        groups[lookup.get(e.key, "other")] += e.self_cpu_time_total / 1e3  # ms
    total = sum(groups.values())
    print(f"\nlightm 2D fwd 256^2, where the time goes (one profiled run, {wall:.3f} s wall; self CPU ms):")
    for g, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {g:34s} {ms:8.1f} ms {100 * ms / max(total, 1e-9):5.1f} %")
