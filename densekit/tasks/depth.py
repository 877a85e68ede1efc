"""Monocular depth: SILog (+ optional gradient matching) loss, the standard depth metrics, depth colour maps."""

from __future__ import annotations

from torch import nn

from ..losses import depth_loss
from ..metrics import DepthMetrics
from ..viz import depth_panel
from .base import DenseTask


class DepthTask(DenseTask):
    """``model(image) -> (B, 1, H, W)`` metres, trained against ``batch["depth"]`` where ``batch["valid"]``.

    ``metrics``: ``min_depth``/``max_depth`` caps and the evaluation ``crop`` (None, "eigen_nyu", "garg",
    "eigen_kitti") of ``densekit.metrics.depth_metrics``; the monitored value is ``val/abs_rel``.
    """

    monitor = "val/abs_rel"
    monitor_mode = "min"

    def __init__(
        self,
        model: nn.Module,
        loss: dict | None = None,
        metrics: dict | None = None,
        optim: dict | None = None,
        config: dict | None = None,
    ):
        super().__init__(model, optim=optim, config=config)
        self.loss_cfg = dict(loss or {})
        self.metric_cfg = dict(metrics or {})
        self.val_metrics = DepthMetrics(**self.metric_cfg)

    def compute_loss(self, pred, batch):
        return depth_loss(pred, batch["depth"], batch.get("valid"), **self.loss_cfg)

    def update_metrics(self, pred, batch):
        self.val_metrics.update(pred.detach(), batch["depth"], batch.get("valid"))

    def make_panels(self, pred, batch):
        valid = batch.get("valid")
        n = min(self.num_val_images, pred.shape[0])
        return [
            depth_panel(
                batch["image"][i], batch["depth"][i, 0].cpu().numpy(), pred[i, 0].detach().float().cpu().numpy(),
                None if valid is None else valid[i].cpu().numpy(),
            )
            for i in range(n)
        ]
