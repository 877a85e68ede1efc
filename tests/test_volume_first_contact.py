"""First contact with your own volumes (issue 14, volume side): a one-channel nnU-Net raw folder with a
dataset.json, a single case, 16-bit and float intensities, a folder without dataset.json, and a quiet
validation. The folders are written here with nibabel in the layout nnU-Net v2 documents
(imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, dataset.json with channel_names, labels,
numTraining, file_ending)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from densekit.data import DenseDataModule, NiftiFolder
from densekit.data.readers.volume import NNUNET_EPOCH_PATCHES

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (20, 24, 16)  # file order (i, j, k) -> samples (D, H, W) = (16, 24, 20)
DHW = SHAPE[::-1]


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


def _body(shape=SHAPE):
    """The 'scanned' region: nonzero intensities inside, exactly 0 outside (as skull-stripped MRI)."""
    body = np.zeros(shape, bool)
    body[2:18, 3:21, 2:14] = True
    return body


def _intensity(case: int, channel: int, dtype=np.uint16, lo=0, span=235):
    """A 16-bit (or float) scan using only ``lo .. lo + span`` of its dtype's range, 0 outside the body."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    ramp = (i * 7 + j * 3 + k * 5 + 11 * case + 13 * channel) % (span + 1)
    vol = np.where(_body(), lo + 1 + ramp.clip(0, span - 1), 0)
    return vol.astype(dtype)


def _labels(case: int, values=(1,)):
    seg = np.zeros(SHAPE, np.uint8)
    seg[6 + case : 12, 8:16, 4:10] = values[0]
    if len(values) > 1:
        seg[8:10, 10:12, 5:8] = values[1]
    return seg


def make_nnunet(
    root, cases=1, channels=1, labels=None, dataset_json=True, dtype=np.uint16, lo=0, span=235, label_values=(1,)
):
    """An nnU-Net v2 raw folder: ``cases`` training cases of ``channels`` 16-bit channels."""
    names = [f"case_{c:03d}" for c in range(cases)]
    for c, case in enumerate(names):
        for ch in range(channels):
            _save(root / "imagesTr" / f"{case}_{ch:04d}.nii.gz", _intensity(c, ch, dtype, lo, span))
        _save(root / "labelsTr" / f"{case}.nii.gz", _labels(c, label_values))
    if dataset_json:
        meta = {
            "channel_names": {str(ch): "MRI" if channels == 1 else f"MR{ch}" for ch in range(channels)},
            "labels": labels if labels is not None else {"background": 0, "tissue": 1},
            "numTraining": cases,
            "file_ending": ".nii.gz",
        }
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


# -- facts from dataset.json ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "table", [{"background": 0, "tissue": 1}, {"0": "background", "1": "tissue"}], ids=["v2", "v1"]
)
def test_one_channel_mri_takes_channels_and_classes_from_dataset_json(tmp_path, table):
    make_nnunet(tmp_path, cases=3, labels=table)
    ds = NiftiFolder("train", tmp_path, patch=[16, 16, 16])
    assert ds.in_channels == 1 and ds.channels == 1
    assert ds.class_names == ("background", "tissue") and ds.num_classes == 2
    assert ds.labels is None  # not a BraTS table: no region metrics
    s = ds[0]
    assert s["image"].shape == (1, 16, 16, 16) and s["mask"].shape == (16, 16, 16)
    assert set(torch.unique(s["mask"]).tolist()) <= {0, 1}


def test_given_num_classes_or_channels_that_disagree_with_dataset_json_are_one_line(tmp_path):
    make_nnunet(tmp_path, cases=2)
    with pytest.raises(ValueError) as err:
        NiftiFolder("train", tmp_path, expect_num_classes=4)
    msg = str(err.value)
    assert "\n" not in msg
    assert "data.num_classes=4" in msg and "dataset.json" in msg and "2 classes" in msg
    with pytest.raises(ValueError, match=r"data.class_names has 3 names .*dataset.json.* 2 classes"):
        NiftiFolder("train", tmp_path, classes=["a", "b", "c"])
    # a channel file beyond dataset.json's channel_names
    _save(tmp_path / "imagesTr" / "case_000_0001.nii.gz", _intensity(0, 1))
    with pytest.raises(ValueError) as err:
        NiftiFolder("train", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "channel_names lists 1 channel" in msg and "case_000_0001.nii.gz" in msg


def test_brats_table_in_dataset_json_keeps_the_region_metrics(tmp_path):
    from densekit.tasks.volume import VolumeTask

    v2 = {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
    make_nnunet(tmp_path / "a", cases=2, channels=4, labels=v2, label_values=(2, 3))
    ds = NiftiFolder("train", tmp_path / "a", val_fraction=0.0)
    assert ds.labels == "brats2023" and ds.in_channels == 4 and ds.class_names == ("background", "NCR", "ED", "ET")
    v1 = {
        "0": "background",
        "1": "necrotic / non-enhancing tumor core",
        "2": "peritumoral edema",
        "4": "GD-enhancing tumor",
    }
    make_nnunet(tmp_path / "b", cases=2, channels=4, labels=v1, label_values=(2, 4))
    ds = NiftiFolder("train", tmp_path / "b", val_fraction=0.0)
    assert ds.labels == "brats2021" and ds.num_classes == 4
    assert sorted(torch.unique(ds[0]["mask"]).tolist()) == [0, 2, 3]  # raw 4 (enhancing) -> train id 3
    # the task, given labels=auto, takes the convention the reader found
    model = torch.nn.Conv3d(4, 4, 1)
    task = VolumeTask(model, num_classes=4, class_names=list(ds.class_names), labels="auto")
    assert not any(name in ("WT", "TC", "ET") for name, _ in task.val_metrics.structures)
    task.adopt_data_labels(ds)
    assert [name for name, _ in task.val_metrics.structures][-3:] == ["WT", "TC", "ET"]
    plain = NiftiFolder("train", make_nnunet(tmp_path / "c", cases=2), val_fraction=0.0)
    task = VolumeTask(torch.nn.Conv3d(1, 2, 1), num_classes=2, class_names=["background", "tissue"], labels="auto")
    task.adopt_data_labels(plain)
    assert [name for name, _ in task.val_metrics.structures] == ["tissue"]


def test_without_dataset_json_channels_and_classes_come_from_the_files(tmp_path):
    make_nnunet(tmp_path, cases=3, channels=2, dataset_json=False, label_values=(1, 2))
    ds = NiftiFolder("train", tmp_path, val_fraction=0.0)
    assert ds.in_channels == 2
    assert ds.class_names == ("background", "class_1", "class_2") and ds.labels is None
    said = " ".join(ds.notes)
    assert "no dataset.json" in said and "2 channels" in said and "values {0, 1, 2}" in said
    # a label value that is the ignore index (a 0/255 mask) is refused in one line naming a file
    _save(tmp_path / "labelsTr" / "case_001.nii.gz", _labels(1, (255,)))
    with pytest.raises(ValueError) as err:
        NiftiFolder("train", tmp_path, val_fraction=0.0)
    msg = str(err.value)
    assert "\n" not in msg and "case_001.nii.gz" in msg and "255" in msg and "dataset.json" in msg


# -- intensities ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dtype, lo, span",
    [(np.uint16, 0, 235), (np.uint16, 30000, 35000), (np.float32, 0, 3), (np.int16, 0, 4000)],
    ids=["uint16-0..235", "uint16-high", "float-0..3", "int16"],
)
def test_intensities_reach_the_network_zscored_per_channel(tmp_path, dtype, lo, span):
    make_nnunet(tmp_path, cases=1, channels=1, dtype=dtype, lo=lo, span=span)
    ds = NiftiFolder("val", tmp_path)
    image = ds[0]["image"]  # whole volume (val split)
    body = torch.from_numpy(np.ascontiguousarray(np.swapaxes(_body(), 0, 2)))  # (i, j, k) -> (D, H, W)
    inside = image[0][body].double()
    assert image.shape == (1, *DHW) and image.dtype == torch.float32
    assert abs(float(inside.mean())) < 1e-4 and abs(float(inside.std(unbiased=False)) - 1) < 1e-4
    assert float(inside.max() - inside.min()) > 2.0  # not a black (or flat) image
    assert (image[0][~body] == 0).all()


def test_two_channels_of_different_ranges_are_normalised_each(tmp_path):
    root = make_nnunet(tmp_path, cases=1, channels=1)
    _save(root / "imagesTr" / "case_000_0001.nii.gz", _intensity(0, 1, np.float32, lo=5000, span=2) * 1e3)
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T1", "1": "T2"}
    (root / "dataset.json").write_text(json.dumps(meta))
    image = NiftiFolder("val", root)[0]["image"]
    body = torch.from_numpy(np.ascontiguousarray(np.swapaxes(_body(), 0, 2)))
    for c in range(2):
        inside = image[c][body].double()
        assert abs(float(inside.mean())) < 1e-4 and abs(float(inside.std(unbiased=False)) - 1) < 1e-4


# -- one case trains: the epoch is counted in patches ------------------------------------------------------
def test_one_case_validates_on_itself_and_the_epoch_is_counted_in_patches(tmp_path):
    make_nnunet(tmp_path, cases=1)
    train = NiftiFolder("train", tmp_path, patch=[16, 16, 16])
    val = NiftiFolder("val", tmp_path, patch=[16, 16, 16])
    assert [c[0] for c in train.cases] == [c[0] for c in val.cases] == ["case_000"]
    assert len(train) == NNUNET_EPOCH_PATCHES == 500 and len(val) == 1
    said = " ".join(val.notes)
    assert "only 1 case" in said and "validates on the training case" in said
    assert any("500 random patches" in n for n in train.notes)
    assert len(NiftiFolder("train", tmp_path, patch=[16, 16, 16], patches_per_case=4)) == 4
    assert len(NiftiFolder("train", tmp_path, patch=[16, 16, 16], length=7)) == 7  # data.train_length
    assert len(NiftiFolder("train", tmp_path, patch=None)) == 1  # whole volumes: each case once
    with pytest.raises(ValueError, match=r"patches_per_case must be a positive int or 'auto', got 0"):
        NiftiFolder("train", tmp_path, patches_per_case=0)
    # the default batch of 2 is drawn from the one case
    dm = DenseDataModule(lambda split: NiftiFolder(split, tmp_path, patch=[16, 16, 16]), batch_size=2)
    dm.setup("fit")
    batches = iter(dm.train_dataloader())
    for _ in range(2):
        batch = next(batches)
        assert batch["image"].shape == (2, 1, 16, 16, 16) and batch["mask"].shape == (2, 16, 16, 16)
        assert torch.isfinite(batch["image"]).all()
    assert len(dm.train_dataloader()) == 250  # nnU-Net's 250 iterations per epoch at batch 2


def test_three_cases_epoch_length(tmp_path):
    make_nnunet(tmp_path, cases=3)
    train = NiftiFolder("train", tmp_path, patch=[16, 16, 16])  # val_fraction 0.2 -> 1 val, 2 train cases
    assert len(train.cases) == 2 and len(train) == 2 * 250
    assert len(NiftiFolder("train", tmp_path, patch=[16, 16, 16], val_fraction=0.0)) == 3 * 167
    assert len(NiftiFolder("train", tmp_path, patch=[16, 16, 16], patches_per_case=2)) == 4
    assert len(NiftiFolder("val", tmp_path, patch=[16, 16, 16])) == 1
    assert not any("only 1 case" in n for n in train.notes)


# -- the config defaults ----------------------------------------------------------------------------------
def test_nifti_folder_config_defaults_come_from_the_data(tmp_path, compose):
    from omegaconf import OmegaConf

    from densekit.builder import split_data_config
    from densekit.data import build_dataset

    make_nnunet(tmp_path, cases=1)
    cfg = compose(["task=volume", "data=nifti_folder", f"data.root={tmp_path}"])
    assert cfg.data.num_classes is None and cfg.data.class_names is None and cfg.data.channels is None
    assert cfg.data.labels == "auto" and cfg.data.patches_per_case == "auto"
    name, kwargs, _, lengths = split_data_config(OmegaConf.to_container(cfg.data, resolve=True))
    ds = build_dataset(name, "train", targets=("mask",), **kwargs)
    assert ds.in_channels == 1 and ds.class_names == ("background", "tissue") and len(ds) == 500
    bad = compose(["task=volume", "data=nifti_folder", f"data.root={tmp_path}", "data.num_classes=4"])
    _, kwargs, _, _ = split_data_config(OmegaConf.to_container(bad.data, resolve=True))
    with pytest.raises(ValueError, match=r"data.num_classes=4 but the data has 2 classes .*dataset.json"):
        build_dataset(name, "train", targets=("mask",), **kwargs)


# -- quiet validation --------------------------------------------------------------------------------------
_QUIET_SCRIPT = r"""
import logging, sys, warnings, torch
warnings.simplefilter("default")  # as pytest shows them: DeprecationWarnings from every module
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(levelname)s %(message)s")
from densekit.tasks.volume import VolumeTask
task = VolumeTask(torch.nn.Conv3d(1, 2, 1), num_classes=2, class_names=["bg", "fg"], labels=None,
                  inference={"roi": [8, 8, 8]}).eval()
with torch.no_grad():
    out = task.forward_batch({"image": torch.randn(1, 1, 12, 12, 12)})  # larger than the roi: sliding window
print("SHAPE", tuple(out.shape), "monai" in sys.modules)
"""


@pytest.mark.slow
def test_sliding_window_validation_logs_no_alembic_info():
    """MONAI's package __init__ imports all its submodules, among them monai.apps.auto3dseg -> optuna ->
    alembic, whose plugin registry logs 7 INFO lines on import (and optuna's SQLAlchemy models warn
    MovedIn20Warning); a fresh process shows whether they leak (before the fix: 7 alembic lines + 1)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", _QUIET_SCRIPT], capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "SHAPE (1, 2, 12, 12, 12) True" in run.stdout
    noisy = [
        line
        for line in (run.stdout + run.stderr).splitlines()
        if line.startswith("alembic") or "MovedIn20Warning" in line
    ]
    assert noisy == []


# -- end to end through densekit.train.train ---------------------------------------------------------------
def _train_overrides(root, out):
    return [
        "task=volume",
        "data=nifti_folder",
        f"data.root={root}",
        "data.patch=[16,16,16]",
        "backbone.widths=[8,16,32,64,64]",
        "trainer.max_steps=2",
        "trainer.val_check_interval=null",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "data.num_workers=0",
        f"output_dir={out}",
    ]


def _train(compose, overrides):
    import contextlib
    import io

    from densekit.train import train

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        metrics = train(compose(overrides))
    return metrics, out.getvalue()


@pytest.mark.slow
def test_one_case_one_channel_trains_with_explicit_channels(tmp_path, compose):
    root = make_nnunet(tmp_path / "data", cases=1)
    metrics, printed = _train(
        compose, _train_overrides(root, tmp_path / "run") + ["backbone.in_channels=1", "data.num_classes=2"]
    )
    assert 0.0 <= metrics["val/mDice"] <= 1.0 and "val/Dice/tissue" in metrics
    assert "val/Dice/WT" not in metrics
    assert "Final validation metrics" in printed


@pytest.mark.slow
def test_one_case_one_channel_trains_with_the_defaults(tmp_path, compose):
    """Needs densekit.train to take backbone.in_channels and data.num_classes from the dataset."""
    root = make_nnunet(tmp_path / "data", cases=1)
    metrics, printed = _train(compose, _train_overrides(root, tmp_path / "run"))
    assert 0.0 <= metrics["val/mDice"] <= 1.0 and "val/Dice/tissue" in metrics
    assert "val/Dice/WT" not in metrics


@pytest.mark.slow
def test_brats_table_trains_and_evaluates_with_the_region_metrics(tmp_path, compose):
    """labels=auto end to end: the task adopts the reader's BraTS convention in setup, and evaluate.py
    (which rebuilds the reader) scores the same regions with the same numbers."""
    from scripts.evaluate import main as evaluate_main

    table = {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
    root = make_nnunet(tmp_path / "data", cases=3, channels=4, labels=table, label_values=(2, 3))
    metrics, _ = _train(compose, _train_overrides(root, tmp_path / "run"))
    for key in ("Dice/WT", "Dice/TC", "Dice/ET", "Dice/NCR", "Dice/ED"):
        assert 0.0 <= metrics[f"val/{key}"] <= 1.0
    ckpt = next((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    results = evaluate_main([f"ckpt={ckpt}"])
    assert results["val/Dice/WT"] == pytest.approx(metrics["val/Dice/WT"], abs=1e-6)
