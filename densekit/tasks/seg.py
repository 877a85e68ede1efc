"""Semantic segmentation: cross-entropy (+ optional Dice), confusion-matrix metrics (mIoU, accuracy, per class)."""

from __future__ import annotations

from torch import nn

from ..losses import seg_loss
from ..metrics import SegMetrics
from ..viz import seg_panel
from .base import DenseTask


class SegTask(DenseTask):
    monitor = "val/mIoU"
    monitor_mode = "max"

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        class_names: list[str] | None = None,
        loss: dict | None = None,
        ignore_index: int = 255,
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

    def compute_loss(self, logits, batch):
        return seg_loss(logits, batch["mask"], batch.get("valid"), ignore_index=self.ignore_index, **self.loss_cfg)

    def update_metrics(self, logits, batch):
        self.val_metrics.update(logits.detach(), batch["mask"], batch.get("valid"))

    def make_panels(self, logits, batch):
        pred = logits.argmax(1).cpu().numpy()
        target = batch["mask"].cpu().numpy()
        return [
            seg_panel(batch["image"][i], target[i], pred[i], self.num_classes, self.ignore_index)
            for i in range(min(self.num_val_images, pred.shape[0]))
        ]
