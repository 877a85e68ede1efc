"""Selective-scan speed on CPU: densekit's chunked scan vs mambapy's Blelloch pscan vs the plain recurrence.

    python scripts/bench_scan.py [--length 4096] [--dim 128] [--state 16] [--batch 1] [--repeats 5]

All three compute the same thing (u, delta, A, B, C, D -> y, as ``selective_scan_ref``), measured
side by side in one run: medians of ``--repeats`` runs, forward and forward+backward, with ratios
and the largest deviation from the recurrence. mambapy (``pip install mambapy==1.2.0``) is optional.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _interleaved_medians(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per function, the functions timed in turn within each repeat, so that a load
    change on a shared machine hits every implementation alike."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


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


def main(argv=None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--dim", type=int, default=128, help="channels D (Mamba's d_inner)")
    p.add_argument("--state", type=int, default=16, help="state size N")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--no-naive", action="store_true", help="skip the (slow) plain recurrence")
    args = p.parse_args(argv)
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

    impls = {"densekit.ops.selective_scan": (lambda *a: selective_scan(*a), ours_args, False)}
    mp = _mambapy_scan()
    if mp is None:
        print("mambapy is not installed (pip install mambapy==1.2.0): its column is skipped")
    else:
        impls["mambapy pscan"] = (mp, mp_args, True)
    if not args.no_naive:
        impls["naive recurrence"] = (lambda *a: selective_scan_ref(*a), ours_args, False)

    with torch.no_grad():
        reference = selective_scan_ref(*ours_args)
    rows, fwd, fwd_bwd = {}, {}, {}
    for name, (fn, fargs, transposed) in impls.items():
        with torch.no_grad():
            y = fn(*fargs)
        y = y.transpose(1, 2) if transposed else y
        rows[name] = {"err": ((y - reference).abs().max() / reference.abs().max()).item()}
        fwd[name] = _no_grad(fn, fargs)
        fwd_bwd[name] = _forward_backward(fn, fargs)
    for key, fns in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
        for name, t in _interleaved_medians(fns, args.repeats).items():
            rows[name][key] = t

    ours = rows["densekit.ops.selective_scan"]
    print(
        f"\nselective scan, B={b} D={d} N={n} L={length}, threads={torch.get_num_threads()}, "
        f"median of {args.repeats} interleaved runs (seconds; ratio = time / densekit's time)"
    )
    print(
        f"{'implementation':32s} {'fwd':>9s} {'ratio':>7s} {'fwd+bwd':>9s} {'ratio':>7s} {'max rel err':>12s}"
    )
    for name, r in rows.items():
        print(
            f"{name:32s} {r['fwd']:9.4f} {r['fwd'] / ours['fwd']:7.2f} {r['fwd+bwd']:9.4f} "
            f"{r['fwd+bwd'] / ours['fwd+bwd']:7.2f} {r['err']:12.2e}"
        )
    return {f"{k} {m}": v[m] for k, v in rows.items() for m in ("fwd", "fwd+bwd")}


if __name__ == "__main__":
    main()
