"""A folder segmentation dataset as users store it, on first contact (issue 14): 0/255 binary masks, palette
and RGB colour masks, and validation that says when its scores rest on nothing (the images -- JPEG + PNG,
16-bit and float grey -- and small images under a big default crop: test_seg_images.py). Every dataset is
written in tmp_path in the documented layout: root/images/<split>/*.jpg|png, root/masks/<split>/*.png,
root/classes.txt."""

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
from densekit.errors import ConfigError, DataError
from densekit.metrics import SegMetrics
from densekit.tasks.seg import SegTask
from helpers import FC_H as H
from helpers import FC_W as W
from helpers import binary_dataset, box_mask, write_folder


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
