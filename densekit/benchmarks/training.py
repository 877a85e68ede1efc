"""``benchmark.py train``: our Lightning training loop vs a bare PyTorch loop over the same model and data.

Images/s of the real training loop (the Hydra-composed config, densekit's builders, a ``pl.Trainer`` with
logger=False, no checkpointing, no validation, progress bar off) vs a bare PyTorch loop over the same model,
data loader, batch, optimiser and LR schedule (the task's own ``configure_optimizers``) and gradient
clipping. The two run in alternating rounds (warm-up steps of each round discarded) so machine noise hits
both alike; a step is the time from the end of one step to the end of the next (data fetch included). Data
wait = the part spent getting the next batch (bare: in ``next(iterator)``; Lightning: between
``on_train_batch_end`` and the next ``on_train_batch_start``, which also holds Lightning's between-step
hooks). The overhead is Lightning's step time over the bare loop's, minus 1.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch

from .timing import ratio

# the repository's conf/ (densekit is installed editable from its checkout)
CONF = Path(__file__).resolve().parents[2] / "conf"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="seg")
    p.add_argument("--backbone", default="mobilenetv3_large")
    p.add_argument("--head", default="lraspp")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=30, help="timed steps per loop (over all rounds)")
    p.add_argument("--rounds", type=int, default=3, help="alternations Lightning / bare")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of every round")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: the config's threads, as train.py)"
    )
    p.add_argument("--workers", type=int, default=None, help="data.num_workers (default: the data config's)")
    p.add_argument("--config-dir", type=Path, default=CONF, help="the Hydra config tree (default: conf/)")
    p.add_argument("overrides", nargs="*", help="more Hydra overrides, e.g. trainer.precision=bf16-mixed")


def task_optimizer(module, total_steps: int):
    """(optimizer, per-step LR scheduler or None) exactly as ``module.configure_optimizers`` builds them for
    a run of ``total_steps`` optimiser steps, without a Trainer (the bare loop's optimiser)."""
    previous = getattr(module, "_trainer", None)
    module.trainer = SimpleNamespace(estimated_stepping_batches=total_steps)  # all configure_optimizers asks
    try:
        out = module.configure_optimizers()
    finally:
        module.trainer = previous
    if isinstance(out, torch.optim.Optimizer):
        return out, None
    sched = out["lr_scheduler"]
    if sched.get("interval", "epoch") != "step":
        raise ValueError(f"the bare loop steps the scheduler per batch, got interval={sched.get('interval')!r}")
    return out["optimizer"], sched["scheduler"]


def build_run(args: argparse.Namespace, n_round: int):
    """(config, datamodule, task) of the benchmarked run, composed and built as train.py does, with one
    epoch long enough for a round of ``n_round`` steps."""
    from hydra import compose, initialize_config_dir

    from densekit.builder import datamodule_from_config, task_from_config
    from densekit.datacheck import check_data

    overrides = [
        f"task={args.task}",
        f"backbone={args.backbone}",
        f"head={args.head}",
        "backbone.pretrained=false",
        f"data.size=[{args.size},{args.size}]",
        f"data.batch_size={args.batch}",
        f"data.train_length={(n_round + 1) * args.batch}",  # one epoch covers a round
        *([f"data.num_workers={args.workers}"] if args.workers is not None else []),
        *args.overrides,
    ]
    with initialize_config_dir(config_dir=str(Path(args.config_dir).resolve()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    import pytorch_lightning as pl

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = datamodule_from_config(cfg)
    names = check_data(cfg, datamodule)
    return cfg, datamodule, task_from_config(cfg, names).train()


def run(args: argparse.Namespace) -> dict:
    import pytorch_lightning as pl

    from densekit.data.datamodule import resolve_threads

    per_round = max(1, -(-args.steps // args.rounds))  # ceil
    n_round = args.warmup + per_round
    first = max(1, args.warmup)  # step i is timed from the end of step i-1: step 0 never is
    cfg, datamodule, module = build_run(args, n_round)
    threads = args.threads or resolve_threads(cfg.get("threads", "auto"), datamodule.num_workers)
    torch.set_num_threads(threads)
    trainer_cfg = cfg.trainer
    clip = trainer_cfg.get("gradient_clip_val")

    class StepTimer(pl.Callback):
        def __init__(self):
            self.starts, self.ends = [], []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.starts.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.ends.append(time.perf_counter())

    def lightning_round() -> tuple[list[float], list[float]]:
        timer = StepTimer()
        trainer = pl.Trainer(
            accelerator=trainer_cfg.accelerator,
            devices=1,
            precision=trainer_cfg.precision,
            max_steps=n_round,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            gradient_clip_val=clip,
            use_distributed_sampler=False,
            callbacks=[timer],
        )
        trainer.fit(module, datamodule=datamodule)
        ends, starts = timer.ends, timer.starts
        keep = range(first, len(ends))
        return [ends[i] - ends[i - 1] for i in keep], [starts[i] - ends[i - 1] for i in keep]

    def bare_round() -> tuple[list[float], list[float]]:
        opt, sched = task_optimizer(module, n_round)
        params = [q for group in opt.param_groups for q in group["params"]]
        autocast = "bf16" in str(trainer_cfg.precision) and "mixed" in str(trainer_cfg.precision)
        steps, waits = [], []
        it = iter(datamodule.train_dataloader())
        prev = time.perf_counter()
        for i in range(n_round):
            t0 = time.perf_counter()
            batch = next(it)
            t1 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = module.compute_loss(module.forward_batch(batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            if sched is not None:
                sched.step()
            end = time.perf_counter()
            if i >= first:
                steps.append(end - prev)
                waits.append(t1 - t0)
            prev = end
        return steps, waits

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # no per-round Trainer banners
    times = {"lightning": ([], []), "bare": ([], [])}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
        for r in range(args.rounds):
            order = ("lightning", "bare") if r % 2 == 0 else ("bare", "lightning")
            for name in order:
                s, w = lightning_round() if name == "lightning" else bare_round()
                times[name][0].extend(s)
                times[name][1].extend(w)
    rows = {}
    for name, (steps, waits) in times.items():
        step = statistics.median(steps)
        rows[name] = {
            "step_ms": step * 1000,
            "images_per_s": args.batch / step,
            "data_wait_ms": statistics.median(waits) * 1000,
            "data_wait_frac": sum(waits) / sum(steps),
            "n": len(steps),
        }
    overhead = ratio(rows["lightning"]["step_ms"], rows["bare"]["step_ms"]) - 1
    print(
        f"\ntraining throughput: task={args.task} {args.backbone}+{args.head} at {args.size}x{args.size}, "
        f"batch {args.batch}, precision={trainer_cfg.precision}, data.num_workers={cfg.data.num_workers}, "
        f"{threads} thread(s); {args.rounds} alternating rounds, medians of "
        f"{rows['bare']['n']} steps per loop after {args.warmup} warm-up steps per round"
    )
    print("| loop | step (ms) | images/s | data wait (ms) | data wait (% of step time) |")
    print("|---|---|---|---|---|")
    labels = {"lightning": "densekit (Lightning Trainer)", "bare": "bare PyTorch loop"}
    for name, row in rows.items():
        print(
            f"| {labels[name]} | {row['step_ms']:.1f} | {row['images_per_s']:.2f} | "
            f"{row['data_wait_ms']:.1f} | {100 * row['data_wait_frac']:.1f} |"
        )
    print(f"Lightning overhead: {100 * overhead:+.1f} % of the bare loop's step time (goal <= 3 %)")
    return {"rows": rows, "overhead": overhead, "threads": threads, "workers": datamodule.num_workers}
