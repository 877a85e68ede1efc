"""Typed config (densekit.config_schema) and one-line errors (densekit.cli) at the entry points.

The in-process tests check the rules and the reporting; the subprocess tests run train.py, evaluate.py and
export.py as a user does and count the lines on stderr, the exit status and the absence of a traceback."""

import os
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from densekit.cli import EXIT_CONFIG, EXIT_DATA, exit_code, format_error, report_errors, run_script
from densekit.config_schema import validate_config
from densekit.errors import ConfigError, DataError
from helpers import CONF, ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
for _key in ("HYDRA_FULL_ERROR", "DENSEKIT_FULL_ERROR"):
    ENV.pop(_key, None)


def plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


# -- the schema ----------------------------------------------------------------------------------------------
QUOTED = [  # issue 14: each of these failed only after the model was built, with a message not naming the key
    ("data.size=abc", "data.size=abc: expected a list of 2 positive ints [H, W], got 'abc'"),
    ("data.size=64", "data.size=64: expected a list of 2 positive ints [H, W], got 64"),
    ("data.size=[64]", "data.size=[64]: expected a list of 2 positive ints [H, W], got [64] (1 value)"),
    ("head.inter_channels=abc", "head.inter_channels=abc: expected a positive int, got 'abc'"),
    ("optim.lr=abc", "optim.lr=abc: expected a number > 0, got 'abc'"),
    ("data.batch_size=0", "data.batch_size=0: expected an int >= 1, got 0"),
    ("data.augment.hflip=2.0", "data.augment.hflip=2.0: expected a probability in [0, 1], got 2.0"),
]


@pytest.mark.parametrize("override,message", QUOTED)
def test_quoted_config_errors_name_key_value_and_expectation(compose, override, message):
    cfg = compose(["experiment=smoke", override])
    with pytest.raises(ConfigError) as err:
        validate_config(plain(cfg))  # a table look-up over the plain config: nothing is built
    assert str(err.value) == message


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["optim.lr=0"], "optim.lr=0: expected a number > 0, got 0"),
        (["optim=sgd", "optim.momentum=1.0"], "optim.momentum=1.0: expected a number in [0, 1), got 1.0"),
        (["optim.weight_decay=-0.1"], "optim.weight_decay=-0.1: expected a number >= 0, got -0.1"),
        (["trainer.precision=17"], "trainer.precision=17: expected one of transformer-engine"),
        (["trainer.val_check_interval=1.5"], "trainer.val_check_interval=1.5: expected null or an int > 0"),
        (["trainer.max_steps=-2"], "trainer.max_steps=-2: expected an int >= -1 (-1: no limit), got -2"),
        (["trainer.enable_progress_bar=ture"], "trainer.enable_progress_bar=ture: expected true or false, got 'ture'"),
        (["seed=abc"], "seed=abc: expected an int, got 'abc'"),
        (["data.num_workers=-1"], "data.num_workers=-1: expected an int >= 0 or auto, got -1"),
        (["data.train_length=0"], "data.train_length=0: expected null or a positive int, got 0"),
        (["nonfinite=ignore"], "nonfinite=ignore: expected one of raise, skip, got 'ignore'"),
        (["data.augment.hflip=true"], "data.augment.hflip=true: expected a probability in [0, 1], got true"),
        (
            ["head=unet", "head.decoder_channels=[256,abc]"],
            "head.decoder_channels=[256,abc]: expected a list of positive ints, got [256,abc] (2 values)",
        ),
        (
            ["data=ade20k", "data.augment.scale=[2.0,0.5]"],
            "data.augment.scale=[2.0,0.5]: expected [lo, hi] zoom factors >= 0.05 with lo <= hi",
        ),
        (
            ["task=volume", "data.size=[32,32]"],
            "data.size=[32,32]: expected a list of 3 positive ints [D, H, W], got [32,32] (2 values)",
        ),
        (
            ["task=volume", "data.augment.flip=[0.5,0.5]"],
            "data.augment.flip=[0.5,0.5]: expected a probability in [0, 1] or [pD, pH, pW] probabilities",
        ),
        (
            ["task=flow", "data.augment.photometric.hue=0.9"],
            "data.augment.photometric.hue=0.9: expected a number in [0, 0.5], got 0.9",
        ),
        (["task=volume", "backbone.in_channels=0"], "backbone.in_channels=0: expected a positive int, got 0"),
    ],
)
def test_more_config_rules(compose, overrides, message):
    with pytest.raises(ConfigError) as err:
        validate_config(plain(compose(overrides)))
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["task=volume", "backbone.widths=[8,16,32]"],
            "backbone.depths=[1,1,2,2,2]: expected one entry per level of backbone.widths (3 levels), got 5",
        ),
        (["task=volume", "backbone.widths=[9,16,32,64,64]"], "backbone.widths=[9,16,32,64,64]: expected even channel"),
        (
            ["task=volume", "head.decoder_depths=[1,1]"],
            "head.decoder_depths=[1,1]: expected 4 entries (levels - 1 of backbone.widths=[16,32,64,128,256]), got 2",
        ),
        (
            ["task=flow", "backbone.blocks=[1,1]"],
            "backbone.blocks=[1,1]: expected one value per level (6 levels, as backbone.widths), got 2",
        ),
        (["head.pool={kernel:[49,49]}"], "head.pool={kernel: [49,49]}: expected global or {kernel: [kh, kw]"),
    ],
)
def test_list_lengths_that_must_agree(compose, overrides, message):
    with pytest.raises(ConfigError) as err:
        validate_config(plain(compose(overrides)))
    assert str(err.value).startswith(message), str(err.value)


def test_several_wrong_keys_are_all_named(compose):
    with pytest.raises(ConfigError) as err:
        validate_config(plain(compose(["optim.lr=abc", "data.batch_size=0"])))
    assert str(err.value) == "data.batch_size=0: expected an int >= 1, got 0 (also wrong: optim.lr)"


def _every_choice() -> list[list[str]]:
    tasks = {
        "volume": ("synthetic_volume", "brats", "nifti_folder", "revmb3d", "lightm3d", "revunet3d"),
        "flow": (
            "chairs",
            "things",
            "sintel",
            "kitti15",
            "flow_folder",
            "motorcycle",
            "synthetic_flow",
            "flow_pyramid",
            "flow",
        ),
        "depth": ("nyuv2", "nyuv2_mat", "kitti", "depth_folder"),
    }
    task_of = {name: task for task, names in tasks.items() for name in names}
    combos = []
    for group in ("data", "backbone", "head"):
        for path in sorted((CONF / group).glob("*.yaml")):
            combos.append([f"task={task_of.get(path.stem, 'seg')}", f"{group}={path.stem}"])
    combos += [[f"experiment={p.stem}"] for p in sorted((CONF / "experiment").glob("*.yaml"))]
    combos += [[f"{g}={p.stem}"] for g in ("trainer", "optim", "logger") for p in sorted((CONF / g).glob("*.yaml"))]
    return combos


def test_every_shipped_config_passes(compose):
    """Every YAML in conf/ (each data/backbone/head with its task, every experiment, trainer, optim, logger)
    composes to a config the schema accepts: the rules describe the configs, not an idealised subset."""
    combos = _every_choice()
    assert len(combos) > 50
    for overrides in combos:
        validate_config(plain(compose(overrides)), check_files=False)


def test_pretrained_path_is_checked_before_building(compose, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^backbone.pretrained: weight file not found: /nope.pt "):
        validate_config(plain(compose(["backbone.pretrained=/nope.pt"])))
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    validate_config(plain(compose([f"backbone.pretrained={weights}"])))  # exists: loading is the backbone's job
    for value in ("true", "false", "auto"):
        validate_config(plain(compose([f"backbone.pretrained={value}"])))


def test_validate_one_group_only():
    data = {"name": "synthetic", "size": [64, 64], "batch_size": 0}
    with pytest.raises(ConfigError, match=r"^data.batch_size=0"):
        validate_config({"task": {"name": "seg"}, "data": data}, groups=("data",))
    validate_config(
        {"task": {"name": "seg"}, "data": {**data, "batch_size": 2}, "optim": {"lr": "x"}}, groups=("data",)
    )


# -- reporting -------------------------------------------------------------------------------------------
def test_exit_codes_and_messages(compose):
    from hydra.errors import ConfigCompositionException, MissingConfigException

    assert exit_code(ConfigError("x")) == EXIT_CONFIG and exit_code(DataError("x")) == EXIT_DATA
    assert exit_code(FileNotFoundError("x")) == EXIT_DATA and exit_code(PermissionError("x")) == EXIT_DATA
    assert exit_code(ValueError("x")) == EXIT_DATA
    for bug in (TypeError("x"), KeyError("x"), AttributeError("x"), RuntimeError("x"), IndexError("x")):
        assert exit_code(bug) is None  # a bug keeps its traceback
    assert exit_code(SystemExit(1)) is None and exit_code(KeyboardInterrupt()) is None
    with pytest.raises(ConfigCompositionException) as err:
        compose(["trainer.max_epochz=3"])
    assert exit_code(err.value) == EXIT_CONFIG
    assert format_error(err.value) == (
        "Could not override 'trainer.max_epochz': Key 'max_epochz' is not in struct",
        "To append to your config use +trainer.max_epochz=3",
    )
    with pytest.raises(MissingConfigException) as err:
        compose(["backbone=resnet9000"])
    message, hint = format_error(err.value)
    assert message == "In 'train': Could not find 'backbone/resnet9000'"
    assert hint.startswith("Available options in 'backbone': flow_pyramid, lightm, lightm3d, mci0")
    assert "search path" not in hint
    # a ValueError raised by check_config is a config error (an incompatible choice), elsewhere a data error
    from densekit.train import check_config

    cfg = compose(["backbone=lightm3d"])
    with pytest.raises(ValueError) as err:
        check_config(cfg)
    assert exit_code(err.value) == EXIT_CONFIG


def test_report_errors_prints_one_line_and_exits(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("DENSEKIT_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as stop:
        with report_errors():
            raise ConfigError("data.size=abc: expected a list of 2 positive ints [H, W], got 'abc'\nhint line\nmore")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: data.size=abc: expected a list of 2 positive ints [H, W], got 'abc'",
        "  hint line ...",
    ]
    with pytest.raises(TypeError):  # a bug: unchanged
        with report_errors():
            raise TypeError("unsupported operand")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError):  # the user asked for the traceback
        with report_errors():
            raise ConfigError("x")
    monkeypatch.delenv("HYDRA_FULL_ERROR")

    def main(argv):
        raise FileNotFoundError(f"checkpoint not found: {argv[0]}")

    with pytest.raises(SystemExit) as stop:
        run_script(main, ["x.ckpt"])
    assert stop.value.code == 1 and capsys.readouterr().err == "error: checkpoint not found: x.ckpt\n"
    with pytest.raises(FileNotFoundError):
        run_script(main, ["x.ckpt", "debug=true"])  # debug=true: taken off the arguments, traceback shown


# -- the entry points, as a user runs them -----------------------------------------------------------------
def _run(args, cwd, env=None, timeout=300):
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env or ENV
    )
    return proc, time.perf_counter() - start


def _one_line(proc, code: int, text: str, lines: int = 1):
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(err) == lines, proc.stderr[-3000:]
    assert text in err[0], err


def test_train_missing_weight_file_is_one_line(tmp_path):
    """The README's "one-line error" (it was 35 lines of Hydra traceback, after the data was listed)."""
    proc, _ = _run(
        [str(ROOT / "train.py"), "experiment=smoke", "backbone.pretrained=/nope.pt", f"output_dir={tmp_path / 'run'}"],
        cwd=tmp_path,
    )
    _one_line(proc, 1, "error: backbone.pretrained: weight file not found: /nope.pt")
    assert not (tmp_path / "run" / "config.yaml").exists()  # stopped before the model was built


def test_train_config_errors_are_one_line_with_exit_status_2(tmp_path):
    proc, _ = _run(
        [str(ROOT / "train.py"), "experiment=smoke", "data.size=abc", f"output_dir={tmp_path / 'run'}"], cwd=tmp_path
    )
    _one_line(proc, 2, "error: data.size=abc: expected a list of 2 positive ints [H, W], got 'abc'")
    assert "config" not in proc.stdout  # not even the config tree: nothing was built
    proc, _ = _run([str(ROOT / "train.py"), "trainer.max_epochz=3", f"output_dir={tmp_path / 'run2'}"], cwd=tmp_path)
    _one_line(proc, 2, "error: Could not override 'trainer.max_epochz': Key 'max_epochz' is not in struct", lines=2)
    assert proc.stderr.splitlines()[1] == "  To append to your config use +trainer.max_epochz=3"


def test_full_error_shows_the_traceback(tmp_path):
    proc, _ = _run(
        [str(ROOT / "train.py"), "experiment=smoke", "data.size=abc", f"output_dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env={**ENV, "HYDRA_FULL_ERROR": "1"},
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "validate_config" in proc.stderr
    assert "ConfigError: data.size=abc" in proc.stderr


@pytest.mark.slow
def test_scripts_report_one_line(smoke_run, tmp_path):
    run_dir, _, _ = smoke_run
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    proc, _ = _run([str(ROOT / "scripts" / "evaluate.py"), f"ckpt={ckpt}", "flip=ture"], cwd=tmp_path)
    _one_line(proc, 2, "error: flip=ture: expected true or false, got 'ture'")
    proc, _ = _run([str(ROOT / "scripts" / "evaluate.py"), f"ckpt={ckpt}", "data=motorcycle"], cwd=tmp_path)
    _one_line(
        proc,
        2,
        f"error: ckpt {ckpt} is a seg model trained on data=synthetic; data=motorcycle is flow data (task flow)",
        lines=2,
    )
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc, _ = _run([str(ROOT / "scripts" / "export.py"), f"ckpt={ckpt}", f"output={blocker / 'm.onnx'}"], cwd=tmp_path)
    _one_line(proc, 1, f"error: output={blocker / 'm.onnx'}: {blocker} is a file, not a directory")
    proc, _ = _run([str(ROOT / "scripts" / "export.py"), f"ckpt={ckpt}", "dynamic=yes"], cwd=tmp_path)
    _one_line(proc, 2, "error: dynamic=yes: expected true or false, got 'yes'")
