import os

import numpy as np
import pytest
import torch
from PIL import Image

import scripts.evaluate as evaluate_script
from densekit.errors import ConfigError, DataError
from densekit.inference import load_checkpoint_model, predict, sliding_window
from densekit.viz import colorize_mask, palette, seg_panel
from scripts.evaluate import main as evaluate_main
from tests.test_cli_errors import locked  # noqa: F401 - a fixture


class Scale(torch.nn.Module):
    """A 'model' whose output at a pixel depends only on that pixel: sliding windows must reproduce it."""

    def forward(self, x):
        return torch.cat([x[:, :1] * 2.0, -x[:, :1]], dim=1)


def test_sliding_window_equals_whole_for_a_pointwise_model():
    x = torch.rand(2, 3, 37, 53)
    whole = Scale()(x)
    for crop, stride in [((16, 16), (8, 8)), ((20, 30), (20, 30)), ((64, 64), (32, 32))]:
        torch.testing.assert_close(sliding_window(Scale(), x, crop, stride), whole)


def test_flip_and_scale_tta_average_probabilities():
    x = torch.rand(1, 3, 16, 16)
    probs = predict(Scale(), x, flip=True, scales=(1.0,))
    torch.testing.assert_close(probs, Scale()(x).softmax(1))  # pointwise model: flip is an identity
    ms = predict(Scale(), x, scales=(0.5, 1.0))
    assert ms.shape == (1, 2, 16, 16)
    torch.testing.assert_close(ms.sum(1), torch.ones(1, 16, 16))
    with pytest.raises(ValueError, match="needs crop"):
        predict(Scale(), x, mode="slide")


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
    assert 0.0 <= tta["val/mIoU"] <= 1.0


def test_evaluate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="missing ckpt"):
        evaluate_main([])
    with pytest.raises(ConfigError, match="unknown option 'flop'"):
        evaluate_main(["ckpt=x", "flop=1"])
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        evaluate_main([f"ckpt={tmp_path / 'none.ckpt'}"])


@pytest.mark.parametrize("arg,message", [
    ("flip=ture", "flip=ture: expected true or false, got 'ture'"),  # was taken as true
    ("flip=yes", "flip=yes: expected true or false, got 'yes'"),  # YAML 1.1 would say true
    ("flip=1", "flip=1: expected true or false, got '1'"),
    ("median_scaling=maybe", "median_scaling=maybe: expected true or false, got 'maybe'"),
    ("batch_size=0", "batch_size=0: expected a positive int, got 0"),
    ("limit=abc", "limit=abc: expected null or a positive int, got 'abc'"),
    ("scales=0.5", "scales=0.5: expected a list of scale factors > 0, e.g. [0.75,1.0,1.25], got 0.5"),
    ("crop=[64]", "crop=[64]: expected null or a list of 2 or 3 positive ints"),
    ("mode=tile", "mode=tile: expected one of whole, slide, got 'tile'"),
    ("eval_crop=nyu", "eval_crop=nyu: expected null or one of config, none, eigen_nyu, garg, eigen_kitti"),
])
def test_every_flag_is_typed(arg, message):
    with pytest.raises(ConfigError) as err:
        evaluate_script.parse_args(["ckpt=x.ckpt", arg])
    assert str(err.value).startswith(message), str(err.value)


def test_booleans_and_paths_parse_as_written():
    opts, _ = evaluate_script.parse_args(["ckpt=true", "flip=True", "median_scaling=false", "save_dir=2024",
                                          "limit=null", "crop=[32,32]"])
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

    monkeypatch.setattr(evaluate_script, "load_checkpoint_model", refuse)


@pytest.mark.slow
def test_checkpoint_data_mismatch_is_one_line_naming_both(smoke_run, depth_run, compose, tmp_path, no_model):
    seg = next((smoke_run[0] / "checkpoints").glob("best-*.ckpt"))
    depth = next((depth_run[0] / "checkpoints").glob("best-*.ckpt"))
    volume = _fake_checkpoint(tmp_path / "volume.ckpt", compose, ["task=volume"])
    cases = [  # (ckpt, data arguments, the message); before: KeyError 'num_classes', "unexpected keyword
        # argument 'val_patch'", "data has 4 classes but the checkpoint predicts 5"
        (seg, ["data=motorcycle"], f"ckpt {seg} is a seg model trained on data=synthetic; data=motorcycle is flow "
                                   f"data (task flow)"),
        (volume, ["data=folder", f"data.root={tmp_path}"],
         f"ckpt {volume} is a volume model trained on data=synthetic_volume; data=folder is seg data (task seg)"),
        (seg, ["data=synthetic_volume"], f"ckpt {seg} is a seg model trained on data=synthetic; "
                                         f"data=synthetic_volume is volume data (task volume)"),
        (depth, ["data=folder", f"data.root={tmp_path}"],
         f"ckpt {depth} is a depth model trained on data=synthetic; data=folder is seg data (task seg)"),
        (seg, ["data=folder", f"data.root={tmp_path}", "data.num_classes=3"],
         f"ckpt {seg} predicts 5 classes (trained on data=synthetic); data.num_classes=3 (data=folder)"),
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
    assert evaluate_script.resolve_checkpoint(tmp_path / "run") == only_last / "last.ckpt"
    assert evaluate_script.resolve_checkpoint(only_last) == only_last / "last.ckpt"
    empty = tmp_path / "empty"
    (empty / "logs").mkdir(parents=True)
    (empty / "notes.txt").write_text("")
    with pytest.raises(DataError, match=rf"^ckpt={empty} is a directory without a checkpoint \(looked for "
                                        r"checkpoints/best-\*.ckpt, checkpoints/last.ckpt and \*.ckpt\); it "
                                        r"holds: logs/, notes.txt$"):
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
