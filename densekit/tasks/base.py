"""The shared LightningModule: one training/validation step for every task; tasks add loss and metrics."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import nn
from torchmetrics import MeanMetric

NONFINITE_POLICIES = ("raise", "skip")
log = logging.getLogger(__name__)


class DenseTask(pl.LightningModule):
    """Owns a model, its optimiser/schedule and the step; subclasses define ``forward_batch``,
    ``compute_loss``, ``update_metrics`` and a ``val_metrics`` accumulator (read by ``compute_metrics``).

    ``config`` (a plain dict, usually the resolved run config) is stored in the checkpoint's
    hyper-parameters so a model can be rebuilt from a checkpoint without Hydra. Its ``nonfinite`` key
    ("raise", the default, or "skip") says what a NaN/inf training loss does (see ``training_step``).
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(self, model: nn.Module, optim: dict | None = None, config: dict | None = None):
        super().__init__()
        self.model = model
        self.optim_cfg = dict(optim or {})
        self.save_hyperparameters({"config": config or {}, "optim": self.optim_cfg})
        # val/loss as a sample-weighted torchmetrics mean: it syncs float sums over processes, so unevenly
        # sharded validation (densekit's unpadded sampler) gives the one-process value. Lightning's own
        # mean reduction (self.log(..., sync_dist=True)) averages an integer sample count and truncates it.
        self.val_loss_mean = MeanMetric()
        # What a non-finite training loss does: "raise" stops the run (FloatingPointError naming the step);
        # "skip" drops that step (no backward, no weight update), counts it and logs the count.
        self.nonfinite = str((config or {}).get("nonfinite") or "raise")
        if self.nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite={self.nonfinite!r}: expected one of {list(NONFINITE_POLICIES)}")
        self.skipped_nonfinite = 0
        # what the run should say loudly at its end (metrics computed over nothing, mostly-ignore data):
        # each text once, in order; logged as a warning when first added (``run_warning``)
        self.run_warnings: list[str] = []

    def run_warning(self, text: str) -> None:
        """Log ``text`` as a warning the first time it is raised and keep it in ``run_warnings``."""
        if text not in self.run_warnings:
            self.run_warnings.append(text)
            log.warning(text)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(*inputs)

    # -- per-task hooks -------------------------------------------------------------------------
    def forward_batch(self, batch: dict) -> torch.Tensor:
        return self.model(batch["image"])

    def compute_loss(self, pred, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def update_metrics(self, pred, batch: dict) -> None:
        raise NotImplementedError

    def compute_metrics(self) -> dict[str, float]:
        """The epoch's validation metrics from ``self.val_metrics`` (a torchmetrics accumulator every task
        sets), then reset for the next epoch."""
        out = self.val_metrics.compute()
        self.val_metrics.reset()
        return out

    def make_panels(self, pred, batch: dict) -> list[np.ndarray]:
        """Pictures of a few validation predictions (uint8 HWC); none by default."""
        return []

    num_val_images = 4

    # -- shared step ----------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        pred = self.forward_batch(batch)
        loss = self.compute_loss(pred, batch)
        bad = not bool(torch.isfinite(loss))
        if self.nonfinite == "skip" and self.trainer.world_size > 1:
            # all processes skip together: a process that skipped backward alone would hang DDP's all-reduce
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad and self.nonfinite == "skip":
            self.skipped_nonfinite += 1
            if self.skipped_nonfinite == 1 or self.skipped_nonfinite % 100 == 0:
                warnings.warn(
                    f"non-finite training loss ({loss.item()}) at step {self.global_step}: step skipped "
                    f"(nonfinite=skip; {self.skipped_nonfinite} skipped so far)", RuntimeWarning, stacklevel=2
                )
            self.log("train/skipped_nonfinite", float(self.skipped_nonfinite),
                     batch_size=batch["image"].shape[0])
            return None  # Lightning then runs no backward, and the optimiser finds no gradients to apply
        if bad:
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step}; stopping before any "
                f"checkpoint of these weights is written. Lower optim.lr, enable trainer.gradient_clip_val, "
                f"or set nonfinite=skip to drop such steps."
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        pred = self.forward_batch(batch)
        loss = self.compute_loss(pred, batch)
        self.val_loss_mean.update(loss.detach(), weight=batch["image"].shape[0])
        self.log("val/loss", self.val_loss_mean, prog_bar=False, on_step=False, on_epoch=True)
        self.update_metrics(pred, batch)
        if batch_idx == 0 and self.num_val_images and not self.trainer.sanity_checking:
            self._val_panels = self.make_panels(pred, batch)[: self.num_val_images]

    def on_validation_epoch_end(self) -> None:
        metrics = self.compute_metrics()
        finite = {f"val/{k}": v for k, v in metrics.items() if not math.isnan(v)}
        # the monitored score is logged even when NaN (computed over nothing): the checkpoint callback then
        # ranks it worst instead of failing on a missing key
        headline = {k: v for k, v in ((f"val/{k}", v) for k, v in metrics.items()) if k == self.monitor}
        self.log_dict(headline, prog_bar=True)
        self.log_dict({k: v for k, v in finite.items() if k not in headline}, prog_bar=False)
        panels = getattr(self, "_val_panels", None)
        if panels:
            self.log_images("val/examples", panels)
            self._val_panels = None

    def log_images(self, key: str, images: list[np.ndarray]) -> None:
        """Send pictures to the logger that can show them; otherwise save PNGs in the run directory."""
        if self.trainer.global_rank != 0:
            return
        logger = self.logger
        step = self.global_step
        if isinstance(logger, pl.loggers.WandbLogger):
            logger.log_image(key=key, images=list(images), step=step)
        elif isinstance(logger, pl.loggers.TensorBoardLogger):
            for i, img in enumerate(images):
                logger.experiment.add_image(f"{key}/{i}", img, step, dataformats="HWC")
        else:
            out = Path(self.trainer.default_root_dir) / key.replace("/", "_")
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate(images, axis=0)).save(out / f"step{step:06d}.png")

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.optim_cfg
        name = cfg.get("name", "adamw")
        params = [p for p in self.parameters() if p.requires_grad]
        if name == "adamw":
            opt = torch.optim.AdamW(
                params, lr=cfg.get("lr", 1e-3), weight_decay=cfg.get("weight_decay", 0.01),
                betas=tuple(cfg.get("betas", (0.9, 0.999))),
            )
        elif name == "sgd":
            opt = torch.optim.SGD(
                params, lr=cfg.get("lr", 0.01), momentum=cfg.get("momentum", 0.9),
                weight_decay=cfg.get("weight_decay", 1e-4), nesterov=cfg.get("nesterov", False),
            )
        else:
            raise ValueError(f"unknown optimizer {name!r}; expected 'adamw' or 'sgd'")
        schedule = cfg.get("scheduler", "cosine")
        if schedule in (None, "none"):
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        lr_lambda = make_schedule(schedule, total, cfg.get("warmup_steps", 0), cfg.get("min_lr_ratio", 0.0),
                                  cfg.get("power", 0.9))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def make_schedule(kind: str, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0, power: float = 0.9):
    """Per-step LR multiplier: linear warm-up, then cosine or poly decay to ``min_ratio``."""
    if kind not in ("cosine", "poly"):
        raise ValueError(f"unknown scheduler {kind!r}; expected 'cosine', 'poly' or 'none'")
    warmup_steps = min(int(warmup_steps), total_steps - 1) if total_steps > 1 else 0

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        decay = 0.5 * (1 + math.cos(math.pi * t)) if kind == "cosine" else (1 - t) ** power
        return min_ratio + (1 - min_ratio) * decay

    return factor
