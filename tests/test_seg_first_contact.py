"""A folder segmentation dataset as users store it, on first contact (issue 14): 0/255 binary masks, palette
and RGB colour masks, JPEG + PNG images, 16-bit and float grey images, small images under a big default crop,
and validation that says when its scores rest on nothing. Every dataset is written in tmp_path in the
documented layout: root/images/<split>/*.jpg|png, root/masks/<split>/*.png, root/classes.txt."""

import contextlib
import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from densekit.data import FolderSeg
from densekit.data.readers.seg_labels import voc_palette
from densekit.data.transforms.image import apply_augment, build_augment
from densekit.errors import ConfigError, DataError
from densekit.metrics import SegMetrics
from densekit.tasks.seg import SegTask

H, W = 20, 24


def box_mask(value=255, h=H, w=W, k=0):
    """0 background with a value-filled box (moved by k so samples differ)."""
    m = np.zeros((h, w), np.uint8)
    m[4 + k : 12 + k, 6:18] = value
    return m


def rgb_image(h=H, w=W, k=0):
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs * 9 % 256, ys * 11 % 256, np.full_like(xs, 40 * k)], -1).astype(np.uint8)


def write_folder(root, masks, images=None, classes="background\nobject\n", split="train", suffix=".png"):
    """masks: {stem: PIL image or uint8 array}; images: {stem: PIL image or array} (default: RGB
    gradients)."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "masks" / split).mkdir(parents=True, exist_ok=True)
    for k, (stem, mask) in enumerate(masks.items()):
        mask = mask if isinstance(mask, Image.Image) else Image.fromarray(mask)
        mask.save(root / "masks" / split / f"{stem}.png")
        if images is not None and stem in images and images[stem] is None:
            continue  # the test wrote this image itself
        image = (images or {}).get(stem)
        if image is None:
            image = rgb_image(mask.height, mask.width, k)
        image = image if isinstance(image, Image.Image) else Image.fromarray(image)
        ext = suffix if not isinstance(suffix, dict) else suffix[stem]
        image.save(root / "images" / split / f"{stem}{ext}")
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    return root


def binary_dataset(root, n_train=4, n_val=2, h=H, w=W):
    """0/255 masks (what most annotation tools export), JPEG images, a 2-class list."""
    for split, n in (("train", n_train), ("val", n_val)):
        write_folder(root, {f"s{i}": box_mask(255, h, w, i % 4) for i in range(n)}, split=split, suffix=".jpg")
    return root


def grey16(values, h=H, w=W):
    """A 16-bit grey PNG (Pillow mode I;16) holding ``values`` tiled over the image."""
    arr = np.resize(np.asarray(values, np.uint16), (h, w))
    return Image.fromarray(arr), arr


# -- 0/255 masks -----------------------------------------------------------------------------------------
def test_binary_0_255_masks_are_refused_in_one_line_naming_file_values_and_fix(tmp_path):
    root = binary_dataset(tmp_path)
    with pytest.raises(DataError) as err:
        FolderSeg("train", root=root)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(root / "masks" / "train" / "s0.png") in msg
    assert "only {0, 255}" in msg and "in all 4 sampled masks" in msg
    assert "data.label_map={255:1}" in msg and "'object'" in msg


@pytest.mark.parametrize("label_map", [{255: 1}, {0: 0, 255: 1}, {"255": 1}])
def test_label_map_reads_0_255_masks_as_background_and_foreground(tmp_path, label_map):
    root = binary_dataset(tmp_path)
    ds = FolderSeg("train", root=root, label_map=label_map)
    mask = ds[1]["mask"].numpy()
    expected = (box_mask(255, k=1) == 255).astype(np.int64)
    np.testing.assert_array_equal(mask, expected)
    assert set(np.unique(mask).tolist()) == {0, 1}


def test_label_map_255_255_says_255_really_is_ignore(tmp_path):
    root = binary_dataset(tmp_path)
    mask = FolderSeg("train", root=root, label_map={255: 255})[0]["mask"].numpy()
    assert set(np.unique(mask).tolist()) == {0, 255}


def test_0_255_mask_outside_the_sample_is_refused_on_load(tmp_path):
    # 20 masks, only 16 sampled at construction: all-background ones, plus one 0/255 mask that is not sampled
    from densekit.data.readers.base import spread

    unsampled = sorted(set(range(20)) - set(spread(20, FolderSeg.MASK_SAMPLE)))[0]
    masks = {f"m{i:02d}": np.zeros((8, 8), np.uint8) for i in range(20)}
    masks[f"m{unsampled:02d}"][2:5, 2:5] = 255
    ds = FolderSeg("train", root=write_folder(tmp_path, masks))  # constructs: the sample saw only 0
    assert ds[0]["mask"].max() == 0
    with pytest.raises(
        DataError, match=rf"m{unsampled:02d}\.png: mask values are only \{{0, 255\}}.*label_map=\{{255:1\}}"
    ):
        ds[unsampled]


def test_index_masks_with_255_ignore_still_read_as_before(tmp_path):
    # a real 0/1 index mask with a 255 ignore border: no refusal, 255 stays ignore
    m = box_mask(1)
    m[0, :] = 255
    ds = FolderSeg("train", root=write_folder(tmp_path, {"a": m, "b": box_mask(0)}))
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), m.astype(np.int64))


@pytest.mark.parametrize(
    "label_map, match",
    [
        ({255: 5}, r"data.label_map: 255: 5 is not a train id; expected 0..1 \(the class list\) or 255"),
        ({"abc": 1}, r"data.label_map: key 'abc' is not a raw mask value"),
        ({70000: 1}, r"key 70000 is not a raw mask value 0..65535"),
        ([255, 1], r"data.label_map must be a mapping"),
    ],
)
def test_bad_label_map_is_one_line_naming_the_entry(tmp_path, label_map, match):
    root = binary_dataset(tmp_path)
    with pytest.raises(ConfigError, match=match):
        FolderSeg("train", root=root, label_map=label_map)


def test_label_map_remaps_other_raw_values(tmp_path):
    # masks drawn with visible grey levels 0/128 (a common "preview" export) and 7 meaning "unlabelled"
    m = box_mask(128)
    m[0, 0] = 7
    ds = FolderSeg("train", root=write_folder(tmp_path, {"a": m}), label_map={128: 1, 7: 255})
    out = ds[0]["mask"].numpy()
    assert out[0, 0] == 255 and out[5, 10] == 1 and (out == 1).sum() == (m == 128).sum()


# -- palette and colour masks -----------------------------------------------------------------------
def test_palette_png_indices_are_the_classes_not_the_colours(tmp_path):
    idx = np.zeros((H, W), np.uint8)
    idx[2:8, 2:8], idx[10:16, 4:20], idx[0, :] = 1, 2, 255
    pal = Image.frombytes("P", (W, H), idx.tobytes())
    pal.putpalette(voc_palette())  # index 1 shows (128, 0, 0), index 2 (0, 128, 0): not the index
    assert np.asarray(pal.convert("RGB"))[3, 3].tolist() == [128, 0, 0]
    ds = FolderSeg("train", root=write_folder(tmp_path, {"a": pal}, classes="bg\naeroplane\nbicycle\n"))
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), idx.astype(np.int64))


COLOURS = {"background": (0, 0, 0), "road": (128, 64, 128), "traffic light": (250, 170, 30)}


def colour_mask():
    ids = np.zeros((H, W), np.int64)
    ids[2:10, :] = 1
    ids[12:16, 3:9] = 2
    table = np.array(list(COLOURS.values()), np.uint8)
    return ids, table[ids]  # (H, W) ids, (H, W, 3) colours


def test_rgb_colour_mask_read_through_classes_txt_colours(tmp_path):
    ids, rgb = colour_mask()
    classes = "".join(f"{n} {r} {g} {b}\n" for n, (r, g, b) in COLOURS.items())
    ds = FolderSeg("train", root=write_folder(tmp_path, {"a": rgb}, classes=classes))
    assert ds.class_names == ("background", "road", "traffic light")  # a name with a space keeps it
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), ids)


def test_rgb_colour_mask_read_through_data_palette(tmp_path):
    ids, rgb = colour_mask()
    rgba = np.concatenate([rgb, np.full((H, W, 1), 255, np.uint8)], -1)  # RGBA, as some editors save
    root = write_folder(tmp_path, {"a": rgb, "b": rgba}, classes="background\nroad\ntraffic light\n")
    ds = FolderSeg("train", root=root, palette=[list(c) for c in COLOURS.values()])
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), ids)
    np.testing.assert_array_equal(ds[1]["mask"].numpy(), ids)


def test_rgb_mask_without_colour_table_is_refused_in_one_line(tmp_path):
    _, rgb = colour_mask()
    with pytest.raises(DataError) as err:
        FolderSeg("train", root=write_folder(tmp_path, {"a": rgb}, classes="bg\nroad\nlight\n"))
    msg = str(err.value)
    assert "\n" not in msg and "a.png: an RGB colour mask, but no colour table" in msg
    assert "`name r g b` lines in" in msg and "data.palette=[[r,g,b],...]" in msg


def test_unknown_colour_names_the_file_and_the_colour(tmp_path):
    ids, rgb = colour_mask()
    rgb[0, 0] = (1, 2, 3)
    classes = "".join(f"{n} {r} {g} {b}\n" for n, (r, g, b) in COLOURS.items())
    ds = FolderSeg("train", root=write_folder(tmp_path, {"a": rgb}, classes=classes))
    with pytest.raises(DataError, match=r"a\.png: colour\(s\) \(1, 2, 3\) are not in the colour table"):
        ds[0]


def test_grey_mask_saved_as_rgb_is_read_as_values_and_0_255_still_caught(tmp_path):
    m = box_mask(255)
    with pytest.raises(DataError, match=r"only \{0, 255\}"):
        FolderSeg("train", root=write_folder(tmp_path, {"a": np.stack([m] * 3, -1)}))
    ds = FolderSeg("train", root=tmp_path, label_map={255: 1})
    assert int(ds[0]["mask"].sum()) == int((m == 255).sum())


@pytest.mark.parametrize(
    "classes, palette, match",
    [
        (
            "bg 0 0 0\nroad\n",
            None,
            r"classes\.txt: line 1 \('bg 0 0 0'\) gives a colour but line 2 \('road'\) does not",
        ),
        ("bg\nroad\n", [[0, 0, 0]], r"data.palette: expected 2 colours"),
        ("bg\nroad\n", [[0, 0, 0], [0, 0, 0]], r"colour \(0, 0, 0\) is given to two classes"),
        ("bg\nroad\n", [[0, 0, 0], [300, 0, 0]], r"colour 1 is \[300, 0, 0\]"),
    ],
)
def test_bad_colour_table_is_one_line(tmp_path, classes, palette, match):
    root = write_folder(tmp_path, {"a": box_mask(1)}, classes=classes)
    with pytest.raises(ConfigError, match=match):
        FolderSeg("train", root=root, palette=palette)


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


# -- validation says what its scores rest on ------------------------------------------------------------
class _Task(SegTask):
    def __init__(self, num_classes=2):
        super().__init__(nn.Conv2d(3, num_classes, 1), num_classes=num_classes, class_names=["background", "object"])


def _validate(task, target, pred_class=0, valid=None):
    logits = torch.zeros(target.shape[0], task.num_classes, *target.shape[1:])
    logits[:, pred_class] = 1.0
    task.update_metrics(logits, {"mask": target, "valid": valid})
    return task.compute_metrics()


def test_all_ignore_validation_reports_nan_not_1_and_warns_once(caplog):
    task = _Task()
    target = torch.full((2, 4, 4), 255)
    with caplog.at_level(logging.WARNING, logger="densekit.tasks.base"):
        out = _validate(task, target)
        _validate(task, target)
    assert np.isnan(out["mIoU"]) and np.isnan(out["pixel_acc"])
    assert task.run_warnings == [
        "validation: all 32 pixels are ignore (255) or not valid: mIoU, mDice and pixel "
        "accuracy are computed over nothing and not reported (are the masks read right? "
        "see data.label_map)"
    ]
    assert sum("computed over nothing" in r.getMessage() for r in caplog.records) == 1


def test_no_foreground_and_mostly_ignore_validation_warn():
    task = _Task()
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :3] = 255  # 12 of 16 pixels ignore: what 0/255 masks without a label map looked like
    out = _validate(task, target)
    assert out["mIoU"] == 1.0  # the background alone, which is why it must not pass silently
    assert len(task.run_warnings) == 2
    assert task.run_warnings[0].startswith(
        "validation: no labelled foreground -- all 4 labelled pixels are class 0 "
        "('background'), so IoU of 'object' is computed over no pixels"
    )
    assert task.run_warnings[1].startswith("validation: 12 of 16 pixels (75%) are ignore (255) or not valid")
    clean = _Task()
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0] = 1
    _validate(clean, target)
    assert clean.run_warnings == []


def test_seg_metrics_counts_pixels_labelled_ignored_foreground():
    m = SegMetrics(3)
    target = torch.tensor([[[0, 1, 2, 255], [0, 0, 2, 255]]])
    valid = torch.ones_like(target, dtype=torch.bool)
    valid[0, 0, 0] = False
    m.update(torch.zeros_like(target), target, valid)
    m.compute()
    assert m.counts == {"pixels": 8, "labelled": 5, "ignored": 3, "foreground": 3, "per_class": [2, 1, 2]}


# -- end to end through densekit.train.train -------------------------------------------------------------
def _e2e(compose, root, out, *extra):
    from densekit.train import train

    cfg = compose(
        [
            "data=folder",
            f"data.root={root}",
            "backbone=mobilenetv3_large",
            "backbone.pretrained=false",
            "head=lraspp",
            "trainer.max_steps=2",
            "data.batch_size=2",
            "trainer.val_check_interval=null",
            "data.num_workers=0",
            f"output_dir={out}",
            "trainer.enable_progress_bar=false",
            *extra,
        ]
    )
    with contextlib.redirect_stdout(io.StringIO()):
        return train(cfg)


def test_train_on_0_255_masks_with_label_map_scores_the_foreground(compose, tmp_path):
    root = binary_dataset(tmp_path / "data", h=40, w=48)
    metrics = _e2e(compose, root, tmp_path / "run", "data.label_map={255:1}")
    assert "val/IoU/object" in metrics and "val/IoU/background" in metrics
    assert 0.0 <= metrics["val/IoU/object"] < 1.0 and metrics["val/mIoU"] < 1.0


def test_train_on_0_255_masks_without_label_map_is_refused_in_one_line(compose, tmp_path):
    root = binary_dataset(tmp_path / "data", h=40, w=48)
    with pytest.raises(DataError) as err:
        _e2e(compose, root, tmp_path / "run")
    msg = str(err.value)
    assert "\n" not in msg and "s0.png: mask values are only {0, 255}" in msg and "data.label_map={255:1}" in msg
