"""Depth task: losses on hand-computed cases, the model's output range, a tiny training run, evaluation,
prediction and the config checks."""

import math

import numpy as np
import pytest
import torch

import densekit
from densekit import create_model
from densekit.losses import depth_loss, gradient_loss, silog_loss
from densekit.models.assembly import DepthActivation
from densekit.train import check_config
from scripts.evaluate import main as evaluate_main


def _maps(values):
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, *np.shape(values))


def test_silog_hand_computed():
    gt = _maps([[1.0, 2.0], [4.0, 8.0]])
    # pred = 2 gt everywhere: d = ln 2 at every pixel, so mean(d^2) - lam mean(d)^2 = (1 - lam) ln(2)^2
    pred = 2 * gt
    assert silog_loss(pred, gt, lam=0.85).item() == pytest.approx(10 * math.sqrt(0.15) * math.log(2), rel=1e-5)
    assert silog_loss(pred, gt, lam=1.0).item() == pytest.approx(0.0, abs=1e-4)  # fully scale invariant
    assert silog_loss(pred, gt, lam=0.0, scale=1.0).item() == pytest.approx(math.log(2), rel=1e-5)  # log-RMSE
    # d = (ln 2, 0, 0, -ln 2): mean(d) = 0, mean(d^2) = ln(2)^2 / 2
    pred2 = _maps([[2.0, 2.0], [4.0, 4.0]])
    assert silog_loss(pred2, gt, lam=0.5, scale=1.0).item() == pytest.approx(math.log(2) / math.sqrt(2), rel=1e-5)
    with pytest.raises(ValueError, match="lam must lie in"):
        silog_loss(pred, gt, lam=1.5)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        silog_loss(pred[:, 0], gt[:, 0])


def test_invalid_depth_never_poisons_the_loss():
    gt = _maps([[1.0, float("nan")], [float("inf"), 0.0]])
    pred = _maps([[2.0, 5.0], [5.0, 5.0]]).requires_grad_()
    loss = silog_loss(pred, gt, lam=0.0, scale=1.0)  # only pixel (0, 0) counts: |ln 2|
    assert loss.item() == pytest.approx(math.log(2), rel=1e-5)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[0, 0, 0, 0] != 0 and pred.grad.flatten()[1:].abs().sum() == 0
    valid = torch.tensor([[[False, True], [True, True]]])
    assert depth_loss(pred, gt, valid).item() == 0.0  # nothing counts: zero, not NaN
    assert torch.isfinite(gradient_loss(pred, gt))


def test_gradient_loss_is_scale_free_and_sees_edges():
    gt = torch.rand(1, 1, 16, 16) * 5 + 1
    assert gradient_loss(3.0 * gt, gt).item() == pytest.approx(0.0, abs=1e-5)
    # one step edge on a flat prediction: |ln 2 - 0| on one horizontal difference per row, 16 rows of 15
    # horizontal + 16 columns of 15 vertical differences at scale 1
    gt = torch.ones(1, 1, 16, 16)
    gt[..., 8:] = 2.0
    loss1 = gradient_loss(torch.ones_like(gt), gt, scales=1).item()
    assert loss1 == pytest.approx(16 * math.log(2) / (2 * 16 * 15), rel=1e-5)


def test_loss_is_float32_under_low_precision():
    gt = torch.rand(1, 1, 8, 8) + 1
    pred = (gt * 1.1).bfloat16()
    assert depth_loss(pred, gt, grad_weight=0.5).dtype == torch.float32


def test_depth_model_outputs_metres_in_range():
    model = create_model("depth", backbone="mobilenetv3_large", head="fpn", max_depth=10.0, min_depth=0.5).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 45, 61))
    assert out.shape == (2, 1, 45, 61)
    assert out.min() >= 0.5 and out.max() <= 10.0
    soft = DepthActivation("softplus", min_depth=0.1)
    assert soft(torch.tensor([-100.0, 0.0])).tolist() == pytest.approx([0.1, 0.1 + math.log(2)], rel=1e-5)
    with pytest.raises(ValueError, match="activation must be one of"):
        DepthActivation("relu")
    with pytest.raises(TypeError, match="unexpected arguments for task 'depth'"):
        create_model("depth", backbone="mci0", head="fpn", dilation=2)


def test_depth_config_checks(compose):
    cfg = compose(["task=depth"])
    assert cfg.head.name == "fpn" and cfg.task.targets == ["depth"] and cfg.data.augment.vflip == 0.0
    assert cfg.task.model.max_depth == 40.0 and cfg.task.metrics.crop is None
    check_config(cfg)
    for overrides, match in [
        (["task=depth", "backbone=lightm3d"], "is 3D but task=depth needs a 2D backbone"),
        (["task=depth", "head=revunet3d"], "does not fit task=depth"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_config(compose(overrides))


@pytest.mark.slow
def test_depth_training_run_evaluate_and_predict(depth_run, tmp_path, capsys):
    run_dir, metrics, printed = depth_run
    for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "log10", "d1", "d2", "d3"):
        assert math.isfinite(metrics[f"val/{key}"])
    assert "val/abs_rel" in printed and "Best checkpoint" in printed
    panel = next((run_dir / "val_examples").glob("*.png"))
    from PIL import Image

    assert Image.open(panel).size == (4 * 64, 4 * 64)  # image | gt | prediction | error, 4 samples
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    results = evaluate_main([f"ckpt={ckpt}", "baseline=train_mean", "limit=8"])
    assert results["val/abs_rel"] == pytest.approx(metrics["val/abs_rel"], rel=1e-5)
    assert 1.5 < results["baseline/mean_depth"] < 30  # the embedded scenes span 1.5-30 m
    cropped = evaluate_main([f"ckpt={ckpt}", "eval_crop=eigen_nyu", "max_depth=20", "flip=true"])
    assert cropped["val/abs_rel"] != pytest.approx(results["val/abs_rel"])
    with pytest.raises(SystemExit, match="baseline must be train_mean"):
        evaluate_main([f"ckpt={ckpt}", "baseline=mean"])
    predictor = densekit.Predictor.from_checkpoint(ckpt)
    depth = predictor.predict(np.zeros((37, 50, 3), np.uint8))
    assert depth.shape == (37, 50) and depth.dtype == np.float32
    assert depth.min() >= 1e-3 and depth.max() <= 40.0
    assert predictor.visualize(np.zeros((37, 50, 3), np.uint8)).shape == (37, 100, 3)
    with pytest.raises(ValueError, match="segmentation call .* is a task='depth' checkpoint"):
        predictor.predict(np.zeros((8, 8, 3), np.uint8), task="seg")
