"""Flow metrics on hand-computed cases, the accumulating torchmetrics version, and the flow colour wheel."""

import math

import numpy as np
import pytest
import torch

from densekit.metrics import FlowMetrics, flow_metrics
from densekit.viz import color_wheel, flow_error_map, flow_panel, flow_to_color


def case():
    """1 x 2 x 2 x 3 flow; errors per pixel (gt, pred) chosen by hand:
    (0,0): gt (3,4) |5|, pred (3,4)       EPE 0
    (0,1): gt (0,0),     pred (0.6,0.8)   EPE 1     (not < 1)
    (0,2): gt (10,0),    pred (10,2.5)    EPE 2.5
    (1,0): gt (100,0),   pred (104,0)     EPE 4     > 3 but < 5 % of 100 -> not an Fl outlier
    (1,1): gt (20,0),    pred (20,-6)     EPE 6     > 3 and > 1 (5 % of 20) -> outlier
    (1,2): gt NaN                         invalid whatever the prediction
    """
    nan = float("nan")
    gt = torch.tensor([[[3, 0, 10], [100, 20, nan]], [[4, 0, 0], [0, 0, 0]]], dtype=torch.float32)[None]
    pred = torch.tensor([[[3, 0.6, 10], [104, 20, 7]], [[4, 0.8, 2.5], [0, -6, 7]]])[None]  # (1, 2, 2, 3)
    return pred, gt


def test_hand_computed_scores():
    pred, gt = case()
    m = flow_metrics(pred, gt)
    assert m["epe"] == pytest.approx((0 + 1 + 2.5 + 4 + 6) / 5)
    assert m["1px"] == pytest.approx(1 / 5)  # EPE < 1: only the exact pixel
    assert m["3px"] == pytest.approx(3 / 5)
    assert m["5px"] == pytest.approx(4 / 5)
    assert m["fl_all"] == pytest.approx(100 * 1 / 5)  # percent
    valid = torch.tensor([[[True, True, False], [True, True, True]]])
    m = flow_metrics(pred, gt, valid)
    assert m["epe"] == pytest.approx((0 + 1 + 4 + 6) / 4) and m["fl_all"] == pytest.approx(25.0)


def test_noc_split():
    pred, gt = case()
    noc = torch.tensor([[[True, True, True], [False, False, True]]])
    m = flow_metrics(pred, gt, noc=noc)
    assert m["epe_noc"] == pytest.approx((0 + 1 + 2.5) / 3) and m["fl_all_noc"] == 0.0
    assert m["epe_occ"] == pytest.approx(5.0) and m["fl_all_occ"] == pytest.approx(50.0)
    assert m["3px_occ"] == 0.0 and m["5px_occ"] == pytest.approx(0.5)
    empty = flow_metrics(pred, gt, noc=torch.ones_like(noc))
    assert math.isnan(empty["epe_occ"]) and empty["epe_noc"] == pytest.approx(m["epe"])


def test_accumulation_is_pixel_averaged_over_the_dataset():
    pred, gt = case()
    metric = FlowMetrics()
    metric.update(pred, gt)  # 5 valid pixels, EPE sum 13.5
    big_gt = torch.zeros(1, 2, 4, 5)
    metric.update(big_gt + torch.tensor([1.0, 0.0])[None, :, None, None], big_gt)  # 20 pixels of EPE 1
    m = metric.compute()
    assert m["epe"] == pytest.approx((13.5 + 20) / 25)  # not the mean of per-batch means (1.55)
    assert m["1px"] == pytest.approx(1 / 25) and m["fl_all"] == pytest.approx(4.0)
    noc_metric = FlowMetrics(with_noc=True)
    with pytest.raises(ValueError, match="needs the noc mask"):
        noc_metric.update(pred, gt)


def test_bad_shapes_and_nan_prediction():
    pred, gt = case()
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        flow_metrics(pred[0], gt[0])
    with pytest.raises(ValueError, match=r"valid must be \(B, H, W\) = \(1, 2, 3\)"):
        flow_metrics(pred, gt, torch.ones(2, 3, dtype=torch.bool))
    pred[0, 0, 0, 0] = float("nan")  # a diverged prediction is not hidden
    assert math.isnan(flow_metrics(pred, gt)["epe"])


# -- colour wheel -----------------------------------------------------------------------------------------
def test_wheel_construction():
    wheel = color_wheel()
    assert wheel.shape == (55, 3)
    np.testing.assert_array_equal(wheel[0], [255, 0, 0])  # red
    np.testing.assert_array_equal(wheel[15], [255, 255, 0])  # yellow starts the YG segment
    np.testing.assert_array_equal(wheel[21], [0, 255, 0])  # green
    np.testing.assert_array_equal(wheel[25], [0, 255, 255])  # cyan
    np.testing.assert_array_equal(wheel[36], [0, 0, 255])  # blue
    np.testing.assert_array_equal(wheel[49], [255, 0, 255])  # magenta
    np.testing.assert_array_equal(wheel[13], [255, 221, 0])  # RY i=13: floor(255 * 13 / 15)


def test_flow_colours_at_known_angles():
    # fk = (atan2(-v, -u) / pi + 1) / 2 * 54 picks the wheel position
    flow = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [0.0, 0.0]]])  # (1, 5, 2)
    col = flow_to_color(flow)
    np.testing.assert_array_equal(col[0, 0], [255, 0, 0])  # right: fk = 0 -> red
    np.testing.assert_array_equal(col[0, 1], [255, 229, 0])  # down: fk = 13.5 -> (221 + 238) / 2 green
    np.testing.assert_array_equal(col[0, 2], [0, 209, 255])  # left: fk = 27 -> CB i=2: 255 - floor(510 / 11)
    np.testing.assert_array_equal(col[0, 3], [88, 0, 255])  # up: fk = 40.5 -> BM i=4,5: (78 + 98) / 2 red
    np.testing.assert_array_equal(col[0, 4], [255, 255, 255])  # no motion: white
    half = flow_to_color(flow * 0.5, max_flow=1.0)  # half magnitude: halfway to white
    np.testing.assert_array_equal(half[0, 0], [255, 127, 127])
    chw = flow_to_color(flow.transpose(2, 0, 1), valid=np.array([[True, False, True, True, True]]))
    np.testing.assert_array_equal(chw[0, 1], [0, 0, 0])  # invalid: black
    np.testing.assert_array_equal(chw[0, 0], col[0, 0])


def test_error_map_and_panel():
    gt = np.zeros((4, 6, 2))
    gt[..., 0] = 2.0
    pred = gt.copy()
    pred[0, 0] = [2.0, 5.0]  # EPE 5 = max_epe: the brightest colour
    valid = np.ones((4, 6), bool)
    valid[3, 5] = False
    err = flow_error_map(pred, gt, valid)
    assert err.shape == (4, 6, 3) and (err[3, 5] == 0).all()
    assert err[0, 0].sum() > 600 and err[1, 1].sum() < 30  # inferno: yellow-white vs near black
    panel = flow_panel(np.full((3, 4, 6), 0.5), torch.from_numpy(gt.transpose(2, 0, 1)), pred, valid)
    assert panel.shape == (4, 24, 3)
    np.testing.assert_array_equal(panel[1, 6], [255, 0, 0])  # gt (2, 0) at the shared max 2 -> full red
    np.testing.assert_array_equal(panel[1, 12], [255, 0, 0])  # prediction on the same scale
    np.testing.assert_array_equal(panel[3, 11], [0, 0, 0])  # invalid gt pixel
