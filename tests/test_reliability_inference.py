"""The reliability catalogue (docs/reliability.md), inference: odd, empty, grey/RGBA/16-bit and wrong inputs
and checkpoints give a prediction or one clear ValueError; a fuzz over shapes, dtypes and values checks that
nothing else ever happens."""

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import densekit
from densekit.resume import check_resume_checkpoint
from helpers import (
    FLOW_SMOKE,
)

# one intra-op thread: many tiny ops; on a shared CPU a second thread mostly waits for a busy core
pytestmark = pytest.mark.usefixtures("single_thread")


# == inference =======================================================================================
def test_inference_odd_sizes(seg_predictor):
    for h, w in ((1, 1), (37, 53), (5, 40)):
        assert seg_predictor.predict(np.zeros((h, w, 3), np.uint8)).shape == (h, w)


def test_inference_grey_rgba_16bit(seg_predictor, tmp_path):
    rgb = (np.arange(20 * 24 * 3) % 256).astype(np.uint8).reshape(20, 24, 3)
    ref = seg_predictor.predict(rgb)
    rgba = np.concatenate([rgb, np.zeros((20, 24, 1), np.uint8)], -1)  # alpha is dropped, not blended
    np.testing.assert_array_equal(seg_predictor.predict(rgba), ref)
    assert (seg_predictor.predict(rgb.astype(np.uint16) * 257) == ref).mean() > 0.99
    grey = rgb[..., 0]
    as_rgb = np.repeat(grey[..., None], 3, -1)
    np.testing.assert_array_equal(seg_predictor.predict(grey), seg_predictor.predict(as_rgb))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # a 16-bit PNG file (mode I;16)
    assert seg_predictor.predict(tmp_path / "g16.png").shape == (20, 24)


def test_inference_empty_image(seg_predictor):
    for empty in (np.zeros((0, 5, 3), np.uint8), np.zeros((4, 0), np.uint8)):
        with pytest.raises(ValueError, match="the image is empty"):
            seg_predictor.predict(empty)
    with pytest.raises(ValueError, match="empty list"):
        seg_predictor.predict([])


def test_inference_wrong_channel_count(seg_predictor):
    for channels in (2, 5):
        with pytest.raises(ValueError, match=rf"\(H, W, 3\).*got shape \(8, 8, {channels}\)"):
            seg_predictor.predict(np.zeros((8, 8, channels), np.uint8))


def test_inference_wrong_task_checkpoint(seg_predictor, seg_ckpt):
    flow_run = {"task": {"name": "flow"}, "backbone": {"name": "flow_pyramid"}, "head": {"name": "flow"}}
    with pytest.raises(
        ValueError,
        match=r"trained with task=seg backbone=mci0 head=lraspp, but this run is "
        r"task=flow backbone=flow_pyramid head=flow",
    ):
        check_resume_checkpoint(seg_ckpt, flow_run)  # ckpt_path=... of another task: refused before any build
    with pytest.raises(ValueError, match=r"optical flow call \(task='flow'\) but .* is a task='seg' checkpoint"):
        seg_predictor.predict(np.zeros((8, 8, 3), np.uint8), task="flow")
    with pytest.raises(ValueError, match="image2 is only for flow"):
        seg_predictor.predict(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))


def test_inference_flow_pair_of_different_sizes(compose):
    from omegaconf import OmegaConf

    from densekit.builder import model_from_config

    config = OmegaConf.to_container(compose(FLOW_SMOKE), resolve=True)
    predictor = densekit.Predictor(model_from_config(config), config, source="flow model")
    with pytest.raises(ValueError, match=r"the two frames differ in size: \(16, 16\) vs \(16, 20\)"):
        predictor.predict(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 20, 3), np.uint8))
    with pytest.raises(ValueError, match=r"is an optical flow checkpoint: call predict\(image1, image2\)"):
        predictor.predict(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="got 2 first frames but 1 second frames"):
        predictor.predict([np.zeros((16, 16, 3), np.uint8)] * 2, [np.zeros((16, 16, 3), np.uint8)])


def test_inference_non_densekit_checkpoint(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "lightning.ckpt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "plain.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(ValueError, match=r"lightning\.ckpt is not a densekit checkpoint \(no run config"):
        densekit.Predictor.from_checkpoint(tmp_path / "lightning.ckpt")
    for name in ("plain.pt", "list.pt"):  # the one checkpoint reader (densekit.builder) says which kind it is not
        with pytest.raises(ValueError, match=rf"{name} is not a Lightning checkpoint \(no state_dict\)"):
            densekit.Predictor.from_checkpoint(tmp_path / name)
    with pytest.raises(ValueError, match=r"could not read checkpoint .*text\.ckpt"):
        densekit.Predictor.from_checkpoint(tmp_path / "text.ckpt")


# == fuzz ==============================================================================================
_DTYPES = ["uint8", "uint16", "int32", "float32", "float64", "bool"]


@st.composite
def predictor_inputs(draw):
    ndim = draw(st.sampled_from([2, 3, 4]))
    h, w = draw(st.integers(0, 40)), draw(st.integers(0, 40))
    channels = draw(st.integers(1, 5))
    shape = {2: (h, w), 3: (h, w, channels), 4: (draw(st.integers(0, 2)), h, w, channels)}[ndim]
    dtype = draw(st.sampled_from(_DTYPES))
    bounds = st.sampled_from([-3.0, -1e-3, 0.0, 0.5, 1.0, 1.5, 255.0])  # negative, in [0, 1], > 1
    lo, hi = sorted(draw(st.lists(bounds, min_size=2, max_size=2)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if dtype == "bool":
        arr = rng.random(shape) > 0.5
    elif dtype in ("uint8", "uint16", "int32"):
        info = np.iinfo(dtype)
        low, high = max(info.min, -70000), min(info.max, 70000)
        arr = rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    else:
        arr = rng.uniform(lo, hi, size=shape).astype(dtype)
        if arr.size and draw(st.booleans()):
            arr.flat[rng.integers(arr.size)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    as_tensor = draw(st.booleans()) and dtype != "uint16"  # torch has no uint16 tensors on every version
    return torch.from_numpy(arr) if as_tensor else arr


def _within_contract(image) -> bool:
    """Numpy inputs the Predictor documents as valid: (H, W) or (H, W, 1|3|4) (or a non-empty batch of them),
    H, W >= 1; uint8, uint16, bool, or finite float in [0, 1]."""
    if torch.is_tensor(image):
        return False  # (layouts are checked above; the refusal of a tensor is not judged here)
    item = image.shape[1:] if image.ndim == 4 else image.shape
    if image.ndim == 4 and image.shape[0] == 0:
        return False
    if not (len(item) == 2 or (len(item) == 3 and item[2] in (1, 3, 4))) or 0 in item[:2]:
        return False
    if image.dtype in (np.uint8, np.uint16, np.bool_):
        return True
    if np.issubdtype(image.dtype, np.floating):
        return bool(np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1)
    return False


# DENSEKIT_FUZZ_EXAMPLES=400 for a longer hunt (passes; ~2 min on a busy 2-core machine)
@settings(
    max_examples=int(os.environ.get("DENSEKIT_FUZZ_EXAMPLES", 40)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(image=predictor_inputs())
def test_fuzz_predictor_inputs_predict_or_raise_valueerror(seg_predictor, image):
    try:
        out = seg_predictor.predict(image)
    except ValueError:
        assert not _within_contract(image), f"a valid {image.dtype} {tuple(image.shape)} input was refused"
        return  # the documented error for inputs outside the contract
    shape = tuple(image.shape)
    item = shape[1:] if len(shape) == 4 else shape  # a 4-D input is a batch of 3-D images
    # documented layouts: numpy (H, W[, C]); a 3-D tensor with C in 1/3/4 first (and not last) is CHW
    chw = torch.is_tensor(image) and len(item) == 3 and item[0] in (1, 3, 4) and item[-1] not in (1, 3, 4)
    hw = item[1:] if chw else item[:2]
    assert out.shape == (shape[:1] + hw if len(shape) == 4 else hw) and out.dtype == np.int64
    assert ((out >= 0) & (out < seg_predictor.num_classes)).all()
