"""The reliability catalogue (docs/reliability.md): one test per row. Each row ends in a single clear error
(type AND message asserted) or a correct recovery - never a deep torch trace, silent data loss or a
half-written file. Deep versions of some rows live elsewhere (named in the doc); these are the fast checks."""

import errno
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

import densekit
import densekit.train as dk_train
from densekit.checkpointing import (
    AtomicCheckpointIO, FiniteWeights, LastCheckpoint, TrainingInterrupted, check_resume_checkpoint,
    remove_stale_temp_files, resolve_ckpt_path,
)
from densekit.data import BadSampleWarning, DepthValueWarning, build_dataset
from densekit.data.seg_datasets import CityscapesSeg, FolderSeg
from densekit.losses import depth_loss, multiscale_flow_loss
from tests.conftest import FLOW_SMOKE
from tests.test_depth_datasets import depth_pattern, make_depth_folder, make_nyu_folder
from tests.test_flow_datasets import known_flow, make_chairs, write_flo
from tests.test_seg_datasets import H, W, make_cityscapes, make_folder
from tests.test_volume_data import lesion, make_brats

# one intra-op thread: many tiny ops; on a shared CPU a second thread mostly waits for a busy core
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def seg_ckpt(smoke_run):
    run_dir, _, _ = smoke_run
    return next((run_dir / "checkpoints").glob("best-*.ckpt"))


@pytest.fixture(scope="module")
def seg_predictor(seg_ckpt):
    return densekit.Predictor.from_checkpoint(seg_ckpt)


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
        (["task=seg", "head=revunet3d"],
         r"head=revunet3d does not fit task=seg; valid heads: \['deeplabv3plus'"),
        (["experiment=smoke", "nonfinite=ignore"],
         r"nonfinite=ignore: expected one of raise, skip, got 'ignore'"),
    ],
    ids=["flow-lraspp", "volume-mci2", "seg-revunet3d", "nonfinite-value"],
)
def test_config_incompatible_combination_before_any_build(compose, tmp_path, monkeypatch, overrides, match):
    def must_not_run(*args, **kwargs):
        raise AssertionError("data or model built for an invalid config")

    monkeypatch.setattr(dk_train, "build_datamodule", must_not_run)
    monkeypatch.setattr(dk_train, "build_task", must_not_run)
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
    cfg = compose(["experiment=smoke", f"init_from={tmp_path / 'nope.ckpt'}",
                   f"output_dir={tmp_path / 'run'}"])
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
    module = dk_train.build_task(cfg)
    with pytest.raises(ValueError, match=rf"1 missing \(e\.g\. \['{dropped[6:]}'\]\), 1 unexpected "
                                         rf"\(e\.g\. \['head\.extra\.weight'\]\)"):
        dk_train.init_weights(module, tmp_path / "edited.ckpt")
    with pytest.raises(ValueError, match=rf"does not match its own config: missing \['{dropped[6:]}'\], "
                                         rf"unexpected \['head\.extra\.weight'\]"):
        densekit.Predictor.from_checkpoint(tmp_path / "edited.ckpt")


# == training =========================================================================================
def _tiny_task(nonfinite="raise"):
    from densekit.tasks.seg import SegTask

    torch.manual_seed(0)
    return SegTask(nn.Conv2d(3, 2, 1), num_classes=2, optim={"name": "sgd", "lr": 0.1, "scheduler": "none"},
                   config={"nonfinite": nonfinite})


def _batches(n=4, nan_at=(), size=8):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        image = torch.rand(3, size, size, generator=g)
        if i in nan_at:
            image[0, 0, 0] = float("nan")  # -> NaN logits -> NaN loss
        out.append({"image": image, "mask": (image[1] > 0.5).long()})
    return out


def _trainer(tmp_path, **kw):
    import pytorch_lightning as pl

    kw = {"max_epochs": 1, **kw}
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                      default_root_dir=str(tmp_path), plugins=[AtomicCheckpointIO()], **kw)


def _loader(batches, batch_size=1):
    return torch.utils.data.DataLoader(batches, batch_size=batch_size, shuffle=False)


def test_training_nonfinite_loss_raises_naming_the_step_and_writes_no_bad_checkpoint(tmp_path):
    task = _tiny_task("raise")
    last = LastCheckpoint(tmp_path / "last.ckpt", every_n_train_steps=1)
    trainer = _trainer(tmp_path, callbacks=[last, FiniteWeights()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FloatingPointError, match=r"non-finite training loss \(nan\) at step 2; stopping"):
            trainer.fit(task, _loader(_batches(nan_at=(2,))))
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 2  # the last good step, nothing after it
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    # a finite loss whose update overflowed: the save is refused before a byte is written
    with torch.no_grad():
        task.model.weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"non-finite weights after step 2 .*model\.weight"):
        trainer.save_checkpoint(str(tmp_path / "bad.ckpt"))
    assert not (tmp_path / "bad.ckpt").exists() and not list(tmp_path.glob(".*tmp-*"))


def test_training_nonfinite_loss_skip_drops_the_step_and_counts_it(tmp_path, compose):
    batches = _batches(n=4, nan_at=(1, 3))
    task = _tiny_task("skip")
    trainer = _trainer(tmp_path)
    with pytest.warns(RuntimeWarning, match=r"non-finite training loss \(nan\) at step 1: step skipped"):
        trainer.fit(task, _loader(batches))
    assert task.skipped_nonfinite == 2
    assert float(trainer.callback_metrics["train/skipped_nonfinite"]) == 2.0
    # the skipped steps changed nothing: the same weights as training on the two good batches alone
    ref = _tiny_task("raise")
    _trainer(tmp_path / "ref").fit(ref, _loader([batches[0], batches[2]]))
    for (name, a), b in zip(task.model.state_dict().items(), ref.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    # wired through the config: nonfinite=skip reaches the task
    module = dk_train.build_task(compose(["experiment=smoke", "nonfinite=skip"]))
    assert module.nonfinite == "skip"
    assert dk_train.build_task(compose(["experiment=smoke"])).nonfinite == "raise"


def test_training_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.arange(4.0)}, "global_step": 3}, path)
    real_save = torch.save

    def half_then_enospc(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(100)}, f)  # some bytes reach the disk ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then it is full

    monkeypatch.setattr(torch, "save", half_then_enospc)
    with pytest.raises(OSError, match="No space left on device"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(8)}, "global_step": 4}, path)
    monkeypatch.undo()
    saved = torch.load(path, weights_only=True)
    assert saved["global_step"] == 3 and torch.equal(saved["state_dict"]["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


# == faults ==========================================================================================
_KILLED_SAVE = r"""
import os, signal, sys, torch
from densekit.checkpointing import AtomicCheckpointIO
path = sys.argv[1]
AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 7,
    "hyper_parameters": {"config": {"task": {"name": "seg"}, "backbone": {"name": "mci0"},
                                    "head": {"name": "lraspp"}}}}, path)
real = torch.save
def dying(obj, f, *a, **k):
    f.write(b"half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-save
torch.save = dying
AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 8}, path)
"""


def test_fault_sigkill_mid_save_then_ckpt_path_last_resumes_from_the_intact_checkpoint(tmp_path):
    """Fast version of tests/test_resume.py::test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run."""
    ckpt_dir = tmp_path / "checkpoints"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(ckpt_dir / "last.ckpt")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(list(ckpt_dir.glob(".last.ckpt.tmp-*"))) == 1  # the half-written file is only the temp file
    assert len(remove_stale_temp_files(ckpt_dir)) == 1
    path = resolve_ckpt_path("last", tmp_path)
    assert path == ckpt_dir / "last.ckpt"
    config = {"task": {"name": "seg"}, "backbone": {"name": "mci0"}, "head": {"name": "lraspp"}}
    check_resume_checkpoint(path, config)
    saved = torch.load(path, weights_only=True)
    assert saved["global_step"] == 7 and torch.equal(saved["state_dict"]["w"], torch.ones(3))


def test_fault_resume_from_last_gives_the_same_final_weights(tmp_path):
    batches = _loader(_batches(n=3), batch_size=1)
    straight = _tiny_task()
    _trainer(tmp_path / "a", max_epochs=2).fit(straight, batches)
    first = _tiny_task()
    last = LastCheckpoint(tmp_path / "b" / "last.ckpt")
    _trainer(tmp_path / "b", max_epochs=1, callbacks=[last]).fit(first, batches)
    resumed = _tiny_task()
    torch.manual_seed(123)  # another init: everything must come from the checkpoint
    resumed.model.reset_parameters()
    _trainer(tmp_path / "b", max_epochs=2, callbacks=[LastCheckpoint(last.path)]).fit(
        resumed, batches, ckpt_path=str(last.path))
    assert torch.load(last.path, weights_only=False)["global_step"] == 6
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_fault_sigint_stops_cleanly_with_a_usable_last_checkpoint(tmp_path):
    """Fast version of tests/test_resume.py::test_ctrl_c_stops_cleanly_with_a_resumable_last_checkpoint."""
    import pytorch_lightning as pl

    class CtrlC(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 1:
                os.kill(os.getpid(), signal.SIGINT)  # handled by LastCheckpoint: finish this step, then stop

    # the handler before the run is Python's default, whatever an earlier test in this process left behind
    signal.signal(signal.SIGINT, signal.default_int_handler)
    task = _tiny_task()
    last = LastCheckpoint(tmp_path / "last.ckpt")
    with pytest.raises(TrainingInterrupted, match=r"interrupted at step 2; last checkpoint: .*last\.ckpt"):
        _trainer(tmp_path, callbacks=[last, CtrlC()]).fit(task, _loader(_batches(n=4)))
    with pytest.raises(KeyboardInterrupt):  # after the run, the first Ctrl-C interrupts at once again
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1.0)  # the handler runs between bytecodes; never reached
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    saved = torch.load(last.path, weights_only=False)
    assert saved["global_step"] == 2
    for name, value in task.model.state_dict().items():
        assert torch.equal(saved["state_dict"][f"model.{name}"], value)
    resumed = _tiny_task()
    _trainer(tmp_path, callbacks=[LastCheckpoint(last.path)]).fit(resumed, _loader(_batches(n=4)),
                                                                 ckpt_path=str(last.path))
    assert torch.load(last.path, weights_only=False)["global_step"] == 4


# == inference =======================================================================================
def test_inference_odd_sizes(seg_predictor):
    for h, w in ((1, 1), (37, 53), (5, 40)):
        assert seg_predictor.predict(np.zeros((h, w, 3), np.uint8)).shape == (h, w)


def test_inference_grey_rgba_16bit(seg_predictor, tmp_path):
    rgb = (np.arange(20 * 24 * 3) % 256).astype(np.uint8).reshape(20, 24, 3)
    ref = seg_predictor.predict(rgb)
    rgba = np.concatenate([rgb, np.zeros((20, 24, 1), np.uint8)], -1)  # alpha is dropped, not blended
    np.testing.assert_array_equal(seg_predictor.predict(rgba), ref)
    assert (seg_predictor.predict(rgb.astype(np.uint16) * 257) == ref).mean() > 0.99
    grey = rgb[..., 0]
    as_rgb = np.repeat(grey[..., None], 3, -1)
    np.testing.assert_array_equal(seg_predictor.predict(grey), seg_predictor.predict(as_rgb))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # a 16-bit PNG file (mode I;16)
    assert seg_predictor.predict(tmp_path / "g16.png").shape == (20, 24)


def test_inference_empty_image(seg_predictor):
    for empty in (np.zeros((0, 5, 3), np.uint8), np.zeros((4, 0), np.uint8)):
        with pytest.raises(ValueError, match="the image is empty"):
            seg_predictor.predict(empty)
    with pytest.raises(ValueError, match="empty list"):
        seg_predictor.predict([])


def test_inference_wrong_channel_count(seg_predictor):
    for channels in (2, 5):
        with pytest.raises(ValueError, match=rf"\(H, W, 3\).*got shape \(8, 8, {channels}\)"):
            seg_predictor.predict(np.zeros((8, 8, channels), np.uint8))


def test_inference_wrong_task_checkpoint(seg_predictor, seg_ckpt):
    flow_run = {"task": {"name": "flow"}, "backbone": {"name": "flow_pyramid"}, "head": {"name": "flow"}}
    with pytest.raises(ValueError, match=r"trained with task=seg backbone=mci0 head=lraspp, but this run is "
                                         r"task=flow backbone=flow_pyramid head=flow"):
        check_resume_checkpoint(seg_ckpt, flow_run)  # ckpt_path=... of another task: refused before any build
    with pytest.raises(ValueError,
                       match=r"optical flow call \(task='flow'\) but .* is a task='seg' checkpoint"):
        seg_predictor.predict(np.zeros((8, 8, 3), np.uint8), task="flow")
    with pytest.raises(ValueError, match="image2 is only for flow"):
        seg_predictor.predict(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))


def test_inference_flow_pair_of_different_sizes(compose):
    from omegaconf import OmegaConf

    from densekit.inference import model_from_config

    config = OmegaConf.to_container(compose(FLOW_SMOKE), resolve=True)
    predictor = densekit.Predictor(model_from_config(config), config, source="flow model")
    with pytest.raises(ValueError, match=r"the two frames differ in size: \(16, 16\) vs \(16, 20\)"):
        predictor.predict(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 20, 3), np.uint8))
    with pytest.raises(ValueError, match=r"optical-flow checkpoint: call predict\(image1, image2\)"):
        predictor.predict(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="got 2 first frames but 1 second frames"):
        predictor.predict([np.zeros((16, 16, 3), np.uint8)] * 2, [np.zeros((16, 16, 3), np.uint8)])


def test_inference_non_densekit_checkpoint(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "lightning.ckpt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "plain.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    (tmp_path / "text.ckpt").write_text("hello")
    for name in ("lightning.ckpt", "plain.pt", "list.pt"):
        with pytest.raises(ValueError, match=rf"{name} is not a densekit checkpoint"):
            densekit.Predictor.from_checkpoint(tmp_path / name)
    with pytest.raises(ValueError, match=r"could not read checkpoint .*text\.ckpt"):
        densekit.Predictor.from_checkpoint(tmp_path / "text.ckpt")


# == fuzz ==============================================================================================
_DTYPES = ["uint8", "uint16", "int32", "float32", "float64", "bool"]


@st.composite
def predictor_inputs(draw):
    ndim = draw(st.sampled_from([2, 3, 4]))
    h, w = draw(st.integers(0, 40)), draw(st.integers(0, 40))
    channels = draw(st.integers(1, 5))
    shape = {2: (h, w), 3: (h, w, channels), 4: (draw(st.integers(0, 2)), h, w, channels)}[ndim]
    dtype = draw(st.sampled_from(_DTYPES))
    bounds = st.sampled_from([-3.0, -1e-3, 0.0, 0.5, 1.0, 1.5, 255.0])  # negative, in [0, 1], > 1
    lo, hi = sorted(draw(st.lists(bounds, min_size=2, max_size=2)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if dtype == "bool":
        arr = rng.random(shape) > 0.5
    elif dtype in ("uint8", "uint16", "int32"):
        info = np.iinfo(dtype)
        low, high = max(info.min, -70000), min(info.max, 70000)
        arr = rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    else:
        arr = rng.uniform(lo, hi, size=shape).astype(dtype)
        if arr.size and draw(st.booleans()):
            arr.flat[rng.integers(arr.size)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    as_tensor = draw(st.booleans()) and dtype != "uint16"  # torch has no uint16 tensors on every version
    return torch.from_numpy(arr) if as_tensor else arr


def _within_contract(image) -> bool:
    """Numpy inputs the Predictor documents as valid: (H, W) or (H, W, 1|3|4) (or a non-empty batch of them),
    H, W >= 1; uint8, uint16, bool, or finite float in [0, 1]."""
    if torch.is_tensor(image):
        return False  # (layouts are checked above; the refusal of a tensor is not judged here)
    item = image.shape[1:] if image.ndim == 4 else image.shape
    if image.ndim == 4 and image.shape[0] == 0:
        return False
    if not (len(item) == 2 or (len(item) == 3 and item[2] in (1, 3, 4))) or 0 in item[:2]:
        return False
    if image.dtype in (np.uint8, np.uint16, np.bool_):
        return True
    if np.issubdtype(image.dtype, np.floating):
        return bool(np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1)
    return False


# DENSEKIT_FUZZ_EXAMPLES=400 for a longer hunt (passes; ~2 min on a busy 2-core machine)
@settings(max_examples=int(os.environ.get("DENSEKIT_FUZZ_EXAMPLES", 40)), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(image=predictor_inputs())
def test_fuzz_predictor_inputs_predict_or_raise_valueerror(seg_predictor, image):
    try:
        out = seg_predictor.predict(image)
    except ValueError:
        assert not _within_contract(image), f"a valid {image.dtype} {tuple(image.shape)} input was refused"
        return  # the documented error for inputs outside the contract
    shape = tuple(image.shape)
    item = shape[1:] if len(shape) == 4 else shape  # a 4-D input is a batch of 3-D images
    # documented layouts: numpy (H, W[, C]); a 3-D tensor with C in 1/3/4 first (and not last) is CHW
    chw = torch.is_tensor(image) and len(item) == 3 and item[0] in (1, 3, 4) and item[-1] not in (1, 3, 4)
    hw = item[1:] if chw else item[:2]
    assert out.shape == (shape[:1] + hw if len(shape) == 4 else hw) and out.dtype == np.int64
    assert ((out >= 0) & (out < seg_predictor.num_classes)).all()
