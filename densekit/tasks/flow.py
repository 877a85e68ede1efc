"""Optical flow: multi-scale robust loss over the coarse-to-fine predictions, EPE / Npx / Fl-all metrics
(also on non-occluded pixels when the data marks them), flow colour-wheel panels."""

from __future__ import annotations

import torch
from torch import nn

from ..losses import multiscale_flow_loss
from ..metrics import FlowMetrics
from ..viz import flow_panel
from .base import TASKS, DenseTask


@TASKS.register("flow")
class FlowTask(DenseTask):
    """``model(image1, image2)``: a list of per-level flows (finest last, full-resolution pixels) in training,
    (B, 2, H, W) in evaluation. ``loss``: ``densekit.losses.multiscale_flow_loss`` options (weights, kind,
    max_flow). The monitored value is ``val/epe``."""

    name = "flow"
    kind = "optical flow"
    dims = 2
    targets = ("flow",)
    inputs = ("image1", "image2")
    output_name = "flow"
    optional_targets = ("noc",)  # Sintel / KITTI mark non-occluded pixels: metrics also split into noc / occ
    monitor = "val/epe"
    monitor_mode = "min"

    @classmethod
    def out_channels(cls, num_classes: int | None) -> int:
        return 2  # (u, v) pixels; the flow head builds the whole network (num_classes is ignored)

    @classmethod
    def task_kwargs(cls, config: dict, class_names=None, with_noc: bool = False) -> dict:
        return {**super().task_kwargs(config), "with_noc": with_noc}

    def __init__(
        self,
        model: nn.Module,
        loss: dict | None = None,
        with_noc: bool = False,
        optim: dict | None = None,
        config: dict | None = None,
    ):
        super().__init__(model, optim=optim, config=config)
        self.loss_cfg = dict(loss or {})
        self.val_metrics = FlowMetrics(with_noc=with_noc)

    def forward_batch(self, batch: dict):
        return self.model(batch["image"], batch["image2"])

    @classmethod
    def postprocess(cls, output: torch.Tensor, probabilities: bool = False):
        """One pair's flow (2, H, W) -> (H, W, 2) float32 pixels (u, v): what the Predictor returns."""
        return output.float().permute(1, 2, 0).numpy()

    def compute_loss(self, pred, batch):
        if torch.is_tensor(pred):  # evaluation: the full-resolution flow only
            cfg = {k: v for k, v in self.loss_cfg.items() if k != "weights"}
            return multiscale_flow_loss([pred], batch["flow"], batch.get("valid"), weights=[1.0], **cfg)
        return multiscale_flow_loss(pred, batch["flow"], batch.get("valid"), **self.loss_cfg)

    def update_metrics(self, pred, batch):
        noc = batch.get("noc") if self.val_metrics.with_noc else None
        self.val_metrics.update(pred.detach().float(), batch["flow"], batch.get("valid"), noc)

    def make_panels(self, pred, batch):
        valid = batch.get("valid")
        return [
            flow_panel(
                batch["image"][i],
                batch["flow"][i].cpu().numpy(),
                pred[i].detach().float().cpu().numpy(),
                None if valid is None else valid[i].cpu().numpy(),
            )
            for i in range(min(self.num_val_images, pred.shape[0]))
        ]
