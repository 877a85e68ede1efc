"""``benchmark.py settings``: which speed settings are safe, and which are fast, per backbone.

Per backbone (task seg, head ``--head``, random init, 4 classes): one training step (forward, cross-entropy,
backward, AdamW step; ``--batch`` images of ``--size``²) and one inference forward (one image of
``--forward-size``², ``torch.inference_mode``), under each setting:

* ``fp32``: float32, contiguous (NCHW) tensors - the reference of the ratios;
* ``bf16``: ``torch.autocast("cpu", dtype=torch.bfloat16)`` around forward and loss (what
  ``trainer.precision=bf16-mixed`` does);
* ``cl``: channels_last model and input (what ``channels_last=true`` does, including
  ``densekit.tasks.base.guard_strided_pointwise_convs``; ``--no-guard`` measures plain channels_last, which
  aborts for the MCi backbones: docs/repro_channels_last.py);
* ``cl+bf16``: both.

Each (backbone, setting) runs in a fresh interpreter (``python -m densekit.benchmarks.memory``, as
``memory.in_fresh_process``), so a configuration that kills its process is reported as "aborts" (with the
signal and glibc's message) and the benchmark goes on. Interleaved: ``--repeats`` rounds, each starting one
process per configuration in turn; a process times ``--inner`` calls of the step and of the forward after one
untimed warm-up each and reports their medians; the table gives the median over the rounds and the ratio to
``fp32`` of the same backbone (below 1: faster). The default (one round, about 3.5 minutes on 2 cores) is a
quick look; quote ``--repeats 3`` (about 10 minutes), whose rounds spread a load change over every setting.
``--threads`` sets torch's intra-op threads of the processes
(default 1: on a shared 2-core machine a 2-thread step was 5-50x slower and erratic, its threads waiting for
a core another process holds; 0 leaves torch's default).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys

from .timing import load_average, median_time, ratio

SETTINGS = {"fp32": (False, False), "bf16": (False, True), "cl": (True, False), "cl+bf16": (True, True)}
BACKBONES = ["mobilenetv3_large", "mci0", "mci1", "mci2", "mobilesam"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backbones", nargs="+", default=BACKBONES, help="registered 2D backbones (lightm works but is slow)"
    )
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--head", default="lraspp")
    p.add_argument("--size", type=int, default=128, help="training crop (pixels, square)")
    p.add_argument("--batch", type=int, default=8, help="training batch size")
    p.add_argument("--forward-size", type=int, default=256, help="inference input (pixels, square; batch 1)")
    p.add_argument(
        "--repeats", type=int, default=1, help="rounds of fresh processes, interleaved (median); 3 for numbers to quote"
    )
    p.add_argument("--inner", type=int, default=2, help="timed calls per process after one warm-up (median)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads per process (0: torch's default, one per core). Default 1: on a shared machine "
        "multi-threaded steps mostly wait for a busy core, which hides the differences between the settings",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per process")
    p.add_argument("--no-guard", action="store_true", help="channels_last without the oneDNN workaround")


def measure(cfg: dict) -> dict:
    """One configuration, timed in this process: ``{"step_ms", "forward_ms", "loss"}`` (median ms of
    ``cfg["inner"]`` calls after one warm-up; ``loss``: the first step's training loss). Keys of ``cfg``:
    backbone, setting, head, size, batch, forward_size, inner, threads, guard."""
    import torch
    import torch.nn.functional as F

    from ..tasks import get_task
    from ..tasks.base import guard_strided_pointwise_convs

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    channels_last, bf16 = SETTINGS[cfg["setting"]]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    classes = 4
    model = get_task("seg").build_model(
        backbone={"name": cfg["backbone"], "pretrained": False},
        head={"name": cfg.get("head", "lraspp")},
        num_classes=classes,
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        if cfg.get("guard", True):
            guard_strided_pointwise_convs(model)
    g = torch.Generator().manual_seed(0)
    n, size = int(cfg["batch"]), int(cfg["size"])
    x = torch.rand(n, 3, size, size, generator=g).contiguous(memory_format=fmt)
    target = torch.randint(0, classes, (n, size, size), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = []

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def step():
        with autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))

    inner = max(1, int(cfg.get("inner", 2)))
    model.train()
    step_s = median_time(step, inner, warmup=1)
    fs = int(cfg["forward_size"])
    xf = torch.rand(1, 3, fs, fs, generator=g).contiguous(memory_format=fmt)
    model.eval()

    def forward():
        with torch.inference_mode(), autocast():
            model(xf)

    forward_s = median_time(forward, inner, warmup=1)
    return {"step_ms": step_s * 1000, "forward_ms": forward_s * 1000, "loss": losses[0]}


def run_configuration(cfg: dict, timeout: float | None = None) -> dict | str:
    """``measure(cfg)`` in a new interpreter: its result, or what ended the process, as text ("aborts
    (SIGABRT: corrupted size vs. prev_size)", "timeout", "fails: <last line of stderr>")."""
    cmd = [sys.executable, "-m", "densekit.benchmarks.memory", f"{__name__}:measure", json.dumps(cfg)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return f"timeout (> {timeout:.0f} s)"
    if out.returncode == 0:
        return json.loads(out.stdout.strip().splitlines()[-1])
    lines = [ln.strip() for ln in out.stderr.splitlines() if ln.strip()]
    if out.returncode < 0 or out.returncode in (134, 139):  # a signal (134/139: through a shell)
        code = -out.returncode if out.returncode < 0 else out.returncode - 128
        try:
            name = signal.Signals(code).name
        except ValueError:
            name = f"signal {code}"
        glibc = next((ln for ln in lines if "corrupt" in ln or "malloc" in ln or "free()" in ln), "")
        return f"aborts ({name}{': ' + glibc if glibc else ''})"
    return f"fails: {lines[-1] if lines else f'exit {out.returncode}'}"


def build_rows(samples: dict[tuple[str, str], list]) -> list[dict]:
    """Table rows from ``samples``: (backbone, setting) -> one ``measure`` result (dict) or failure text per
    round. A row: backbone, setting, step_ms, forward_ms (medians over the rounds that ran; NaN if none did),
    step_ratio / forward_ratio (to the backbone's fp32 row), loss (first round's), status ("ok", or the
    failure text with how many rounds it ended)."""
    rows = []
    for (backbone, setting), runs in samples.items():
        ok = [r for r in runs if isinstance(r, dict)]
        failed = [r for r in runs if not isinstance(r, dict)]
        row = {"backbone": backbone, "setting": setting}
        for key in ("step_ms", "forward_ms"):
            row[key] = statistics.median(r[key] for r in ok) if ok else math.nan
        row["loss"] = ok[0]["loss"] if ok else math.nan
        row["status"] = "ok" if not failed else f"{failed[0]} in {len(failed)}/{len(runs)} runs"
        rows.append(row)
    for row in rows:
        ref = next((r for r in rows if r["backbone"] == row["backbone"] and r["setting"] == "fp32"), None)
        for key in ("step", "forward"):
            row[f"{key}_ratio"] = ratio(row[f"{key}_ms"], ref[f"{key}_ms"]) if ref else math.nan
    return rows


def _cell(ms: float, r: float) -> str:
    if math.isnan(ms):
        return "- | -"
    return f"{ms:.0f} | {'-' if math.isnan(r) else f'{r:.2f}x'}"


def format_table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"\ntrain step: batch {args.batch} x 3 x {args.size}², forward + backward + AdamW; forward: 1 x 3 x "
        f"{args.forward_size}², inference; head {args.head}; median of {args.repeats} fresh process(es) x "
        f"{args.inner} call(s); {args.threads or 'default'} thread(s); ratio: to fp32 of the same backbone (< 1 "
        f"faster); load average {load_average()}",
        "",
        "| backbone | setting | train step (ms) | x fp32 | forward (ms) | x fp32 | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backbone']} | {r['setting']} | {_cell(r['step_ms'], r['step_ratio'])} | "
            f"{_cell(r['forward_ms'], r['forward_ratio'])} | {r['status']} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[dict]:
    settings = list(args.settings)
    if "fp32" not in settings:
        settings.insert(0, "fp32")  # the reference of the ratios
    configs = [(b, s) for b in args.backbones for s in settings]
    samples: dict[tuple[str, str], list] = {c: [] for c in configs}
    for _ in range(max(1, args.repeats)):
        for backbone, setting in configs:  # interleaved: every configuration once per round
            cfg = {
                "backbone": backbone,
                "setting": setting,
                "head": args.head,
                "size": args.size,
                "batch": args.batch,
                "forward_size": args.forward_size,
                "inner": args.inner,
                "threads": args.threads,
                "guard": not args.no_guard,
            }
            samples[(backbone, setting)].append(run_configuration(cfg, timeout=args.timeout))
    rows = build_rows(samples)
    print(format_table(rows, args), flush=True)
    return rows
