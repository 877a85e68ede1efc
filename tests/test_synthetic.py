import cv2
import numpy as np
import pytest
import torch

from densekit.data import SceneConfig, SyntheticScenes, generate_scene, generate_volume
from densekit.schema import check_sample

CFG = SceneConfig(height=96, width=128)


def test_scene_is_deterministic_per_seed():
    a, b = generate_scene([0, 1, 7], CFG), generate_scene([0, 1, 7], CFG)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = generate_scene([0, 1, 8], CFG)
    assert not np.array_equal(a["image"], c["image"])


def test_scene_targets_shapes_and_ranges():
    s = generate_scene(3, CFG)
    assert s["image"].shape == (96, 128, 3) and s["image"].dtype == np.float32
    assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0
    assert s["mask"].shape == (96, 128) and s["mask"].dtype == np.int64
    assert set(np.unique(s["mask"])) <= {0, 1, 2, 3, 4}
    assert s["depth"].shape == (96, 128) and (s["depth"] > 0).all()
    assert s["flow"].shape == (96, 128, 2) and s["valid"].dtype == bool
    # textured: neither the background nor the objects are flat colours
    assert s["image"][s["mask"] == 0].std() > 0.02


def test_depth_agrees_with_occlusion_order():
    for seed in range(5):
        s = generate_scene(seed, CFG, with_flow=False)
        obj, bg = s["mask"] > 0, s["mask"] == 0
        if obj.any():
            # every visible object is nearer than any background pixel (objects <= 6 m, background >= 12 m)
            assert s["depth"][obj].max() <= CFG.max_depth < s["depth"][bg].min()


def test_flow_is_exact_where_valid():
    """Warping frame 2 back with the flow reproduces frame 1 on valid pixels (up to gain and noise)."""
    for seed in range(4):
        s = generate_scene(seed, CFG)
        h, w = s["mask"].shape
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        warped = cv2.remap(s["image2"], xs + s["flow"][..., 0], ys + s["flow"][..., 1], cv2.INTER_LINEAR)
        err = np.abs(warped - s["image"]).mean(axis=-1)
        valid = s["valid"]
        assert 0.5 < valid.mean() < 1.0  # something is occluded or leaves the view, most is visible
        assert np.median(err[valid]) < 0.06
        assert np.median(err[~valid]) > 2 * np.median(err[valid])


def test_flow_reaches_large_displacements():
    cfg = SceneConfig(height=128, width=512)
    peak = max(np.abs(generate_scene(i, cfg)["flow"]).max() for i in range(6))
    assert 32 < peak <= 64 * 1.5  # translations up to 64 px at 512 px, plus scale/rotation


def test_volume_labels_are_nested():
    v = generate_volume(0, shape=(32, 40, 48), channels=4)
    assert v["image"].shape == (4, 32, 40, 48) and v["mask"].shape == (32, 40, 48)
    counts = np.bincount(v["mask"].ravel(), minlength=4)
    assert (counts[1:] > 0).all()
    # the lesion lies inside the brain, and each inner region is surrounded by the outer ones
    assert v["brain"][v["mask"] > 0].all()
    core = np.argwhere(v["mask"] == 1).mean(0)
    edema = np.argwhere(v["mask"] == 2).mean(0)
    assert np.linalg.norm(core - edema) < 6
    # region intensities differ per channel: the labels are learnable
    means = [v["image"][:, v["mask"] == k].mean(axis=1) for k in (1, 2, 3)]
    assert np.abs(means[0] - means[1]).max() > 0.05


def test_dataset_schema_and_split_streams():
    train = SyntheticScenes("train", length=4, size=(64, 80), targets=("mask",))
    val = SyntheticScenes("val", length=4, size=(64, 80), targets=("mask",))
    s = check_sample(train[0])
    assert s["image"].shape == (3, 64, 80) and s["image"].dtype == torch.float32
    assert s["mask"].shape == (64, 80) and s["mask"].dtype == torch.int64
    assert s["valid"].all()
    assert not torch.equal(train[0]["image"], val[0]["image"])
    torch.testing.assert_close(val[1]["image"], val[1]["image"])
    flow = SyntheticScenes("val", length=1, size=(64, 80), targets=("flow", "depth"))[0]
    assert flow["flow"].shape == (2, 64, 80) and flow["depth"].shape == (1, 64, 80)
    assert flow["image2"].shape == (3, 64, 80)


def test_dataset_augment_keeps_image_and_mask_aligned():
    plain = SyntheticScenes("train", length=2, size=(64, 64), seed=5)
    flipped = SyntheticScenes("train", length=2, size=(64, 64), seed=5, augment={"hflip": 1.0})
    a, b = plain[0], flipped[0]
    torch.testing.assert_close(b["image"], a["image"].flip(-1))
    assert torch.equal(b["mask"], a["mask"].flip(-1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "trainn"}, "split must be"),
        ({"targets": ("normals",)}, "unknown target"),
        ({"length": 0}, "length must be"),
        ({"augment": {"rotate": 1}}, "unknown augmentation"),
        ({"size": (8, 8)}, "at least 16x16"),
    ],
)
def test_dataset_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticScenes(**kwargs)


def test_datamodule_shrinks_the_batch_to_a_train_split_smaller_than_a_batch():
    """drop_last with a batch larger than the split would make an empty epoch (training silently doing
    nothing): the batch shrinks to the split instead, and says so."""
    from densekit.data import DenseDataModule

    dm = DenseDataModule(lambda split: SyntheticScenes(split, length=3, size=(32, 32)), batch_size=4)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert dm.batch_size == 3 and len(batches) == 1 and batches[0]["image"].shape == (3, 3, 32, 32)
    assert dm.notes == ["the train split has 3 samples, fewer than data.batch_size=4: batch size 3 is used"]
