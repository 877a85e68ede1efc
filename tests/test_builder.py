"""densekit.builder: plain config -> network / task / datamodule, and the one checkpoint reader.

tests/fixtures/old_checkpoints/ holds tiny weights-only checkpoints (seg, depth, flow, volume) trained by the
code as it was before the task/registry consolidation (commit a337d3a), with that code's outputs on fixed
inputs (old_outputs.pt): today's builder must rebuild and load them to the same numbers.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import densekit
from densekit.builder import (
    checkpoint_config,
    create_model,
    load_checkpoint_model,
    model_from_config,
    model_state,
    read_checkpoint,
    task_from_config,
)
from densekit.tasks import TASKS, DepthTask, FlowTask, SegTask, VolumeTask, get_task
from helpers import ROOT

OLD = ROOT / "tests" / "fixtures" / "old_checkpoints"


@pytest.mark.parametrize(
    "task,kwargs,size,out",
    [
        ("seg", {"backbone": "mobilenetv3_large", "head": "lraspp", "num_classes": 5}, (45, 61), (2, 5, 45, 61)),
        ("depth", {"backbone": "mobilenetv3_large", "head": "fpn", "max_depth": 8.0}, (40, 48), (2, 1, 40, 48)),
        ("flow", {"backbone": "flow_pyramid", "head": "flow"}, (64, 80), (2, 2, 64, 80)),
        (
            "volume",
            {
                "backbone": {"name": "revmb3d", "in_channels": 2, "widths": [8, 8, 16, 16, 16], "num_groups": 4},
                "head": {"name": "revunet3d", "num_groups": 4},
                "num_classes": 3,
            },
            (16, 20, 24),
            (2, 3, 16, 20, 24),
        ),
    ],
)
def test_create_model_per_task_output_shapes(task, kwargs, size, out):
    model = create_model(task, **kwargs).eval()
    assert densekit.create_model is create_model  # the public name is the builder's
    cls = get_task(task)
    inputs = cls.example_inputs(
        batch=2, size=size, in_channels=2 if task == "volume" else None, generator=torch.Generator().manual_seed(0)
    )
    assert len(inputs) == len(cls.inputs) and all(x.shape == (2, 2 if task == "volume" else 3, *size) for x in inputs)
    with torch.no_grad():
        y = model(*inputs)
    assert tuple(y.shape) == out
    if task == "depth":
        assert 0.0 < float(y.min()) and float(y.max()) <= 8.0  # DepthActivation: bounded metres


def test_task_facts_and_choices():
    assert sorted(TASKS) == ["depth", "flow", "seg", "volume"]
    assert [get_task(n) for n in ("seg", "depth", "flow", "volume")] == [SegTask, DepthTask, FlowTask, VolumeTask]
    assert (SegTask.dims, VolumeTask.dims) == (2, 3)
    assert (FlowTask.inputs, FlowTask.output_name) == (("image1", "image2"), "flow")
    assert DepthTask.model_kwargs == {"activation", "max_depth", "min_depth"} and SegTask.model_kwargs == frozenset()
    assert FlowTask.heads() == ["flow"] and VolumeTask.heads() == ["lightm", "revunet3d"]
    assert "flow_pyramid" in FlowTask.backbones() and "flow_pyramid" not in SegTask.backbones()
    assert VolumeTask.backbones() == ["lightm3d", "revmb3d"]
    with pytest.raises(ValueError, match=r"unknown task 'pose'; available: \['depth', 'flow', 'seg', 'volume'\]"):
        get_task("pose")
    with pytest.raises(ValueError, match=r"backbone=flow_pyramid does not fit task=seg; valid backbones: \['lightm'"):
        SegTask.check_choices("flow_pyramid", "lraspp")
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet9'; available: \["):
        SegTask.check_choices("resnet9", "lraspp")
    with pytest.raises(ValueError, match="seg needs num_classes >= 2, got None"):
        create_model("seg", backbone="mobilenetv3_large", head="lraspp")


def _save(path, obj):
    torch.save(obj, path)
    return path


def test_read_checkpoint_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^checkpoint not found: .*missing\.ckpt$"):
        read_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(FileNotFoundError, match=r"^init_from: checkpoint not found: "):
        read_checkpoint(tmp_path / "missing.ckpt", what="init_from")
    (tmp_path / "text.ckpt").write_text("not a checkpoint\n" * 50)
    for weights in (True, False):
        with pytest.raises(ValueError, match=r"could not read checkpoint .*text\.ckpt: UnpicklingError") as err:
            read_checkpoint(tmp_path / "text.ckpt", weights=weights)
        assert "\n" not in str(err.value)
    plain = _save(tmp_path / "plain.ckpt", {"weights": torch.ones(2)})
    with pytest.raises(ValueError, match=r"^ckpt_path: .*plain\.ckpt is not a Lightning checkpoint \(no state_dict\)$"):
        read_checkpoint(plain, what="ckpt_path")
    foreign = _save(
        tmp_path / "foreign.ckpt", {"state_dict": {"model.w": torch.ones(1)}, "hyper_parameters": {"lr": 0.1}}
    )
    ckpt = read_checkpoint(foreign)
    with pytest.raises(
        ValueError,
        match=r"foreign\.ckpt is not a densekit checkpoint \(no run config in its "
        r"hyper_parameters\)$",
    ):
        checkpoint_config(ckpt, foreign)
    with pytest.raises(ValueError, match=r"foreign\.ckpt is not a densekit checkpoint"):
        load_checkpoint_model(foreign)
    assert model_state({"state_dict": {"model.a.weight": 1, "val_metrics.x": 2}}) == {"a.weight": 1}


def _tiny_volume_config() -> dict:
    return {
        "task": {"name": "volume", "targets": ["mask"], "loss": {"dice_weight": 1.0}, "inference": {"roi": None}},
        "backbone": {
            "name": "revmb3d",
            "in_channels": 1,
            "widths": [8, 8, 16, 16, 16],
            "num_groups": 4,
            "pretrained": False,
        },
        "head": {"name": "revunet3d", "num_groups": 4},
        "data": {"name": "synthetic_volume", "num_classes": 3, "labels": None},
        "optim": {"name": "adamw", "lr": 1e-3},
    }


def test_load_checkpoint_model_round_trips_a_task_checkpoint(tmp_path):
    config = _tiny_volume_config()
    task = task_from_config(config, class_names=["bg", "a", "b"])
    assert isinstance(task, VolumeTask) and task.class_names == ["bg", "a", "b"] and task.num_classes == 3
    with torch.no_grad():
        for p in task.model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # not the initialisation
    path = _save(tmp_path / "task.ckpt", {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)})
    model, saved = load_checkpoint_model(path)
    assert saved == config and not model.training
    x = VolumeTask.example_inputs(size=(16, 16, 16), generator=torch.Generator().manual_seed(1))
    task.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(*x), task.model(*x), rtol=0, atol=0)
    # the same config, another head width: a strict load names what does not fit
    state = task.state_dict()
    state["model.extra.weight"] = torch.zeros(1)
    edited = _save(tmp_path / "edited.ckpt", {"state_dict": state, "hyper_parameters": dict(task.hparams)})
    with pytest.raises(
        ValueError,
        match=r"does not match its own config: missing \[\], "
        r"unexpected \['extra\.weight'\]",
    ):
        load_checkpoint_model(edited)


def test_model_from_config_pretrained_and_task_model_keys():
    config = {
        "task": {"name": "depth", "model": {"activation": "softplus", "min_depth": 0.5}},
        "backbone": {"name": "mobilenetv3_large", "pretrained": True},
        "head": {"name": "fpn"},
        "data": {"name": "synthetic"},
    }
    model = model_from_config(config)  # pretrained=False by default: no hub download
    assert isinstance(model.output, nn.Module) and model.output.kind == "softplus" and model.output.min_depth == 0.5
    with pytest.raises(TypeError, match=r"unexpected arguments for task 'depth': \['dilation'\]"):
        model_from_config({**config, "task": {"name": "depth", "model": {"dilation": 2}}})


@pytest.mark.parametrize("task", ["seg", "depth", "flow", "volume"])
def test_old_format_checkpoint_still_loads_to_the_same_outputs(task):
    expected = torch.load(OLD / "old_outputs.pt", weights_only=False)[task]
    model, config = load_checkpoint_model(OLD / f"old_{task}.ckpt")
    assert config["task"]["name"] == task
    g = torch.Generator().manual_seed(0)  # the inputs tests/fixtures/old_checkpoints/old_outputs.pt was made with
    if task == "volume":
        x = (torch.rand(1, config["backbone"]["in_channels"], 16, 32, 32, generator=g),)
    elif task == "flow":
        x = (torch.rand(1, 3, 64, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g))
    else:
        x = (torch.rand(1, 3, 32, 32, generator=g),)
    with torch.no_grad():
        y = model(*x)
    assert tuple(y.shape) == expected["shape"]
    torch.testing.assert_close(y.flatten()[::97], expected["sample"], rtol=1e-5, atol=1e-5)
    assert float(y.double().sum()) == pytest.approx(expected["sum"], rel=1e-5, abs=1e-4)
    # and the task module around it (what evaluation validates)
    module = get_task(task).from_config(config, model=model, class_names=(config["data"].get("class_names")))
    assert module.model is model and module.monitor == get_task(task).monitor
