"""Volume metrics (per-case Dice per class and per BraTS region, HD95) and the volume loss, on tiny volumes
whose answers are computed by hand."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from densekit.losses import volume_loss
from densekit.metrics import VolumeMetrics, volume_metrics

# one case, (D, H, W) = (1, 2, 4), voxels in flat order
TARGET = torch.tensor([0, 1, 2, 2, 3, 3, 0, 0]).reshape(1, 1, 2, 4)
PRED = torch.tensor([0, 1, 2, 0, 3, 2, 2, 0]).reshape(1, 1, 2, 4)
# by hand: class 1: t{1} p{1} -> 1; class 2: t{2,3} p{2,5,6}, tp 1 -> 2/5; class 3: t{4,5} p{4} -> 2/3
# WT {1,2,3}: t{1..5} p{1,2,4,5,6}, tp 4 -> 8/10; TC {1,3}: t{1,4,5} p{1,4}, tp 2 -> 4/5; ET = class 3
HAND = {
    "Dice/necrotic_core": 1.0,
    "Dice/edema": 0.4,
    "Dice/enhancing": 2 / 3,
    "Dice/WT": 0.8,
    "Dice/TC": 0.8,
    "Dice/ET": 2 / 3,
}
NAMES = ["background", "necrotic_core", "edema", "enhancing"]


def test_dice_per_class_and_region_match_hand_computation():
    out = volume_metrics(PRED, TARGET, num_classes=4, labels="brats2023", class_names=NAMES)
    for key, value in HAND.items():
        assert out[key] == pytest.approx(value), key
    assert out["mDice"] == pytest.approx((1 + 0.4 + 2 / 3) / 3)
    assert out["Dice/regions"] == pytest.approx((0.8 + 0.8 + 2 / 3) / 3)
    # the 2021 convention maps to the same train ids, so the same numbers
    assert volume_metrics(PRED, TARGET, num_classes=4, labels="brats2021", class_names=NAMES) == out
    # no convention: classes only, no regions
    plain = volume_metrics(PRED, TARGET, num_classes=4, labels=None)
    assert set(plain) == {"mDice", "Dice/1", "Dice/2", "Dice/3"} and plain["Dice/2"] == pytest.approx(0.4)


def test_scores_give_the_same_answer_as_labels():
    scores = F.one_hot(PRED, 4).movedim(-1, 1).float() * 5.0  # (B, K, D, H, W)
    want = volume_metrics(PRED, TARGET, class_names=NAMES)
    assert volume_metrics(scores, TARGET, class_names=NAMES) == want


def test_dice_is_averaged_per_case_and_empty_empty_is_one():
    empty = torch.zeros_like(TARGET)
    pred = torch.cat([PRED, empty, empty])
    target = torch.cat([TARGET, empty, empty.clone()])
    target[2, 0, 0, 0] = 3  # case 3: an enhancing voxel the prediction misses -> ET, TC, WT, class 3 = 0
    out = volume_metrics(pred, target, num_classes=4, class_names=NAMES)
    # case 2 (empty/empty) scores 1 everywhere; case 3 scores 1 except for the structures holding label 3
    assert out["Dice/edema"] == pytest.approx((0.4 + 1 + 1) / 3)
    assert out["Dice/necrotic_core"] == pytest.approx((1 + 1 + 1) / 3)
    assert out["Dice/enhancing"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert out["Dice/WT"] == pytest.approx((0.8 + 1 + 0) / 3)
    # pooled over voxels the answer would differ: per case is the BraTS convention
    assert out["Dice/enhancing"] != pytest.approx(2 * 1 / (3 + 1))


def test_invalid_and_ignored_voxels_are_not_counted():
    valid = torch.ones_like(TARGET, dtype=torch.bool)
    valid.view(-1)[6] = False  # the false edema voxel at 6 no longer counts: class 2 -> t{2,3} p{2,5}: 2/4
    out = volume_metrics(PRED, TARGET, valid, class_names=NAMES)
    assert out["Dice/edema"] == pytest.approx(0.5)
    target = TARGET.clone()
    target.view(-1)[6] = 255
    assert volume_metrics(PRED, target, class_names=NAMES) == out
    with pytest.raises(ValueError, match=r"target holds labels \[7\] outside \[0, 4\)"):
        volume_metrics(PRED, torch.full_like(TARGET, 7), class_names=NAMES)
    with pytest.raises(ValueError, match=r"pred \(B, D, H, W\) labels"):
        volume_metrics(PRED[0], TARGET[0], class_names=NAMES)


def test_accumulator_equals_functional_over_all_cases():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (5, 3, 4, 5), generator=gen)
    pred = torch.where(
        torch.rand(target.shape, generator=gen) < 0.7, target, torch.randint(0, 4, target.shape, generator=gen)
    )
    pred[3] = 0
    target[3] = 0  # an empty/empty case among them
    metric = VolumeMetrics(num_classes=4, labels="brats2023", class_names=NAMES)
    for chunk in ((0, 2), (2, 3), (3, 5)):
        metric.update(pred[slice(*chunk)], target[slice(*chunk)])
    got, want = metric.compute(), volume_metrics(pred, target, class_names=NAMES)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert metric.compute() == {}


def brute_hd95(a: np.ndarray, b: np.ndarray) -> float:
    """HD95 by brute force: surfaces (voxels with a 6-neighbour outside), all-pairs distances."""

    def surface(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m))

    sa, sb = surface(a), surface(b)
    d = np.sqrt(((sa[:, None, :] - sb[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


def test_hd95_against_brute_force_and_the_empty_cases():
    target = torch.zeros(3, 10, 12, 14, dtype=torch.long)
    pred = torch.zeros_like(target)
    target[0, 3:7, 3:8, 4:9] = 3
    pred[0, 3:7, 4:9, 6:12] = 3  # shifted and widened
    pred[1, 2:4, 2:4, 2:4] = 3  # case 1: target empty, prediction not -> the diagonal
    out = volume_metrics(pred, target, class_names=NAMES, hd95=True)
    hd0 = brute_hd95(pred[0].numpy() == 3, target[0].numpy() == 3)
    assert hd0 > 1
    diagonal = math.sqrt(10**2 + 12**2 + 14**2)
    assert out["HD95/ET"] == pytest.approx((hd0 + diagonal + 0.0) / 3, rel=1e-5)  # case 2: both empty -> 0
    assert out["HD95/necrotic_core"] == 0.0  # empty everywhere
    spaced = volume_metrics(pred[:1], target[:1], class_names=NAMES, hd95=True, spacing=(2.0, 2.0, 2.0))
    assert spaced["HD95/ET"] == pytest.approx(2 * hd0, rel=1e-5)
    metric = VolumeMetrics(num_classes=4, class_names=NAMES, hd95=True)
    metric.update(pred[:2], target[:2])
    metric.update(pred[2:], target[2:])
    assert metric.compute()["HD95/ET"] == pytest.approx(out["HD95/ET"])


# -- loss ----------------------------------------------------------------------------------------------------
def test_loss_perfect_logits_are_near_zero_and_uniform_logits_match_hand_value():
    target = torch.tensor([0, 1, 2, 2, 3, 3, 0, 0]).reshape(1, 1, 2, 4)
    perfect = F.one_hot(target, 4).movedim(-1, 1).float() * 30.0
    assert volume_loss(perfect, target).item() < 1e-4
    uniform = torch.zeros(1, 4, 1, 2, 4)
    # CE = log 4; Dice per foreground class c with n_c voxels of 8: (2 n_c / 4 + s) / (8 / 4 + n_c + s)
    s = 1e-5
    dice = [(2 * n / 4 + s) / (2 + n + s) for n in (1, 2, 2)]
    expect = math.log(4) + 1 - sum(dice) / 3
    assert volume_loss(uniform, target).item() == pytest.approx(expect, rel=1e-5)
    assert volume_loss(uniform, target, dice_weight=0.0).item() == pytest.approx(math.log(4), rel=1e-6)


def test_loss_excludes_invalid_voxels_and_stays_finite():
    gen = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (2, 3, 4, 5), generator=gen)
    logits = torch.randn(2, 4, 3, 4, 5, generator=gen, requires_grad=True)
    valid = torch.rand(target.shape, generator=gen) > 0.3
    loss = volume_loss(logits, target, valid)
    loss.backward()
    assert torch.all(logits.grad.movedim(1, -1)[~valid] == 0)  # invalid voxels get no gradient
    # changing what sits at the invalid voxels changes nothing
    other_t = torch.where(valid, target, (target + 1) % 4)
    other_l = torch.where(valid[:, None], logits.detach(), torch.randn(logits.shape, generator=gen) * 9)
    assert volume_loss(other_l, other_t, valid).item() == pytest.approx(loss.item(), rel=1e-6)
    ignored = target.masked_fill(~valid, 255)
    assert volume_loss(logits.detach(), ignored).item() == pytest.approx(loss.item(), rel=1e-6)
    # no voxel counted: 0 with a graph, not NaN; huge half-precision logits stay finite
    empty = volume_loss(logits, target, torch.zeros_like(valid))
    assert empty.item() == 0.0 and empty.requires_grad
    big = (torch.randn(2, 4, 3, 4, 5, generator=gen) * 1e4).half()
    value = volume_loss(big, target, valid)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    with pytest.raises(ValueError, match=r"logits \(B, K, D, H, W\) and target \(B, D, H, W\)"):
        volume_loss(logits[0], target)
