"""scripts/inspect_data.py and densekit.data.fingerprint: the dataset fingerprint and its suggestions,
on datasets made here in the formats users have (0/255 PNG masks, 16-bit grey PNGs, a 1-channel nnU-Net
NIfTI folder with dataset.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densekit.data import build_dataset
from densekit.data.fingerprint import (
    fingerprint,
    format_fingerprint,
    format_value,
    quick_check,
    raw_listing,
    sample_indices,
    suggest,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "inspect_data.py"
H, W = 80, 96
FG = (slice(10, 26), slice(20, 44))  # 16 x 24 = 384 of 7680 pixels: 5 % foreground


def make_binary_folder(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
    """root/images/{train,val}/*.png (RGB 80x96), root/masks/... 0/255 masks, root/classes.txt (2 classes)."""
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(n):
            img = np.zeros((H, W, 3), np.uint8)
            img[..., 0] = np.arange(W)[None, :]  # 0..95 along x
            img[..., 1] = 100
            img[..., 2] = np.arange(H)[:, None]  # 0..79 along y
            Image.fromarray(img).save(root / "images" / split / f"s{i}.png")
            mask = np.zeros((H, W), np.uint8)
            mask[FG] = 255
            Image.fromarray(mask).save(root / "masks" / split / f"s{i}.png")
    (root / "classes.txt").write_text("background\nforeground\n")
    return root


def make_grey16_folder(root: Path) -> Path:
    """16-bit grey PNGs whose values use 0..235 of 0..65535, with 0/1 masks (top half = class 1)."""
    for split, n in (("train", 3), ("val", 1)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(n):
            img = (np.arange(64 * 48).reshape(64, 48) % 236).astype(np.uint16)
            Image.fromarray(img).save(root / "images" / split / f"c{i}.png")
            mask = np.zeros((64, 48), np.uint8)
            mask[:32] = 1
            Image.fromarray(mask).save(root / "masks" / split / f"c{i}.png")
    (root / "classes.txt").write_text("background\ncell\n")
    return root


def make_nnunet_folder(root: Path, cases: int = 3) -> Path:
    """A 1-channel nnU-Net folder: imagesTr/<case>_0000.nii.gz (float32, file shape (40, 36, 20), spacing
    1 x 1 x 2.5 mm), labelsTr/<case>.nii.gz (a 10 x 10 x 5 block of label 1), dataset.json."""
    import nibabel as nib

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([1.0, 1.0, 2.5, 1.0])
    for c in range(cases):
        image = np.random.default_rng(c).normal(100, 10, (40, 36, 20)).astype(np.float32)
        label = np.zeros((40, 36, 20), np.uint8)
        label[10:20, 10:20, 5:10] = 1
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / f"case{c}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / f"case{c}.nii.gz"))
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "T1"},
                "labels": {"background": 0, "tumour": 1},
                "numTraining": cases,
                "file_ending": ".nii.gz",
            }
        )
    )
    return root


def run_script(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def assert_wrote_nothing(cwd: Path, before: set[str]) -> None:
    assert not (cwd / "outputs").exists() and not (cwd / ".hydra").exists()
    assert set(os.listdir(cwd)) == before, f"new entries in {cwd}: {set(os.listdir(cwd)) - before}"


# -- the script ------------------------------------------------------------------------------------------
def test_script_binary_masks_suggests_label_map_and_crop(tmp_path):
    make_binary_folder(tmp_path / "data")
    before = set(os.listdir(tmp_path))
    proc = run_script(tmp_path, "data=folder", "data.root=data")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "== train: 4 samples (read 4" in out and "== val: 2 samples (read 2" in out
    assert "size (H x W)   min 80 x 96   median 80 x 96   max 80 x 96" in out
    assert "mask values      0 (95.0%), 255 (5.0%)" in out
    assert "data.label_map={255:1}" in out
    assert "warning: the reader refused this split (" in out  # FolderSeg refuses 0/255: raw files measured
    assert "data.augment.crop=[64,96]" in out
    assert "data.batch_size=4" in out  # at most the 4 training images
    paste = next(line for line in out.splitlines() if line.strip().startswith("paste:"))
    assert "data.label_map={255:1}" in paste and "data.augment.crop=[64,96]" in paste
    assert "Traceback" not in proc.stderr
    assert_wrote_nothing(tmp_path, before)


def test_script_grey16_reports_dtype_and_percentiles(tmp_path):
    make_grey16_folder(tmp_path / "g16")
    before = set(os.listdir(tmp_path))
    proc = run_script(tmp_path, "data=folder", "data.root=g16", "max_samples=2", "json=fp.json")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "== train: 3 samples (read 2" in out  # 2 of 3 read: max_samples
    assert "channels         1: 2 (modes I;16: 2)" in out
    assert "dtype            uint16: 2" in out
    assert "p0.5 / p50 / p99.5 = 1 / 117 / 234" in out
    assert "16-bit images: p99.5 = 234 of 0..65535" in out
    assert "data.intensity.mode=auto" in out
    assert "data.augment.crop=[64,64]" in out  # 48 -> 32 would drop a third of the width: 64
    fp = json.loads((tmp_path / "fp.json").read_text())  # asked for: the only file written
    assert fp["splits"]["train"]["dtypes"] == {"uint16": 2}
    assert fp["suggestions"]["data.augment.crop"]["value"] == [64, 64]
    assert_wrote_nothing(tmp_path, before | {"fp.json"})


def test_script_nnunet_volume_folder(tmp_path):
    make_nnunet_folder(tmp_path / "vol")
    before = set(os.listdir(tmp_path))
    proc = run_script(tmp_path, "data=nifti_folder", "data.root=vol", "task=volume")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # 3 cases, val_fraction 0.2: 1 val case, 2 train cases
    assert "== train: 2 samples" in out and "== val: 1 samples" in out
    assert "size (D x H x W)   min 20 x 36 x 40   median 20 x 36 x 40" in out  # file (40, 36, 20) -> D, H, W
    assert "spacing mm       min 2.5 x 1 x 1   median 2.5 x 1 x 1" in out
    assert "channels         1: 2" in out
    assert "data.patch=[16,32,32]" in out
    assert "backbone.in_channels=1" in out
    assert_wrote_nothing(tmp_path, before)


def test_script_errors_are_one_line(tmp_path):
    before = set(os.listdir(tmp_path))
    proc = run_script(tmp_path, "data=folder", "data.root=nowhere")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: data.root not found: {(tmp_path / 'nowhere').resolve()} (data=folder)"
    ]
    proc = run_script(tmp_path, "data=folder", "max_samples=abc")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: max_samples='abc': expected a positive integer or null"
    make_binary_folder(tmp_path / "data", n_train=1, n_val=1)
    proc = run_script(tmp_path, "data=folder", "data.root=data", "data.label_map={255:7}")  # class 7 of 2
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: data.label_map: 255: 7 is not a train id"), proc.stderr
    assert_wrote_nothing(tmp_path, before | {"data"})


# -- the API ---------------------------------------------------------------------------------------------
def test_fingerprint_binary_masks_exact_numbers(tmp_path):
    root = make_binary_folder(tmp_path / "data", n_train=5, n_val=1)
    # the reader refuses 0/255 masks without a label map: the raw listing is measured
    with pytest.raises(ValueError, match=r"label_map=\{255:1\}"):
        build_dataset("folder", "train", root=str(root))
    fp = fingerprint(raw_listing("folder", "train", {"root": str(root)}), max_samples=64)
    json.dumps(fp)  # JSON-serialisable
    assert (fp["samples"], fp["read"], fp["ndim"], fp["axes"]) == (5, 5, 2, "HW")
    assert fp["size"] == {"min": [80, 96], "median": [80, 96], "max": [80, 96], "distinct": 1}
    assert fp["channels"] == {"3": 5} and fp["dtypes"] == {"uint8": 5}
    assert fp["intensity"]["channels"] == [[0.0, 47.5, 95.0], [100.0, 100.0, 100.0], [0.0, 39.5, 79.0]]
    labels = fp["labels"]
    assert labels["raw_values"] == {"0": 5 * (7680 - 384), "255": 5 * 384}
    assert labels["ignore_fraction"] == 0.05  # 255 is ignore without a map
    assert labels["class_frequency"] == [1.0, 0.0]
    assert any("set data.label_map={255:1}" in w for w in fp["warnings"])

    s = suggest(
        fp, {"name": "folder", "augment": {"crop": [512, 512]}, "num_workers": 4, "batch_size": 8}, "seg", cpus=4
    )
    assert s["data.label_map"]["value"] == {255: 1}
    assert s["data.augment.crop"]["value"] == [64, 96]
    assert "97% padding" in s["data.augment.crop"]["reason"]  # 80*96 of 512*512
    assert s["data.batch_size"]["value"] == 5
    assert s["data.num_workers"]["value"] == 3  # 4 CPUs, one left to the training loop
    # after the map, shares 0.95 / 0.05: median-frequency weights 0.5 / 0.95 and 0.5 / 0.05
    assert s["task.loss.class_weights"]["value"] == [0.5263, 10.0]
    text = format_fingerprint(fp, s)
    assert "data.label_map={255:1}" in text and "paste:" in text

    # with the map the reader takes the data; class 1 holds 5 % of the pixels, nothing is ignored
    mapped = fingerprint(build_dataset("folder", "train", root=str(root), label_map={255: 1}))
    assert mapped["dataset"] == "FolderSeg"
    assert mapped["labels"]["class_frequency"] == [0.95, 0.05]
    assert mapped["labels"]["class_presence"] == [5, 5]
    assert mapped["labels"]["ignore_fraction"] == 0.0
    assert "data.label_map" not in suggest(mapped, {"name": "folder"}, "seg")


def test_fingerprint_counts_bad_samples_without_raising(tmp_path):
    root = make_binary_folder(tmp_path / "data", n_train=4, n_val=1)
    (root / "images" / "train" / "s1.png").write_bytes(b"not a png")  # unreadable
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "masks" / "train" / "s2.png")  # size mismatch
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "images" / "train" / "lonely.png")  # no mask
    fp = fingerprint(raw_listing("folder", "train", {"root": str(root), "label_map": {255: 1}}))
    reasons = [b["reason"] for b in fp["bad"]["listed"]]
    assert fp["bad"]["count"] == 3, reasons
    assert any("lonely.png: image without a mask" in r for r in reasons)
    assert any("s1.png: unreadable image" in r for r in reasons)
    assert any("mask is 40x40 (WxH) but its image" in r for r in reasons)
    assert fp["read"] == 4 and fp["size"]["median"] == [80, 96]  # s2's image still counts for the sizes


def test_fingerprint_nnunet_volumes_exact(tmp_path):
    root = make_nnunet_folder(tmp_path / "vol", cases=3)
    ds = build_dataset("nifti_folder", "train", root=str(root), labels=None, classes=None, patch=[16, 16, 16])
    fp = fingerprint(ds)
    assert (fp["kind"], fp["ndim"], fp["axes"], fp["samples"]) == ("volume", 3, "DHW", 2)
    assert fp["size"]["median"] == [20, 36, 40]
    assert fp["spacing"]["median"] == [2.5, 1.0, 1.0]
    assert fp["orientation"] == {"RAS": 2} and fp["in_channels"] == 1
    assert fp["dtypes"] == {"float32": 2} and fp["target_dtypes"] == {"uint8": 2}
    assert fp["labels"]["class_names"] == ["background", "tumour"]
    assert fp["labels"]["class_frequency"] == pytest.approx([1 - 500 / 28800, 500 / 28800], abs=1e-5)
    assert fp["labels"]["class_pixels"] == [2 * (28800 - 500), 2 * 500]  # 10 x 10 x 5 block in 2 cases
    fg = fp["intensity"]["foreground"][0]
    assert abs(fg["mean"] - 100) < 2 and abs(fg["std"] - 10) < 1
    s = suggest(
        fp,
        {"name": "nifti_folder", "patch": [96, 96, 96], "batch_size": 2},
        "volume",
        config={"backbone": {"in_channels": 4}},
    )
    assert s["data.patch"]["value"] == [16, 32, 32]
    assert s["backbone.in_channels"] == {"value": 1, "reason": "the volumes have 1 channel(s)", "current": 4}
    # a small memory budget shrinks the longest side first: 2 x 16*32*32 = 32768 > 20000 -> 16 x 16 x 32 ...
    small = suggest(fp, {"name": "nifti_folder"}, "volume", budget=2 * 16 * 16 * 16)
    assert small["data.patch"]["value"] == [16, 16, 16]


def test_fingerprint_synthetic_samples_and_quick_check(tmp_path):
    fp = fingerprint(build_dataset("synthetic", "val", length=4, size=(32, 48)), max_samples=2)
    assert fp["source"] == "samples" and fp["read"] == 2 and fp["samples"] == 4
    assert fp["size"]["median"] == [32, 48] and fp["dtypes"] == {"float32": 2}
    assert len(fp["labels"]["class_names"]) == 5 and abs(sum(fp["labels"]["class_frequency"]) - 1) < 1e-4
    s = suggest(fp, {"name": "synthetic", "num_workers": 0}, "seg", cpus=8)
    assert s["data.num_workers"]["value"] == 7  # generated 2D scenes: workers as for files
    volumes = fingerprint(build_dataset("synthetic_volume", "val", length=2, size=(16, 16, 16)), max_samples=1)
    assert suggest(volumes, {"name": "synthetic_volume"}, "volume", cpus=8)["data.num_workers"]["value"] == 0
    assert "data.augment.crop" not in s  # generated at the configured size

    root = make_binary_folder(tmp_path / "data", n_train=3, n_val=1)
    check = quick_check(raw_listing("folder", "train", {"root": str(root)}))
    assert check["read"] == 3  # a sample of the files, not a pass over a loader
    json.dumps(check)
    assert any("masks hold only {0, 255} with 2 classes" in w for w in check["warnings"])
    assert quick_check(object())["error"].startswith("TypeError")  # never raises


def test_helpers():
    assert sample_indices(10, 4) == [0, 3, 6, 9]
    assert sample_indices(3, 64) == [0, 1, 2] and sample_indices(5, 1) == [0] and sample_indices(0, 4) == []
    assert format_value({255: 1}) == "{255:1}" and format_value([64, 96]) == "[64,96]"
    assert format_value(True) == "true" and format_value(None) == "null" and format_value(0.52631) == "0.5263"


def test_fingerprint_looks_through_a_repeating_wrapper(tmp_path):
    from densekit.data.datamodule import Repeated

    root = make_grey16_folder(tmp_path / "g16")
    fp = fingerprint(Repeated(build_dataset("folder", "train", root=str(root)), 12))
    assert (fp["dataset"], fp["source"], fp["samples"], fp["length"]) == ("FolderSeg", "files", 3, 12)
    assert fp["dtypes"] == {"uint16": 3}  # the files, not the float tensors the wrapper serves


def test_fingerprint_depth_and_flow_folders(tmp_path):
    from densekit.io import write_flo

    depth_root, flow_root = tmp_path / "depth", tmp_path / "flow"
    for split in ("train", "val"):
        (depth_root / "images" / split).mkdir(parents=True)
        (depth_root / "depth" / split).mkdir(parents=True)
        (flow_root / split).mkdir(parents=True)
        for i in range(2):
            grey = np.full((40, 56, 3), 90, np.uint8)
            Image.fromarray(grey).save(depth_root / "images" / split / f"d{i}.png")
            depth = np.full((40, 56), 2500, np.uint16)  # 2.5 m in millimetres
            depth[:10] = 0  # a quarter without measurement
            Image.fromarray(depth).save(depth_root / "depth" / split / f"d{i}.png")
            for frame in (1, 2):
                frame_rgb = np.full((48, 64, 3), 90, np.uint8)
                Image.fromarray(frame_rgb).save(flow_root / split / f"p{i}_img{frame}.png")
            flow = np.zeros((48, 64, 2), np.float32)
            flow[..., 0], flow[..., 1] = 3, 4  # |(3, 4)| = 5 px
            write_flo(flow_root / split / f"p{i}_flow.flo", flow)
    fp = fingerprint(build_dataset("depth_folder", "train", root=str(depth_root), depth_scale=1000, targets=("depth",)))
    assert fp["kind"] == "depth" and fp["target_dtypes"] == {"uint16": 2}
    assert fp["depth"]["values"] == [2.5, 2.5, 2.5] and fp["depth"]["valid_fraction"] == 0.75
    assert suggest(fp, {"name": "depth_folder"}, "depth")["data.augment.crop"]["value"] == [32, 64]
    fp = fingerprint(build_dataset("flow_folder", "train", root=str(flow_root), targets=("flow",)))
    assert fp["kind"] == "flow" and fp["flow_magnitude"]["values"] == [5.0, 5.0, 5.0]
    assert suggest(fp, {"name": "flow_folder"}, "flow")["data.augment.crop"]["value"] == [64, 64]  # x 64
