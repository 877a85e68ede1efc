"""task=flow: config checks, a tiny training run, evaluate.py (embedded data and the real motorcycle pair),
and the Predictor on frame pairs."""

import math

import numpy as np
import pytest
import torch

import densekit
from densekit import create_model
from densekit.data import SyntheticScenes, build_dataset
from densekit.train import check_config
from scripts.evaluate import main as evaluate_main


def test_flow_config_and_model_checks(compose):
    cfg = compose(["task=flow"])
    assert (cfg.backbone.name, cfg.head.name, cfg.data.name) == ("flow_pyramid", "flow", "synthetic")
    assert cfg.task.targets == ["flow"] and cfg.task.monitor == "val/epe"
    check_config(cfg)
    check_config(compose(["task=flow", "backbone=mci0"]))  # any 2D backbone feeds the flow head
    for overrides, match in [
        (["task=flow", "head=lraspp"], "head=lraspp does not fit task=flow"),
        (["task=seg", "head=flow"], "head=flow does not fit task=seg"),
        (["task=flow", "backbone=revmb3d"], "is 3D but task=flow needs a 2D backbone"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_config(compose(overrides))
    with pytest.raises(ValueError, match="task 'flow' needs head 'flow'"):
        create_model("flow", backbone="flow_pyramid", head="fpn")


def test_motorcycle_pair_is_real_and_consistent():
    s = build_dataset("motorcycle", "val")[0]
    assert s["image"].shape == (3, 500, 741) and s["flow"].shape == (2, 500, 741)
    u, valid = s["flow"][0], s["valid"]
    assert 0.9 < valid.float().mean() < 0.95 and (s["flow"][1] == 0).all()
    assert -60.0 < float(u[valid].min()) < -59.0 and -7.5 < float(u[valid].max()) < -7.0
    # warping the right frame by the flow reproduces the left frame far better than no motion does
    grid_x = torch.arange(741.0)[None].expand(500, 741) + u
    grid = torch.stack([grid_x / 740 * 2 - 1, torch.arange(500.0)[:, None].expand(500, 741) / 499 * 2 - 1], -1)
    warped = torch.nn.functional.grid_sample(s["image2"][None], grid[None], align_corners=True)[0]
    err_flow = (warped - s["image"]).abs().mean(0)[valid].mean()
    err_zero = (s["image2"] - s["image"]).abs().mean(0)[valid].mean()
    assert err_flow < 0.4 * err_zero


@pytest.mark.slow
def test_flow_training_run_evaluate_and_predict(flow_run):
    run_dir, metrics, printed = flow_run
    for key in ("epe", "1px", "3px", "5px", "fl_all"):
        assert math.isfinite(metrics[f"val/{key}"])
    assert "val/epe" in printed
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    results = evaluate_main([f"ckpt={ckpt}", "baseline=zero"])
    assert results["val/epe"] == pytest.approx(metrics["val/epe"], rel=1e-5)
    assert results["baseline/epe"] > 0
    real = evaluate_main([f"ckpt={ckpt}", "data=motorcycle", "baseline=zero"])
    assert real["baseline/epe"] == pytest.approx(34.34, abs=0.01)  # mean |disparity| over valid pixels
    small = evaluate_main([f"ckpt={ckpt}", "data=motorcycle", "scales=[0.25]", "flip=true"])
    assert math.isfinite(small["val/epe"]) and small["val/epe"] != pytest.approx(real["val/epe"])
    predictor = densekit.Predictor.from_checkpoint(ckpt)
    s = SyntheticScenes("val", length=1, size=(40, 52), targets=("flow",))[0]
    flow = predictor.predict(s["image"], s["image2"])
    assert flow.shape == (40, 52, 2) and flow.dtype == np.float32
    with torch.no_grad():
        ref = predictor.model(s["image"][None], s["image2"][None])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(flow, ref, atol=1e-5)
    assert predictor.predict(s["image"], s["image2"], flip=True).shape == (40, 52, 2)
    with pytest.raises(ValueError, match=r"^mode, crop: not an option for a task='flow' checkpoint"):
        predictor.predict(s["image"], s["image2"], mode="slide", crop=(32, 32))  # was: silently ignored
    batch = predictor.predict([s["image"], s["image"]], [s["image2"], s["image2"]])
    assert len(batch) == 2 and batch[0].shape == (40, 52, 2)
    assert predictor.visualize(s["image"], s["image2"]).shape == (40, 104, 3)
    with pytest.raises(ValueError, match=r"the two frames differ in size: \(40, 52\) vs \(40, 50\)"):
        predictor.predict(s["image"], s["image2"][..., :50])
    with pytest.raises(ValueError, match="call predict\\(image1, image2\\)"):
        predictor.predict(s["image"])
    with pytest.raises(ValueError, match="depth call .* task='flow' checkpoint"):
        predictor.predict(s["image"], s["image2"], task="depth")
