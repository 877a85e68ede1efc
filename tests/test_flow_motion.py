"""Issue 18 (flow that transfers to real footage): EPE per ground-truth motion bin, the large-motion embedded
split (heavy-tailed object and camera motion), automatic inference scale (FlowTTA / Predictor / evaluate.py)
and the side-by-side table of a checkpoint with its baselines."""

import hashlib
import math

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from densekit.builder import training_frame_size
from densekit.config_schema import validate_config
from densekit.data import SceneConfig, SyntheticScenes, generate_scene
from densekit.errors import ConfigError
from densekit.evaluation import baseline_names, side_by_side
from densekit.metrics import FlowMetrics, flow_metrics
from densekit.models.wrappers import FlowTTA, auto_flow_size
from densekit.train import check_config
from tests.helpers import CONF


# -- motion-magnitude bins ----------------------------------------------------------------------------------
def binned_case():
    """1 x 2 x 1 x 6 flow, ground truth along u with an error along v chosen per pixel:
    gt u:   3     9.99    10    39.99   40    100
    error:  1     3       2     4       0.5   10      (pred = gt + (0, error))
    bins [0,10): 3, 9.99 -> (1 + 3) / 2 = 2;  [10,40): 10, 39.99 -> (2 + 4) / 2 = 3;  [40,inf): 40, 100 ->
    (0.5 + 10) / 2 = 5.25; overall (1+3+2+4+0.5+10) / 6 = 3.4167."""
    gt = torch.zeros(1, 2, 1, 6)
    gt[0, 0, 0] = torch.tensor([3.0, 9.99, 10.0, 39.99, 40.0, 100.0])
    pred = gt.clone()
    pred[0, 1, 0] = torch.tensor([1.0, 3.0, 2.0, 4.0, 0.5, 10.0])
    return pred, gt


def test_bin_epe_hand_computed():
    pred, gt = binned_case()
    m = flow_metrics(pred, gt)
    assert m["epe"] == pytest.approx(20.5 / 6)
    assert m["epe_s0-10"] == pytest.approx(2.0)
    assert m["epe_s10-40"] == pytest.approx(3.0)  # 10 px is the first value of the second bin, 39.99 its last
    assert m["epe_s40+"] == pytest.approx(5.25)
    assert (m["frac_s0-10"], m["frac_s10-40"], m["frac_s40+"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    # invalid pixels are in no bin: dropping the 100 px pixel leaves one pixel (EPE 0.5) in s40+
    valid = torch.tensor([[[True, True, True, True, True, False]]])
    m = flow_metrics(pred, gt, valid)
    assert m["epe_s40+"] == pytest.approx(0.5) and m["frac_s40+"] == pytest.approx(1 / 5)


def test_empty_bin_is_nan_never_zero():
    pred, gt = binned_case()
    small = flow_metrics(pred[..., :2], gt[..., :2])  # only the 3 and 9.99 px pixels
    assert small["epe_s0-10"] == pytest.approx(2.0)
    assert math.isnan(small["epe_s10-40"]) and math.isnan(small["epe_s40+"])
    assert small["frac_s10-40"] == 0.0  # the share is a count, honestly 0; its EPE is not
    nothing = flow_metrics(pred, gt, torch.zeros(1, 1, 6, dtype=torch.bool))
    assert all(math.isnan(v) for k, v in nothing.items())


def test_bins_accumulate_pixel_averaged():
    pred, gt = binned_case()
    metric = FlowMetrics()
    metric.update(pred[..., :2], gt[..., :2])  # s0-10 only: EPE 1 and 3
    metric.update(pred[..., 2:], gt[..., 2:])
    still = torch.zeros(1, 2, 2, 2)
    metric.update(still + torch.tensor([0.0, 6.0])[None, :, None, None], still)  # 4 static pixels, EPE 6
    m = metric.compute()
    assert m["epe_s0-10"] == pytest.approx((1 + 3 + 4 * 6) / 6)
    assert m["epe_s10-40"] == pytest.approx(3.0) and m["epe_s40+"] == pytest.approx(5.25)
    assert m["frac_s0-10"] == pytest.approx(6 / 10)


def test_side_by_side_table_marks_absent_bins():
    text = side_by_side(
        {"model": {"epe": 1.5, "epe_s40+": 7.25}, "zero": {"epe": 3.0}, "dis": {"epe": 0.75, "epe_s40+": 2.0}}
    )
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "model", "zero", "dis"]
    assert lines[2].split() == ["epe", "1.5000", "3.0000", "0.7500"]
    assert lines[3].split() == ["epe_s40+", "7.2500", "absent", "2.0000"]
    assert baseline_names({"baseline": "zero, dis,zero"}) == ["zero", "dis"]
    assert baseline_names({"baseline": ["dis"]}) == ["dis"] and baseline_names({}) == []


# -- the large-motion split ------------------------------------------------------------------------------
def _digest(scene: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(scene):
        h.update(key.encode() + np.ascontiguousarray(scene[key]).tobytes())
    return h.hexdigest()[:16]


def test_default_scenes_are_unchanged():
    """The uniform-motion default draws the same random numbers as before the heavy-tailed option came:
    digests of the scenes the generator made before that change (HEAD 6f1fb61)."""
    cfg = SceneConfig(height=96, width=128)
    assert _digest(generate_scene([0, 1, 7], cfg)) == DEFAULT_DIGESTS[0]
    assert _digest(generate_scene(3, SceneConfig())) == DEFAULT_DIGESTS[1]


DEFAULT_DIGESTS = ("f5fd251d38ed0e7d", "a7095af95eb5db31")


def large_config() -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / "data" / "synthetic_flow_large.yaml"))


def test_large_split_is_deterministic_and_reaches_every_bin():
    cfg = large_config()
    ds = SyntheticScenes("val", length=8, size=tuple(cfg["size"]), targets=("flow",), scene=cfg["scene"])
    a, b = ds[3], ds[3]
    for key in a:
        assert torch.equal(a[key], b[key])
    mags = torch.cat([ds[i]["flow"].norm(dim=0)[ds[i]["valid"]] for i in range(8)])
    assert a["image"].shape == (3, 256, 384)
    shares = [float(((mags >= lo) & (mags < hi)).float().mean()) for lo, hi in ((0, 10), (10, 40), (40, 1e9))]
    assert all(s > 0.05 for s in shares), shares  # every bin holds pixels; the tail is not rare
    # objects up to 0.2 x 384 = 77 px, the camera 38 px plus its roll, plus the depth-change scaling
    assert 40 < float(mags.max()) < 140


def test_heavy_motion_flow_is_exact_where_valid():
    """Warping frame 2 back by the flow reproduces frame 1 on valid pixels, camera roll included."""
    cfg = SceneConfig(height=96, width=144, **large_config()["scene"])
    for seed in range(4):
        s = generate_scene(seed, cfg)
        h, w = s["mask"].shape
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        warped = cv2.remap(s["image2"], xs + s["flow"][..., 0], ys + s["flow"][..., 1], cv2.INTER_LINEAR)
        err = np.abs(warped - s["image"]).mean(axis=-1)
        assert 0.3 < s["valid"].mean() < 1.0
        assert np.median(err[s["valid"]]) < 0.06
        assert np.median(err[~s["valid"]]) > 2 * np.median(err[s["valid"]])


def test_heavy_lengths_are_log_uniform():
    """Object translations: log-uniform between min_flow and max_flow x width, so the share of objects
    moving less than the geometric middle is one half (not the uniform draw's ~1/4 per axis)."""
    from densekit.data.synthetic.scenes import _translation

    cfg = SceneConfig(height=64, width=512, motion="heavy", min_flow=0.002, max_flow=0.2)
    rng = np.random.default_rng(0)
    lengths = np.array([np.linalg.norm(_translation(rng, cfg, cfg.max_flow)) for _ in range(4000)])
    assert 1.0 <= lengths.min() and lengths.max() <= 0.2 * 512 + 1e-6
    assert np.mean(lengths < 10.24) == pytest.approx(0.5, abs=0.03)  # sqrt(1.024 * 102.4) = 10.24 px
    assert np.mean(lengths > 40) == pytest.approx(np.log(102.4 / 40) / np.log(100), abs=0.03)


@pytest.mark.parametrize(
    "scene, match",
    [
        ({"motion": "wild"}, "motion must be 'uniform' or 'heavy'"),
        ({"motion": "heavy", "min_flow": 0.5}, "needs 0 < min_flow < max_flow"),
        ({"background_rotation": -0.1}, "background_rotation must be >= 0"),
        ({"max_flw": 0.2}, r"unknown scene key\(s\) \['max_flw'\]"),
    ],
)
def test_bad_scene_knobs(scene, match):
    with pytest.raises(ValueError, match=match):
        SyntheticScenes("val", length=1, targets=("flow",), scene=scene)


def test_large_config_composes_and_checks(compose):
    cfg = compose(["task=flow", "data=synthetic_flow_large"])
    assert cfg.data.scene.motion == "heavy" and list(cfg.data.size) == [256, 384]
    check_config(cfg)
    validate_config(OmegaConf.to_container(cfg, resolve=True))
    bad = compose(["task=flow", "data=synthetic_flow_large", "data.scene.motion=fast"])
    with pytest.raises(ConfigError, match=r"data\.scene\.motion=fast: expected one of uniform, heavy"):
        validate_config(OmegaConf.to_container(bad, resolve=True))


# -- automatic inference scale ------------------------------------------------------------------------------
class _Constant(torch.nn.Module):
    """Flow (1, 0.5) px everywhere at whatever size it is run; remembers that size."""

    def forward(self, a, b):
        self.size = tuple(a.shape[-2:])
        return torch.tensor([1.0, 0.5]).view(1, 2, 1, 1).expand(a.shape[0], 2, *a.shape[-2:]).clone()


def test_auto_size_fits_the_training_frames():
    assert auto_flow_size((500, 741), (128, 128)) == (86, 128)  # 741 -> 128: s = 0.1727
    assert auto_flow_size((1000, 500), (128, 256)) == (128, 64)
    assert auto_flow_size((64, 80), (128, 128)) == (64, 80)  # never upscaled
    assert auto_flow_size((40, 5000), (128, 128)) == (8, 128)  # at least 8 px


def test_flow_tta_auto_runs_small_and_scales_vectors_back():
    model = _Constant()
    tta = FlowTTA(model, scales="auto", train_size=(128, 128))
    a = torch.rand(1, 3, 500, 741)
    flow = tta(a, a)
    assert model.size == (86, 128) and tta.last_size == (86, 128)
    assert flow.shape == (1, 2, 500, 741)
    assert float(flow[0, 0].mean()) == pytest.approx(741 / 128) and float(flow[0, 1].mean()) == pytest.approx(
        0.5 * 500 / 86
    )
    small = torch.rand(1, 3, 64, 64)
    assert torch.equal(tta(small, small), model(small, small))  # already within the training size: native
    with pytest.raises(ValueError, match="needs train_size"):
        FlowTTA(model, scales="auto")
    with pytest.raises(ValueError, match="or 'auto'"):
        FlowTTA(model, scales="big", train_size=(8, 8))


def test_training_frame_size_from_the_config():
    assert training_frame_size({"data": {"size": [256, 384], "augment": {"crop": [128, 128]}}}) == (256, 384)
    assert training_frame_size({"data": {"name": "chairs", "augment": {"crop": [368, 496]}}}) == (368, 496)
    assert training_frame_size({"data": {"name": "motorcycle"}}) is None


@pytest.mark.slow
def test_evaluate_auto_scale_and_baselines_side_by_side(flow_run, capsys):
    from densekit import Predictor
    from scripts.evaluate import main as evaluate_main

    run_dir, _, _ = flow_run
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    out = evaluate_main([f"ckpt={ckpt}", "data=motorcycle", "scales=auto", "baseline=zero,dis"])
    printed = capsys.readouterr().out
    assert "the last pair ran at 43x64, training frames (64, 64)" in printed  # 741 -> 64 wide
    assert out["baseline/zero/epe"] == pytest.approx(34.34, abs=0.01)
    # zero motion on Motorcycle (|u| 7-60 px): the EPE of a bin is the mean |u| of its pixels
    assert 7 <= out["baseline/zero/epe_s0-10"] < 10 and 40 <= out["baseline/zero/epe_s40+"] < 60
    assert out["baseline/dis/epe"] < out["baseline/zero/epe"]
    assert "Side by side" in printed and "epe_s10-40" in printed
    native = evaluate_main([f"ckpt={ckpt}", "data=motorcycle"])
    assert out["val/epe"] != pytest.approx(native["val/epe"])
    predictor = Predictor.from_checkpoint(ckpt)
    sample = SyntheticScenes("val", length=1, size=(96, 160), targets=("flow",))[0]
    auto = predictor.predict(sample["image"], sample["image2"], scales="auto")
    fixed = predictor.predict(sample["image"], sample["image2"], scales=(64 / 160,))  # 96x160 -> 38x64
    assert auto.shape == (96, 160, 2)
    np.testing.assert_allclose(auto, fixed, atol=1e-5)
    with pytest.raises(ValueError, match="'auto' for flow checkpoints"):
        predictor.predict(sample["image"], sample["image2"], scales="fast")


def test_comma_baselines_reach_hydra_as_a_list():
    """``baseline=zero,dis`` on the command line: Hydra refuses a bare comma list as ambiguous."""
    from scripts.evaluate import hydra_overrides

    opts, overrides, _ = hydra_overrides(["ckpt=x.ckpt", "baseline=zero,dis", "scales=auto"])
    assert opts["baseline"] == "zero,dis" and opts["scales"] == "auto"
    assert "baseline=[zero,dis]" in overrides and "scales=auto" in overrides
