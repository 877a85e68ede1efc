"""Images of a folder segmentation dataset as microscopes, scanners and cameras write them (issue 14): 8-bit
JPEG/PNG unchanged, 16-bit and float images scaled by the train split's measured range, grey replicated to
RGB; and the default crop cut to small images. Datasets are written in tmp_path in the documented layout."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from densekit.data import FolderSeg
from densekit.data.transforms.image import apply_augment, build_augment
from densekit.errors import ConfigError
from helpers import FC_H as H
from helpers import FC_W as W
from helpers import box_mask, grey16, rgb_image, write_folder


# -- images: 8-bit unchanged, 16-bit / float scaled, grey replicated ---------------------------------------
def test_jpeg_and_png_8bit_images_are_bit_for_bit_rgb_over_255(tmp_path):
    images = {"a": rgb_image(k=1), "b": rgb_image(k=2)}
    root = write_folder(
        tmp_path, {"a": box_mask(1), "b": box_mask(1, k=1)}, images=images, suffix={"a": ".jpg", "b": ".png"}
    )
    ds = FolderSeg("train", root=root)
    for i, path in enumerate(sorted((root / "images" / "train").iterdir())):
        expected = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).astype(np.float32) / 255.0)
        assert torch.equal(ds[i]["image"], expected.permute(2, 0, 1))
    assert ds.source_channels == 3 and ds.in_channels == 3


def test_16bit_grey_image_using_0_to_235_is_not_black(tmp_path):
    img, arr = grey16(np.arange(236))  # 0..235 of 0..65535: / 65535 would be at most 0.0036
    root = write_folder(tmp_path, {"a": box_mask(1)}, images={"a": img})
    assert Image.open(root / "images" / "train" / "a.png").mode == "I;16"
    ds = FolderSeg("train", root=root)
    x = ds[0]["image"]
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, H, W)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey replicated to RGB
    lo, hi = np.percentile(arr.astype(np.float64), [0.5, 99.5])
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    expected = np.clip((arr.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo), 0, 1)
    np.testing.assert_allclose(x[0].numpy(), expected, atol=1e-6)
    assert 0.4 < float(x.mean()) < 0.6
    assert ds.in_channels == 3 and ds.source_channels == 1
    assert any("replicated to 3 channels" in n for n in ds.notes)
    assert any("0.5-99.5 percentiles of 1 train image(s)" in n and "data.intensity.range=[" in n for n in ds.notes)
    # the dtype rule, for contrast: the same file as good as black
    dark = FolderSeg("train", root=root, intensity={"mode": "dtype"})[0]["image"]
    assert float(dark.max()) == pytest.approx(235 / 65535, abs=1e-6)


def test_val_reuses_the_train_splits_intensity_range(tmp_path):
    train_img, _ = grey16([1000, 2000, 3000, 4000])
    val_img, _ = grey16([500, 2500, 6000, 2500])  # brighter and darker than anything in train
    write_folder(tmp_path, {"a": box_mask(1)}, images={"a": train_img})
    write_folder(tmp_path, {"v": box_mask(1)}, images={"v": val_img}, split="val")
    train = FolderSeg("train", root=tmp_path, intensity={"low": 0, "high": 100})
    val = FolderSeg("val", root=tmp_path, intensity={"low": 0, "high": 100})
    assert val.intensity.range == train.intensity.range == (1000.0, 4000.0)
    x = val[0]["image"][0, 0, :4].tolist()  # 500, 2500, 6000, 2500 with the train's [1000, 4000]
    assert x == pytest.approx([0.0, 0.5, 1.0, 0.5])
    per_image = FolderSeg("val", root=tmp_path, intensity={"low": 0, "high": 100, "scope": "image"})
    assert per_image[0]["image"][0, 0, :4].tolist() == pytest.approx([0.0, 2000 / 5500, 1.0, 2000 / 5500])
    fixed = FolderSeg("val", root=tmp_path, intensity={"range": [0, 10000]})
    assert fixed[0]["image"][0, 0, :4].tolist() == pytest.approx([0.05, 0.25, 0.6, 0.25])


def _rgb16(k=0):
    """A 16-bit colour image using 0..4000 of 0..65535, red, green and blue ramps told apart."""
    ys, xs = np.mgrid[0:H, 0:W]
    return np.stack([xs * 4000 // (W - 1), ys * 4000 // (H - 1), np.full_like(xs, 1000 + 100 * k)], -1).astype(
        np.uint16
    )


def test_16bit_colour_png_and_tiff_are_read_at_full_depth(tmp_path):
    import cv2

    tifffile = pytest.importorskip("tifffile")
    (tmp_path / "images" / "train").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "train" / "a.png"), _rgb16(0)[..., ::-1])  # OpenCV writes BGR
    tifffile.imwrite(tmp_path / "images" / "train" / "b.tif", _rgb16(1))
    assert np.asarray(Image.open(tmp_path / "images" / "train" / "a.png")).max() <= 16  # Pillow's 8-bit cut
    write_folder(tmp_path, {"a": box_mask(1), "b": box_mask(1)}, images={"a": None, "b": None}, suffix={})
    ds = FolderSeg("train", root=tmp_path, intensity={"low": 0, "high": 100})
    assert ds.intensity.range == (0.0, 4000.0)
    for i, k in ((0, 0), (1, 1)):
        x = ds[i]["image"]
        np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), _rgb16(k) / 4000.0, atol=1e-6)
        assert float(x[0, 0, -1]) == 1.0 and float(x[1, -1, 0]) == 1.0  # red ramps along x, green along y


def test_float_tiff_image_is_scaled_and_augmented_in_float(tmp_path):
    arr = np.resize(np.linspace(-3.0, 7.0, 50, dtype=np.float32), (H, W))
    write_folder(tmp_path, {"a": box_mask(1)}, images={"a": Image.fromarray(arr)}, suffix=".tif")
    ds = FolderSeg(
        "train",
        root=tmp_path,
        intensity={"low": 0, "high": 100},
        augment={"crop": [H + 4, W + 6], "hflip": 1.0, "color_jitter": 0.3},
    )
    s = ds[0]
    x = s["image"]
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, H + 4, W + 6)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # crop padding is not valid (colour jitter runs after the crop, so it may lift the padded 0s); the real
    # pixels are not quantised to 1/255 steps
    assert int((~s["valid"]).sum()) == (H + 4) * (W + 6) - H * W and bool((s["mask"][~s["valid"]] == 255).all())
    real = x[0][s["valid"]].numpy()
    assert np.abs(real * 255 - np.round(real * 255)).max() > 1e-3


def test_float32_image_through_every_augmentation_stays_float_in_unit_range():
    rng = np.random.default_rng(0)
    image = rng.random((H, W, 3), dtype=np.float32)
    sample = {"image": image, "mask": box_mask(1).astype(np.int64)}
    for extra in ({}, {"gauss_noise": 1.0}):  # noise runs after the crop: it also lands on the padding
        aug = build_augment({"scale": [0.8, 1.2], "crop": [32, 32], "hflip": 1.0, "color_jitter": 0.4, **extra})
        out = apply_augment(aug, sample)
        x = out["image"]
        assert x.dtype == np.float32 and x.shape == (32, 32, 3) and x.min() >= 0.0 and x.max() <= 1.0
        assert (out["mask"][~out["valid"]] == 255).all() and 0 < out["valid"].sum() < 32 * 32
        assert np.abs(x * 255 - np.round(x * 255)).max() > 1e-3  # float stays float: no trip through uint8
    plain = apply_augment(build_augment({"crop": [32, 32]}), sample)
    assert (plain["image"][~plain["valid"]] == 0).all()  # crop padding of a float image is 0


@pytest.mark.parametrize(
    "intensity, match",
    [
        ({"mode": "minmax"}, r"data.intensity.mode='minmax': expected one of \['auto', 'percentile', 'dtype'\]"),
        ({"low": 99, "high": 1}, r"low=99 must be below high=1"),
        ({"high": 101}, r"data.intensity.high=101: expected a percentile in \[0, 100\]"),
        ({"range": [5]}, r"data.intensity.range=\[5\]"),
        ({"scale": 2}, r"unknown key\(s\) \['scale'\]"),
    ],
)
def test_bad_intensity_config_is_one_line(tmp_path, intensity, match):
    root = write_folder(tmp_path, {"a": box_mask(1)})
    with pytest.raises(ConfigError, match=match):
        FolderSeg("train", root=root, intensity=intensity)


# -- the crop fits the data ---------------------------------------------------------------------------
def test_default_512_crop_is_cut_to_small_images_and_said_once(tmp_path, caplog, monkeypatch):
    from densekit.data.readers import base as reader_base

    monkeypatch.setattr(reader_base, "_SAID", set())  # what this process has logged so far
    for split in ("train", "val"):
        write_folder(tmp_path, {f"s{i}": box_mask(1, 80, 96, i) for i in range(3)}, split=split)
    augment = {"crop": [512, 512], "hflip": 0.5}
    with caplog.at_level(logging.INFO, logger="densekit.data.readers.base"):
        train = FolderSeg("train", root=tmp_path, augment=augment, fit_crop=True)
    s = train[0]
    assert tuple(s["image"].shape) == (3, 80, 96) and bool(s["valid"].all())  # no padding
    assert train.notes == [
        "train crop 512x512 -> 80x96 (HxW): the largest of 3 sampled train images is 80x96; "
        "a larger crop would only add padding"
    ]
    FolderSeg("train", root=tmp_path, augment=augment, fit_crop=True)  # a second reader: noted, not logged again
    assert sum("train crop 512x512 -> 80x96" in r.getMessage() for r in caplog.records) == 1
    val = FolderSeg("val", root=tmp_path, augment=augment, fit_crop=True)
    assert tuple(val[0]["image"].shape) == (3, 80, 96) and val.notes == []  # validation untouched
    zoom = FolderSeg("train", root=tmp_path, augment={"crop": [512, 512], "scale": [0.5, 1.5]}, fit_crop=True)
    assert tuple(zoom[0]["image"].shape) == (3, 120, 144)
    small = FolderSeg("train", root=tmp_path, augment={"crop": [64, 64]}, fit_crop=True)
    assert tuple(small[0]["image"].shape) == (3, 64, 64) and small.notes == []  # a crop that fits is kept
