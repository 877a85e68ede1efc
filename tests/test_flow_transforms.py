"""Flow-aware augmentation: flips and zooms move the vectors with the pixels (checked against analytic
motions and by warping), sparse resizing invents no vectors, and the randomness is seeded."""

import cv2
import numpy as np
import pytest
import torch

from densekit.data import SyntheticScenes
from densekit.data.transforms.flow import (
    FlowAugment,
    build_flow_augment,
    crop,
    hflip,
    resize,
    resize_sparse_flow,
    vflip,
)

H, W = 40, 56
A_MAT = np.array([[1.04, 0.03], [-0.02, 0.97]])  # an affine motion about the image centre, plus a shift
SHIFT = np.array([2.5, -1.5])


def texture(xs, ys):
    """A smooth 3-channel pattern (bilinear warping reproduces it to well under 1 %)."""
    return np.stack(
        [
            0.5 + 0.3 * np.sin(0.21 * xs + 0.13 * ys),
            0.5 + 0.3 * np.cos(0.17 * xs - 0.19 * ys),
            0.5 + 0.2 * np.sin(0.1 * (xs + ys)),
        ],
        -1,
    ).astype(np.float32)


def affine_pair(h=H, w=W):
    """Frame 1 = texture; frame 2 = texture moved by p -> A (p - c) + c + t; exact forward flow (pixel
    indices)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    p = np.stack([xs, ys], -1) - c
    flow = p @ (A_MAT - np.eye(2)).T + SHIFT  # (H, W, 2)
    q = np.stack([xs, ys], -1) - c - SHIFT  # frame-2 pixel -> where it came from in frame 1
    src = q @ np.linalg.inv(A_MAT).T + c
    return {
        "image": texture(xs, ys),
        "image2": texture(src[..., 0], src[..., 1]),
        "flow": flow.astype(np.float32),
        "valid": np.ones((h, w), bool),
    }


def warp_error(sample, margin=6):
    """Mean |frame2(p + flow(p)) - frame1(p)| over interior pixels: ~0 iff the flow matches the frames."""
    h, w = sample["valid"].shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    f = sample["flow"]
    warped = cv2.remap(sample["image2"], xs + f[..., 0], ys + f[..., 1], cv2.INTER_LINEAR)
    inner = (slice(margin, h - margin), slice(margin, w - margin))
    return float(np.abs(warped[inner] - sample["image"][inner]).mean())


def test_affine_pair_is_consistent_and_a_wrong_flow_is_caught():
    s = affine_pair()
    assert warp_error(s) < 2e-3
    wrong = dict(s, flow=s["flow"] * np.array([-1, 1], np.float32))  # a flip without negation, in effect
    assert warp_error(wrong) > 2e-2


def test_hflip_twice_is_identity_and_negates_u():
    rng = np.random.default_rng(0)
    s = {
        "image": rng.random((H, W, 3)).astype(np.float32),
        "image2": rng.random((H, W, 3)).astype(np.float32),
        "flow": rng.normal(size=(H, W, 2)).astype(np.float32),
        "valid": rng.random((H, W)) > 0.5,
        "noc": rng.random((H, W)) > 0.5,
    }
    once = hflip(s)
    np.testing.assert_array_equal(once["flow"][:, ::-1, 0], -s["flow"][..., 0])
    np.testing.assert_array_equal(once["flow"][:, ::-1, 1], s["flow"][..., 1])
    twice = hflip(once)
    for key in s:
        np.testing.assert_array_equal(twice[key], s[key])
    v2 = vflip(vflip(s))
    for key in s:
        np.testing.assert_array_equal(v2[key], s[key])
    np.testing.assert_array_equal(vflip(s)["flow"][::-1, :, 1], -s["flow"][..., 1])


@pytest.mark.parametrize("axis", ["hflip", "vflip"])
def test_flipped_pair_matches_the_analytic_flipped_motion(axis):
    s = affine_pair()
    out = FlowAugment({axis: 1.0})(s, rng=np.random.default_rng(0))
    # the mirrored motion: M'(p) = F(M(F(p))) with F the mirror, so flow'(p) = F(M(F(p))) - p
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    mirror = np.array([-1.0, 1.0]) if axis == "hflip" else np.array([1.0, -1.0])
    size = np.array([W - 1, 0.0]) if axis == "hflip" else np.array([0.0, H - 1])
    p = np.stack([xs, ys], -1)
    fp = p * mirror + size  # F(p)
    c = np.array([(W - 1) / 2, (H - 1) / 2])
    moved = (fp - c) @ A_MAT.T + c + SHIFT  # M(F(p))
    expected = moved * mirror + size - p
    np.testing.assert_allclose(out["flow"], expected, atol=1e-4)
    assert warp_error(out) < 2e-3  # and the flipped frames agree with it


@pytest.mark.parametrize("factor", [2.0, 0.5])
def test_scale_multiplies_vectors_and_keeps_frames_consistent(factor):
    s = affine_pair(48, 64)
    out = FlowAugment({"scale": [factor, factor]})(s, rng=np.random.default_rng(0))
    assert out["image"].shape == (int(48 * factor), int(64 * factor), 3)
    const = dict(s, flow=np.broadcast_to(np.array([3.0, -1.0], np.float32), (48, 64, 2)).copy())
    scaled = resize(const, (int(48 * factor), int(64 * factor)))
    expected = np.broadcast_to([3 * factor, -factor], scaled["flow"].shape)
    np.testing.assert_allclose(scaled["flow"], expected, atol=1e-5)
    assert warp_error(out, margin=int(6 * factor)) < (1e-3 if factor > 1 else 6e-3)


def test_stretch_scales_u_and_v_independently():
    s = affine_pair()
    out = resize(dict(s, flow=np.full((H, W, 2), [2.0, 4.0], np.float32)), (H, 2 * W))
    np.testing.assert_allclose(out["flow"][..., 0], 4.0, atol=1e-5)
    np.testing.assert_allclose(out["flow"][..., 1], 4.0, atol=1e-5)
    out = resize(s, (H // 2, W * 2))  # sx = 2, sy = 0.5
    assert warp_error(out, margin=8) < 6e-3


def test_sparse_resize_keeps_exactly_the_valid_vectors():
    rng = np.random.default_rng(3)
    flow = rng.normal(0, 5, (12, 16, 2)).astype(np.float32)
    valid = rng.random((12, 16)) < 0.3
    flow[~valid] = 999.0  # garbage where there is no ground truth: must never leak
    noc = valid & (rng.random((12, 16)) < 0.5)
    up, up_valid, (up_noc,) = resize_sparse_flow(flow, valid, (24, 32), (noc,))
    assert up_valid.sum() == valid.sum()  # none lost, none invented
    ys, xs = np.nonzero(valid)
    np.testing.assert_array_equal(up[2 * ys + 1, 2 * xs + 1], flow[ys, xs] * 2)  # centre of the 2x2 block
    np.testing.assert_array_equal(up_noc[2 * ys + 1, 2 * xs + 1], noc[ys, xs])
    assert (up[~up_valid] == 0).all() and not up_noc[~up_valid].any()
    down, down_valid, _ = resize_sparse_flow(flow, valid, (6, 8))
    assert 0 < down_valid.sum() <= valid.sum()
    for y, x in zip(*np.nonzero(down_valid)):  # each kept vector is one of the valid vectors landing there
        sources = {tuple(flow[yy, xx] * 0.5) for yy, xx in zip(ys, xs) if yy // 2 == y and xx // 2 == x}
        assert tuple(down[y, x]) in sources
    assert (np.abs(down) < 999 * 0.5).all()


def test_sparse_augment_never_interpolates():
    rng = np.random.default_rng(4)
    valid = rng.random((30, 40)) < 0.2
    flow = np.where(valid[..., None], rng.normal(0, 3, (30, 40, 2)), 0).astype(np.float32)
    s = {
        "image": rng.random((30, 40, 3)).astype(np.float32),
        "image2": rng.random((30, 40, 3)).astype(np.float32),
        "flow": flow,
        "valid": valid,
    }
    out = FlowAugment({"scale": [1.7, 1.7]}, sparse=True)(s, rng=np.random.default_rng(0))
    sx, sy = out["valid"].shape[1] / 40, out["valid"].shape[0] / 30
    assert out["valid"].sum() == valid.sum()
    got = np.sort(out["flow"][out["valid"]], axis=0)
    np.testing.assert_allclose(got, np.sort(flow[valid] * [sx, sy], axis=0).astype(np.float32), rtol=1e-6)


def test_crop_is_one_window_and_pads_invalid():
    s = affine_pair()
    out = crop(s, 5, 7, 20, 30)
    for key in ("image", "image2", "flow", "valid"):
        np.testing.assert_array_equal(out[key], s[key][5:25, 7:37])
    big = FlowAugment({"crop": [48, 60]})(s, rng=np.random.default_rng(0))  # larger than the 40x56 pair
    assert big["image"].shape == (48, 60, 3)
    assert big["valid"].sum() == H * W and (big["flow"][~big["valid"]] == 0).all()
    np.testing.assert_array_equal(big["flow"][:H, :W], s["flow"])


def test_scale_is_raised_to_cover_the_crop():
    s = affine_pair()
    out = FlowAugment({"scale": [0.5, 0.5], "crop": [32, 48]})(s, rng=np.random.default_rng(0))
    assert out["valid"].all()  # the pair was zoomed to >= (crop + 8) / size instead of being padded
    assert out["image"].shape == (32, 48, 3)


def test_photometric_symmetric_and_asymmetric_and_erase():
    s = affine_pair()
    s["image2"] = s["image"].copy()
    photo = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
    same = FlowAugment({"photometric": dict(photo, asymmetric_prob=0.0)})(s, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(same["image"], same["image2"])
    assert np.abs(same["image"] - s["image"]).max() > 0.01
    np.testing.assert_array_equal(same["flow"], s["flow"])
    diff = FlowAugment({"photometric": dict(photo, asymmetric_prob=1.0)})(s, rng=np.random.default_rng(1))
    assert np.abs(diff["image"] - diff["image2"]).max() > 0.01
    eraser = FlowAugment({"erase": 1.0, "erase_size": [5, 8], "erase_count": 1})
    erased = eraser(s, rng=np.random.default_rng(2))
    changed = np.abs(erased["image2"] - s["image2"]).max(-1) > 1e-6
    assert 0 < changed.sum() <= 64
    mean = s["image2"].reshape(-1, 3).mean(0)  # the fill: frame 2's mean colour
    fill = np.broadcast_to(mean, (changed.sum(), 3))
    np.testing.assert_allclose(erased["image2"][changed], fill, atol=1e-6)
    np.testing.assert_array_equal(erased["image"], s["image"])
    np.testing.assert_array_equal(erased["valid"], s["valid"])


FULL = {
    "crop": [24, 32],
    "scale": [0.8, 1.6],
    "scale_prob": 0.8,
    "stretch": 0.2,
    "hflip": 0.5,
    "vflip": 0.5,
    "photometric": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.16, "asymmetric_prob": 0.2},
    "erase": 0.5,
    "erase_size": [4, 8],
    "blur": 0.5,
}


def test_seeded_and_reseeded_in_a_new_worker():
    s = affine_pair()
    torch.manual_seed(7)
    first = FlowAugment(FULL)(s)
    torch.manual_seed(7)
    aug = FlowAugment(FULL)
    runs = [aug(s) for _ in range(4)]
    np.testing.assert_array_equal(runs[0]["flow"], first["flow"])
    np.testing.assert_array_equal(runs[0]["image2"], first["image2"])
    assert any(not np.array_equal(runs[0]["image"], r["image"]) for r in runs[1:])
    # a forked worker (new pid) reseeds from torch.initial_seed(), which differs per worker
    torch.manual_seed(11)
    fresh = FlowAugment(FULL)(s)
    aug._pid = -1
    np.testing.assert_array_equal(aug(s)["image"], fresh["image"])


def test_synthetic_scenes_use_the_flow_augment():
    plain = SyntheticScenes("train", length=1, size=(32, 48), seed=3, targets=("flow", "mask"))[0]
    kw = {"length": 1, "size": (32, 48), "seed": 3}
    flipped = SyntheticScenes("train", **kw, targets=("flow", "mask"), augment={"hflip": 1.0})[0]
    torch.testing.assert_close(flipped["image2"], plain["image2"].flip(-1))
    torch.testing.assert_close(flipped["flow"][0], -plain["flow"][0].flip(-1))
    torch.testing.assert_close(flipped["flow"][1], plain["flow"][1].flip(-1))
    assert torch.equal(flipped["valid"], plain["valid"].flip(-1))
    assert torch.equal(flipped["mask"], plain["mask"].flip(-1))
    zoom = SyntheticScenes("train", **kw, targets=("flow",), augment={"scale": [2.0, 2.0]})[0]
    assert zoom["flow"].shape == (2, 64, 96)
    assert zoom["flow"].abs().max() > 1.5 * plain["flow"].abs().max()
    with pytest.raises(ValueError, match="falsify the metric depth"):
        SyntheticScenes("train", length=1, targets=("flow", "depth"), augment={"scale": [1.0, 2.0]})


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"rotate": 1}, "unknown flow augmentation"),
        ({"hflip": 1.5}, "augment.hflip must be a probability"),
        ({"photometric": {"gamma": 1}}, "unknown augment.photometric key"),
        ({"photometric": {"hue": 0.7}}, "augment.photometric.hue must be a number in"),
        ({"scale": [2.0, 1.0]}, "lo <= hi"),
        ({"stretch": 0.2}, "set scale"),
        ({"crop": [4, 4]}, "augment.crop must hold two ints >= 8"),
        ({"erase": 0.5, "erase_count": 0}, "erase_count must be an int >= 1"),
    ],
)
def test_bad_configs(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_flow_augment(cfg)
