"""Depth metrics against values computed by hand, the evaluation crops' exact rows/columns, caps, invalid
ground truth, median scaling, and the accumulator against the functional form."""

import math

import pytest
import torch

from densekit.metrics import EVAL_CROPS, DepthMetrics, depth_metrics
from densekit.metrics.depth import DEPTH_METRIC_NAMES, crop_mask

GT = torch.tensor([[1.0, 2.0], [4.0, 5.0]])
PRED = torch.tensor([[1.0, 1.0], [5.0, 5.0]])


def test_each_metric_on_a_2x2_map_computed_by_hand():
    m = depth_metrics(PRED, GT)
    # per pixel: |g-p| = 0, 1, 1, 0; ratios max(g/p, p/g) = 1, 2, 1.25, 1;
    # d = ln p - ln g = 0, -ln 2, ln 1.25, 0
    assert m["abs_rel"] == pytest.approx((0 + 1 / 2 + 1 / 4 + 0) / 4)  # 0.1875
    assert m["sq_rel"] == pytest.approx((0 + 1 / 2 + 1 / 4 + 0) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(2 / 4))
    d = [0.0, -math.log(2), math.log(1.25), 0.0]
    mean_d, mean_d2 = sum(d) / 4, sum(x * x for x in d) / 4
    assert m["rmse_log"] == pytest.approx(math.sqrt(mean_d2))
    assert m["silog"] == pytest.approx(100 * math.sqrt(mean_d2 - mean_d**2))
    assert m["log10"] == pytest.approx((math.log10(2) + math.log10(1.25)) / 4)
    # 1.25 is not < 1.25 (strict, as in BTS); 2 is not < 1.25^3 = 1.953
    assert (m["d1"], m["d2"], m["d3"]) == (0.5, 0.75, 0.75)
    assert set(m) == set(DEPTH_METRIC_NAMES)


def test_silog_is_scale_invariant_and_rmse_log_is_not():
    m = depth_metrics(2 * GT, GT)
    assert m["silog"] == pytest.approx(0.0, abs=1e-6)
    assert m["rmse_log"] == pytest.approx(math.log(2))
    assert m["abs_rel"] == pytest.approx(1.0)
    assert m["d1"] == 0.0 and m["d3"] == 0.0  # ratio 2 > 1.25^3


def test_images_are_averaged_not_pixels():
    gt = torch.ones(2, 1, 2, 2)
    pred = torch.ones(2, 1, 2, 2)
    pred[0, 0, 0, 0] = 2.0  # image 0: one pixel with |g-p|/g = 1 among 4 -> 0.25
    valid = torch.ones(2, 2, 2, dtype=torch.bool)
    valid[0] = False
    valid[0, 0, 0] = True  # image 0 counts that pixel only -> abs_rel 1; image 1: 4 perfect pixels -> 0
    m = depth_metrics(pred, gt, valid)
    assert m["abs_rel"] == pytest.approx(0.5)  # (1 + 0) / 2 images; the pooled mean would be 1/5
    assert m["d1"] == pytest.approx(0.5)


def test_input_shapes_agree_and_bad_shapes_are_refused():
    ref = depth_metrics(PRED, GT)
    assert depth_metrics(PRED[None, None], GT[None, None]) == ref
    assert depth_metrics(PRED[None], GT[None]) == ref
    with pytest.raises(ValueError, match="same shape"):
        depth_metrics(PRED, GT[:, :1])
    with pytest.raises(ValueError, match=r"\(B,1,H,W\)"):
        depth_metrics(torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2, 2))


def test_invalid_ground_truth_is_ignored():
    gt = torch.tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), 0.0]])
    pred = torch.tensor([[1.0, 1.0, 123.0], [5.0, -7.0, 3.0]])  # garbage where gt is NaN/inf/0
    m = depth_metrics(pred, gt)
    assert m["abs_rel"] == pytest.approx((0 + 0.5 + 0.25) / 3)
    assert all(math.isfinite(v) for v in m.values())
    valid = torch.ones(2, 3, dtype=torch.bool)
    valid[0, 1] = False  # and an explicit valid mask removes the 2 m pixel too
    assert depth_metrics(pred, gt, valid)["abs_rel"] == pytest.approx(0.25 / 2)


def test_caps_count_gt_in_min_max_and_clamp_predictions():
    gt = torch.tensor([[0.0005, 90.0, 80.0, 10.0]])
    pred = torch.tensor([[50.0, 1.0, 100.0, 0.0]])
    m = depth_metrics(pred, gt, max_depth=80.0)
    # counted: gt 80 (pred 100 -> clamped to 80: exact) and gt 10 (pred 0 -> clamped to 1e-3)
    assert m["abs_rel"] == pytest.approx((0 + (10 - 1e-3) / 10) / 2)
    assert m["d1"] == pytest.approx(0.5)
    assert depth_metrics(gt, gt, min_depth=1e-3)["abs_rel"] == pytest.approx(0.0)  # 90 counts without max_depth
    with pytest.raises(ValueError, match="max_depth"):
        depth_metrics(pred, gt, min_depth=1.0, max_depth=0.5)


def test_nan_prediction_makes_metrics_nan_and_empty_input_is_nan():
    pred = PRED.clone()
    pred[0, 0] = float("nan")
    assert math.isnan(depth_metrics(pred, GT)["rmse"])
    assert all(math.isnan(v) for v in depth_metrics(PRED, torch.zeros(2, 2)).values())


def test_eval_crops_select_exactly_the_stated_rows_and_columns():
    def box(crop, h, w):
        mask = crop_mask(crop, h, w)
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        assert int(mask.sum()) == int(mask[top:bottom, left:right].sum()) == (bottom - top) * (right - left)
        return top, bottom, left, right

    assert box("eigen_nyu", 480, 640) == (45, 471, 41, 601)
    assert box("eigen_nyu", 240, 320) == (22, 235, 20, 300)  # same fractions, floored
    # int(0.40810811 * 375) = 153, int(0.99189189 * 375) = 371,
    # int(0.03594771 * 1242) = 44, int(0.96405229 * 1242) = 1197
    assert box("garg", 375, 1242) == (153, 371, 44, 1197)
    assert box("eigen_kitti", 375, 1242) == (124, 342, 44, 1197)
    assert crop_mask(None, 3, 4).all()
    assert set(EVAL_CROPS) == {"eigen_nyu", "garg", "eigen_kitti"}
    with pytest.raises(ValueError, match="unknown depth evaluation crop"):
        crop_mask("nyu", 4, 4)


def test_crop_ignores_errors_outside_it():
    # at 48x64 the eigen_nyu fractions: rows floor(4.5):floor(47.1) = 4:47, cols floor(4.1):floor(60.1) = 4:60
    gt = torch.full((48, 64), 2.0)
    pred = gt.clone()
    pred[:4] = 9.0
    pred[47:] = 9.0
    pred[:, :4] = 9.0
    pred[:, 60:] = 9.0
    assert depth_metrics(pred, gt, crop="eigen_nyu")["abs_rel"] == pytest.approx(0.0)
    pred[4, 4] = 3.0  # the first row/column inside the crop do count
    m = depth_metrics(pred, gt, crop="eigen_nyu")
    assert m["abs_rel"] == pytest.approx(0.5 / (43 * 56))
    assert depth_metrics(pred, gt)["abs_rel"] > 0.5


def test_median_scaling_makes_a_scaled_prediction_perfect():
    gt = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 9 + 1
    pred = gt * torch.tensor([3.7, 0.2]).view(2, 1, 1, 1)  # a different unknown scale per image
    m = depth_metrics(pred, gt, median_scaling=True)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-6) and m["d1"] == 1.0
    assert depth_metrics(pred, gt)["abs_rel"] > 0.7


def test_accumulator_equals_functional_over_batches():
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(5, 1, 24, 32, generator=g) * 12
    gt[gt < 0.5] = 0.0  # sparse ground truth
    gt[3] = 0.0  # an image with nothing to count: left out of the mean, in both forms
    pred = gt * (1 + 0.3 * torch.randn(5, 1, 24, 32, generator=g)) + 0.1
    valid = torch.rand(5, 24, 32, generator=g) > 0.1
    options = {"max_depth": 10.0, "crop": "eigen_nyu", "min_depth": 0.01}
    ref = depth_metrics(pred, gt, valid, **options)
    metric = DepthMetrics(**options)
    for lo, hi in ((0, 2), (2, 3), (3, 5)):
        metric.update(pred[lo:hi], gt[lo:hi], valid[lo:hi])
    out = metric.compute()
    assert int(metric.images) == 4
    for key in DEPTH_METRIC_NAMES:
        assert out[key] == pytest.approx(ref[key], rel=1e-9), key
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):  # torchmetrics' own notice
        assert all(math.isnan(v) for v in metric.compute().values())
    with pytest.raises(ValueError, match="unknown depth evaluation crop"):
        DepthMetrics(crop="kb")
