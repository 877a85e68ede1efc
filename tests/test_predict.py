"""scripts/predict.py / densekit-predict: users' folders, globs, videos and volumes in, files out; bad input
is one line and nothing is lost or overwritten."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densekit.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def options(**kw):
    from densekit.console import PredictConfig

    config = dataclasses.asdict(PredictConfig())
    config.pop("defaults"), config.pop("hydra")
    config.update(progress=False, **kw)
    return config


def predict(**kw):
    from densekit.predict.command import predict_options, run_predict

    return run_predict(predict_options(options(**kw)))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three photographs scikit-image ships, a text file and a corrupt JPEG in one folder."""
    import skimage.data

    root = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(skimage.data, name)()).resize((96, 64)).save(root / f"{name}.png")
    (root / "notes.txt").write_text("not an image")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def test_seg_folder_of_photographs(seg_ckpt, seg_predictor, photos, tmp_path, capsys):
    out = tmp_path / "out"
    report = predict(ckpt=str(seg_ckpt), input=str(photos), output=str(out), batch_size=2)
    assert report["predicted"] == 3 and report["written"] == 6
    assert [Path(p).name for p in report["failed"]] == ["broken.jpg"]
    assert [Path(p).name for p in report["skipped"]] == ["notes.txt"]
    text = capsys.readouterr().out
    assert "failed (unreadable): 1" in text and "broken.jpg: unreadable image" in text
    assert "notes.txt: not an image (suffix .txt)" in text
    for name in ("astronaut", "coffee", "chelsea"):
        labels = Image.open(out / f"{name}_labels.png")
        assert labels.mode == "P" and labels.size == (96, 64)
        expected = seg_predictor.predict(photos / f"{name}.png")  # the same numbers as the Python API
        np.testing.assert_array_equal(np.asarray(labels), expected)
        assert np.asarray(Image.open(out / f"{name}_overlay.png")).shape == (64, 96, 3)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError, match="already holds 6 of the files this run writes"):
        predict(ckpt=str(seg_ckpt), input=str(photos), output=str(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing replaced
    assert predict(ckpt=str(seg_ckpt), input=str(photos), output=str(out), overwrite=True)["predicted"] == 3
    with pytest.raises(ConfigError, match="inside the input folder"):
        predict(ckpt=str(seg_ckpt), input=str(photos), output=str(photos / "preds"))
    with pytest.raises(DataError, match=r"broken.jpg: unreadable image .*strict=true: stopped"):
        predict(ckpt=str(seg_ckpt), input=str(photos), output=str(tmp_path / "strict"), strict=True)
    glob = predict(ckpt=str(seg_ckpt), input=str(photos / "c*.png"), output=str(tmp_path / "glob"))
    assert glob["predicted"] == 2 and not glob["failed"]
    with pytest.raises(ConfigError, match="roi: not an option for a task='seg' checkpoint"):
        predict(ckpt=str(seg_ckpt), input=str(photos), output=str(tmp_path / "x"), roi=[8, 8, 8])
    assert not (tmp_path / "x").exists()


def test_same_stem_inputs_get_distinct_names(seg_ckpt, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rgb = np.zeros((32, 48, 3), np.uint8)
    Image.fromarray(rgb).save(src / "a.png")
    Image.fromarray(rgb).save(src / "a.jpg")
    predict(ckpt=str(seg_ckpt), input=str(src), output=str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").glob("*_labels.png")) == ["a_jpg_labels.png", "a_png_labels.png"]


def test_depth_png_in_millimetres_and_npy(depth_run, photos, tmp_path):
    from densekit import Predictor

    run_dir, _, _ = depth_run
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    predict(ckpt=str(ckpt), input=str(photos / "coffee.png"), output=str(tmp_path / "png"))
    predict(ckpt=str(ckpt), input=str(photos / "coffee.png"), output=str(tmp_path / "npy"), format="npy")
    metres = Predictor.from_checkpoint(ckpt).predict(photos / "coffee.png")
    mm = np.asarray(Image.open(tmp_path / "png" / "coffee_depth.png"))
    assert mm.dtype == np.uint16
    # millimetres: within one of round(metres * 1000) (the float32 product lands on .5 for a few pixels)
    assert np.abs(mm.astype(np.int64) - np.rint(metres.astype(np.float64) * 1000)).max() <= 1
    assert mm.min() > 0
    np.testing.assert_allclose(np.load(tmp_path / "npy" / "coffee_depth.npy"), metres, rtol=1e-6)


def _video(path: Path, frames: int = 5, shift: int = 2):
    import cv2
    import skimage.data

    base = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((160, 64)))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (128, 64))
    for k in range(frames):
        writer.write(np.ascontiguousarray(base[:, k * shift : k * shift + 128, ::-1]))
    writer.release()


def test_flow_on_a_video_and_on_a_folder_of_frames(flow_run, seg_ckpt, tmp_path):
    import cv2

    from densekit.io.flow import read_flo

    run_dir, _, _ = flow_run
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    video = tmp_path / "clip.mp4"
    _video(video)
    report = predict(ckpt=str(ckpt), input=str(video), output=str(tmp_path / "out"))
    assert report["predicted"] == 4 and report["written"] == 9
    flow = read_flo(tmp_path / "out" / "clip_000000_flow.flo")
    assert flow.shape == (64, 128, 2) and np.isfinite(flow).all()
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip_flow.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    cap.release()
    frames = tmp_path / "frames"
    frames.mkdir()
    cap = cv2.VideoCapture(str(video))
    for k in range(3):
        ok, frame = cap.read()
        Image.fromarray(frame[..., ::-1]).save(frames / f"f{k + 8}.png")  # f8, f9, f10: numeric order
    cap.release()
    report = predict(ckpt=str(ckpt), input=str(frames), output=str(tmp_path / "pairs"))
    assert report["predicted"] == 2
    assert sorted(p.name for p in (tmp_path / "pairs").glob("*.flo")) == ["f8_flow.flo", "f9_flow.flo"]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    with pytest.raises(DataError, match="the video cannot be decoded"):
        predict(ckpt=str(ckpt), input=str(broken), output=str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="is a video, but a task='seg' checkpoint predicts on single images"):
        predict(ckpt=str(seg_ckpt), input=str(video), output=str(tmp_path / "s"))


def test_volume_channel_sets_keep_the_affine(volume_run, tmp_path, capsys):
    from densekit import Predictor
    from densekit.data.readers.volume import dhw_to_nifti, nifti_to_dhw
    from densekit.io.nifti import read_nifti, write_nifti

    run_dir, _, _ = volume_run
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    predictor = Predictor.from_checkpoint(ckpt)
    channels = predictor.config["backbone"]["in_channels"]
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(channels, 20, 24, 28)).astype(np.float32)  # (C, D, H, W)
    affine = np.diag([1.2, 1.0, 0.8, 1.0])
    affine[:3, 3] = (-10, 5, 3)
    src = tmp_path / "imagesTs"
    src.mkdir()
    for c in range(channels):
        write_nifti(src / f"case1_{c:04d}.nii.gz", dhw_to_nifti(volume[c]), affine)
    for c in range(channels - 1):  # case2 lacks its last channel: skipped, named
        write_nifti(src / f"case2_{c:04d}.nii.gz", dhw_to_nifti(volume[c]), affine)
    report = predict(ckpt=str(ckpt), input=str(src), output=str(tmp_path / "out"))
    assert report["predicted"] == 1 and len(report["skipped"]) == channels - 1
    assert f"case 'case2' lacks channel file(s) [{channels - 1}]" in capsys.readouterr().out
    labels, got_affine = read_nifti(tmp_path / "out" / "case1.nii.gz")
    np.testing.assert_array_equal(got_affine, read_nifti(src / "case1_0000.nii.gz")[1])  # the input's, as stored
    np.testing.assert_allclose(got_affine, affine, atol=1e-6)
    np.testing.assert_array_equal(nifti_to_dhw(labels), predictor.predict(volume))


def test_checkpoint_versions(seg_ckpt, photos, tmp_path, capsys):
    ckpt = torch.load(seg_ckpt, map_location="cpu", weights_only=False)
    assert ckpt["densekit_version"] == __import__("densekit").__version__
    ckpt["densekit_version"] = "9.0.0"
    newer = tmp_path / "newer.ckpt"
    torch.save(ckpt, newer)
    with pytest.raises(ValueError, match=r"written by densekit 9.0.0, newer than this densekit"):
        predict(ckpt=str(newer), input=str(photos), output=str(tmp_path / "o"))
    old = ROOT / "tests" / "fixtures" / "old_checkpoints" / "old_seg.ckpt"
    predict(ckpt=str(old), input=str(photos / "coffee.png"), output=str(tmp_path / "old"))
    assert "written by densekit 0.1.0 (no version recorded)" in capsys.readouterr().out


def test_onnx_backend_matches_torch(seg_ckpt, seg_predictor, photos, tmp_path, capsys):
    from densekit.export.command import export_checkpoint, export_options
    from densekit.export.common import check_output_path  # noqa: F401 - the export package is importable

    onnx = tmp_path / "m.onnx"
    with pytest.raises(FileNotFoundError, match="export it first"):
        predict(ckpt=str(seg_ckpt), input=str(photos), output=str(tmp_path / "o"), backend="onnx", onnx=str(onnx))
    export_checkpoint(
        export_options(
            dict(
                ckpt=str(seg_ckpt),
                format="onnx",
                output=str(onnx),
                height=64,
                width=96,
                depth=None,
                dynamic=True,
                reparameterize=True,
                device="cpu",
                opset=17,
                dynamo=False,
                repeats=0,
                threads=None,
            )
        )
    )
    predict(ckpt=str(seg_ckpt), input=str(photos), output=str(tmp_path / "ort"), backend="onnx", onnx=str(onnx))
    printed = capsys.readouterr().out
    assert "matches the checkpoint (max abs difference" in printed
    assert " at 64x96)" in printed  # checked on the user's first photograph (64 x 96), not a random input
    for name in ("astronaut", "coffee", "chelsea"):
        got = np.asarray(Image.open(tmp_path / "ort" / f"{name}_labels.png"))
        assert (got == seg_predictor.predict(photos / f"{name}.png")).mean() > 0.999


def test_command_line_errors_are_one_line(seg_ckpt, photos, tmp_path):
    script = str(ROOT / "scripts" / "predict.py")
    cases = [
        ([f"ckpt={seg_ckpt}", f"input={photos}"], 2, "error: missing output=<output>"),
        ([f"ckpt={seg_ckpt}", f"input={photos}", f"output={tmp_path}/o", "flip=yes"], 2, "flip=yes: expected true or"),
        ([f"ckpt={tmp_path}/none.ckpt", f"input={photos}", f"output={tmp_path}/o"], 1, "checkpoint not found"),
        ([f"ckpt={seg_ckpt}", f"input={tmp_path}/nothing", f"output={tmp_path}/o"], 1, "no such file, folder or glob"),
    ]
    for args, code, text in cases:
        proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=ENV, timeout=300)
        err = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == code and len(err) <= 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert text in err[0], err
    assert not (tmp_path / "o").exists()


def test_console_scripts_run_from_the_checkout(seg_ckpt, photos, tmp_path):
    """The console scripts pip installed beside this Python run the checkout's entry points."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "densekit-export").exists():
        pytest.skip("densekit is not pip-installed into this environment (make installs it)")
    checks = [
        ("densekit-export", [f"ckpt={seg_ckpt}", "dynamic=yes"], 2, "error: dynamic=yes: expected true or false"),
        ("densekit-evaluate", [f"ckpt={seg_ckpt}", "flip=ture"], 2, "error: flip=ture: expected true or false"),
        ("densekit-inspect", ["data=folder"], 1, "error: data.root not found"),
        ("densekit-predict", [f"ckpt={seg_ckpt}", f"input={photos}", "output=x", "batch_size=0"], 2, "batch_size=0"),
        ("densekit-train", ["data.size=abc"], 2, "error: data.size=abc: expected a list"),  # last: Hydra's run dir
    ]
    for name, args, code, text in checks:
        proc = subprocess.run(
            [str(bin_dir / name), *args], capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300
        )
        err = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == code and "Traceback" not in proc.stderr, (name, proc.stderr[-2000:])
        assert err and text in err[0], (name, err)
        if name != "densekit-train":  # train.py's Hydra run directory (outputs/) is made before the check
            assert list(tmp_path.iterdir()) == [], name  # nothing written into the working directory
