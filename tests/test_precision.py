"""Mixed precision: under bf16 autocast (what trainer.precision=bf16-mixed runs on CPU) every task's model
computes in bfloat16 while its loss comes out float32 and finite, and the gradients stay float32."""

import pytest
import torch

from densekit.builder import datamodule_from_config, task_from_config
from densekit.datacheck import check_data
from helpers import FLOW_SMOKE, VOLUME_SMOKE

TINY_2D = [
    "backbone=mobilenetv3_large",
    "backbone.pretrained=false",
    "data.size=[32,32]",
    "data.train_length=4",
    "data.val_length=4",
    "data.batch_size=2",
]
CASES = {
    "seg": ["task=seg", *TINY_2D],
    "depth": ["task=depth", *TINY_2D],
    "flow": [*FLOW_SMOKE, "data.size=[32,32]", "data.augment.crop=[32,32]", "data.batch_size=2", "data.train_length=2"],
    "volume": [*VOLUME_SMOKE, "data.size=[16,16,16]", "data.patch=[16,16,16]", "data.train_length=2"],
}


@pytest.mark.parametrize("task", list(CASES))
def test_loss_is_float32_under_bf16_autocast(compose, task, single_thread):
    cfg = compose(CASES[task])
    datamodule = datamodule_from_config(cfg)
    names = check_data(cfg, datamodule)
    torch.manual_seed(0)
    module = task_from_config(cfg, names).train()
    batch = next(iter(datamodule.train_dataloader()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = module.forward_batch(batch)
        loss = module.compute_loss(pred, batch)
    preds = pred if isinstance(pred, (list, tuple)) else [pred]  # flow: one prediction per level
    assert any(p.dtype == torch.bfloat16 for p in preds), [p.dtype for p in preds]  # autocast was active
    assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
