"""ONNX / TorchScript export: parity with eager at the export size and at another size, re-parameterisation,
two-input (flow) models, names and example inputs from the task, and the scripts/export.py command line
(conf/export.yaml through Hydra, densekit.export.command)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from densekit import create_model
from densekit.cli import EXIT_CONFIG, exit_code, format_error
from densekit.errors import ConfigError, DataError
from densekit.export import (
    check_parity,
    example_inputs_for,
    export_onnx,
    export_torchscript,
    io_names,
    onnx_metadata,
    ort_session,
    reparameterize,
    torchscript_metadata,
)
from densekit.export.command import OPTIONS, export_checkpoint, export_options

ROOT = Path(__file__).resolve().parents[1]

# one intra-op thread: on the shared 2-core CPU two threads wait for a busy core at every op (eager mci0 at
# 64x64 measured 1 s with 2 threads under load vs 65 ms with 1)
pytestmark = pytest.mark.usefixtures("single_thread")


def export_config(args) -> dict:
    """The plain config scripts/export.py gets: conf/export.yaml composed with ``args`` as Hydra does."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="export", overrides=list(args)), resolve=True)


def export_main(args) -> dict:
    """scripts/export.py in-process (its main is this, inside densekit.cli's error reporting)."""
    return export_checkpoint(export_options(export_config(args)))


@pytest.fixture(scope="module")
def mci0_seg():
    """Random-init mci0 + LR-ASPP (3 classes) in eval mode; BN statistics perturbed so that folding them
    into the convolutions is a real change, not an identity."""
    torch.manual_seed(0)
    model = create_model("seg", backbone={"name": "mci0", "pretrained": False}, head="lraspp", num_classes=3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


REPARAM_REPORT = {}


@pytest.fixture(scope="module")
def fused(mci0_seg):
    """The re-parameterised copy, checked against the original at 64x64 (report in REPARAM_REPORT)."""
    return reparameterize(mci0_seg, (torch.rand(1, 3, 64, 64),), report=REPARAM_REPORT)


class TinyFlow(nn.Module):
    """Two frames -> (B, 2, H, W): a conv over the concatenated frames at stride 4, padded to a multiple of 8
    (like the real models) and resized back."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(6, 8, 3, stride=4, padding=1)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, image1, image2):
        h, w = image1.shape[-2:]
        x = torch.cat([image1, image2], 1)  # (B, 6, H, W)
        ph, pw = (-h) % 8, (-w) % 8
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        y = self.out(torch.relu(self.enc(x)))  # (B, 2, Hp/4, Wp/4)
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y[..., :h, :w]


class FrozenShape(nn.Module):
    """Shape logic a trace cannot capture (``int()`` of a size is a constant in the graph)."""

    def forward(self, image):
        half = int(image.shape[-1]) // 2
        return torch.cat([image[..., :half], image[..., :half]], -1)


def count_bn(model):
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_reparameterize_fuses_branches_and_keeps_outputs(mci0_seg, fused):
    report = REPARAM_REPORT
    assert report["fused_modules"] > 20  # stem, RepMixers, PatchEmbeds, RepCPE ...
    assert report["max_abs_diff"] <= 1e-4
    y = torch.rand(1, 3, 40, 56)  # another size, padded to 64x64 (so oneDNN's kernels are cached)
    with torch.no_grad():
        ref = mci0_seg(y)
        assert (fused(y) - ref).abs().max() <= 1e-4 and ref.abs().max() > 1e-3
    # branches are gone: fewer parameters, only the head's BN and the trunk's un-fusable ones remain
    assert report["params_after"] < report["params_before"]
    assert report["params_before"] == sum(p.numel() for p in mci0_seg.parameters())
    assert count_bn(fused) < count_bn(mci0_seg) // 2
    assert not fused.training and fused is not mci0_seg
    # a model without re-parameterisable branches: an equal copy
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    info = {}
    copy_ = reparameterize(plain, (torch.rand(1, 3, 8, 8),), report=info)
    assert copy_ is not plain and info["fused_modules"] == 0
    assert info["params_after"] == info["params_before"] == 3 * 4 * 9 + 4 + 2 * 4
    assert info["max_abs_diff"] == 0.0


def test_onnx_dynamic_parity(fused, tmp_path):
    x = torch.rand(1, 3, 64, 64)
    path = export_onnx(fused, tmp_path / "m.onnx", (x,), task="seg")
    meta = onnx_metadata(path)
    assert meta["dynamic_hw"] is True and meta["inputs"] == ["image"] and meta["output"] == "logits"
    session = ort_session(path)
    assert [i.name for i in session.get_inputs()] == ["image"] and session.get_outputs()[0].name == "logits"
    assert all(isinstance(d, str) for d in session.get_inputs()[0].shape[2:])  # symbolic H, W
    at_export = check_parity(fused, path, (x,), repeats=2)
    assert at_export["max_abs_diff"] <= 1e-4 and at_export["output_shape"] == [1, 3, 64, 64]
    assert at_export["eager_ms"] > 0 and at_export["exported_ms"] > 0
    assert at_export["speedup"] == pytest.approx(at_export["eager_ms"] / at_export["exported_ms"])
    other = check_parity(fused, path, (torch.rand(2, 3, 96, 80),), repeats=0)
    assert other["max_abs_diff"] <= 1e-4 and other["output_shape"] == [2, 3, 96, 80]
    assert other["max_abs_ref"] > 1e-3  # the comparison is not between two zero maps


def test_onnx_falls_back_to_static_for_frozen_shape_logic(tmp_path):
    x = torch.rand(1, 3, 8, 10)
    with pytest.warns(UserWarning, match="FIXED size \\[8, 10\\]"):
        path = export_onnx(FrozenShape(), tmp_path / "f.onnx", (x,))
    assert onnx_metadata(path)["dynamic_hw"] is False
    session = ort_session(path)
    assert session.get_inputs()[0].shape[2:] == [8, 10]
    out = session.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(out, FrozenShape()(x).numpy())
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"image": torch.rand(1, 3, 8, 12).numpy()})


def test_torchscript_parity(fused, tmp_path):
    x = torch.rand(1, 3, 64, 64)
    path = export_torchscript(fused, tmp_path / "m.ts", (x,), task="seg")
    assert torchscript_metadata(path) == {
        "task": "seg",
        "dynamic_hw": True,
        "export_size": [64, 64],
        "method": "torch.jit.trace",
    }
    res = check_parity(fused, path, (x,), repeats=0)
    assert res["runtime"] == "torchscript" and res["output_shape"] == [1, 3, 64, 64]
    assert res["max_abs_diff"] <= 1e-4
    other = check_parity(fused, path, (torch.rand(1, 3, 40, 56),), repeats=0)
    assert other["max_abs_diff"] <= 1e-4 and other["output_shape"] == [1, 3, 40, 56]


def test_two_input_flow_module(tmp_path):
    torch.manual_seed(0)
    model = TinyFlow().eval()
    a, b = torch.rand(1, 3, 32, 48), torch.rand(1, 3, 32, 48)
    path = export_onnx(model, tmp_path / "flow.onnx", (a, b), task="flow")
    session = ort_session(path)
    assert [i.name for i in session.get_inputs()] == ["image1", "image2"]
    assert session.get_outputs()[0].name == "flow"
    for shape in [(1, 3, 32, 48), (2, 3, 27, 41)]:
        pair = (torch.rand(*shape), torch.rand(*shape))
        res = check_parity(model, path, pair, repeats=0)
        assert res["output_shape"] == [shape[0], 2, *shape[2:]] and res["max_abs_diff"] <= 1e-5
    ts = export_torchscript(model, tmp_path / "flow.ts", (a, b), task="flow")
    pair = (torch.rand(1, 3, 20, 36), torch.rand(1, 3, 20, 36))
    assert check_parity(model, ts, pair, repeats=0)["max_abs_diff"] <= 1e-5
    with pytest.raises(ValueError, match="takes 2 input"):
        export_onnx(model, tmp_path / "bad.onnx", (a,), task="flow")


def test_io_names_and_example_inputs():
    assert io_names("depth", (torch.rand(1, 3, 4, 4),)) == (("image",), "depth")
    assert io_names("volume", (torch.rand(1, 4, 2, 4, 4),)) == (("volume",), "logits")
    with pytest.raises(ValueError, match="unknown task 'pose'"):
        io_names("pose", (torch.rand(1, 3, 4, 4),))
    flow = example_inputs_for({"task": {"name": "flow"}}, 16, 24)
    assert [tuple(x.shape) for x in flow] == [(1, 3, 16, 24), (1, 3, 16, 24)] and not torch.equal(*flow)
    vol = example_inputs_for(
        {"task": {"name": "volume"}, "backbone": {"in_channels": 4}, "data": {"patch": [8, 32, 32]}}, 16, 24
    )
    assert tuple(vol[0].shape) == (1, 4, 8, 16, 24)
    assert float(vol[0].min()) >= 0 and float(vol[0].max()) <= 1


@pytest.mark.slow
def test_export_script_on_a_checkpoint(smoke_run, tmp_path, capsys):
    run_dir, _, _ = smoke_run
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    link = tmp_path / ckpt.name
    os.symlink(ckpt, link)  # the default output goes next to the checkpoint: keep it in tmp_path
    report = export_main([f"ckpt={link}", "format=onnx", "height=64", "width=64", "repeats=1"])
    out = capsys.readouterr().out
    onnx_file = tmp_path / (ckpt.stem + ".onnx")
    assert report["output"] == str(onnx_file) and onnx_file.is_file() and report["ok"]
    assert report["reparameterize"]["params_after"] < report["reparameterize"]["params_before"]
    assert report["parity"]["max_abs_diff"] <= 1e-4 and report["parity_other_size"]["max_abs_diff"] <= 1e-4
    assert report["parity_other_size"]["size"] == [53, 51]
    assert "max abs diff to eager at 64x64" in out and "ONNX Runtime" in out and "speedup" in out
    assert onnx_metadata(onnx_file)["task"] == "seg"
    report = export_main(
        [
            f"ckpt={ckpt}",
            "format=torchscript",
            f"output={tmp_path / 'x.ts'}",
            "height=64",
            "width=64",
            "repeats=0",
            "dynamic=false",
        ]
    )
    assert report["parity"]["runtime"] == "torchscript" and report["parity"]["max_abs_diff"] <= 1e-4
    assert (tmp_path / "x.ts").is_file() and "parity_other_size" not in report


def test_export_script_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="format=tflite: expected one of onnx, torchscript, got 'tflite'"):
        export_main(["ckpt=x.ckpt", "format=tflite"])
    with pytest.raises(ConfigError, match="missing ckpt=<path>"):
        export_main(["format=onnx"])
    with pytest.raises(Exception) as err:  # Hydra refuses a key conf/export.yaml does not have
        export_main(["ckpt=x.ckpt", "size=64"])
    assert exit_code(err.value) == EXIT_CONFIG
    assert format_error(err.value) == (
        "Could not override 'size': Key 'size' is not in struct",
        "To append to your config use +size=64",
    )
    with pytest.raises(ConfigError, match="unknown option 'size'; expected one of"):
        export_main(["ckpt=x.ckpt", "+size=64"])  # ... and so does the option check
    with pytest.raises(ConfigError, match="height=big: expected a positive integer, got 'big'"):
        export_main(["ckpt=x.ckpt", "height=big"])
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*missing.ckpt"):
        export_main([f"ckpt={tmp_path / 'missing.ckpt'}"])
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(DataError, match="foreign.ckpt is not a densekit checkpoint"):
        export_main([f"ckpt={foreign}"])


@pytest.mark.parametrize(
    "arg,message",
    [
        ("dynamic=yes", "dynamic=yes: expected true or false, got 'yes'"),  # YAML 1.1 would take it as true
        ("reparameterize=ture", "reparameterize=ture: expected true or false, got 'ture'"),
        ("dynamo=1", "dynamo=1: expected true or false, got 1"),
        ("repeats=-1", "repeats=-1: expected an integer >= 0, got -1"),
        ("opset=abc", "opset=abc: expected an ONNX opset >= 7, got 'abc'"),
        ("threads=0", "threads=0: expected null or a positive integer, got 0"),
    ],
)
def test_export_flags_are_typed(arg, message):
    with pytest.raises(ConfigError) as err:
        export_options(export_config(["ckpt=x.ckpt", arg]))
    assert str(err.value) == message
    opts = export_options(export_config(["ckpt=true", "dynamic=False", "output=17", "threads=null"]))
    assert opts["ckpt"] == "true" and opts["dynamic"] is False and opts["output"] == "17" and opts["threads"] is None


def test_export_yaml_and_option_types_agree():
    defaults = export_config(["ckpt=x.ckpt"])
    assert set(defaults) == set(OPTIONS)
    assert export_options(defaults)["format"] == "onnx"  # every default passes its own rule
    with pytest.raises(ConfigError) as err:  # the first wrong option, naming the others
        export_options(export_config(["ckpt=x.ckpt", "height=0", "format=tflite"]))
    assert str(err.value) == "format=tflite: expected one of onnx, torchscript, got 'tflite' (also wrong: height)"


def test_export_script_writes_nothing_but_its_output(tmp_path):
    """As a user runs it: Hydra leaves no outputs/, .hydra/ or log file in the working directory, and a
    user error is one line with densekit.cli's exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for key in ("HYDRA_FULL_ERROR", "DENSEKIT_FULL_ERROR"):
        env.pop(key, None)

    def run(*args):
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "export.py"), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )

    proc = run(f"ckpt={tmp_path / 'missing.ckpt'}")
    assert proc.returncode == 1 and proc.stderr == f"error: checkpoint not found: {tmp_path / 'missing.ckpt'}\n"
    proc = run("ckpt=x.ckpt", "size=64")
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: Could not override 'size': Key 'size' is not in struct",
        "  To append to your config use +size=64",
    ]
    assert list(tmp_path.iterdir()) == []


def test_export_output_is_checked_before_the_model(tmp_path, monkeypatch, locked):
    """Before: an unwritable output was a raw PermissionError after the whole export had run."""
    import densekit.export.command as command

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(command, "load_checkpoint_model", refuse)
    ckpt = tmp_path / "run.ckpt"
    ckpt.write_bytes(b"not read")
    with pytest.raises(PermissionError, match=rf"output {locked} is not writable"):
        export_main([f"ckpt={ckpt}", f"output={locked / 'm.onnx'}"])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError, match=rf"output={blocker / 'm.onnx'}: {blocker} is a file"):
        export_main([f"ckpt={ckpt}", f"output={blocker / 'm.onnx'}"])
    with pytest.raises(ConfigError, match=rf"output={ckpt} is the input {ckpt} itself"):
        export_main([f"ckpt={ckpt}", f"output={ckpt}"])
    with pytest.raises(IsADirectoryError, match=rf"output={tmp_path} is a directory"):
        export_main([f"ckpt={ckpt}", f"output={tmp_path}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "locked", "run.ckpt"]  # no probe left behind


def test_bench_models_table_csv_and_plot(tmp_path, capsys):
    from densekit.benchmarks import main as bench_main

    out = tmp_path / "models.csv"
    rows = bench_main(
        [
            "models",
            "--size",
            "32",
            "--backbones",
            "mobilenetv3_large",
            "--heads",
            "lraspp",
            "nohead",
            "--tasks",
            "seg",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--no-memory",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    skip = next(line for line in printed.splitlines() if line.startswith("skip "))
    # the refusal names the wrong head and the valid ones (densekit.create_model asks the task)
    assert len(rows) == 1 and skip.startswith("skip seg mobilenetv3_large+nohead: ")
    assert "'nohead'" in skip and "lraspp" in skip
    model = create_model(
        "seg", backbone={"name": "mobilenetv3_large", "pretrained": False}, head="lraspp", num_classes=19
    )
    row = rows[0]
    assert row["params_M"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)  # nothing to fuse
    assert row["GMACs"] > 0 and row["eager_ms"] > 0 and row["ort_ms"] > 0 and row["ort_max_abs_diff"] <= 1e-4
    assert "| seg | mobilenetv3_large | lraspp |" in printed
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("task,backbone,head,size,params_M,GMACs,eager_ms,ort_ms")
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
