"""task=volume: the 3D assembly (padding, both 3D backbones), config checks, a tiny training run with
sliding-window validation, evaluate.py and the Predictor on volumes."""

import math

import numpy as np
import pytest
import torch

import densekit
from densekit import create_model
from densekit.data import SyntheticVolumes
from densekit.train import check_config
from scripts.evaluate import main as evaluate_main


@pytest.mark.parametrize(
    "backbone, head",
    [
        ({"name": "revmb3d", "widths": [8, 16, 32, 32, 32]}, "revunet3d"),
        ({"name": "lightm3d", "init_filters": 8, "blocks_down": [1, 1, 1, 1]}, "lightm"),
    ],
    ids=["revmb3d", "lightm3d"],
)
def test_volume_models_pad_any_size_and_crop_back(backbone, head, single_thread):
    model = create_model("volume", backbone=backbone, head=head, num_classes=4).eval()
    x = torch.randn(1, 4, 9, 18, 11)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 4, 9, 18, 11) and torch.isfinite(y).all()
    # the padded region does not leak: the crop is the top-left corner of the padded volume's logits
    m = model.multiple  # 16 for revmb3d (5 levels), 8 for lightm3d (4 levels)
    pad = torch.nn.functional.pad(x, (0, (-11) % m, 0, (-18) % m, 0, (-9) % m))
    with torch.no_grad():
        full = model(pad)
    torch.testing.assert_close(y, full[..., :9, :18, :11], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=r"expected a volume batch \(B, C, D, H, W\)"):
        model(torch.randn(4, 9, 18, 11))


def test_volume_task_needs_3d_parts(compose):
    cfg = compose(["task=volume"])
    assert (cfg.backbone.name, cfg.head.name, cfg.data.name) == ("revmb3d", "revunet3d", "synthetic_volume")
    assert list(cfg.task.inference.roi) == list(cfg.data.patch)
    check_config(cfg)
    check_config(compose(["task=volume", "backbone=lightm3d", "head=lightm"]))
    for overrides, match in [
        (["task=volume", "backbone=mci2"], "is 2D but task=volume needs a 3D backbone"),
        (["task=volume", "head=fpn"], "does not fit task=volume"),
        (["task=seg", "backbone=revmb3d"], "is 3D but task=seg needs a 2D backbone"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_config(compose(overrides))
    with pytest.raises(ValueError, match="needs a 3D backbone"):
        create_model("volume", backbone="mci0", head="fpn", num_classes=4)


@pytest.mark.slow
def test_volume_training_run_evaluate_and_predict(volume_run, tmp_path):
    run_dir, metrics, printed = volume_run
    for key in ("mDice", "Dice/WT", "Dice/TC", "Dice/ET", "Dice/edema"):
        assert 0.0 <= metrics[f"val/{key}"] <= 1.0
    assert "val/Dice/WT" in printed
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    results = evaluate_main([f"ckpt={ckpt}"])
    # same whole volumes, same sliding window (the training patch), same weights: the training run's numbers
    assert results["val/mDice"] == pytest.approx(metrics["val/mDice"], abs=1e-6)
    predictor = densekit.Predictor.from_checkpoint(ckpt)
    sample = SyntheticVolumes("val", length=1, size=(24, 24, 24))[0]
    raw = sample["image"].numpy() * 50 + 300 * (sample["image"].numpy() != 0)  # scanner-like intensities
    labels, probs = predictor.predict(raw[:, :21, :19, :24], probabilities=True)
    assert labels.shape == (21, 19, 24) and probs.shape == (4, 21, 19, 24)
    assert math.isclose(float(probs.sum(0).mean()), 1.0, rel_tol=1e-5)
    with pytest.raises(ValueError, match=r"expected a volume \(C=4, D, H, W\), got shape \(3, 8, 8, 8\)"):
        predictor.predict(np.zeros((3, 8, 8, 8), np.float32))
    with pytest.raises(ValueError, match="task='volume' checkpoint"):
        predictor.predict(raw, task="seg")
    with pytest.raises(ValueError, match=r"^flip: not an option for a task='volume' checkpoint"):
        predictor.predict(raw, flip=True)  # was: silently ignored
    assert predictor.visualize(raw).shape == (24, 24, 3)
