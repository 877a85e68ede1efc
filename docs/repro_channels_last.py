"""Heap corruption in the CPU (oneDNN) weight gradient of a strided 1x1 conv2d with a channels_last input.

Environment: torch 2.14.1 (+cu130 wheel, CPU path; oneDNN v3.12.0, MKL 2024.2, GCC 13.3), Python 3.11, Linux
(glibc 2.36), AMD EPYC, 2 cores, AVX-512 with avx512_bf16 (torch.backends.cpu.get_cpu_capability() "AVX512").

What it does: the weight gradient of a 1x1, stride-2, unpadded conv2d, 3 -> 64 channels, of a float32
(8, 3, 128, 128) channels_last input - what autograd runs for a network's first layer when the input needs no
gradient. timm's fastvit_mci0/1/2 (MobileCLIP) stem has one (the 1x1 "scale" branch of its first
MobileOneBlock), so training those models after `model.to(memory_format=torch.channels_last)` dies in backward:

    grad_weight = torch.ops.aten.convolution_backward(
        grad_output,  # (8, 64, 64, 64) channels_last
        x,            # (8, 3, 128, 128) channels_last, strides (49152, 1, 384, 3)
        weight,       # (64, 3, 1, 1), strides (3, 1, 3, 3) as model.to(memory_format=...) leaves them
        [0], [2, 2], [0, 0], [1, 1], False, [0, 0], 1, [False, True, False])[1]

Expected: the weight gradient (equal to a float64 reference up to float32 rounding).
Actual: the process dies - a SIGSEGV, or glibc aborts it (SIGABRT: "corrupted size vs. prev_size",
"malloc(): invalid next size (unsorted)", "corrupted double-linked list", "free(): invalid pointer"). At the
shapes above: every run (3 of 3 in the sweep, 5 of 5 before), within the 5 calls of this script.

Where: gdb stops the SIGSEGV in an OpenMP worker thread, in
    dnnl::impl::cpu::x64::jit_avx512_common_1x1_convolution_bwd_weights_t::execute_backward_weights(...)
    ::{lambda(int, int)#1}
and ONEDNN_VERBOSE=all names the primitive created just before (its exec line is never printed):
    convolution,jit_1x1:avx512_core,backward_weights,src:f32::blocked:acdb::f0 wei:f32:ap:blocked:ABcd16b16a::f0
    bia:undef::undef::: dst:f32::blocked:acdb::f0,...,mb1_ic3oc64_ih128oh64kh1sh2dh0ph0_iw128ow64kw1sw2dw0pw0
(NHWC src / diff_dst, weights padded from 3 to 16 input channels, stride 2: the 1x1 kernel's
reduce-to-unit-stride path is the likely culprit).

When it crashes (`--sweep` reruns this table; each case in 3 fresh processes, plain and with glibc's heap
checks: on glibc >= 2.34 MALLOC_CHECK_=3 acts only with LD_PRELOAD=libc_malloc_debug.so, and then it catches the
overwrite in cases the plain allocator happens not to notice):
  * crashes: 1 <= C_in <= 15 (C_in 1, batch 1 and bfloat16 only under the heap checks); stride 2; H = W >= 80
    (80, 96, 128, 192, 256 crash; 64 never, not even under the heap checks); batch 1 and 8; C_out 16 and 64;
    float32 and bfloat16 (as under torch.autocast("cpu", dtype=torch.bfloat16)); the bias gradient alone too.
  * PyTorch runs the NHWC primitive when the input OR the weight is channels_last, so an NCHW input with
    channels_last-strided weights (a channels_last model fed NCHW images) crashes the same way.
  * no crash (also under the heap checks): input and weight both NCHW; C_in 16, 17, 20, 24, 33, 40; stride 1,
    3 or 4; a 3x3 kernel; the input gradient alone; torch.backends.mkldnn.enabled = False; the same gradient
    computed as a stride-1 1x1 conv of x[:, :, ::2, ::2] (float32 and bfloat16; the workaround densekit applies).
  * not avoided by: ONEDNN_MAX_CPU_ISA=AVX2 (jit_1x1:avx2 crashes the same way), OMP_NUM_THREADS=1 (batch 2
    and 8 still crash), MALLOC_CHECK_=3 (see above).
  * torch.compile (inductor) of a fastvit_mci0 + U-Net network, contiguous model and input, 2 x 3 x 128 x 128,
    aborted the same way ("corrupted size vs. prev_size") in its second training step (1 run; inductor's layout
    optimisation makes conv inputs channels_last); with the workaround above, or with
    torch._inductor.config.layout_optimization = False, 2 steps ran (1 run each). At 64 x 64 it ran.

Run:  python repro_channels_last.py            # the crash, in this process (prints "no crash" otherwise)
      python repro_channels_last.py --sweep    # the conditions above, each case in fresh subprocesses
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import torch

BASE = {
    "n": 8,
    "c_in": 3,
    "c_out": 64,
    "size": 128,
    "kernel": 1,
    "stride": 2,
    "x_nhwc": True,
    "w_nhwc": True,
    "grad_nhwc": True,
    "mask": [False, True, False],
    "dtype": "float32",
    "mkldnn": True,
    "subsampled": False,
}


def nhwc(t: torch.Tensor) -> torch.Tensor:
    """``t`` with channels_last strides, also where ``t.contiguous(memory_format=torch.channels_last)`` would
    keep a size-1 tensor's strides (a (64, 3, 1, 1) weight)."""
    return torch.empty(t.shape, dtype=t.dtype, memory_format=torch.channels_last).copy_(t)


def case(n, c_in, c_out, size, kernel, stride, x_nhwc, w_nhwc, grad_nhwc, mask, dtype, mkldnn, subsampled, calls=5):
    """Run the convolution backward ``calls`` times; returns the max abs error of the weight gradient vs
    float64 (None when it is not computed)."""
    torch.backends.mkldnn.enabled = mkldnn
    dtype = getattr(torch, dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, c_in, size, size, generator=g).to(dtype)
    w = torch.randn(c_out, c_in, kernel, kernel, generator=g).to(dtype)
    out = (size + 2 * (kernel // 2) - kernel) // stride + 1
    gy = torch.randn(n, c_out, out, out, generator=g).to(dtype)
    if x_nhwc:  # (8, 3, 128, 128) strides (49152, 1, 384, 3)
        x = nhwc(x)
    if w_nhwc:  # as after model.to(memory_format=torch.channels_last): (64, 3, 1, 1) strides (3, 1, 3, 3)
        w = nhwc(w)
    if grad_nhwc:
        gy = nhwc(gy)
    pad = [kernel // 2] * 2
    for _ in range(calls):
        if subsampled:  # 1x1, no padding: stride s == stride 1 on x[:, :, ::s, ::s]
            gw = torch.ops.aten.convolution_backward(
                gy, x[:, :, ::stride, ::stride], w, [0], [1, 1], pad, [1, 1], False, [0, 0], 1, mask
            )[1]
        else:
            gw = torch.ops.aten.convolution_backward(gy, x, w, [0], [stride] * 2, pad, [1, 1], False, [0, 0], 1, mask)[
                1
            ]
    if gw is None:
        return None
    ref = torch.nn.grad.conv2d_weight(x.double(), w.shape, gy.double(), stride=stride, padding=pad)
    return float((gw.double() - ref).abs().max() / ref.abs().max())


MALLOC_DEBUG = "/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"


def _crashes(cfg: dict, tries: int, env: dict | None) -> str:
    crashes, how = 0, set()
    for _ in range(tries):
        r = subprocess.run(
            [sys.executable, __file__, "--case", json.dumps(cfg)], capture_output=True, text=True, env=env
        )
        if r.returncode != 0:
            crashes += 1
            sig = signal.Signals(-r.returncode).name if r.returncode < 0 else f"exit {r.returncode}"
            msg = next((ln for ln in r.stderr.splitlines() if "corrupt" in ln or "malloc" in ln or "free" in ln), "")
            how.add(f"{sig} {msg}".strip())
    return f"{crashes}/{tries} {', '.join(sorted(how))}".strip()


def sweep(tries: int = 3) -> None:
    variants = [
        ("as above", {}),
        ("batch 1", {"n": 1}),
        ("C_in 1", {"c_in": 1}),
        ("C_in 2", {"c_in": 2}),
        ("C_in 8", {"c_in": 8}),
        ("C_in 15", {"c_in": 15}),
        ("C_in 16", {"c_in": 16}),
        ("C_in 17", {"c_in": 17}),
        ("C_in 24", {"c_in": 24}),
        ("C_in 40", {"c_in": 40}),
        ("C_out 16", {"c_out": 16}),
        ("stride 1", {"stride": 1}),
        ("stride 3", {"stride": 3}),
        ("stride 4", {"stride": 4}),
        ("kernel 3x3", {"kernel": 3}),
        ("64x64", {"size": 64}),
        ("80x80", {"size": 80}),
        ("256x256", {"size": 256}),
        ("bfloat16", {"dtype": "bfloat16"}),
        ("NCHW weight (strides (3, 1, 1, 1))", {"w_nhwc": False}),
        ("NCHW input", {"x_nhwc": False}),
        ("NCHW input and weight", {"x_nhwc": False, "w_nhwc": False}),
        ("all NCHW", {"x_nhwc": False, "w_nhwc": False, "grad_nhwc": False}),
        ("bias gradient only", {"mask": [False, False, True]}),
        ("input gradient only", {"mask": [True, False, False]}),
        ("torch.backends.mkldnn.enabled=False", {"mkldnn": False}),
        ("stride 1 on x[:, :, ::2, ::2] (workaround)", {"subsampled": True}),
        ("workaround, bfloat16", {"subsampled": True, "dtype": "bfloat16"}),
    ]
    # glibc >= 2.34 reads MALLOC_CHECK_ only with libc_malloc_debug.so preloaded; its checks catch the
    # overwrite in cases where the plain allocator happens not to notice it
    debug = {**os.environ, "LD_PRELOAD": MALLOC_DEBUG, "MALLOC_CHECK_": "3"} if os.path.exists(MALLOC_DEBUG) else None
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}; base case {json.dumps(BASE)}")
    print("| case | crashed | crashed with MALLOC_CHECK_=3 + libc_malloc_debug |\n|---|---|---|")
    for name, change in variants:
        cfg = {**BASE, **change}
        checked = _crashes(cfg, tries, debug) if debug else "n/a"
        print(f"| {name} | {_crashes(cfg, tries, None)} | {checked} |", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--case"]:
        print(case(**json.loads(sys.argv[2])))
    elif sys.argv[1:2] == ["--sweep"]:
        sweep()
    else:
        print(f"torch {torch.__version__}: running the convolution backward (may abort the process) ...", flush=True)
        err = case(**BASE)
        print(f"no crash; relative max error of the weight gradient vs float64: {err:.2e}")
