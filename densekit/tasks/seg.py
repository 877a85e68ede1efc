"""Semantic segmentation: cross-entropy (+ optional Dice), confusion-matrix metrics (mIoU, accuracy, per class).

Validation also says what its scores were computed over (``check_counts``): no labelled pixel at all (the
scores are NaN, so never a perfect 1.0 over nothing), no labelled foreground (every labelled pixel is
class 0), or more than half of all pixels ignored -- each a warning in the log and in ``run_warnings``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..losses import seg_loss
from ..metrics import SegMetrics
from ..schema import IGNORE_INDEX
from ..viz import seg_panel
from .base import TASKS, DenseTask


@TASKS.register("seg")
class SegTask(DenseTask):
    """``model(image (B, 3, H, W)) -> logits (B, K, H, W)`` trained against ``batch["mask"]`` (class ids,
    ``ignore_index`` where unlabelled)."""

    name = "seg"
    kind = "segmentation"
    dims = 2
    targets = ("mask",)
    inputs = ("image",)
    output_name = "logits"
    has_classes = True
    monitor = "val/mIoU"
    monitor_mode = "max"

    @classmethod
    def task_kwargs(cls, config: dict, class_names=None, with_noc: bool = False) -> dict:
        data = config.get("data") or {}
        return {
            **super().task_kwargs(config),
            "num_classes": data.get("num_classes"),
            "class_names": class_names,
            "ignore_index": data.get("ignore_index", IGNORE_INDEX),
        }

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        class_names: list[str] | None = None,
        loss: dict | None = None,
        ignore_index: int = IGNORE_INDEX,
        optim: dict | None = None,
        config: dict | None = None,
    ):
        super().__init__(model, optim=optim, config=config)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for num_classes={num_classes}")
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.loss_cfg = dict(loss or {})
        self.val_metrics = SegMetrics(self.num_classes, self.class_names, self.ignore_index)

    @classmethod
    def postprocess(cls, output: torch.Tensor, probabilities: bool = False):
        """One image's logits (K, H, W) -> class ids (H, W) int64 [, probabilities (K, H, W) float32]: what
        the Predictor returns."""
        probs = output.float().softmax(0)
        labels = probs.argmax(0).numpy()
        return (labels, probs.numpy()) if probabilities else labels

    def compute_loss(self, logits, batch):
        return seg_loss(logits, batch["mask"], batch.get("valid"), ignore_index=self.ignore_index, **self.loss_cfg)

    def update_metrics(self, logits, batch):
        self.val_metrics.update(logits.detach(), batch["mask"], batch.get("valid"))

    def compute_metrics(self) -> dict[str, float]:
        out = self.val_metrics.compute()
        counts = self.val_metrics.counts  # all processes' totals, read before the reset
        self.val_metrics.reset()
        trainer = getattr(self, "_trainer", None)
        if trainer is None or not trainer.sanity_checking:  # the sanity check sees a batch or two, not the split
            for text in self.check_counts(counts):
                self.run_warning(text)
        return out

    def check_counts(self, counts: dict[str, int]) -> list[str]:
        """Warnings about what a validation run's scores rest on (``SegMetrics.counts``)."""
        pixels, labelled, ignored = counts.get("pixels", 0), counts.get("labelled", 0), counts.get("ignored", 0)
        if not pixels:
            return []
        ignore = f"ignore ({self.ignore_index}) or not valid"
        if labelled == 0:
            return [
                f"validation: all {pixels} pixels are {ignore}: mIoU, mDice and pixel accuracy are computed "
                f"over nothing and not reported (are the masks read right? see data.label_map)"
            ]
        out = []
        if self.num_classes >= 2 and counts.get("foreground", 0) == 0:
            out.append(
                f"validation: no labelled foreground -- all {labelled} labelled pixels are class 0 "
                f"({self.class_names[0]!r}), so IoU of {self.class_names[1]!r}"
                f"{' and the other classes' if self.num_classes > 2 else ''} is computed over no pixels and mIoU "
                f"is the background's alone (0/255 masks need data.label_map={{255:1}})"
            )
        if ignored * 2 > pixels:
            out.append(
                f"validation: {ignored} of {pixels} pixels ({ignored / pixels:.0%}) are {ignore}; the "
                f"scores rest on the other {labelled} (are the masks read right? see data.label_map)"
            )
        return out

    def make_panels(self, logits, batch):
        pred = logits.argmax(1).cpu().numpy()
        target = batch["mask"].cpu().numpy()
        return [
            seg_panel(batch["image"][i], target[i], pred[i], self.num_classes, self.ignore_index)
            for i in range(min(self.num_val_images, pred.shape[0]))
        ]
