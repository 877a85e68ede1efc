"""densekit.Predictor on a real (smoke-trained) checkpoint: every input kind, sizes, batches, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

import densekit
from densekit.data import SyntheticScenes


@pytest.fixture(scope="module")
def seg_predictor(smoke_run):
    run_dir, _, _ = smoke_run
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    return densekit.Predictor.from_checkpoint(ckpt), ckpt


def test_predict_matches_the_model_on_an_embedded_scene(seg_predictor):
    predictor, _ = seg_predictor
    scene = SyntheticScenes("val", length=1, size=(64, 64))[0]
    labels, probs = predictor.predict(scene["image"], probabilities=True)
    with torch.no_grad():
        ref = predictor.model(scene["image"][None]).softmax(1)[0]
    assert labels.shape == (64, 64) and labels.dtype == np.int64
    np.testing.assert_allclose(probs, ref.numpy(), atol=1e-5)
    np.testing.assert_array_equal(labels, ref.argmax(0).numpy())


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a,  # HWC uint8
        lambda a: a.astype(np.float32) / 255,  # float in [0, 1]
        lambda a: a.astype(np.uint16) * 257,  # 16-bit
        lambda a: np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], -1),  # RGBA
        lambda a: Image.fromarray(a),  # PIL
        lambda a: torch.from_numpy(a).permute(2, 0, 1).float() / 255,  # CHW tensor
    ],
    ids=["uint8", "float", "uint16", "rgba", "pil", "tensor"],
)
def test_input_kinds_give_the_same_labels(seg_predictor, make):
    predictor, _ = seg_predictor
    rgb = (SyntheticScenes("val", length=1, size=(48, 40))[0]["image"].permute(1, 2, 0).numpy() * 255).round()
    rgb = rgb.astype(np.uint8)
    ref = predictor.predict(rgb)
    out = predictor.predict(make(rgb))
    assert out.shape == (48, 40)
    assert (out == ref).mean() > 0.99  # 16-bit / float rounding may flip a boundary pixel


def test_grey_odd_sizes_files_and_batches(seg_predictor, tmp_path):
    predictor, _ = seg_predictor
    grey = (np.arange(37 * 53) % 251).astype(np.uint8).reshape(37, 53)
    assert predictor.predict(grey).shape == (37, 53)
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(grey.astype(np.uint16) * 200).save(tmp_path / "g16.png")
    assert predictor.predict(str(tmp_path / "g.png")).shape == (37, 53)
    assert predictor.predict(tmp_path / "g16.png").shape == (37, 53)
    batch = np.zeros((3, 20, 30, 3), np.uint8)
    assert predictor.predict(batch).shape == (3, 20, 30)
    mixed = predictor.predict([grey, batch[0]])
    assert [m.shape for m in mixed] == [(37, 53), (20, 30)]
    labels, probs = predictor.predict(batch, probabilities=True)
    assert labels.shape == (3, 20, 30) and probs.shape == (3, 5, 20, 30)
    slide = predictor.predict(grey, mode="slide", crop=(32, 32), flip=True)
    assert slide.shape == (37, 53)
    assert predictor.visualize(grey).shape == (37, 53, 3)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((8, 8, 5), np.uint8), r"\(H, W, 3\).*got shape \(8, 8, 5\)"),
        (np.full((4, 4, 3), 2.0, np.float32), r"float images must lie in \[0, 1\]"),
        (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
        (np.zeros((4, 4, 3), np.complex64), "unsupported image dtype"),
        ([], "empty list"),
    ],
    ids=["empty", "five-channels", "float-range", "nan", "dtype", "empty-list"],
)
def test_bad_images_are_clear_errors(seg_predictor, bad, match):
    predictor, _ = seg_predictor
    with pytest.raises(ValueError, match=match):
        predictor.predict(bad)


def test_wrong_task_and_wrong_files(seg_predictor, tmp_path):
    predictor, ckpt = seg_predictor
    with pytest.raises(ValueError, match=r"depth call .* is a task='seg' checkpoint"):
        predictor.predict(np.zeros((8, 8, 3), np.uint8), task="depth")
    with pytest.raises(ValueError, match=r"^roi: not an option for a task='seg' checkpoint"):
        predictor.predict(np.zeros((8, 8, 3), np.uint8), roi=(8, 8, 8))
    with pytest.raises(ValueError, match="image2 is only for flow"):
        predictor.predict(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="image not found"):
        predictor.predict(tmp_path / "nope.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="broken.png: unreadable image"):
        predictor.predict(tmp_path / "broken.png")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a densekit checkpoint"):
        densekit.Predictor.from_checkpoint(tmp_path / "other.ckpt")
