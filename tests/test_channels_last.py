"""channels_last training (conf/train.yaml ``channels_last``): the config rule, the oneDNN workaround for strided
1x1 convolutions (docs/repro_channels_last.py), a channels_last run giving the contiguous run's losses, and the
row builder of ``benchmark.py settings``."""

import math
import types

import pytest
import torch
from torch import nn

from densekit.config_schema import validate_config
from densekit.errors import ConfigError
from densekit.tasks.base import (
    _subsampled_pointwise_forward,
    guard_strided_pointwise_convs,
    unguard_strided_pointwise_convs,
)
from densekit.train import train
from helpers import quiet_trainer

# one intra-op thread: many tiny ops; on a shared CPU a second thread mostly waits for a busy core
pytestmark = pytest.mark.usefixtures("single_thread")


# == the config rule ==================================================================================
@pytest.mark.parametrize("value", [True, False, "auto"])
def test_channels_last_takes_auto_true_or_false_and_the_mci_backbones(compose, value):
    from omegaconf import OmegaConf

    for backbone in ("mci0", "mobilenetv3_large"):
        cfg = compose(["experiment=smoke", f"backbone={backbone}", f"channels_last={str(value).lower()}"])
        config = OmegaConf.to_container(cfg, resolve=True)
        assert config["channels_last"] == value and type(config["channels_last"]) is type(value)
        validate_config(config, check_files=False)  # accepted: the mci stem is worked around, not refused


def test_channels_last_defaults_to_auto(compose):
    assert compose(["experiment=smoke"]).channels_last == "auto"


@pytest.mark.parametrize("value", ["yes", 1, "abc", None])
def test_channels_last_refuses_anything_but_auto_or_a_boolean(value):
    with pytest.raises(ConfigError, match=r"^channels_last=\S+: expected auto or true or false, got"):
        validate_config({"task": {"name": "seg"}, "channels_last": value}, check_files=False)


def test_channels_last_is_refused_for_volumes_in_one_line():
    with pytest.raises(ConfigError) as err:
        validate_config({"task": {"name": "volume"}, "channels_last": True}, check_files=False)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("channels_last=true: expected auto or false for task=volume: channels_last applies to 2D")
    validate_config({"task": {"name": "volume"}, "channels_last": False}, check_files=False)
    validate_config({"task": {"name": "volume"}, "channels_last": "auto"}, check_files=False)


def test_the_task_takes_the_option_and_refuses_it_for_volumes(compose):
    from densekit.tasks.seg import SegTask
    from densekit.tasks.volume import VolumeTask

    model = nn.Conv2d(3, 2, 1)
    assert SegTask(model, num_classes=2, config={"channels_last": True}).channels_last is True
    assert SegTask(model, num_classes=2, config={}).channels_last == "auto"
    with pytest.raises(ValueError, match="expected auto, true or false"):
        SegTask(model, num_classes=2, config={"channels_last": "true"})
    with pytest.raises(ValueError, match="2D image tasks"):
        VolumeTask(nn.Conv3d(4, 3, 1), num_classes=3, config={"channels_last": True})
    # auto: on for a 2D task on the CPU, off for volumes; true/false as set
    assert SegTask(model, num_classes=2, config={})._channels_last_wanted() is True
    assert SegTask(model, num_classes=2, config={"channels_last": False})._channels_last_wanted() is False
    volume = VolumeTask(nn.Conv3d(4, 4, 1), num_classes=4, config={"channels_last": "auto"})
    assert volume._channels_last_wanted() is False


# == the workaround ===================================================================================
def test_guard_changes_exactly_the_strided_pointwise_convs_with_few_input_channels():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 1, stride=2),  # the fastvit stem's scale branch: guarded
        nn.Conv2d(8, 8, 1, stride=2, groups=8),  # depthwise: not the broken kernel
        nn.Conv2d(8, 16, 3, stride=2, padding=1),  # 3x3
        nn.Conv2d(16, 16, 1, stride=2),  # 16 input channels: not affected
        nn.Conv2d(16, 4, 1),  # stride 1
    )
    assert guard_strided_pointwise_convs(model) == ["0"]
    assert guard_strided_pointwise_convs(model) == []  # idempotent
    unguard_strided_pointwise_convs(model)
    assert all("forward" not in vars(m) for m in model)


@pytest.mark.parametrize("size", [9, 16])
def test_guarded_conv_gives_the_same_output_and_gradients(size):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 1, stride=2).to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, size, size).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    ref = conv(x)
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, conv.weight, conv.bias])
    conv.forward = types.MethodType(_subsampled_pointwise_forward, conv)
    out = conv(x)
    grads = torch.autograd.grad(out.square().sum(), [x, conv.weight, conv.bias])
    assert out.shape == ref.shape == (2, 8, (size + 1) // 2, (size + 1) // 2)
    torch.testing.assert_close(out, ref)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r)


def test_guard_finds_the_mci_stem_conv():
    from densekit import create_backbone

    torch.manual_seed(0)
    bb = create_backbone("mci0", pretrained=False)
    names = guard_strided_pointwise_convs(bb)
    assert names == ["model.stem.0.conv_scale.conv"]
    conv = bb.get_submodule(names[0])
    assert (conv.in_channels, conv.kernel_size, conv.stride) == (3, (1, 1), (2, 2))


# == a channels_last run ==============================================================================
def _fit_losses(tmp_path, channels_last: bool) -> tuple[list[float], dict]:
    import pytorch_lightning as pl

    from densekit.tasks.seg import SegTask

    torch.manual_seed(0)
    model = SegTask.build_model(
        backbone={"name": "mobilenetv3_large", "pretrained": False}, head={"name": "lraspp"}, num_classes=3
    )
    task = SegTask(
        model,
        num_classes=3,
        optim={"name": "sgd", "lr": 0.05, "scheduler": "none"},
        config={"channels_last": channels_last},
    )
    g = torch.Generator().manual_seed(0)
    batches = [
        {"image": torch.rand(3, 64, 64, generator=g), "mask": torch.randint(0, 3, (64, 64), generator=g)}
        for _ in range(4)
    ]
    seen: dict = {}

    def record_input(module, args):  # what the model gets in the step
        seen["image_cl"] = args[0].is_contiguous(memory_format=torch.channels_last)
        weight = next(p for p in module.parameters() if p.dim() == 4 and p.shape[-1] > 1)
        seen["weight_cl"] = weight.is_contiguous(memory_format=torch.channels_last)

    model.register_forward_pre_hook(record_input)

    class Record(pl.Callback):
        losses: list[float] = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.losses.append(float(outputs["loss"]))

    record = Record()
    record.losses = []
    trainer = quiet_trainer(tmp_path, max_steps=2, callbacks=[record])
    trainer.fit(task, torch.utils.data.DataLoader(batches, batch_size=2))
    weight = next(p for p in task.model.parameters() if p.dim() == 4 and p.shape[-1] > 1)
    seen["weight_cl_after"] = weight.is_contiguous(memory_format=torch.channels_last)
    return record.losses, seen


def test_channels_last_training_gives_the_contiguous_losses(tmp_path):
    reference, seen_ref = _fit_losses(tmp_path / "nchw", channels_last=False)
    losses, seen = _fit_losses(tmp_path / "nhwc", channels_last=True)
    assert len(losses) == len(reference) == 2
    assert all(math.isfinite(v) for v in losses)
    assert losses == pytest.approx(reference, rel=1e-4, abs=1e-5)
    assert seen_ref == {"image_cl": False, "weight_cl": False, "weight_cl_after": False}
    # channels_last during fit; the model is contiguous again afterwards
    assert seen == {"image_cl": True, "weight_cl": True, "weight_cl_after": False}


# == from the first version of this file ===============================================================
def test_guarded_strided_pointwise_conv_gives_the_same_output_and_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1, stride=2), nn.Conv2d(8, 16, 1, stride=2), nn.Conv2d(8, 4, 3))
    x = torch.rand(2, 3, 33, 31)  # odd sides: the subsampling must pick the strided conv's own pixels

    def run():
        model.zero_grad()
        y = model[1](model[0](x))
        y.square().sum().backward()
        return y.detach().clone(), model[0].weight.grad.clone(), model[0].bias.grad.clone()

    reference = run()
    assert guard_strided_pointwise_convs(model) == ["0", "1"]  # 3 -> 8 and 8 -> 16 (< 16 inputs); not the 3x3
    guarded = run()
    for a, b in zip(reference, guarded):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert set(model.state_dict()) == {f"{i}.{k}" for i in range(3) for k in ("weight", "bias")}
    unguard_strided_pointwise_convs(model)
    assert all("forward" not in vars(m) for m in model)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"channels_last": "yes"}, "channels_last=yes: expected auto or true or false, got 'yes'"),
        (
            {"channels_last": True, "task": {"name": "volume"}},
            "channels_last=true: expected auto or false for task=volume",
        ),
    ],
)
def test_channels_last_rules(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_config({"seed": 0, **overrides})


@pytest.mark.slow
def test_channels_last_training_equals_the_default_layout(compose, tmp_path):
    losses = {}
    for layout in ("false", "true"):
        cfg = compose(
            [
                "backbone=mobilenetv3_large",
                "backbone.pretrained=false",
                "head=lraspp",
                "data.size=[64,64]",
                "data.batch_size=2",
                "data.train_length=4",
                "data.val_length=2",
                "data.num_workers=0",
                "trainer.max_steps=2",
                "trainer.val_check_interval=2",
                "logger=none",
                f"channels_last={layout}",
                f"output_dir={tmp_path / layout}",
            ]
        )
        losses[layout] = train(cfg)["val/loss"]
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-3)


# == benchmark.py settings ============================================================================
def test_settings_rows_from_one_tiny_configuration():
    from densekit.benchmarks import settings

    cfg = {"backbone": "mobilenetv3_large", "size": 32, "batch": 2, "forward_size": 32, "inner": 1, "threads": 1}
    fp32 = settings.measure({**cfg, "setting": "fp32"})
    cl = settings.measure({**cfg, "setting": "cl"})
    assert set(fp32) == {"step_ms", "forward_ms", "loss"}
    assert fp32["step_ms"] > 0 and fp32["forward_ms"] > 0
    assert cl["loss"] == pytest.approx(fp32["loss"], rel=1e-4)  # the same first step in either memory format
    samples = {
        ("mobilenetv3_large", "fp32"): [fp32],
        ("mobilenetv3_large", "cl"): [cl],
        ("mci0", "fp32"): [{"step_ms": 10.0, "forward_ms": 4.0, "loss": 1.0}] * 2,
        ("mci0", "cl"): ["aborts (SIGSEGV)", {"step_ms": 5.0, "forward_ms": 8.0, "loss": 1.0}],
    }
    rows = settings.build_rows(samples)
    by = {(r["backbone"], r["setting"]): r for r in rows}
    assert by["mobilenetv3_large", "fp32"]["step_ratio"] == 1.0
    assert by["mobilenetv3_large", "cl"]["step_ratio"] == pytest.approx(cl["step_ms"] / fp32["step_ms"])
    assert by["mci0", "cl"]["step_ratio"] == 0.5 and by["mci0", "cl"]["forward_ratio"] == 2.0
    assert by["mci0", "cl"]["status"] == "aborts (SIGSEGV) in 1/2 runs"
    assert by["mobilenetv3_large", "cl"]["status"] == "ok"
    table = settings.format_table(
        rows, types.SimpleNamespace(batch=1, size=32, forward_size=32, head="lraspp", repeats=1, inner=1, threads=1)
    )
    assert "| mci0 | cl | 5 | 0.50x | 8 | 2.00x | aborts (SIGSEGV) in 1/2 runs |" in table
