import numpy as np
import pytest
import torch
from PIL import Image

from densekit.inference import load_checkpoint_model, predict, sliding_window
from densekit.viz import colorize_mask, palette, seg_panel
from scripts.evaluate import main as evaluate_main


class Scale(torch.nn.Module):
    """A 'model' whose output at a pixel depends only on that pixel: sliding windows must reproduce it."""

    def forward(self, x):
        return torch.cat([x[:, :1] * 2.0, -x[:, :1]], dim=1)


def test_sliding_window_equals_whole_for_a_pointwise_model():
    x = torch.rand(2, 3, 37, 53)
    whole = Scale()(x)
    for crop, stride in [((16, 16), (8, 8)), ((20, 30), (20, 30)), ((64, 64), (32, 32))]:
        torch.testing.assert_close(sliding_window(Scale(), x, crop, stride), whole)


def test_flip_and_scale_tta_average_probabilities():
    x = torch.rand(1, 3, 16, 16)
    probs = predict(Scale(), x, flip=True, scales=(1.0,))
    torch.testing.assert_close(probs, Scale()(x).softmax(1))  # pointwise model: flip is an identity
    ms = predict(Scale(), x, scales=(0.5, 1.0))
    assert ms.shape == (1, 2, 16, 16)
    torch.testing.assert_close(ms.sum(1), torch.ones(1, 16, 16))
    with pytest.raises(ValueError, match="needs crop"):
        predict(Scale(), x, mode="slide")


def test_palette_and_colorize():
    pal = palette(4)
    assert pal.tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]  # the VOC colours
    mask = np.array([[0, 1], [3, 255]])
    col = colorize_mask(mask, 4)
    assert col[0, 1].tolist() == [128, 0, 0] and col[1, 1].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="outside"):
        colorize_mask(np.array([[5]]), 4)
    assert seg_panel(torch.rand(3, 2, 2), mask, mask, 4).shape == (2, 6, 3)


@pytest.mark.slow
def test_checkpoint_round_trip_and_evaluate_script(smoke_run, tmp_path, capsys):
    run_dir, metrics, _ = smoke_run
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    model, config = load_checkpoint_model(ckpt)
    assert config["backbone"]["name"] == "mci0" and not model.training
    results = evaluate_main([f"ckpt={ckpt}", f"save_dir={tmp_path / 'png'}"])
    out = capsys.readouterr().out
    assert "val/mIoU" in out and "val/IoU/star" in out
    # same data, same weights, whole-image inference: the numbers the training run reported
    assert results["val/mIoU"] == pytest.approx(metrics["val/mIoU"], abs=1e-6)
    assert results["val/pixel_acc"] == pytest.approx(metrics["val/pixel_acc"], abs=1e-6)
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == 8 and Image.open(pngs[0]).size == (3 * 64, 64)
    with pytest.raises(SystemExit, match=r"\['eval_crop'\] apply to depth checkpoints"):
        evaluate_main([f"ckpt={ckpt}", "eval_crop=garg"])
    tta = evaluate_main([f"ckpt={ckpt}", "flip=true", "scales=[0.75,1.0]", "mode=slide", "crop=[32,32]", "limit=2"])
    assert 0.0 <= tta["val/mIoU"] <= 1.0


def test_evaluate_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit, match="missing ckpt"):
        evaluate_main([])
    with pytest.raises(SystemExit, match="unknown option 'flop'"):
        evaluate_main(["ckpt=x", "flop=1"])
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        evaluate_main([f"ckpt={tmp_path / 'none.ckpt'}"])
