"""The shared LightningModule: one training/validation step for every task; tasks add loss and metrics.

A task is one class: besides its loss and metrics it carries the facts the rest of densekit asks about
(``name``, ``kind``, ``dims``, batch ``targets``, model ``inputs`` / ``output_name``, ``monitor``, the
``task.model`` keys it accepts) and builds its model and itself from a plain run config. Each class
registers itself in ``TASKS`` where it is defined (``@TASKS.register("seg")``); ``get_task(name)``
looks one up.
"""

from __future__ import annotations

import logging
import math
import types
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torchmetrics import MeanMetric

from ..models import BACKBONES, HEADS, assemble
from ..registry import Registry
from .optim import build_optimizer, make_schedule, param_groups

NONFINITE_POLICIES = ("raise", "skip")
TASKS = Registry("task")
log = logging.getLogger(__name__)
# the batch keys that hold the model's image inputs (flow: two frames); with channels_last=true these 4D
# batches are converted to channels_last, targets are left as they are
CHANNELS_LAST_KEYS = ("image", "image2")


def _subsampled_pointwise_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A strided 1x1 convolution without padding as the stride-1 1x1 convolution of the subsampled input:
    the same numbers, computed without oneDNN's strided 1x1 weight-gradient kernel."""
    sh, sw = self.stride
    return F.conv2d(x[:, :, ::sh, ::sw], self.weight, self.bias)


def guard_strided_pointwise_convs(model: nn.Module) -> list[str]:
    """Avoid a heap corruption in channels_last training on CPU; returns the names of the modules changed.

    oneDNN's 1x1 convolution weight gradient (``jit_1x1`` ``backward_weights``) with a stride-2 channels_last
    (NHWC) input of 2-15 channels writes outside its buffers (torch 2.14.1; docs/repro_channels_last.py): the
    process aborts ("corrupted size vs. prev_size") or segfaults. timm's fastvit stem (mci0/mci1/mci2) has such
    a convolution: the 1x1 scale branch of its first MobileOneBlock (3 -> 64 channels, stride 2). Each plain
    ``nn.Conv2d`` with a 1x1 kernel, stride > 1, no padding, groups=1 and fewer than 16 input channels then
    runs as a stride-1 1x1 convolution of ``x[:, :, ::sh, ::sw]`` (the same result; weights and state dict
    unchanged). ``unguard_strided_pointwise_convs`` undoes it."""
    names = []
    for name, m in model.named_modules():
        if (
            type(m) is nn.Conv2d  # subclasses (timm's Conv2dSame, ...) have their own forward
            and "forward" not in vars(m)
            and m.kernel_size == (1, 1)
            and m.stride != (1, 1)
            and m.groups == 1
            and m.padding in ((0, 0), "valid")
            and m.in_channels < 16
        ):
            m.forward = types.MethodType(_subsampled_pointwise_forward, m)
            names.append(name)
    return names


def unguard_strided_pointwise_convs(model: nn.Module) -> None:
    """Undo ``guard_strided_pointwise_convs``."""
    for m in model.modules():
        if getattr(vars(m).get("forward"), "__func__", None) is _subsampled_pointwise_forward:
            del m.forward


def get_task(name: str) -> type[DenseTask]:
    """The task class registered as ``name`` (a ValueError listing the registered tasks otherwise)."""
    return TASKS.get_or_fail(name)


def _spec_name(spec) -> str | None:
    """The registry name of a backbone/head spec (a name or ``{"name": ...}``); None for a ready module."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        return spec.get("name")
    return None


class DenseTask(pl.LightningModule):
    """Owns a model, its optimiser/schedule and the step; subclasses define ``forward_batch``,
    ``compute_loss``, ``update_metrics`` and a ``val_metrics`` accumulator (read by ``compute_metrics``).

    ``config`` (a plain dict, usually the resolved run config) is stored in the checkpoint's
    hyper-parameters so a model can be rebuilt from a checkpoint without Hydra. Its ``nonfinite`` key
    ("raise", the default, or "skip") says what a NaN/inf training loss does (see ``training_step``). Its
    ``channels_last`` key (auto, the default: on for 2D tasks on the CPU; true; false) trains in the
    channels_last memory format: from ``setup("fit")`` to ``teardown("fit")`` the model's 4D weights and the
    batches' images
    (``CHANNELS_LAST_KEYS``) are channels_last, with ``guard_strided_pointwise_convs`` applied.
    """

    # -- task facts (every registered task sets them) ---------------------------------------------
    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""  # in words, for messages: "segmentation", "optical flow", ...
    dims: ClassVar[int] = 2  # 2: images, 3: volumes
    targets: ClassVar[tuple[str, ...]] = ()  # the batch keys the loss and metrics read
    inputs: ClassVar[tuple[str, ...]] = ("image",)  # the model's inputs (also the ONNX input names)
    output_name: ClassVar[str] = "output"  # what the model returns (the ONNX output name)
    has_classes: ClassVar[bool] = False  # the data's num_classes / class names size the output
    optional_targets: ClassVar[tuple[str, ...]] = ()  # batch keys used when the data has them ("noc")
    model_kwargs: ClassVar[frozenset[str]] = frozenset()  # keys accepted under the config's task.model
    default_in_channels: ClassVar[int] = 3  # example inputs' channels when the config does not say
    monitor = "val/loss"
    monitor_mode = "min"

    @classmethod
    def heads(cls) -> list[str]:
        """The registered heads that serve this task."""
        return HEADS.names(tasks=cls.name)

    @classmethod
    def backbones(cls) -> list[str]:
        """The registered backbones of this task's dims that serve it (no ``tasks`` fact: every task)."""
        return [b for b in BACKBONES.names(dims=cls.dims) if cls.name in BACKBONES.fact(b, "tasks", (cls.name,))]

    @classmethod
    def fits_data(cls, facts) -> bool:
        """Whether a dataset registered with ``facts`` (``DATASETS.facts(name)``) has targets for this task:
        its ``tasks`` fact names it. A new task reading another task's data overrides this (and ``heads``)
        in its own module."""
        return cls.name in tuple(facts.get("tasks") or ())

    @classmethod
    def check_choices(cls, backbone: str, head: str) -> None:
        """A ValueError, naming the valid options, when ``backbone`` or ``head`` does not fit this task."""
        heads = cls.heads()
        if head not in heads:
            raise ValueError(f"head={head} does not fit task={cls.name}; valid heads: {heads}")
        BACKBONES.get_or_fail(backbone)  # an unknown name: the registry's message lists the backbones
        dims = BACKBONES.fact(backbone, "dims", 2)
        if dims != cls.dims:
            raise ValueError(f"backbone={backbone} is {dims}D but task={cls.name} needs a {cls.dims}D backbone")
        if backbone not in cls.backbones():
            raise ValueError(f"backbone={backbone} does not fit task={cls.name}; valid backbones: {cls.backbones()}")

    @classmethod
    def check_model_kwargs(cls, kwargs: dict) -> None:
        unknown = set(kwargs) - cls.model_kwargs
        if unknown:
            raise TypeError(
                f"unexpected arguments for task {cls.name!r}: {sorted(unknown)}; expected {sorted(cls.model_kwargs)}"
            )

    @classmethod
    def build_model(cls, *, backbone, head, num_classes: int | None = None, **model_kwargs) -> nn.Module:
        """This task's network from a backbone and a head (each a name, ``{"name": ..., **params}`` or a
        ready module); ``model_kwargs``: the config's ``task.model`` keys."""
        cls.check_model_kwargs(model_kwargs)
        bb_name = _spec_name(backbone)
        if isinstance(backbone, dict) and "dims" in backbone:
            dims = backbone["dims"]
        elif bb_name in BACKBONES:
            dims = BACKBONES.fact(bb_name, "dims", 2)
        else:  # a ready module (or an unknown name: assemble's message lists the backbones)
            dims = getattr(backbone, "dims", None)
        if dims is not None and int(dims) != cls.dims:
            raise ValueError(
                f"task {cls.name!r} needs a {cls.dims}D backbone; {bb_name or type(backbone).__name__} is {int(dims)}D"
            )
        head_name = _spec_name(head)
        if head_name is not None and head_name not in cls.heads():
            raise ValueError(f"task {cls.name!r} needs head {' or '.join(map(repr, cls.heads()))}, got {head!r}")
        return assemble(backbone, head, cls.out_channels(num_classes), cls.output_module(**model_kwargs))

    @classmethod
    def out_channels(cls, num_classes: int | None) -> int:
        """The network's output channels (class-free tasks override it)."""
        if not num_classes or num_classes < 2:
            raise ValueError(f"{cls.name} needs num_classes >= 2, got {num_classes}")
        return int(num_classes)

    @classmethod
    def output_module(cls, **model_kwargs) -> nn.Module | None:
        """The activation applied to the network's full-resolution output (None: raw logits / values)."""
        return None

    @classmethod
    def model_config(cls, config: dict, pretrained: bool | None = False) -> dict:
        """``build_model``'s keyword arguments from a plain run config. ``pretrained`` replaces the
        backbone's own setting (False when the weights come from a checkpoint); None keeps the config's."""
        backbone = dict(config["backbone"])
        if pretrained is not None:
            backbone["pretrained"] = pretrained
        kwargs = dict((config.get("task") or {}).get("model") or {})
        if cls.has_classes:
            kwargs["num_classes"] = (config.get("data") or {}).get("num_classes")
        return {"backbone": backbone, "head": dict(config["head"]), **kwargs}

    @classmethod
    def task_kwargs(cls, config: dict, class_names=None, with_noc: bool = False) -> dict:
        """The task-specific constructor arguments from a plain run config (subclasses add theirs)."""
        return {"loss": dict((config.get("task") or {}).get("loss") or {})}

    @classmethod
    def from_config(
        cls, config: dict, model: nn.Module | None = None, class_names=None, with_noc: bool = False
    ) -> DenseTask:
        """The task module a plain run config describes, around ``model`` (default: built from the config,
        with the backbone's configured ``pretrained``). ``class_names``: what the data calls its classes;
        ``with_noc``: the validation data marks non-occluded pixels (flow)."""
        if model is None:
            model = cls.build_model(**cls.model_config(config, pretrained=None))
        kwargs = cls.task_kwargs(config, class_names=class_names, with_noc=with_noc)
        return cls(model, **kwargs, optim=dict(config.get("optim") or {}), config=config)

    @classmethod
    def example_inputs(
        cls,
        batch: int = 1,
        size: tuple[int, ...] = (64, 64),
        in_channels: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Random inputs in [0, 1], one per ``inputs`` name: (B, C, H, W) images, (B, C, D, H, W) volumes."""
        if len(size) != cls.dims:
            raise ValueError(f"task {cls.name!r} takes {cls.dims}D inputs; size {tuple(size)} has {len(size)} axes")
        channels = int(in_channels or cls.default_in_channels)
        return tuple(torch.rand(batch, channels, *size, generator=generator) for _ in cls.inputs)

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
        # channels_last training (conf/train.yaml): the model is converted for fit only (setup -> teardown)
        channels_last = (config or {}).get("channels_last", "auto")
        if channels_last is None:
            channels_last = False
        if channels_last not in (True, False, "auto"):
            raise ValueError(f"channels_last={channels_last!r}: expected auto, true or false")
        if channels_last is True and self.dims != 2:
            raise ValueError(
                f"channels_last=true: task {self.name!r} trains on {self.dims + 2}D volumes; channels_last applies "
                f"to 2D image tasks (4D batches) only: use channels_last=auto or false"
            )
        self.channels_last = channels_last
        self._channels_last_active = False
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

    # -- channels_last training ---------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # before the strategy moves (and DDP wraps) the model and the optimiser is made
        if stage == "fit":
            self._enter_channels_last()

    def on_fit_start(self) -> None:
        self._enter_channels_last()  # a no-op after setup; covers a subclass whose setup skips super()

    def teardown(self, stage: str) -> None:
        if stage == "fit" and self._channels_last_active:
            unguard_strided_pointwise_convs(self.model)
            self.model.to(memory_format=torch.contiguous_format)
            self._channels_last_active = False

    def _channels_last_wanted(self) -> bool:
        """true/false as set; auto: on for 2D tasks training on the CPU (0.70-0.90x the contiguous train
        step for every 2D backbone and the flow model, same numbers: docs/speed.md), off for volumes and
        on GPUs (not measured there)."""
        if self.channels_last != "auto":
            return bool(self.channels_last)
        if self.dims != 2:
            return False
        trainer = self._trainer  # None outside a Trainer (a bare setup call): the module's own device
        device = trainer.strategy.root_device if trainer is not None else self.device
        return device.type == "cpu"

    def _enter_channels_last(self) -> None:
        if self._channels_last_active or not self._channels_last_wanted():
            return
        self.model.to(memory_format=torch.channels_last)
        guarded = guard_strided_pointwise_convs(self.model)
        self._channels_last_active = True
        if guarded:
            log.info(
                "channels_last: %d strided 1x1 convolution(s) run on the subsampled input (oneDNN workaround, "
                "docs/repro_channels_last.py): %s",
                len(guarded),
                ", ".join(guarded),
            )

    def _channels_last_batch(self, batch):
        """The batch's 4D images as channels_last while channels_last training is on (in the step, not in
        ``on_after_batch_transfer``: Lightning warns on every run when a module overrides that hook beside a
        datamodule)."""
        if self._channels_last_active and isinstance(batch, dict):
            for key in CHANNELS_LAST_KEYS:
                x = batch.get(key)
                if torch.is_tensor(x) and x.dim() == 4 and x.is_floating_point():
                    batch[key] = x.contiguous(memory_format=torch.channels_last)
        return batch

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
        batch = self._channels_last_batch(batch)
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
                    f"(nonfinite=skip; {self.skipped_nonfinite} skipped so far)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            self.log("train/skipped_nonfinite", float(self.skipped_nonfinite), batch_size=batch["image"].shape[0])
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
        batch = self._channels_last_batch(batch)
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
        opt = build_optimizer(self, cfg)  # decay / no-decay groups, backbone_lr_mult (tasks/optim.py)
        schedule = cfg.get("scheduler", "cosine")
        if schedule in (None, "none"):
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        lr_lambda = make_schedule(
            schedule, total, cfg.get("warmup_steps", 0), cfg.get("min_lr_ratio", 0.0), cfg.get("power", 0.9)
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # which densekit wrote it: a reader of another version says so (densekit.builder.check_version)
        from .. import __version__

        checkpoint["densekit_version"] = __version__

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # A training state saved with other parameter groups (before the no-decay group existed, or with
        # another optim.no_decay) cannot restore its optimiser moments: say so instead of torch's message.
        saved = checkpoint.get("optimizer_states") or []
        if not saved:
            return
        have = len(saved[0].get("param_groups") or [])
        want = len(param_groups(self, self.optim_cfg, 1.0, 1.0))
        if have and have != want:
            raise ValueError(
                f"this checkpoint's optimiser state has {have} parameter group(s) but this run makes {want} "
                f"(optim.no_decay={self.optim_cfg.get('no_decay', True)}): resume with the optim settings it "
                f"was trained with ({'optim.no_decay=false' if have == 1 else 'optim.no_decay=true'}), or start a "
                f"new run from its weights with init_from=..."
            )


__all__ = [
    "CHANNELS_LAST_KEYS",
    "NONFINITE_POLICIES",
    "TASKS",
    "DenseTask",
    "get_task",
    "guard_strided_pointwise_convs",
    "make_schedule",
    "unguard_strided_pointwise_convs",
]
