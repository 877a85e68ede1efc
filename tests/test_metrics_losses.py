import math

import pytest
import torch
import torch.nn.functional as F

from densekit.losses import seg_loss
from densekit.metrics import SegMetrics, confusion_matrix, seg_metrics
from densekit.tasks import make_schedule

# target / prediction on a 2x4 image, 3 classes, one ignored pixel (255)
TARGET = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 0]]])
PRED = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 0]]])


def test_confusion_matrix_hand_case():
    cm = confusion_matrix(PRED, TARGET, 3)
    # rows = target, cols = pred; the ignored pixel is not counted
    assert cm.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_seg_metrics_hand_case():
    m = seg_metrics(PRED, TARGET, num_classes=3, class_names=["a", "b", "c"])
    # IoU: a = 2/(3+3-2) = 0.5, b = 2/(2+3-2) = 2/3, c = 1/(2+1-1) = 0.5
    assert m["IoU/a"] == pytest.approx(0.5)
    assert m["IoU/b"] == pytest.approx(2 / 3)
    assert m["IoU/c"] == pytest.approx(0.5)
    assert m["mIoU"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert m["pixel_acc"] == pytest.approx(5 / 7)
    # Dice: 2tp/(gt+pred): a 4/6, b 4/5, c 2/3
    assert m["mDice"] == pytest.approx((4 / 6 + 4 / 5 + 2 / 3) / 3)


def test_valid_mask_and_logits_input():
    valid = torch.ones_like(TARGET, dtype=torch.bool)
    valid[0, 0, 1] = False  # drop the one wrong 'a' pixel
    logits = F.one_hot(PRED, 3).permute(0, 3, 1, 2).float()
    m = seg_metrics(logits, TARGET, valid=valid)
    assert m["IoU/0"] == pytest.approx(2 / 3)  # tp 2, gt 3, pred 2
    assert m["pixel_acc"] == pytest.approx(5 / 6)


def test_absent_class_is_left_out_of_the_mean():
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    m = seg_metrics(target.clone(), target, num_classes=4)
    assert m["mIoU"] == 1.0 and math.isnan(m["IoU/3"])


def test_out_of_range_labels_raise():
    with pytest.raises(ValueError, match=r"labels \[7\] outside \[0, 3\)"):
        confusion_matrix(PRED, torch.full_like(TARGET, 7), 3)


def test_seg_metric_accumulates_like_one_batch():
    metric = SegMetrics(3, ["a", "b", "c"])
    metric.update(PRED[:, :1], TARGET[:, :1])
    metric.update(PRED[:, 1:], TARGET[:, 1:])
    assert metric.compute() == seg_metrics(PRED, TARGET, num_classes=3, class_names=["a", "b", "c"])


def test_seg_loss_is_cross_entropy_with_ignore_and_valid():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 2, 4)
    ref = F.cross_entropy(logits, TARGET, ignore_index=255)
    assert seg_loss(logits, TARGET).item() == pytest.approx(ref.item())
    valid = torch.ones_like(TARGET, dtype=torch.bool)
    valid[0, 0, :2] = False
    masked = TARGET.clone()
    masked[0, 0, :2] = 255
    assert seg_loss(logits, TARGET, valid).item() == pytest.approx(
        F.cross_entropy(logits, masked, ignore_index=255).item()
    )
    with_dice = seg_loss(logits, TARGET, dice_weight=1.0)
    assert with_dice.item() > ref.item()
    with pytest.raises(ValueError, match="expects logits"):
        seg_loss(logits, TARGET[0])


def test_cosine_and_poly_schedules():
    cos = make_schedule("cosine", total_steps=100, warmup_steps=10, min_ratio=0.0)
    assert cos(0) == pytest.approx(1 / 11)
    assert cos(10) == pytest.approx(1.0)
    assert cos(55) == pytest.approx(0.5)
    assert cos(100) == pytest.approx(0.0)
    poly = make_schedule("poly", total_steps=100, power=1.0)
    assert poly(50) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_schedule("step", 10)
