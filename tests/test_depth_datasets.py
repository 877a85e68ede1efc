"""Depth IO and the depth readers on tiny fixture trees written in each format's real on-disk layout: an
HDF5 (MATLAB v7.3) .mat laid out as MATLAB stores it, 16-bit PNGs at the real scales (KITTI 256, NYU 1000),
BTS/Eigen list files (with a ``None`` ground-truth line), .npy; exact round trips and every bad-input case."""

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from omegaconf import OmegaConf
from PIL import Image

from densekit.data import (
    DATASETS,
    BadSampleWarning,
    DepthValueWarning,
    FolderDepth,
    KITTIDepth,
    NYUv2Folder,
    NYUv2Mat,
    build_dataset,
)
from densekit.io import read_depth, write_depth_png
from helpers import (
    DEPTH_H,
    DEPTH_W,
    KITTI_DRIVE,
    depth_pattern,
    kitti_gt,
    make_depth_folder,
    make_nyu_folder,
    rgb_pattern,
    save_png16,
)
from helpers import make_kitti_depth as make_kitti

H, W = DEPTH_H, DEPTH_W  # the size the builders in helpers.py draw at
CONF = Path(__file__).resolve().parents[1] / "conf" / "data"


# -- io ------------------------------------------------------------------------------------------------
def test_depth_png_round_trip_at_real_scales(tmp_path):
    depth = depth_pattern()
    depth[0, 0] = 0.0  # no measurement stays 0
    for scale in (256.0, 1000.0):
        path = tmp_path / f"d{int(scale)}.png"
        write_depth_png(path, depth, scale)
        raw = np.asarray(Image.open(path))
        assert raw.dtype == np.uint16 and raw[0, 1] == round(1.125 * scale) and raw[0, 0] == 0
        back = read_depth(path, scale)
        assert back.dtype == np.float32 and back.shape == (H, W)
        np.testing.assert_array_equal(back, depth)
    np.save(tmp_path / "d.npy", depth[None])  # (1, H, W) is accepted
    np.testing.assert_array_equal(read_depth(tmp_path / "d.npy"), depth)
    np.testing.assert_allclose(read_depth(tmp_path / "d.npy", scale=1000), depth / 1000)


def test_depth_io_errors(tmp_path):
    save_png16(tmp_path / "d.png", np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"d\.png.*give its scale"):
        read_depth(tmp_path / "d.png")
    Image.fromarray(np.ones((2, 2), np.uint8)).save(tmp_path / "d8.png")
    with pytest.raises(ValueError, match=r"d8\.png: expected a single-channel 16-bit PNG.*got mode L"):
        read_depth(tmp_path / "d8.png", 256)
    Image.fromarray(np.ones((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb\.png.*16-bit.*mode RGB"):
        read_depth(tmp_path / "rgb.png", 256)
    with pytest.raises(ValueError, match=r"d\.png: depth scale must be a positive number"):
        read_depth(tmp_path / "d.png", 0)
    with pytest.raises(ValueError, match=r"\.exr.*expected one of"):
        (tmp_path / "d.exr").write_bytes(b"x")
        read_depth(tmp_path / "d.exr")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_depth(tmp_path / "nope.png", 256)
    with pytest.raises(ValueError, match=r"does not fit a 16-bit PNG at scale 1000.*65\.535 m"):
        write_depth_png(tmp_path / "far.png", np.array([[70.0]]), 1000)
    write_depth_png(tmp_path / "ok.png", np.array([[65.535, np.nan, -1.0]]), 1000)  # the largest storable
    assert np.asarray(Image.open(tmp_path / "ok.png")).tolist() == [[65535, 0, 0]]


# -- fixtures in the real layouts ----------------------------------------------------------------------
def make_nyu_mat(root, n=5, h=H, w=W):
    """nyu_depth_v2_labeled.mat as MATLAB v7.3 writes it: a MATLAB (H, W, 3, N) array is stored column-major,
    so the HDF5 dataset (C order) has the reversed shape (N, 3, W, H)."""
    images = np.stack([rgb_pattern(h, w, k) for k in range(n)], -1)  # MATLAB's (H, W, 3, N)
    depths = np.stack([depth_pattern(h, w, k) for k in range(n)], -1)  # (H, W, N)
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w", userblock_size=512) as f:  # v7.3 has a 512-B header
        f["images"] = np.ascontiguousarray(images.transpose(3, 2, 1, 0))  # (N, 3, W, H)
        f["depths"] = np.ascontiguousarray(depths.transpose(2, 1, 0))  # (N, W, H)
        raw = depths.copy()
        raw[0, 0] = 0.0
        f["rawDepths"] = np.ascontiguousarray(raw.transpose(2, 1, 0))
    # the official splits.mat is MATLAB v5 with 1-based column vectors
    scipy.io.savemat(
        root / "splits.mat",
        {"trainNdxs": np.array([[1.0], [3.0], [4.0]]), "testNdxs": np.array([[2.0], [5.0]])},
    )
    return root


def test_nyu_mat_transposes_the_matlab_layout_and_uses_the_official_split(tmp_path):
    root = make_nyu_mat(tmp_path)
    train = NYUv2Mat("train", root=root)
    assert len(train) == 3 and train.files == [0, 2, 3]
    s = train[1]  # frame 3 (1-based) = k 2
    assert s["image"].shape == (3, H, W) and s["depth"].shape == (1, H, W) and s["valid"].shape == (H, W)
    assert torch.equal(s["image"], torch.from_numpy(rgb_pattern(k=2)).permute(2, 0, 1).float() / 255)
    assert torch.equal(s["depth"][0], torch.from_numpy(depth_pattern(k=2)))
    assert s["depth"][0, 2, 5] == 1.0 + 0.125 * 5 + 0.5 * 2 + 2  # row 2, col 5: not transposed
    assert s["valid"].all()
    val = NYUv2Mat("test", root=root)  # test = val = testNdxs
    assert val.files == [1, 4] and torch.equal(val[0]["depth"][0], torch.from_numpy(depth_pattern(k=1)))
    raw = NYUv2Mat("val", root=root, depth_key="rawDepths", max_depth=6.0)
    s = raw[1]  # k 4: depths 5 .. 8.375; above 6 m invalid; raw (0, 0) = 0 invalid
    expected = (depth_pattern(k=4) <= 6.0) & (depth_pattern(k=4) > 0)
    expected[0, 0] = False
    assert torch.equal(s["valid"], torch.from_numpy(expected)) and float(s["depth"][0][~s["valid"]].abs().sum()) == 0
    assert (
        raw.pixel_stats["outside_caps"] == int((depth_pattern(k=4) > 6).sum())
        and raw.pixel_stats["no_measurement"] == 1
    )


def test_nyu_mat_text_split_lists_and_bad_splits(tmp_path):
    root = make_nyu_mat(tmp_path)
    (root / "train.txt").write_text("5\n1\n")
    (root / "test.txt").write_text("2, 3")
    ds = NYUv2Mat("train", root=root, split_file={"train": "train.txt", "val": "test.txt"})
    assert (
        ds.files == [4, 0]
        and len(NYUv2Mat("val", root=root, split_file={"train": "train.txt", "val": "test.txt"})) == 2
    )
    (root / "bad.txt").write_text("1\n6\n")
    with pytest.raises(ValueError, match=r"bad\.txt: frame numbers \[6\] outside 1\.\.5"):
        NYUv2Mat("train", root=root, split_file={"train": "bad.txt"})
    with pytest.raises(ValueError, match=r"text list holds one split"):
        NYUv2Mat("train", root=root, split_file="train.txt")
    (root / "splits.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"splits\.mat.*datasets/README\.md"):
        NYUv2Mat("train", root=root)


def test_nyu_mat_wrong_layout_is_an_error(tmp_path):
    root = make_nyu_mat(tmp_path)
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w") as f:
        f["images"] = np.zeros((5, H, W, 3), np.uint8)  # someone's HWC re-save
        f["depths"] = np.zeros((5, W, H), np.float32)
    with pytest.raises(ValueError, match=r"expected images \(N, 3, W, H\).*got \(5, 6, 8, 3\)"):
        NYUv2Mat("train", root=root)
    scipy.io.savemat(root / "nyu_depth_v2_labeled.mat", {"depths": np.zeros((2, 2))})  # a v5 file
    with pytest.raises(ValueError, match=r"not a MATLAB v7\.3 \(HDF5\) file"):
        NYUv2Mat("train", root=root)


def test_nyu_folder_reads_bts_lists_in_millimetres(tmp_path):
    root = make_nyu_folder(tmp_path)
    train = build_dataset("nyuv2", "train", root=str(root), max_depth=10.0)
    assert isinstance(train, NYUv2Folder) and len(train) == 2
    s = train[1]
    assert torch.equal(s["depth"][0], torch.from_numpy(depth_pattern(k=1)))  # mm PNG / 1000, exact
    assert (s["image"] - torch.from_numpy(rgb_pattern(k=1)).permute(2, 0, 1) / 255).abs().max() < 3 / 255  # JPEG
    assert s["valid"].all()
    val = NYUv2Folder("val", root=root)
    assert len(val) == 1 and val.files[0][0] == root / "official_splits/test/bathroom/rgb_00001.jpg"


def test_kitti_eigen_lists_sparse_gt_and_none_lines(tmp_path):
    root = make_kitti(tmp_path)
    train = KITTIDepth("train", root=root, max_depth=80.0)
    s = train[0]
    gt = kitti_gt(H, W)
    assert torch.equal(s["depth"][0], torch.from_numpy(gt)) and torch.equal(s["valid"], torch.from_numpy(gt > 0))
    assert int(s["valid"].sum()) == 3 * 3  # rows 3..5, columns 0, 3, 6
    assert torch.equal(s["image"], torch.from_numpy(rgb_pattern()).permute(2, 0, 1).float() / 255)
    with pytest.warns(
        DepthValueWarning, match=r"eigen_test_files_with_gt\.txt: 1 of 3 listed frames have no ground truth"
    ):
        val = KITTIDepth("val", root=root)
    assert len(val) == 2 and val.no_ground_truth == 1
    assert val.files[1][1].parts[-6] == "val"  # found in data_depth_annotated/val


def test_kitti_kb_crop_is_the_bottom_centre_352x1216(tmp_path):
    h, w = 375, 1242
    gt = np.zeros((h, w), np.float32)
    gt[h - 352, (w - 1216) // 2] = 7.0  # the crop's top-left pixel ...
    gt[h - 353, (w - 1216) // 2] = 9.0  # ... and the one above it, cut away
    gt[h - 1, (w - 1216) // 2 + 1215] = 11.0  # bottom-right
    root = make_kitti(tmp_path, h, w, frames=(5,), test_frames=(7,), gt_values=gt)
    s = KITTIDepth("train", root=root, kb_crop="train")[0]
    assert s["depth"].shape == (1, 352, 1216) and s["image"].shape == (3, 352, 1216)
    assert (float(s["depth"][0, 0, 0]), float(s["depth"][0, -1, -1])) == (7.0, 11.0) and int(s["valid"].sum()) == 2
    with pytest.warns(DepthValueWarning):
        val = KITTIDepth("val", root=root, kb_crop="train")
    assert val[0]["depth"].shape == (1, h, w)  # evaluation stays on the full frame (garg crop)
    with pytest.warns(DepthValueWarning):
        assert KITTIDepth("val", root=root, kb_crop=True)[0]["depth"].shape == (1, 352, 1216)
    with pytest.raises(ValueError, match="kb_crop must be"):
        KITTIDepth("train", root=root, kb_crop="val")


def test_folder_pairs_png_and_npy_by_stem(tmp_path):
    root = make_depth_folder(tmp_path)
    ds = FolderDepth("train", root=root, depth_scale=1000)
    assert len(ds) == 2
    assert torch.equal(ds[0]["depth"][0], torch.from_numpy(depth_pattern(k=0)))  # a.png / 1000
    assert torch.equal(ds[1]["depth"][0], torch.from_numpy(depth_pattern(k=1)))  # b.npy, metres as stored
    with pytest.raises(ValueError, match=r"a\.png is a 16-bit PNG; set depth_scale"):
        FolderDepth("train", root=root)[0]
    built = build_dataset("depth_folder", "train", root=str(root), depth_scale=1000, length=5)
    assert len(built) == 5 and torch.equal(built[3]["depth"], built[1]["depth"])  # repeats
    assert {"nyuv2", "nyuv2_mat", "kitti", "depth_folder"} <= set(DATASETS)


def test_augment_moves_depth_with_the_image_and_pads_invalid(tmp_path):
    root = make_depth_folder(tmp_path)
    ds = FolderDepth("train", root=root, depth_scale=1000, augment={"hflip": 1.0, "crop": [8, 10]})
    s = ds[1]  # b.npy
    flipped = torch.from_numpy(depth_pattern(k=1)).flip(-1)
    assert s["depth"].shape == (1, 8, 10) and s["valid"].shape == (8, 10)
    assert int(s["valid"].sum()) == H * W  # the 6x8 map inside an 8x10 crop; padding is invalid
    assert float(s["depth"][0][~s["valid"]].abs().sum()) == 0.0
    assert torch.equal(torch.sort(s["depth"][0][s["valid"]]).values, torch.sort(flipped.flatten()).values)
    rows, cols = torch.nonzero(s["valid"], as_tuple=True)
    block = s["depth"][0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert torch.equal(block, flipped)  # flipped with the image, not scrambled
    val = FolderDepth("val", root=make_depth_folder(tmp_path, "val"), depth_scale=1000, augment={"hflip": 1.0})
    assert torch.equal(val[1]["depth"][0], torch.from_numpy(depth_pattern(k=1)))  # no augment outside train
    with pytest.raises(ValueError, match="augment.scale zooms the scene"):
        FolderDepth("train", root=root, depth_scale=1000, augment={"scale": [0.5, 2.0]})


# -- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["nyuv2", "nyuv2_mat", "kitti", "depth_folder"])
def test_missing_root_points_to_readme(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*datasets/README\.md"):
        build_dataset(name, "train", root=str(tmp_path / "nowhere"))


def test_targets_must_be_depth(tmp_path):
    root = make_depth_folder(tmp_path)
    with pytest.raises(ValueError, match=r"provides only the 'depth' target.*\['mask'\]"):
        FolderDepth("train", root=root, targets=("mask",))
    with pytest.raises(ValueError, match="provides only the 'depth' target"):
        FolderDepth("train", root=root, targets=("depth", "flow"))


def test_nan_inf_negative_are_invalid_counted_and_warned_once(tmp_path):
    root = make_depth_folder(tmp_path)
    bad = depth_pattern(k=1)
    bad[0, 0], bad[0, 1], bad[1, 0], bad[1, 1] = np.nan, np.inf, -2.0, 0.0
    np.save(root / "depth" / "train" / "b.npy", bad)
    ds = FolderDepth("train", root=root, depth_scale=1000)
    with pytest.warns(DepthValueWarning, match=r"b\.npy: 3 NaN/inf/negative depth value\(s\) made invalid"):
        s = ds[1]
    assert int((~s["valid"]).sum()) == 4 and torch.isfinite(s["depth"]).all()
    assert float(s["depth"][0, 0, 0]) == 0.0 and float(s["depth"][0, 2, 2]) == bad[2, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time: counted, not warned
        ds[1]
    assert ds.pixel_stats["invalid_values"] == 6 and ds.pixel_stats["no_measurement"] == 2
    assert "6 NaN/inf/negative (made invalid) in 2 file(s)" in ds.report()


def test_millimetres_read_as_metres_are_flagged(tmp_path):
    root = make_nyu_folder(tmp_path)
    ds = NYUv2Folder("train", root=root, depth_scale=1, max_depth=10.0)  # the PNGs hold millimetres
    with pytest.warns(DepthValueWarning, match=r"sync_depth_00045\.png: median depth 2687\.5 m .*depth_scale=1000"):
        s = ds[0]
    assert not s["valid"].any()  # 1000 .. 4375 "metres" are all beyond the 10 m cap
    assert len(ds.unit_suspects) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NYUv2Folder("train", root=root)[0]  # the right scale: no warning


def test_size_mismatch_names_both_files_or_is_skipped(tmp_path):
    root = make_nyu_folder(tmp_path, size_of=(H, W + 2))
    ds = NYUv2Folder("train", root=root)
    with pytest.raises(
        ValueError,
        match=r"sync_depth_00045\.png: depth is 10x6 \(WxH\) but its image .*rgb_00045\.jpg is 8x6",
    ):
        ds[0]
    skipping = NYUv2Folder("train", root=root, skip_bad=True)
    with pytest.warns(BadSampleWarning) as record, pytest.raises(ValueError, match="all 2 samples"):
        skipping[0]
    assert ["1 of 2 skipped" in str(w.message) for w in record] == [True, False]
    assert "2 of 2 skipped" in str(record[1].message) and "sync_depth_00046.png" in str(record[1].message)
    # one good sample among bad ones is the substitute
    save_png16(root / "sync/kitchen_0028a/sync_depth_00046.png", np.rint(depth_pattern() * 1000))
    fixed = NYUv2Folder("train", root=root, skip_bad=True)
    with pytest.warns(BadSampleWarning, match=r"sync_depth_00045\.png"):
        s = fixed[0]
    assert torch.equal(s["depth"][0], torch.from_numpy(depth_pattern())) and fixed.skipped.keys() == {0}


def test_eight_bit_depth_png_is_a_bad_sample(tmp_path):
    root = make_depth_folder(tmp_path)
    Image.fromarray(np.full((H, W), 3, np.uint8)).save(root / "depth" / "train" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png: expected a single-channel 16-bit PNG.*mode L"):
        FolderDepth("train", root=root, depth_scale=1000)[0]


def test_listed_but_absent_and_unpaired_files_are_errors(tmp_path):
    root = make_kitti(tmp_path)
    (root / "data_depth_annotated/train" / KITTI_DRIVE / "proj_depth/groundtruth/image_02/0000000006.png").unlink()
    with pytest.raises(
        ValueError,
        match=r"eigen_train_files_with_gt\.txt lists 1 file\(s\) that do not exist:\n.*0000000006\.png",
    ):
        KITTIDepth("train", root=root)
    (root / "eigen_train_files_with_gt.txt").write_text("only_one_field.png\n")
    with pytest.raises(
        ValueError, match=r"eigen_train_files_with_gt\.txt:1: expected '<rgb path> <depth path or None>"
    ):
        KITTIDepth("train", root=root)
    folder = make_depth_folder(tmp_path / "f")
    np.save(folder / "depth" / "train" / "c.npy", depth_pattern())
    with pytest.raises(ValueError, match=r"1 unpaired file\(s\):\n  depth map without an image .*c\.npy"):
        FolderDepth("train", root=folder, depth_scale=1000)


def test_caps_and_config_errors(tmp_path):
    root = make_kitti(tmp_path)
    ds = KITTIDepth("train", root=root, min_depth=6.0, max_depth=7.5)
    s = ds[0]
    gt = kitti_gt(H, W)
    assert torch.equal(s["valid"], torch.from_numpy((gt > 6.0) & (gt <= 7.5)))
    assert ds.pixel_stats["outside_caps"] == int(((gt > 0) & ~((gt > 6.0) & (gt <= 7.5))).sum())
    with pytest.raises(ValueError, match="max_depth must exceed min_depth"):
        KITTIDepth("train", root=root, min_depth=1.0, max_depth=1.0)
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'val'\]"):
        KITTIDepth("training", root=root)


@pytest.mark.parametrize("name", ["nyuv2", "nyuv2_mat", "kitti", "depth_folder"])
def test_data_configs_build_their_reader(tmp_path, name):
    """Every key of conf/data/<name>.yaml reaches the constructor, except the loader/task keys train.py pops
    (and eval_crop, which is the metrics' option)."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    for key in (
        "name",
        "batch_size",
        "num_workers",
        "val_batch_size",
        "train_length",
        "val_length",
        "eval_crop",
    ):
        cfg.pop(key)
    assert "scale" not in cfg["augment"]
    make = {
        "nyuv2": make_nyu_folder,
        "nyuv2_mat": make_nyu_mat,
        "kitti": make_kitti,
        "depth_folder": make_depth_folder,
    }
    cfg["root"] = str(make[name](tmp_path))
    if name == "depth_folder":
        assert cfg["max_depth"] == "???"  # required: the sensor range is the user's to state
        cfg["max_depth"] = 20.0
    cfg["augment"] = {**cfg["augment"], "crop": [8, 8]}  # the fixture frames are 6x8: padded
    if name == "kitti":
        assert cfg.pop("kb_crop") == "train"  # a 352x1216 crop needs full-size frames (tested above)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DepthValueWarning)  # KITTI's None line
        ds = build_dataset(name, "train", targets=("depth",), **cfg)
        val = build_dataset(name, "val", targets=("depth",), **cfg) if name != "depth_folder" else ds
    assert ds[0]["depth"].shape == (1, 8, 8) and val[0]["valid"].dtype == torch.bool


def test_nyu_mat_survives_pickling_and_reopens_per_process(tmp_path):
    import pickle

    ds = NYUv2Mat("train", root=make_nyu_mat(tmp_path))
    first = ds[0]["depth"]
    assert ds._h5 is not None
    clone = pickle.loads(pickle.dumps(ds))  # spawned DataLoader workers get a pickled copy: no open handle
    assert clone._h5 is None and torch.equal(clone[0]["depth"], first)
    ds._h5_pid = -1  # as seen from a forked worker: the inherited handle is not reused
    old = ds._h5
    assert torch.equal(ds[0]["depth"], first) and ds._h5 is not old
