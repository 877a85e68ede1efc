"""scripts/evaluate.py and densekit.evaluation: evaluation is the task's validation (the same numbers as
trainer.validate), its options and checks, the baselines, and the panels it saves."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import scripts.evaluate as evaluate_script
from densekit import evaluation
from densekit.builder import load_checkpoint_model
from densekit.errors import ConfigError, DataError
from densekit.models.baselines import ConstantDepth, DISFlow, ZeroFlow
from densekit.viz import colorize_mask, palette, seg_panel
from scripts.evaluate import main as evaluate_main

ROOT = Path(__file__).resolve().parents[1]


def test_baselines_are_models():
    a = torch.rand(2, 3, 24, 32)
    assert torch.equal(ZeroFlow()(a, a), torch.zeros(2, 2, 24, 32))
    assert torch.equal(ConstantDepth(2.5)(a), torch.full((2, 1, 24, 32), 2.5))
    # a smooth texture moved 3 px right: DIS finds u = +3, v = 0 away from the borders
    g = torch.Generator().manual_seed(0)
    tex = (
        torch.nn.functional.interpolate(
            torch.rand(1, 1, 12, 16, generator=g), size=(96, 128), mode="bicubic", align_corners=False
        )
        .clamp(0, 1)
        .expand(1, 3, 96, 128)
    )
    moved = torch.roll(tex, shifts=3, dims=-1)
    flow = DISFlow()(tex, moved)
    assert flow.shape == (1, 2, 96, 128)
    inner = flow[0, :, 16:-16, 16:-16]
    assert abs(float(inner[0].median()) - 3.0) < 0.25 and abs(float(inner[1].median())) < 0.25


def test_palette_and_colorize():
    pal = palette(4)
    assert pal.tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]  # the VOC colours
    mask = np.array([[0, 1], [3, 255]])
    col = colorize_mask(mask, 4)
    assert col[0, 1].tolist() == [128, 0, 0] and col[1, 1].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="outside"):
        colorize_mask(np.array([[5]]), 4)
    assert seg_panel(torch.rand(3, 2, 2), mask, mask, 4).shape == (2, 6, 3)


@pytest.mark.slow
def test_checkpoint_round_trip_and_evaluate_script(smoke_run, tmp_path, capsys):
    run_dir, metrics, _ = smoke_run
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    model, config = load_checkpoint_model(ckpt)
    assert config["backbone"]["name"] == "mci0" and not model.training
    results = evaluate_main([f"ckpt={ckpt}", f"save_dir={tmp_path / 'png'}"])
    out = capsys.readouterr().out
    assert "val/mIoU" in out and "val/IoU/star" in out
    # same data, same weights, whole-image inference: the numbers the training run reported
    assert results["val/mIoU"] == pytest.approx(metrics["val/mIoU"], abs=1e-6)
    assert results["val/pixel_acc"] == pytest.approx(metrics["val/pixel_acc"], abs=1e-6)
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == 8 and Image.open(pngs[0]).size == (3 * 64, 64)
    with pytest.raises(ConfigError, match=r"\['eval_crop'\] apply to depth checkpoints"):
        evaluate_main([f"ckpt={ckpt}", "eval_crop=garg"])
    tta = evaluate_main([f"ckpt={ckpt}", "flip=true", "scales=[0.75,1.0]", "mode=slide", "crop=[32,32]", "limit=2"])
    assert 0.0 <= tta["val/mIoU"] <= 1.0 and tta["val/mIoU"] != results["val/mIoU"]
    with pytest.raises(ConfigError, match=r"mode=slide needs crop"):
        evaluate_main([f"ckpt={ckpt}", "mode=slide"])
    with pytest.raises(SystemExit, match="baseline must be unset for seg, got 'zero'"):
        evaluate_main([f"ckpt={ckpt}", "baseline=zero"])


@pytest.mark.slow
def test_evaluate_equals_trainer_validate_on_the_same_checkpoint(smoke_run):
    """Evaluation is the task's validation: without options its metrics are trainer.validate's on the same
    checkpoint, exactly (the job of the former test that kept evaluate's TTA in step with validation's)."""
    import pytorch_lightning as pl

    from densekit.builder import datamodule_from_config
    from densekit.tasks import get_task

    run_dir, metrics, _ = smoke_run
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    model, config = load_checkpoint_model(ckpt)
    task = get_task(config["task"]["name"]).from_config(config, model=model, class_names=config["data"]["class_names"])
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    expected = {
        k: float(v)
        for k, v in trainer.validate(task, datamodule=datamodule_from_config(config), verbose=False)[0].items()
    }
    results = evaluate_main([f"ckpt={ckpt}"])
    assert "val/mIoU" in expected and len(expected) > 5
    assert {k: results[k] for k in expected} == expected
    assert results["val/mIoU"] == pytest.approx(metrics["val/mIoU"], abs=1e-6)  # the training run's final numbers


@pytest.mark.slow
def test_the_command_line_writes_nothing_into_the_working_directory(smoke_run, tmp_path):
    ckpt = next((smoke_run[0] / "checkpoints").glob("best-*.ckpt"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), f"ckpt={ckpt}", "limit=2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "val/mIoU" in proc.stdout and "2 images from data=synthetic split=val" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == []  # no outputs/, .hydra/, evaluate.log, lightning_logs/


def test_evaluate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="missing ckpt"):
        evaluate_main([])
    with pytest.raises(ConfigError, match="unknown option 'flop'"):
        evaluate_main(["ckpt=x", "flop=1"])
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        evaluate_main([f"ckpt={tmp_path / 'none.ckpt'}"])


@pytest.mark.parametrize(
    "arg,message",
    [
        ("flip=ture", "flip=ture: expected true or false, got 'ture'"),  # was taken as true
        ("flip=yes", "flip=yes: expected true or false, got 'yes'"),  # YAML 1.1 would say true
        ("flip=1", "flip=1: expected true or false, got '1'"),
        ("median_scaling=maybe", "median_scaling=maybe: expected true or false, got 'maybe'"),
        ("batch_size=0", "batch_size=0: expected null or a positive int, got 0"),  # null: the data's val batch
        ("limit=abc", "limit=abc: expected null or a positive int, got 'abc'"),
        ("scales=0.5", "scales=0.5: expected auto or a list of scale factors > 0, e.g. [0.75,1.0,1.25], got 0.5"),
        ("scales=automatic", "scales=automatic: expected auto or a list of scale factors > 0"),
        ("crop=[64]", "crop=[64]: expected null or a list of 2 or 3 positive ints"),
        ("mode=tile", "mode=tile: expected one of whole, slide, got 'tile'"),
        ("eval_crop=nyu", "eval_crop=nyu: expected null or one of config, none, eigen_nyu, garg, eigen_kitti"),
    ],
)
def test_every_flag_is_typed(arg, message):
    with pytest.raises(ConfigError) as err:
        evaluate_script.parse_args(["ckpt=x.ckpt", arg])
    assert str(err.value).startswith(message), str(err.value)


def test_booleans_and_paths_parse_as_written():
    opts, _ = evaluate_script.parse_args(
        ["ckpt=true", "flip=True", "median_scaling=false", "save_dir=2024", "limit=null", "crop=[32,32]"]
    )
    assert opts["ckpt"] == "true" and opts["flip"] is True and opts["median_scaling"] is False
    assert opts["save_dir"] == "2024" and opts["limit"] is None and opts["crop"] == [32, 32]


def _fake_checkpoint(path, compose, overrides):
    """A file holding only what evaluate.py reads before building a model: the run config of ``overrides``."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(compose(overrides), resolve=True)
    torch.save({"hyper_parameters": {"config": config}, "state_dict": {}}, path)
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if evaluate.py gets as far as building a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the check")

    monkeypatch.setattr(evaluation, "load_checkpoint_model", refuse)


@pytest.mark.slow
def test_checkpoint_data_mismatch_is_one_line_naming_both(smoke_run, depth_run, compose, tmp_path, no_model):
    seg = next((smoke_run[0] / "checkpoints").glob("best-*.ckpt"))
    depth = next((depth_run[0] / "checkpoints").glob("best-*.ckpt"))
    volume = _fake_checkpoint(tmp_path / "volume.ckpt", compose, ["task=volume"])
    cases = [  # (ckpt, data arguments, the message); before: KeyError 'num_classes', "unexpected keyword
        # argument 'val_patch'", "data has 4 classes but the checkpoint predicts 5"
        (
            seg,
            ["data=motorcycle"],
            f"ckpt {seg} is a seg model trained on data=synthetic; data=motorcycle is flow data (task flow)",
        ),
        (
            volume,
            ["data=folder", f"data.root={tmp_path}"],
            f"ckpt {volume} is a volume model trained on data=synthetic_volume; data=folder is seg data (task seg)",
        ),
        (
            seg,
            ["data=synthetic_volume"],
            f"ckpt {seg} is a seg model trained on data=synthetic; data=synthetic_volume is volume data (task volume)",
        ),
        (
            depth,
            ["data=folder", f"data.root={tmp_path}"],
            f"ckpt {depth} is a depth model trained on data=synthetic; data=folder is seg data (task seg)",
        ),
        (
            seg,
            ["data=folder", f"data.root={tmp_path}", "data.num_classes=3"],
            f"ckpt {seg} predicts 5 classes (trained on data=synthetic); data.num_classes=3 (data=folder)",
        ),
    ]
    for ckpt, args, message in cases:
        with pytest.raises(ConfigError) as err:
            evaluate_main([f"ckpt={ckpt}", *args])
        assert str(err.value).splitlines()[0] == message
        assert len(str(err.value).splitlines()) <= 2  # the message and at most one hint
    # a typo in a data key is an error (OmegaConf's, a config error for densekit.cli), not a silent new key
    from omegaconf.errors import ConfigAttributeError

    from densekit.cli import EXIT_CONFIG, exit_code

    with pytest.raises(ConfigAttributeError, match="Key 'rooot' is not in struct") as err:
        evaluate_main([f"ckpt={seg}", "data.rooot=x"])
    assert exit_code(err.value) == EXIT_CONFIG


@pytest.mark.slow
def test_directory_as_checkpoint(smoke_run, tmp_path, capsys):
    run_dir, metrics, _ = smoke_run
    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    results = evaluate_main([f"ckpt={run_dir}", "limit=8"])
    out = capsys.readouterr().out
    assert f"ckpt={run_dir} is a directory: using its newest best checkpoint, {best}" in out
    assert results["val/mIoU"] == pytest.approx(metrics["val/mIoU"], abs=1e-6)
    # the class names the training used, from the checkpoint's config
    assert "classes of the training (data=synthetic, 5): background, disc, box, triangle, star" in out
    only_last = tmp_path / "run" / "checkpoints"
    only_last.mkdir(parents=True)
    os.symlink(run_dir / "checkpoints" / "last.ckpt", only_last / "last.ckpt")
    assert evaluation.resolve_checkpoint(tmp_path / "run") == only_last / "last.ckpt"
    assert evaluation.resolve_checkpoint(only_last) == only_last / "last.ckpt"
    empty = tmp_path / "empty"
    (empty / "logs").mkdir(parents=True)
    (empty / "notes.txt").write_text("")
    with pytest.raises(
        DataError,
        match=rf"^ckpt={empty} is a directory without a checkpoint \(looked for "
        r"checkpoints/best-\*.ckpt, checkpoints/last.ckpt and \*.ckpt\); it "
        r"holds: logs/, notes.txt$",
    ):
        evaluate_main([f"ckpt={empty}"])


@pytest.mark.slow
def test_save_dir_is_checked_before_any_model(smoke_run, tmp_path, no_model, locked):
    ckpt = next((smoke_run[0] / "checkpoints").glob("best-*.ckpt"))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError, match=rf"save_dir {blocker / 'png'} is not writable"):
        evaluate_main([f"ckpt={ckpt}", f"save_dir={blocker / 'png'}"])
    with pytest.raises(PermissionError, match=rf"save_dir {locked / 'png'} is not writable"):
        evaluate_main([f"ckpt={ckpt}", f"save_dir={locked / 'png'}"])
    data = tmp_path / "mydata"
    data.mkdir()
    with pytest.raises(ConfigError, match=rf"save_dir={data / 'masks'} is inside the dataset data.root={data}"):
        evaluate_main([f"ckpt={ckpt}", "data=folder", f"data.root={data}", f"save_dir={data / 'masks'}"])
