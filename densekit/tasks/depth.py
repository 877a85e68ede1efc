"""Monocular depth: SILog (+ optional gradient matching) loss, the standard depth metrics, depth colour maps."""

from __future__ import annotations

import torch
from torch import nn

from ..losses import depth_loss
from ..metrics import DepthMetrics
from ..models import DepthActivation
from ..viz import depth_panel
from .base import TASKS, DenseTask


@TASKS.register("depth")
class DepthTask(DenseTask):
    """``model(image) -> (B, 1, H, W)`` metres, trained against ``batch["depth"]`` where ``batch["valid"]``.

    ``metrics``: ``min_depth``/``max_depth`` caps and the evaluation ``crop`` (None, "eigen_nyu", "garg",
    "eigen_kitti") of ``densekit.metrics.depth_metrics``; the monitored value is ``val/abs_rel``.
    """

    name = "depth"
    kind = "depth"
    dims = 2
    targets = ("depth",)
    inputs = ("image",)
    output_name = "depth"
    # the output activation (``DepthActivation``): sigmoid | softplus, and the depth range in metres
    model_kwargs = frozenset({"activation", "max_depth", "min_depth"})
    monitor = "val/abs_rel"
    monitor_mode = "min"

    @classmethod
    def out_channels(cls, num_classes: int | None) -> int:
        return 1  # metres (num_classes is accepted and ignored: configs carry it for every task)

    @classmethod
    def output_module(cls, activation: str = "sigmoid", max_depth: float = 10.0, min_depth: float = 1e-3):
        return DepthActivation(activation, max_depth, min_depth)

    @classmethod
    def task_kwargs(cls, config: dict, class_names=None, with_noc: bool = False) -> dict:
        return {**super().task_kwargs(config), "metrics": dict(config["task"].get("metrics") or {})}

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

    @classmethod
    def postprocess(cls, output: torch.Tensor, probabilities: bool = False):
        """One image's depth (1, H, W) -> (H, W) float32 metres: what the Predictor returns."""
        return output[0].float().numpy()

    def compute_loss(self, pred, batch):
        return depth_loss(pred, batch["depth"], batch.get("valid"), **self.loss_cfg)

    def update_metrics(self, pred, batch):
        self.val_metrics.update(pred.detach(), batch["depth"], batch.get("valid"))

    def make_panels(self, pred, batch):
        valid = batch.get("valid")
        n = min(self.num_val_images, pred.shape[0])
        return [
            depth_panel(
                batch["image"][i],
                batch["depth"][i, 0].cpu().numpy(),
                pred[i, 0].detach().float().cpu().numpy(),
                None if valid is None else valid[i].cpu().numpy(),
            )
            for i in range(n)
        ]
