"""Flow readers on tiny fixture trees written in each dataset's official layout (flow files byte by byte
from the format definitions), their bad-input errors, and the conf/data flow configs."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from densekit.data import (
    DATASETS,
    KITTI2015,
    BadSampleWarning,
    FlyingChairs,
    FlyingThings3D,
    FolderFlow,
    MPISintel,
    build_dataset,
)
from helpers import (
    FLOW_H,
    FLOW_W,
    frame,
    kitti_valid,
    known_flow,
    make_chairs,
    make_sintel,
    make_things,
    save_rgb,
    write_flo,
    write_kitti,
)
from helpers import make_kitti_flow as make_kitti

H, W = FLOW_H, FLOW_W  # the size the builders in helpers.py draw at
CONF = Path(__file__).resolve().parents[1] / "conf" / "data"


# -- readers ----------------------------------------------------------------------------------------------
def check_schema(s, h=H, w=W):
    assert s["image"].shape == (3, h, w) and s["image"].dtype == torch.float32
    assert s["image2"].shape == (3, h, w) and s["flow"].shape == (2, h, w)
    assert s["flow"].dtype == torch.float32
    assert s["valid"].shape == (h, w) and s["valid"].dtype == torch.bool


def red(s, key="image"):
    return round(float(s[key][0, 0, 0]) * 255)


def test_chairs(tmp_path):
    root = make_chairs(tmp_path / "FlyingChairs_release")
    train, val = FlyingChairs("train", root), FlyingChairs("val", root)
    assert (len(train), len(val)) == (2, 1)
    s = train[1]  # sample 00003 (lines 1 and 3 are train)
    check_schema(s)
    assert (red(s), red(s, "image2")) == (30, 31)
    torch.testing.assert_close(s["flow"], torch.from_numpy(known_flow(3).transpose(2, 0, 1)))
    assert s["valid"].all() and "noc" not in s
    assert red(val[0]) == 20
    (root / "FlyingChairs_train_val.txt").write_text("1\n2\n")
    with pytest.raises(ValueError, match="2 \\(val\\) per sample, 3 in all.*got 2 entries"):
        FlyingChairs("train", root)


def test_things_pairs_both_directions_and_cameras(tmp_path):
    root = make_things(tmp_path / "things")
    make_things(root, "TEST")
    ds = FlyingThings3D("train", root)
    assert len(ds) == 8  # 2 cameras x 2 frame pairs x 2 directions
    s = ds[0]  # left camera, frame 6 -> 7, into_future 0006
    check_schema(s)
    assert (red(s), red(s, "image2")) == (106, 107)
    torch.testing.assert_close(s["flow"], torch.from_numpy(known_flow(6).transpose(2, 0, 1)))
    p = ds[1]  # into_past: frame 7 -> 6 with IntoPast_0007
    assert (red(p), red(p, "image2")) == (107, 106)
    torch.testing.assert_close(p["flow"], torch.from_numpy(-known_flow(7).transpose(2, 0, 1)))
    final = build_dataset(
        "things", "val", root=root, **{"pass": "final"}, cameras=["right"], directions=["into_future"]
    )
    assert len(final) == 2 and (red(final[0]), red(final[0], "image2")) == (186, 187)
    assert len(FlyingThings3D("train", root, max_samples=3)) == 3
    with pytest.raises(ValueError, match="pass must be 'clean' or 'final'"):
        FlyingThings3D("train", root, **{"pass": "albedo"})
    (root / "optical_flow/TRAIN/A/0000/into_past/right/OpticalFlowIntoPast_0008_R.pfm").unlink()
    with pytest.raises(ValueError, match="lists 1 file\\(s\\) that do not exist.*IntoPast_0008_R.pfm"):
        FlyingThings3D("train", root)


def test_sintel_masks_and_holdout(tmp_path):
    root = make_sintel(tmp_path / "Sintel")
    ds = MPISintel("val", root, **{"pass": "final"})
    assert len(ds) == 4
    s = ds[1]  # alley_1 frame 2 -> 3
    check_schema(s)
    assert (red(s), red(s, "image2")) == (102, 103)
    torch.testing.assert_close(s["flow"], torch.from_numpy(known_flow(2).transpose(2, 0, 1)))
    assert not s["valid"][0, :4].any() and s["valid"].sum() == H * W - 4
    assert s["noc"].dtype == torch.bool and s["noc"].sum() == H * W - 8 and not s["noc"][5:7, 8:12].any()
    train = MPISintel("train", root, val_scenes=["market_2"])
    val = MPISintel("val", root, val_scenes=["market_2"])
    assert len(train) == len(val) == 2 and red(val[0]) == 11
    with pytest.raises(ValueError, match="val_scenes \\['cave_9'\\] not found"):
        MPISintel("val", root, val_scenes=["cave_9"])
    (root / "training" / "occlusions" / "alley_1" / "frame_0002.png").unlink()
    with pytest.raises(ValueError, match="lists 1 file.*occlusions/alley_1/frame_0002.png"):
        MPISintel("train", root)


def test_kitti_sparse_occ_noc(tmp_path):
    root = make_kitti(tmp_path / "KITTI2015")
    occ, noc = kitti_valid()
    ds = KITTI2015("val", root)
    assert len(ds) == 3 and ds.sparse
    s = ds[2]
    check_schema(s)
    assert (red(s), red(s, "image2")) == (2, 102)
    np.testing.assert_array_equal(s["valid"].numpy(), occ)
    np.testing.assert_array_equal(s["noc"].numpy(), noc)
    expected = np.where(occ[..., None], known_flow(2), 0).transpose(2, 0, 1)
    torch.testing.assert_close(s["flow"], torch.from_numpy(expected))
    n = KITTI2015("val", root, flow_gt="noc")[0]
    np.testing.assert_array_equal(n["valid"].numpy(), noc)
    assert [len(KITTI2015(sp, root, val_ids=[1])) for sp in ("train", "val")] == [2, 1]
    # sparse augmentation: every valid vector survives a zoom, none is invented
    aug = KITTI2015("train", root, augment={"scale": [2.0, 2.0]})[0]
    assert aug["valid"].sum() == occ.sum()
    expected_sum = 2 * torch.from_numpy(known_flow(0)[occ].sum(0))  # (2,): every vector doubled
    torch.testing.assert_close(aug["flow"][:, aug["valid"]].sum(1), expected_sum)


def test_folder_flow_list_and_folder(tmp_path):
    root = tmp_path / "mine"
    save_rgb(root / "a" / "f1.png", frame(1))
    save_rgb(root / "a" / "f2.png", frame(2))
    write_flo(root / "a" / "f1.flo", known_flow(5))
    occ, _ = kitti_valid()
    write_kitti(root / "b" / "k.png", known_flow(1), occ)
    lines = "# img1 img2 flow\na/f1.png a/f2.png a/f1.flo\na/f2.png a/f1.png b/k.png  # sparse one\n"
    (root / "train.txt").write_text(lines)
    ds = FolderFlow("train", root)
    assert len(ds) == 2 and not ds.sparse  # mixed -> dense unless told
    torch.testing.assert_close(ds[0]["flow"], torch.from_numpy(known_flow(5).transpose(2, 0, 1)))
    np.testing.assert_array_equal(ds[1]["valid"].numpy(), occ)
    assert red(ds[1]) == 2
    for name, value in (("x_img1.png", frame(7)), ("x_img2.png", frame(8))):
        save_rgb(root / "val" / name, value)
    write_flo(root / "val" / "x_flow.flo", known_flow(0))
    val = build_dataset("flow_folder", "val", root=root)
    assert len(val) == 1 and (red(val[0]), red(val[0], "image2")) == (7, 8)
    save_rgb(root / "val" / "y_img1.png", frame(9))
    with pytest.raises(ValueError, match="1 sample\\(s\\) lack files.*'y': \\['img2', 'flow'\\]"):
        FolderFlow("val", root)
    (root / "bad.txt").write_text("a/f1.png a/f2.png\n")
    with pytest.raises(ValueError, match="bad.txt:1: expected 'img1 img2 flow'"):
        FolderFlow("bad", root)


# -- bad input --------------------------------------------------------------------------------------------
def test_frames_of_different_sizes(tmp_path):
    root = make_chairs(tmp_path / "c")
    save_rgb(root / "data" / "00001_img2.ppm", frame(11, H, W + 2))
    match = "00001_img2.ppm: frame 2 is 18x12 \\(WxH\\) but frame 1 .*00001_img1.ppm is 16x12"
    with pytest.raises(ValueError, match=match):
        FlyingChairs("train", root)[0]


def test_truncated_flo_errors_or_is_skipped(tmp_path):
    root = make_chairs(tmp_path / "c")
    path = root / "data" / "00001_flow.flo"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="00001_flow.flo: truncated .flo file"):
        FlyingChairs("train", root)[0]
    ds = FlyingChairs("train", root, skip_bad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = ds[0]
    assert red(s) == 30  # substituted by the next good train sample (00003)
    assert any(issubclass(w.category, BadSampleWarning) and "1 of 2 skipped" in str(w.message) for w in caught)


def test_non_16bit_kitti_png(tmp_path):
    root = make_kitti(tmp_path / "k", ids=(0,))
    save_rgb(root / "training" / "flow_occ" / "000000_10.png", frame(3))
    match = "flow_occ/000000_10.png: expected a KITTI flow PNG, 16-bit with 3 channels"
    with pytest.raises(ValueError, match=match):
        KITTI2015("train", root)[0]


def test_nan_and_huge_flow_are_invalid(tmp_path):
    root = make_chairs(tmp_path / "c", marks=(1,))
    flow = known_flow(1)
    flow[0, 0] = [np.nan, 1.0]
    flow[1, 1] = [np.inf, 0.0]
    flow[2, 2] = [0.0, 1e10]  # the Middlebury unknown marker
    flow[3, 3] = [1500.0, 0.0]  # beyond max_flow = 1000
    write_flo(root / "data" / "00001_flow.flo", flow)
    s = FlyingChairs("train", root)[0]
    assert s["valid"].sum() == H * W - 4 and torch.isfinite(s["flow"]).all()
    assert not s["valid"][[0, 1, 2, 3], [0, 1, 2, 3]].any()
    assert FlyingChairs("train", root, max_flow=None)[0]["valid"].sum() == H * W - 3


@pytest.mark.parametrize(
    "cls, kwargs, error, match",
    [
        (FlyingChairs, {"targets": ("mask",)}, ValueError, "provides only the 'flow' target"),
        (FlyingChairs, {"split": "test"}, ValueError, "split must be one of"),
        (FlyingChairs, {"length": 0}, ValueError, "length must be a positive int"),
        (FlyingChairs, {"augment": {"rotate": 1}}, ValueError, "unknown flow augmentation"),
        (KITTI2015, {"flow_gt": "all"}, ValueError, "flow_gt must be 'occ'"),
    ],
)
def test_bad_arguments(tmp_path, cls, kwargs, error, match):
    make_chairs(tmp_path)
    make_kitti(tmp_path, ids=(0,))
    with pytest.raises(error, match=match):
        cls(root=tmp_path, **kwargs)


def test_missing_root_points_to_the_readme(tmp_path):
    with pytest.raises(FileNotFoundError, match="datasets/README.md"):
        MPISintel("train", tmp_path / "nowhere")
    tmp_path.joinpath("s").mkdir()
    with pytest.raises(FileNotFoundError, match="training/final"):
        MPISintel("train", tmp_path / "s", **{"pass": "final"})


# -- configs ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["chairs", "things", "sintel", "kitti15", "flow_folder"])
def test_conf_data_builds_the_reader_with_its_augmentation(tmp_path, name):
    from densekit.builder import split_data_config

    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    assert cfg["name"] == name and name in DATASETS
    makers = {"chairs": make_chairs, "things": make_things, "sintel": make_sintel, "kitti15": make_kitti}
    root = makers.get(name)
    if root is None:
        make_chairs(tmp_path)  # a flow_folder tree in the folder convention
        for k in (1, 3):
            for suffix in ("img1", "img2"):
                (tmp_path / "train").mkdir(exist_ok=True)
                name_ = f"{k:05d}_{suffix}.ppm"
                (tmp_path / "data" / name_).rename(tmp_path / "train" / name_)
            (tmp_path / "data" / f"{k:05d}_flow.flo").rename(tmp_path / "train" / f"{k:05d}_flow.flo")
    else:
        root(tmp_path)
    cfg["root"] = str(tmp_path)
    ds_name, kwargs, loader, _ = split_data_config(cfg)
    assert set(loader) <= {"batch_size", "num_workers", "val_batch_size"}
    torch.manual_seed(0)
    s = build_dataset(ds_name, "train", targets=("flow",), **kwargs)[0]
    ch, cw = cfg["augment"]["crop"]
    check_schema(s, ch, cw)
    assert s["valid"].any()
