"""CompactFlowNet pieces (correlation, warping, estimator, pyramid), the assembled model on odd sizes and two
backbones, a short overfit, and the multi-scale flow loss against hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from densekit.losses import epe, multiscale_flow_loss
from densekit.losses.flow import downsample_flow, flow_level_loss
from densekit.models import BACKBONES, create_backbone
from densekit.models.flow import CompactFlowNet, SequentialEstimator, create_flow_model
from densekit.models.flow_ops import convex_upsample, local_correlation, warp
from densekit.models.flow_pyramid import FlowPyramid

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_model(**kw) -> CompactFlowNet:
    """A narrow network with the default structure (6-level pyramid, flow levels 64..4, context net)."""
    torch.manual_seed(0)
    backbone = FlowPyramid(widths=(8, 12, 16, 16, 24, 24), blocks=1, expand=2)
    head = dict(
        estimator_channels=(16, 16, 12, 8, 8),
        fine_estimator_channels=None,
        context_channels=(16, 16, 8),
        context_dilations=(1, 2, 1),
    )
    return CompactFlowNet(backbone, **{**head, **kw})


# ---- building blocks ----------------------------------------------------------------------------------


def test_correlation_matches_naive_loop():
    torch.manual_seed(0)
    f1, f2 = torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6)
    r, k = 2, 5
    ref = torch.zeros(2, k * k, 5, 6)
    for b in range(2):
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                for y in range(5):
                    for x in range(6):
                        if 0 <= y + dy < 5 and 0 <= x + dx < 6:
                            dot = (f1[b, :, y, x] * f2[b, :, y + dy, x + dx]).sum()
                            ref[b, (dy + r) * k + dx + r, y, x] = dot / 3
    out = local_correlation(f1, f2, r)
    assert out.shape == (2, 25, 5, 6)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


def test_warp_by_integer_flow_is_a_shift_with_zeroed_outside():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 6, 7)
    flow = torch.zeros(1, 2, 6, 7)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # sample 2 px to the right, 1 px up
    out, mask = warp(x, flow)
    ref, ref_mask = torch.zeros_like(x), torch.zeros(1, 1, 6, 7)
    ref[:, :, 1:, :5] = x[:, :, :5, 2:]  # out[y, x] = x[y - 1, x + 2]
    ref_mask[:, :, 1:, :5] = 1
    torch.testing.assert_close(mask, ref_mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    # half a pixel to the right: the mean of the two neighbours; the last column would need x = 6.5 -> masked
    half = torch.zeros(1, 2, 6, 7)
    half[:, 0] = 0.5
    out, mask = warp(x, half)
    torch.testing.assert_close(out[..., :6], (x[..., :6] + x[..., 1:]) / 2, atol=1e-5, rtol=0)
    assert mask[..., 6].sum() == 0 and (out[..., 6] == 0).all()


def test_cost_volume_peaks_at_true_displacement_and_warping_undoes_it():
    torch.manual_seed(0)
    f1 = torch.randn(1, 64, 12, 12)  # 64 channels: a random cross-match cannot beat the true one
    dx, dy, r = 2, -1, 3
    f2 = torch.roll(f1, shifts=(dy, dx), dims=(2, 3))  # frame-1 pixel p is at p + (dx, dy) in frame 2
    cost = local_correlation(f1, f2, r)  # (1, 49, 12, 12)
    inner = cost[..., 2:-2, 2:-2].argmax(dim=1)
    assert (inner == (dy + r) * (2 * r + 1) + dx + r).all()
    # warping frame 2 by the true flow brings the peak to zero displacement (the centre channel)
    flow = torch.tensor([float(dx), float(dy)]).view(1, 2, 1, 1).expand(1, 2, 12, 12)
    warped, _ = warp(f2, flow)
    assert (local_correlation(f1, warped, r)[..., 2:-2, 2:-2].argmax(dim=1) == r * (2 * r + 1) + r).all()


def test_convex_upsample_of_constant_flow_is_constant():
    flow = torch.tensor([1.5, -2.0]).view(1, 2, 1, 1).expand(2, 2, 3, 5).contiguous()
    up = convex_upsample(flow, torch.randn(2, 9 * 16, 3, 5), 4)
    assert up.shape == (2, 2, 12, 20)
    torch.testing.assert_close(up, flow[..., :1, :1].expand(2, 2, 12, 20), atol=1e-6, rtol=0)


def test_estimator_is_sequential_with_configured_channels():
    est = SequentialEstimator(81 + 32 + 4, (128, 128, 96, 64, 32))
    convs = [m for m in est.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (117, 128),
        (128, 128),
        (128, 96),
        (96, 64),
        (64, 32),
        (32, 2),
    ]  # each conv sees only its predecessor: no DenseNet concatenation, so no growing input widths
    model = create_flow_model("flow_pyramid", fine_estimator_channels=(64, 64, 48, 32, 32))
    ins = [e.body[0].in_channels for e in model.estimators]
    # coarsest: cost volume + features; others add upsampled flow and upsampled features (2 + 2)
    assert ins == [81 + 196, 81 + 128 + 4, 81 + 96 + 4, 81 + 64 + 4, 81 + 32 + 4]

    def widths(est):
        return [c.out_channels for c in est.body if isinstance(c, torch.nn.Conv2d)]

    assert widths(model.estimators[0]) == [128, 128, 96, 64, 32]
    assert widths(model.estimators[-1]) == [64, 64, 48, 32, 32]
    assert model.levels == [64, 32, 16, 8, 4]
    assert model.max_displacement == 4 * (64 + 32 + 16 + 8 + 4) == 496  # >> 64 px = 0.125 * 512


def test_flow_pyramid_registered_and_follows_the_contract():
    assert BACKBONES["flow_pyramid"] is FlowPyramid
    bb = create_backbone("flow_pyramid", pretrained=False)
    assert bb.channels == [16, 32, 64, 96, 128, 196] and bb.reductions == [2, 4, 8, 16, 32, 64]
    feats = bb.eval()(torch.rand(1, 3, 64, 128))
    expected = [(1, c, 64 // r, 128 // r) for c, r in zip(bb.channels, bb.reductions)]
    assert [tuple(f.shape) for f in feats] == expected
    with pytest.raises(ValueError, match="no published pretrained weights"):
        create_backbone("flow_pyramid", pretrained=True)
    with pytest.raises(ValueError, match="one value per level"):
        FlowPyramid(widths=(8, 16), blocks=(1, 1, 1))


# ---- the model ----------------------------------------------------------------------------------------


def test_configs_build_the_default_model(compose):
    from omegaconf import OmegaConf

    cfg = compose(["backbone=flow_pyramid", "head=flow"])
    backbone, head = OmegaConf.to_container(cfg.backbone), OmegaConf.to_container(cfg.head)
    model = create_flow_model(backbone, **head)
    default = create_flow_model("flow_pyramid")
    assert model.levels == default.levels == [64, 32, 16, 8, 4]
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in default.state_dict().items()}  # YAML = class defaults
    assert sum(v.numel() for v in model.parameters()) == 4_205_544


@pytest.mark.parametrize("upsample", ["bilinear", "convex"])
def test_odd_size_shapes_in_eval_and_train(upsample):
    model = tiny_model(upsample=upsample)
    im1, im2 = torch.rand(2, 3, 70, 93), torch.rand(2, 3, 70, 93)
    with torch.no_grad():
        out = model.eval()(im1, im2)
    assert out.shape == (2, 2, 70, 93) and torch.isfinite(out).all()
    model.train()
    model.backbone.eval()  # BN as in eval: then the last level must equal the eval output
    levels = model(im1, im2)
    assert len(levels) == len(model.levels) == 5
    assert all(t.shape == (2, 2, 70, 93) and torch.isfinite(t).all() for t in levels)
    torch.testing.assert_close(levels[-1], out, atol=1e-5, rtol=1e-5)
    sum(t.abs().mean() for t in levels).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_mci0_backbone_and_bad_input():
    torch.manual_seed(0)
    model = create_flow_model(
        {"name": "mci0", "pretrained": False},
        estimator_channels=(16, 16, 8, 8, 8),
        context_channels=(8, 8),
        context_dilations=(1, 2),
        feature_channels=16,
    ).eval()
    assert model.levels == [32, 16, 8, 4] and model.max_displacement == 4 * 60
    with torch.no_grad():
        out = model(torch.rand(1, 3, 45, 61), torch.rand(1, 3, 45, 61))
    assert out.shape == (1, 2, 45, 61) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(1, 3, 45, 61), torch.rand(1, 3, 45, 60))
    with pytest.raises(ValueError, match="must be backbone reductions"):
        CompactFlowNet(model.backbone, levels=(64, 4))


def test_overfit_constant_translation():
    torch.manual_seed(0)
    texture = F.avg_pool2d(torch.rand(1, 3, 68, 68), 5, 1)  # (1, 3, 64, 64), smooth enough to match
    dx, dy = 3, 2
    image1 = texture
    image2 = torch.roll(texture, shifts=(dy, dx), dims=(2, 3))  # pixel p of frame 1 is at p + (dx, dy)
    target = torch.tensor([float(dx), float(dy)]).view(1, 2, 1, 1).expand(1, 2, 64, 64)
    valid = torch.zeros(1, 64, 64, dtype=torch.bool)
    valid[:, : 64 - dy, : 64 - dx] = True  # pixels that do not wrap around
    model = tiny_model().train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        loss = multiscale_flow_loss(model(image1, image2), target, valid)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses


# ---- loss ---------------------------------------------------------------------------------------------


def _flows(values):
    """[(u, v), ...] for a 1 x N row of pixels -> (1, 2, 1, N)."""
    return torch.tensor(values, dtype=torch.float32).t().reshape(1, 2, 1, len(values))


def test_loss_kinds_by_hand():
    pred, target = _flows([(3.0, 4.0), (1.0, -1.0)]), _flows([(0.0, 0.0), (0.0, 0.0)])
    assert flow_level_loss(pred, target, kind="l1").item() == pytest.approx((7 + 2) / 2)
    assert flow_level_loss(pred, target, kind="epe").item() == pytest.approx((5 + math.sqrt(2)) / 2, rel=1e-6)
    robust = (7.01**0.4 + 2.01**0.4) / 2  # (|du| + |dv| + 0.01) ** 0.4
    assert flow_level_loss(pred, target, kind="robust").item() == pytest.approx(robust, rel=1e-6)
    assert epe(pred, target).item() == pytest.approx((5 + math.sqrt(2)) / 2, rel=1e-6)
    valid = torch.tensor([[[False, True]]])
    assert epe(pred, target, valid).item() == pytest.approx(math.sqrt(2), rel=1e-6)
    with pytest.raises(ValueError, match="kind must be one of"):
        flow_level_loss(pred, target, kind="l2")


def test_nan_inf_and_huge_targets_never_poison_the_loss():
    target = _flows([(1.0, 1.0), (float("nan"), 0.0), (float("inf"), 2.0), (300.0, 400.0), (0.0, 2.0)])
    pred = torch.zeros(1, 2, 1, 5, requires_grad=True)
    loss = multiscale_flow_loss([pred], target, kind="l1", max_flow=400.0)
    assert loss.item() == pytest.approx((2 + 2) / 2)  # |(300, 400)| = 500 > 400: out too
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[0, :, 0, 1:4].abs().sum() == 0  # the excluded pixels get no gradient
    # nothing valid: zero loss, still differentiable
    none = multiscale_flow_loss([pred], target, valid=torch.zeros(1, 1, 5, dtype=torch.bool))
    assert none.item() == 0 and none.requires_grad


def test_per_level_weights_aligned_at_the_fine_end():
    target = torch.zeros(1, 2, 4, 4)
    coarse, fine = torch.full((1, 2, 4, 4), 1.0), torch.full((1, 2, 4, 4), 0.5)  # L1: 2 and 1
    loss = multiscale_flow_loss([coarse, fine], target, weights=(9.0, 0.25, 0.5), kind="l1")
    assert loss.item() == pytest.approx(0.25 * 2 + 0.5 * 1)
    with pytest.raises(ValueError, match="only 1 weights"):
        multiscale_flow_loss([coarse, fine], target, weights=(1.0,))


def test_coarse_prediction_uses_valid_average_of_the_target():
    target = torch.zeros(1, 2, 4, 4)
    target[:, 0, :2, :2] = torch.tensor([[4.0, 8.0], [float("nan"), 100.0]])
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    valid[0, 1, 1] = False  # the 100 is masked, the NaN is invalid by itself
    valid[0, 2:, 2:] = False  # one coarse cell without any valid pixel
    down, keep = downsample_flow(target, valid & torch.isfinite(target).all(1), (2, 2))
    assert keep.tolist() == [[[True, True], [True, False]]]
    assert down[0, 0, 0, 0].item() == pytest.approx((4 + 8) / 2 / 2)  # mean of the valid, halved
    assert down[0, 1].abs().sum() == 0
    pred = torch.zeros(1, 2, 2, 2)
    assert flow_level_loss(pred, target, valid, kind="l1").item() == pytest.approx(3.0 / 3)
    with pytest.raises(ValueError, match="must divide"):
        flow_level_loss(torch.zeros(1, 2, 3, 3), target)


def test_loss_is_float32_under_autocast():
    pred, target = torch.rand(1, 2, 4, 4).bfloat16(), torch.rand(1, 2, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = multiscale_flow_loss([pred], target)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx((pred.float() - target).abs().sum(1).mean().item(), rel=1e-6)
