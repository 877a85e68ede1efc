"""3D volume segmentation: Dice + cross-entropy, per-class and BraTS-region Dice, sliding-window validation."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..losses import volume_loss
from ..metrics import VolumeMetrics
from ..models.wrappers import SlidingWindow
from ..schema import IGNORE_INDEX
from ..viz import colorize_mask
from .base import TASKS, DenseTask


@TASKS.register("volume")
class VolumeTask(DenseTask):
    """``model(x (B, C, D, H, W)) -> logits (B, K, D, H, W)`` trained on patches; validated on whole volumes
    with MONAI's sliding-window inference (``inference.roi`` windows, ``overlap``, Gaussian blending) when a
    volume is larger than the window, so a volume never has to fit in memory whole.

    ``labels``: the label convention for the BraTS region metrics ("brats2023", "brats2021" or None), or
    "auto" (``data=nifti_folder``'s default): the convention the reader found, e.g. from a BraTS table in
    dataset.json, taken from the datamodule's val dataset in ``setup`` (``adopt_data_labels``); until
    then, and without a datamodule, no regions. The monitored value is ``val/mDice`` (mean Dice over the
    foreground classes).
    """

    name = "volume"
    kind = "3D volume"
    dims = 3
    targets = ("mask",)
    inputs = ("volume",)
    output_name = "logits"
    has_classes = True
    default_in_channels = 1
    monitor = "val/mDice"
    monitor_mode = "max"

    @classmethod
    def task_kwargs(cls, config: dict, class_names=None, with_noc: bool = False) -> dict:
        data, task = config.get("data") or {}, config["task"]
        return {
            **super().task_kwargs(config),
            "num_classes": data.get("num_classes"),
            "class_names": class_names,
            "labels": data.get("labels"),
            "inference": dict(task.get("inference") or {}),
            "metrics": dict(task.get("metrics") or {}),
            "ignore_index": data.get("ignore_index", IGNORE_INDEX),
        }

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        class_names: list[str] | None = None,
        labels: str | None = "brats2023",
        loss: dict | None = None,
        inference: dict | None = None,
        metrics: dict | None = None,
        ignore_index: int = IGNORE_INDEX,
        optim: dict | None = None,
        config: dict | None = None,
    ):
        super().__init__(model, optim=optim, config=config)
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.loss_cfg = dict(loss or {})
        inference = dict(inference or {})
        self.roi = tuple(int(r) for r in inference["roi"]) if inference.get("roi") else None
        self.overlap = float(inference.get("overlap", 0.5))
        self.labels_auto = labels == "auto"
        self.metrics_cfg = dict(metrics or {})
        self.val_metrics = VolumeMetrics(
            self.num_classes, None if self.labels_auto else labels, self.class_names, **self.metrics_cfg
        )

    def adopt_data_labels(self, dataset) -> None:
        """With ``labels="auto"``: score the BraTS regions when ``dataset.labels`` (the convention its
        reader resolved) is a BraTS convention; a dataset without the attribute changes nothing."""
        if not self.labels_auto or not hasattr(dataset, "labels"):
            return
        if dataset.labels != self.val_metrics.labels:
            self.val_metrics = VolumeMetrics(self.num_classes, dataset.labels, self.class_names, **self.metrics_cfg)

    def setup(self, stage: str) -> None:
        # Lightning sets up the datamodule first, then the module, then moves the module to its device
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        dataset = getattr(datamodule, "val_set", None) or getattr(datamodule, "train_set", None)
        if dataset is not None:
            self.adopt_data_labels(dataset)

    def forward_batch(self, batch: dict) -> torch.Tensor:
        x = batch["image"]
        if self.training or self.roi is None:
            return self.model(x)
        # whole volumes by sliding window (a volume that fits in one window is run whole)
        return SlidingWindow(self.model, self.roi, overlap=self.overlap, mode="gaussian", sw_batch_size=x.shape[0])(x)

    @classmethod
    def postprocess(cls, output: torch.Tensor, probabilities: bool = False):
        """One volume's logits (K, D, H, W) -> class ids (D, H, W) int64 [, probabilities (K, D, H, W) float32]:
        what the Predictor returns."""
        probs = output.float().softmax(0)
        labels = probs.argmax(0).numpy()
        return (labels, probs.numpy()) if probabilities else labels

    def compute_loss(self, logits, batch):
        return volume_loss(logits, batch["mask"], batch.get("valid"), ignore_index=self.ignore_index, **self.loss_cfg)

    def update_metrics(self, logits, batch):
        self.val_metrics.update(logits.detach().argmax(1), batch["mask"], batch.get("valid"))

    def make_panels(self, logits, batch):
        """Middle axial slice: first modality | ground truth | prediction."""
        pred = logits.argmax(1).cpu().numpy()
        target = batch["mask"].cpu().numpy()
        panels = []
        for i in range(min(self.num_val_images, pred.shape[0])):
            z = pred.shape[1] // 2
            img = batch["image"][i, 0, z].float().cpu().numpy()
            img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
            grey = (np.repeat(img[..., None], 3, axis=-1) * 255 + 0.5).astype(np.uint8)
            panels.append(
                np.concatenate(
                    [
                        grey,
                        colorize_mask(target[i, z], self.num_classes, self.ignore_index),
                        colorize_mask(pred[i, z], self.num_classes, self.ignore_index),
                    ],
                    axis=1,
                )
            )
        return panels
