"""The reliability catalogue (docs/reliability.md): one test per row. Each row ends in a single clear error
(type AND message asserted) or a correct recovery - never a deep torch trace, silent data loss or a
half-written file. Deep versions of some rows live elsewhere (named in the doc); these are the fast checks.
This file: config, data and weights; training and faults in test_reliability_training.py, inference in
test_reliability_inference.py."""

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException

import densekit
import densekit.train as dk_train
from densekit.data import BadSampleWarning, CityscapesSeg, DepthValueWarning, FolderSeg, build_dataset
from densekit.losses import depth_loss, multiscale_flow_loss
from densekit.resume import check_resume_checkpoint
from helpers import SEG_H as H
from helpers import SEG_W as W
from helpers import (
    depth_pattern,
    known_flow,
    lesion,
    make_brats,
    make_chairs,
    make_cityscapes,
    make_depth_folder,
    make_folder,
    make_nyu_folder,
    write_flo,
)

# one intra-op thread: many tiny ops; on a shared CPU a second thread mostly waits for a busy core
pytestmark = pytest.mark.usefixtures("single_thread")


# == config: every mistake is caught before any data or model is built ==================================
def test_config_unknown_group_value(compose):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as err:
        compose(["backbone=foo"])
    assert "foo" in str(err.value) and all(name in str(err.value) for name in ("mci0", "mobilenetv3_large"))


def test_config_unknown_key(compose):
    with pytest.raises(ConfigCompositionException, match="max_epochz"):
        compose(["trainer.max_epochz=3"])


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["task=flow", "head=lraspp"], r"head=lraspp does not fit task=flow; valid heads: \['flow'\]"),
        (["task=volume", "backbone=mci2"], r"backbone=mci2 is 2D but task=volume needs a 3D backbone"),
        (["task=seg", "head=revunet3d"], r"head=revunet3d does not fit task=seg; valid heads: \['deeplabv3plus'"),
        (["experiment=smoke", "nonfinite=ignore"], r"nonfinite=ignore: expected one of raise, skip, got 'ignore'"),
    ],
    ids=["flow-lraspp", "volume-mci2", "seg-revunet3d", "nonfinite-value"],
)
def test_config_incompatible_combination_before_any_build(compose, tmp_path, monkeypatch, overrides, match):
    def must_not_run(*args, **kwargs):
        raise AssertionError("data or model built for an invalid config")

    monkeypatch.setattr(dk_train, "datamodule_from_config", must_not_run)
    monkeypatch.setattr(dk_train, "task_from_config", must_not_run)
    cfg = compose([*overrides, f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match=match):
        dk_train.train(cfg)
    assert not (tmp_path / "run").exists()  # not even the run directory


# == data ============================================================================================
@pytest.mark.parametrize("name", ["cityscapes", "nyuv2", "chairs", "brats"])
def test_data_root_missing_says_where_and_points_to_readme(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*datasets/README\.md"):
        build_dataset(name, "train", root=str(tmp_path / "nowhere"))


def test_data_empty_split(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "masks" / "train").mkdir(parents=True)
    (tmp_path / "classes.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"split 'train' is empty: no samples in .*images/train"):
        FolderSeg("train", root=tmp_path)


def test_data_unreadable_image(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "images" / "train" / "b.png").write_bytes(b"not an image at all")
    ds = FolderSeg("train", root=tmp_path)
    assert ds[0]["image"].shape == (3, H, W)
    with pytest.raises(ValueError, match=r"b\.png: unreadable image"):
        ds[1]


def test_data_truncated_flo(tmp_path):
    root = make_chairs(tmp_path)
    path = root / "data" / "00001_flow.flo"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"00001_flow\.flo: truncated \.flo file"):
        build_dataset("chairs", "train", root=str(root))[0]


def test_data_truncated_png(tmp_path):
    make_folder(tmp_path)
    path = tmp_path / "images" / "train" / "a.png"
    path.write_bytes(path.read_bytes()[:-60])
    with pytest.raises(ValueError, match=r"a\.png: unreadable image"):
        FolderSeg("train", root=tmp_path)[0]
    root = make_nyu_folder(tmp_path / "nyu")
    depth = root / "sync" / "kitchen_0028a" / "sync_depth_00045.png"
    depth.write_bytes(depth.read_bytes()[: len(depth.read_bytes()) // 2])
    with pytest.raises(ValueError, match=r"sync_depth_00045\.png"):
        build_dataset("nyuv2", "train", root=str(root))[0]


def test_data_mask_image_size_mismatch(tmp_path):
    make_cityscapes(tmp_path, image_size=(H, W - 2))
    with pytest.raises(ValueError, match=r"aachen_000000_000019_gtFine_labelIds\.png: mask is 32x16.*30x16"):
        CityscapesSeg("train", root=tmp_path)[0]


def test_data_labels_out_of_range(tmp_path):
    labels = np.zeros((H, W), np.uint8)
    labels[3, 4] = 40  # no Cityscapes labelId
    make_cityscapes(tmp_path / "cs", labels=labels)
    with pytest.raises(ValueError, match=r"labelIds\.png: label values \[40\]"):
        build_dataset("cityscapes", "train", root=str(tmp_path / "cs"))[0]
    seg = lesion()
    seg[0, 0, 0] = 3  # BraTS 2021 labels are 0, 1, 2, 4
    make_brats(tmp_path / "brats", ("BraTS2021_00007",), seg=seg)
    with pytest.raises(ValueError, match=r"case BraTS2021_00007: label map .* values \[3\] outside"):
        build_dataset("brats", "train", root=str(tmp_path / "brats"), val_fraction=0.0)[0]


def test_data_nonfinite_depth_and_flow_targets_are_invalid_counted_and_not_in_the_loss(tmp_path):
    root = make_depth_folder(tmp_path / "depth")
    bad = depth_pattern(k=1)
    bad[0, 0], bad[0, 1] = np.nan, np.inf
    np.save(root / "depth" / "train" / "b.npy", bad)
    ds = build_dataset("depth_folder", "train", root=str(root), depth_scale=1000)
    with pytest.warns(DepthValueWarning, match=r"b\.npy: 2 NaN/inf/negative depth value\(s\) made invalid"):
        s = ds[1]
    assert not s["valid"][0, 0] and not s["valid"][0, 1] and int(s["valid"].sum()) == s["valid"].numel() - 2
    assert torch.isfinite(s["depth"]).all() and ds.pixel_stats["invalid_values"] == 2
    # the loss ignores invalid pixels even when their target is NaN: finite value and gradient
    pred = torch.ones_like(s["depth"])[None].requires_grad_()
    target = torch.from_numpy(bad)[None, None]
    loss = depth_loss(pred, target, s["valid"][None])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    assert pred.grad[0, 0, 0, 0] == 0 and pred.grad[0, 0, 0, 1] == 0

    root = make_chairs(tmp_path / "chairs", marks=(1,))
    flow = known_flow(1)
    flow[0, 0], flow[1, 1] = [np.nan, 1.0], [np.inf, 0.0]
    write_flo(root / "data" / "00001_flow.flo", flow)
    s = build_dataset("chairs", "train", root=str(root))[0]
    assert int((~s["valid"]).sum()) == 2 and not s["valid"][0, 0] and not s["valid"][1, 1]
    assert torch.isfinite(s["flow"]).all()
    pred = torch.zeros(1, 2, *s["flow"].shape[1:], requires_grad=True)
    loss = multiscale_flow_loss([pred], torch.from_numpy(flow).permute(2, 0, 1)[None], s["valid"][None])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all() and pred.grad[0, :, 0, 0].abs().sum() == 0


def test_data_skip_bad_skips_and_counts(tmp_path):
    make_folder(tmp_path, stems=("a", "b", "c"))
    (tmp_path / "images" / "train" / "b.png").write_bytes(b"\x89PNG broken")
    strict = FolderSeg("train", root=tmp_path)
    ds = build_dataset("folder", "train", root=str(tmp_path), skip_bad=True)
    with pytest.warns(BadSampleWarning, match=r"b\.png.*1 of 3 skipped"):
        s = ds[1]
    assert torch.equal(s["image"], strict[2]["image"]) and sorted(ds.skipped) == [1]


# == weights ==========================================================================================
def test_weights_missing_file(tmp_path, compose):
    with pytest.raises(FileNotFoundError, match=r"backbone\.pretrained: weight file not found: .*nope\.pt"):
        densekit.create_backbone("mobilenetv3_large", pretrained=str(tmp_path / "nope.pt"))
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*nope\.ckpt"):
        densekit.Predictor.from_checkpoint(tmp_path / "nope.ckpt")
    cfg = compose(["experiment=smoke", f"init_from={tmp_path / 'nope.ckpt'}", f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(FileNotFoundError, match=r"init_from: checkpoint not found"):
        dk_train.train(cfg)
    assert not (tmp_path / "run").exists()


def test_weights_wrong_architecture(tmp_path):
    other = densekit.create_backbone("mci0")
    torch.save(other.state_dict(), tmp_path / "mci0.pt")
    with pytest.raises(ValueError, match=r"mci0\.pt does not match .*missing keys \(\d+\).*unexpected keys"):
        densekit.create_backbone("mobilenetv3_large", pretrained=str(tmp_path / "mci0.pt"))


def test_weights_truncated_checkpoint(tmp_path, seg_ckpt):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(seg_ckpt.read_bytes()[: seg_ckpt.stat().st_size // 3])
    with pytest.raises(ValueError, match=r"could not read checkpoint .*cut\.ckpt"):
        densekit.Predictor.from_checkpoint(cut)
    with pytest.raises(ValueError, match=r"ckpt_path: could not read .*cut\.ckpt"):
        check_resume_checkpoint(cut, {})
    weights = tmp_path / "cut.pt"
    weights.write_bytes(seg_ckpt.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"could not read weight file .*cut\.pt"):
        densekit.create_backbone("mobilenetv3_large", pretrained=str(weights))


def test_weights_strict_load_mismatch_lists_the_keys(tmp_path, seg_ckpt, compose):
    ckpt = torch.load(seg_ckpt, map_location="cpu", weights_only=False)
    state = ckpt["state_dict"]
    dropped = next(k for k in state if k.startswith("model.head."))
    state.pop(dropped)
    state["model.head.extra.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "edited.ckpt")
    cfg = compose(["experiment=smoke"])
    module = dk_train.task_from_config(cfg)
    with pytest.raises(
        ValueError,
        match=rf"1 missing \(e\.g\. \['{dropped[6:]}'\]\), 1 unexpected "
        rf"\(e\.g\. \['head\.extra\.weight'\]\)",
    ):
        dk_train.init_weights(module, tmp_path / "edited.ckpt")
    with pytest.raises(
        ValueError,
        match=rf"does not match its own config: missing \['{dropped[6:]}'\], "
        rf"unexpected \['head\.extra\.weight'\]",
    ):
        densekit.Predictor.from_checkpoint(tmp_path / "edited.ckpt")
