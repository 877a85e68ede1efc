"""channels_last training: the oneDNN workaround computes the same numbers, the option trains and is refused
where it does not apply (docs/repro_channels_last.py has the crash itself)."""

import pytest
import torch
from torch import nn

from densekit.config_schema import validate_config
from densekit.errors import ConfigError
from densekit.tasks.base import guard_strided_pointwise_convs, unguard_strided_pointwise_convs
from densekit.train import train


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
        ({"channels_last": "yes"}, "channels_last=yes: expected true or false, got 'yes'"),
        ({"channels_last": True, "task": {"name": "volume"}}, "channels_last=true: expected false for task=volume"),
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
