"""Real-format segmentation readers on tiny fixture trees written in each dataset's official layout,
their bad-input errors, and the paired augmentation (crop padding, flips, scale) on checkable patterns."""

import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from densekit.data import (
    DATASETS,
    ADE20KSeg,
    BadSampleWarning,
    CityscapesSeg,
    FolderSeg,
    VOCSeg,
    build_dataset,
)
from densekit.data.readers.seg_labels import voc_palette
from densekit.data.transforms.image import apply_augment, build_augment
from helpers import (
    SEG_H,
    SEG_W,
    folder_labels,
    gradient_rgb,
    make_ade,
    make_cityscapes,
    make_folder,
    save_labels,
    save_rgb,
)

H, W = SEG_H, SEG_W  # the size the builders in helpers.py draw at


def voc_labels():
    cls = np.zeros((H, W), np.uint8)
    cls[2:10, 2:12] = 255  # the void border drawn around each object ...
    cls[3:9, 3:11] = 15  # ... person inside it
    cls[10:14, 20:28] = 1  # aeroplane (no border, still valid)
    return cls


def make_voc(root, labels=None, ids=("2007_000032", "2007_000039"), mode="P"):
    base = root / "VOCdevkit" / "VOC2012"
    for i in ids:
        (base / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(gradient_rgb()).save(base / "JPEGImages" / f"{i}.jpg")
        lab = voc_labels() if labels is None else labels
        if mode == "P":
            save_labels(base / "SegmentationClass" / f"{i}.png", lab, "P")
        else:  # a colour rendering of the labels instead of the palette PNG
            save_rgb(base / "SegmentationClass" / f"{i}.png", np.array(voc_palette()).reshape(256, 3)[lab])
    sets = base / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "train.txt").write_text("\n".join(ids) + "\n")
    (sets / "val.txt").write_text(ids[-1] + "\n")
    return root


# -- readers -----------------------------------------------------------------------------------------
def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    ds = CityscapesSeg("train", root=make_cityscapes(tmp_path))
    assert len(ds) == 2 and ds.num_classes == 19 and ds.class_names[13] == "car"
    s = ds[0]
    m = s["mask"]
    assert s["image"].shape == (3, H, W) and s["image"].dtype == torch.float32 and m.dtype == torch.int64
    assert (m[1, 0], m[1, 8], m[1, 16], m[1, 31], m[5, 5]) == (0, 13, 255, 18, 10)
    assert (m[0] == 255).all()  # parking -> ignore
    assert int((m == 255).sum()) == W + (H - 1) * 8
    # PNG is lossless: the pixel at (row 3, col 5) is exactly the written gradient value
    assert torch.allclose(s["image"][:, 3, 5], torch.tensor([35, 39, 24]) / 255.0) and s["valid"].all()
    assert len(CityscapesSeg("val", root=tmp_path)) == 1


def test_ade20k_shifts_labels_and_ignores_zero(tmp_path):
    make_ade(tmp_path)
    for root in (tmp_path, tmp_path / "ADEChallengeData2016"):  # the folder or its parent
        ds = ADE20KSeg("train", root=root)
        s = ds[0]
        assert ds.num_classes == 150 and ds.class_names[12] == "person"
        assert [int(s["mask"][4, 8 * k]) for k in range(4)] == [255, 0, 149, 12]
        assert s["image"].shape == (3, H, W)  # greyscale JPEG -> 3 channels
        assert abs(float(s["image"].mean()) - 90 / 255) < 3 / 255
    assert len(ADE20KSeg("val", root=tmp_path)) == 1


def test_voc_reads_palette_indices_and_border(tmp_path):
    ds = VOCSeg("train", root=make_voc(tmp_path))
    assert len(ds) == 2 and ds.num_classes == 21 and ds.class_names[15] == "person"
    m = ds[1]["mask"]
    assert (int(m[5, 5]), int(m[2, 2]), int(m[12, 24]), int(m[0, 0])) == (15, 255, 1, 0)
    assert sorted(torch.unique(m).tolist()) == [0, 1, 15, 255]  # indices, never the palette's RGB values
    assert int((m == 255).sum()) == 8 * 10 - 6 * 8
    for root in (tmp_path / "VOCdevkit", tmp_path / "VOCdevkit" / "VOC2012"):
        assert len(VOCSeg("val", root=root)) == 1


def test_folder_reads_classes_txt_or_config(tmp_path):
    make_folder(tmp_path)
    ds = FolderSeg("train", root=tmp_path)
    assert ds.class_names == ("bg", "road", "car") and ds.num_classes == 3 and len(ds) == 3
    s = ds[2]
    assert torch.equal(s["mask"], torch.from_numpy(folder_labels()).long())
    assert abs(float(s["image"][2].mean()) - 80 / 255) < 1e-6  # third sample, stems sorted a, b, c
    named = FolderSeg("train", root=tmp_path, classes=["x", "y", "z", "w"])
    assert named.num_classes == 4
    built = build_dataset("folder", "train", root=str(tmp_path), length=5)
    assert isinstance(built, FolderSeg) and len(built) == 5
    assert torch.equal(built[4]["image"], built[1]["image"])  # length > split repeats it
    assert {"cityscapes", "ade20k", "voc", "folder"} <= set(DATASETS)
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"classes\.txt"):  # no class list anywhere
        FolderSeg("train", root=tmp_path)


# -- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cityscapes", "ade20k", "voc", "folder"])
def test_missing_root_says_where_and_points_to_readme(tmp_path, name):
    where = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*datasets/README\.md"):
        build_dataset(name, "train", root=str(where))


def test_cityscapes_without_gtfine_names_the_folder(tmp_path):
    make_cityscapes(tmp_path)
    shutil.rmtree(tmp_path / "gtFine")
    with pytest.raises(FileNotFoundError, match=r"gtFine/train.*README"):
        CityscapesSeg("train", root=tmp_path)


def test_size_mismatch_names_the_mask(tmp_path):
    make_cityscapes(tmp_path, image_size=(H, W - 2))
    ds = CityscapesSeg("train", root=tmp_path)
    with pytest.raises(ValueError, match=r"aachen_000000_000019_gtFine_labelIds\.png: mask is 32x16.*30x16"):
        ds[0]


@pytest.mark.parametrize(
    "name, make, bad, match",
    [
        ("cityscapes", lambda r, lab: make_cityscapes(r, labels=lab), 40, r"labelIds\.png: label values \[40\]"),
        ("ade20k", lambda r, lab: make_ade(r, values=(0, 1, 151, 2)), 151, r"ADE_train_00000001\.png.*\[151\]"),
        ("voc", lambda r, lab: make_voc(r, labels=lab), 21, r"2007_000032\.png.*\[21\]"),
        ("folder", None, 3, r"a\.png.*\[3\].*0\.\.2"),
    ],
)
def test_label_outside_class_list_names_the_file(tmp_path, name, make, bad, match):
    labels = np.zeros((H, W), np.uint8)
    labels[3, 4] = bad
    if make is None:
        make_folder(tmp_path)
        save_labels(tmp_path / "masks" / "train" / "a.png", labels)
    else:
        make(tmp_path, labels)
    ds = build_dataset(name, "train", root=str(tmp_path))
    with pytest.raises(ValueError, match=match):
        ds[0]


def test_voc_colour_mask_is_rejected(tmp_path):
    ds = VOCSeg("train", root=make_voc(tmp_path, mode="RGB"))
    with pytest.raises(ValueError, match=r"2007_000032\.png: expected .*mode P\), got mode RGB"):
        ds[0]


def test_empty_split_is_an_error(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "masks" / "train").mkdir(parents=True)
    (tmp_path / "classes.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"split 'train' is empty: no samples in .*images/train"):
        FolderSeg("train", root=tmp_path)
    make_voc(tmp_path / "voc")
    (tmp_path / "voc/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"split 'val' is empty: no samples in .*Segmentation/val\.txt"):
        VOCSeg("val", root=tmp_path / "voc")


@pytest.mark.parametrize("corrupt", ["garbage", "truncated"])
def test_unreadable_image_names_the_file(tmp_path, corrupt):
    make_folder(tmp_path)
    path = tmp_path / "images" / "train" / "b.png"
    path.write_bytes(b"not an image at all" if corrupt == "garbage" else path.read_bytes()[:-60])
    ds = FolderSeg("train", root=tmp_path)
    assert ds[0]["image"].shape == (3, H, W)  # the others still load
    with pytest.raises(ValueError, match=r"b\.png: unreadable image"):
        ds[1]


def test_unpaired_files_are_named(tmp_path):
    make_folder(tmp_path)
    save_rgb(tmp_path / "images" / "train" / "d.jpg", gradient_rgb())
    with pytest.raises(ValueError, match=r"(?s)1 unpaired.*image without a mask.*d\.jpg"):
        FolderSeg("train", root=tmp_path)
    make_voc(tmp_path / "voc")
    (tmp_path / "voc/VOCdevkit/VOC2012/SegmentationClass/2007_000039.png").unlink()
    with pytest.raises(ValueError, match=r"train\.txt lists 1 file.*2007_000039\.png"):
        VOCSeg("train", root=tmp_path / "voc")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "test"}, "split must be one of"),
        ({"targets": ("mask", "depth")}, "provides only the 'mask' target"),
        ({"length": 0}, "length must be"),
        ({"resize": 4}, "resize"),
        ({"augment": {"rotate": 1}}, "unknown augmentation"),
        ({"augment": {"crop": [24]}}, "crop must be a pair"),
        ({"augment": {"scale": [2.0, 1.0]}}, "lo <= hi"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    make_ade(tmp_path)
    with pytest.raises(ValueError, match=match):
        ADE20KSeg(**{"split": "train", "root": tmp_path, **kwargs})


def test_skip_bad_substitutes_next_good_sample_and_counts(tmp_path):
    make_folder(tmp_path, stems=("a", "b", "c", "d"))
    (tmp_path / "images" / "train" / "b.png").write_bytes(b"\x89PNG broken")
    save_labels(tmp_path / "masks" / "train" / "c.png", np.zeros((H - 1, W)))  # size mismatch
    strict = FolderSeg("train", root=tmp_path)
    with pytest.raises(ValueError, match=r"b\.png"):
        strict[1]
    ds = FolderSeg("train", root=tmp_path, skip_bad=True)
    with pytest.warns(BadSampleWarning) as record:
        first = ds[1]
    messages = [str(r.message) for r in record]
    assert len(messages) == 2  # c is bad too, so d substitutes
    assert "b.png" in messages[0] and "1 of 4 skipped" in messages[0]
    assert "c.png: mask is 32x15" in messages[1] and "2 of 4 skipped" in messages[1]
    assert torch.equal(first["image"], strict[3]["image"])
    assert sorted(ds.skipped) == [1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error", BadSampleWarning)  # a known bad sample is not reported twice
        assert torch.equal(ds[2]["image"], strict[3]["image"])
    assert len(ds.skipped) == 2
    for stem in ("a", "d"):
        (tmp_path / "images" / "train" / f"{stem}.png").write_bytes(b"junk")
    with pytest.warns(BadSampleWarning), pytest.raises(ValueError, match=r"all 4 samples .* are bad"):
        FolderSeg("train", root=tmp_path, skip_bad=True)[0]


# -- augmentation --------------------------------------------------------------------------------------
def test_crop_pads_mask_with_ignore_and_valid_false(tmp_path):
    make_folder(tmp_path, stems=("a",), h=20, w=30)
    ds = FolderSeg("train", root=tmp_path, augment={"crop": [24, 40]})
    s = ds[0]
    assert s["image"].shape == (3, 24, 40) and s["mask"].shape == (24, 40)
    assert int((s["mask"] == 255).sum()) == 24 * 40 - 20 * 30  # the source mask has no 255
    assert int(s["valid"].sum()) == 20 * 30
    assert torch.equal(s["valid"], s["mask"] != 255)
    assert float(s["image"][:, ~s["valid"]].abs().max()) == 0.0


def test_small_crop_is_an_aligned_window(tmp_path):
    make_folder(tmp_path, stems=("a",), h=20, w=30)
    plain = FolderSeg("train", root=tmp_path)[0]
    torch.manual_seed(3)
    ds = FolderSeg("train", root=tmp_path, augment={"crop": [8, 12], "hflip": 0.5})
    for _ in range(4):
        s = ds[0]
        assert s["image"].shape == (3, 8, 12) and s["valid"].all()
        hits = [
            (y, x, f)
            for f in (False, True)
            for y in range(13)
            for x in range(19)
            if torch.equal((plain["image"].flip(-1) if f else plain["image"])[:, y : y + 8, x : x + 12], s["image"])
        ]
        assert hits, "the crop is not a window of the (possibly flipped) image"
        y, x, f = hits[0]
        src = plain["mask"].flip(-1) if f else plain["mask"]
        assert torch.equal(s["mask"], src[y : y + 8, x : x + 12])


def test_hflip_and_vflip_move_image_and_mask_together(tmp_path):
    make_folder(tmp_path, stems=("a",))
    plain = FolderSeg("train", root=tmp_path)[0]
    s = FolderSeg("train", root=tmp_path, augment={"hflip": 1.0, "vflip": 1.0})[0]
    assert torch.equal(s["image"], plain["image"].flip(-1, -2))
    assert torch.equal(s["mask"], plain["mask"].flip(-1, -2))


def test_scale_uses_nearest_for_masks(tmp_path):
    make_folder(tmp_path, stems=("a",))
    plain = FolderSeg("train", root=tmp_path)[0]["mask"]
    s = FolderSeg("train", root=tmp_path, augment={"scale": [2.0, 2.0]})[0]
    assert s["image"].shape == (3, 2 * H, 2 * W)
    assert torch.equal(s["mask"], plain.repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_scale_crop_flip_keep_image_and_mask_aligned(tmp_path):
    """A checkable pattern: the red channel says whether the pixel's column lies in an odd 6-px cell, green
    the same for rows, and the class is 2 * row parity + column parity. Bilinear image resizing and
    nearest mask resizing must agree on every pixel that is not an exact 50/50 blend; a one-pixel shift
    between them breaks dozens of pixels, and so would a flip applied to one but not the other."""
    ys, xs = np.mgrid[0:24, 0:36]
    xpar, ypar = (xs // 6) % 2, (ys // 6) % 2
    save_rgb(tmp_path / "images" / "train" / "a.png", np.stack([xpar * 255, ypar * 255, xpar * 0 + 60], -1))
    save_labels(tmp_path / "masks" / "train" / "a.png", 2 * ypar + xpar)
    (tmp_path / "classes.txt").write_text("a\nb\nc\nd\n")
    torch.manual_seed(0)
    augment = {"scale": [0.8, 2.5], "crop": [40, 40], "hflip": 0.5, "vflip": 0.5}
    ds = FolderSeg("train", root=tmp_path, length=12, augment=augment)
    valid_counts = set()
    for i in range(len(ds)):
        s = ds[i]
        m, red, green, valid = s["mask"], s["image"][0], s["image"][1], s["valid"]
        assert set(torch.unique(m).tolist()) <= {0, 1, 2, 3, 255}  # nearest: no blended label
        sure = valid & ((red - 0.5).abs() > 0.05) & ((green - 0.5).abs() > 0.05)
        assert int(sure.sum()) > 0.8 * int(valid.sum())
        decoded = 2 * (green > 0.5).long() + (red > 0.5).long()
        assert torch.equal(decoded[sure], m[sure])
        assert (m[~valid] == 255).all()
        valid_counts.add(int(valid.sum()))
    assert len(valid_counts) > 3  # the scale really varied between draws


def test_val_split_is_deterministic_resize_only(tmp_path):
    make_folder(tmp_path, stems=("a",), h=20, w=30, split="val")
    ds = FolderSeg("val", root=tmp_path, resize=10, augment={"hflip": 1.0, "crop": [8, 8]})
    a, b = ds[0], ds[0]
    assert a["image"].shape == (3, 10, 15)
    assert torch.equal(a["mask"], torch.from_numpy(folder_labels(20, 30)[1::2, 1::2]).long())  # no flip, no crop
    assert torch.equal(a["image"], b["image"])


def test_scale_refuses_depth_and_fixes_flow_under_flips():
    with pytest.raises(ValueError, match="depth"):
        build_augment({"scale": [0.5, 2.0]}, targets=("mask", "depth"))
    h, w = 6, 8
    sample = {"image": np.random.rand(h, w, 3).astype(np.float32), "depth": np.full((h, w), 4.0, np.float32)}
    with pytest.raises(ValueError, match="depth"):
        apply_augment(build_augment({"scale": [1.0, 1.0]}), sample)
    out = apply_augment(build_augment({"crop": [8, 8]}), sample)  # crop keeps metric depth; pads 0 / invalid
    assert out["depth"].shape == (8, 8) and out["valid"].sum() == h * w
    assert (out["depth"][out["valid"]] == 4).all()
    assert (out["depth"][~out["valid"]] == 0).all()
    flow = np.stack([np.full((h, w), 2.0), np.full((h, w), 1.0)], -1).astype(np.float32)
    img2 = np.random.rand(h, w, 3).astype(np.float32)
    out = apply_augment(build_augment({"hflip": 1.0}), {**sample, "image2": img2, "flow": flow})
    assert (out["flow"][..., 0] == -2).all() and (out["flow"][..., 1] == 1).all()
    np.testing.assert_array_equal(out["image2"], img2[:, ::-1])
    with pytest.raises(ValueError, match="flow"):
        build_augment({"hflip": 1.0}, resize=16, targets=("flow",))
