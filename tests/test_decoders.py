"""Every 2D backbone x every 2D head: builds, runs forward/backward and one training step."""

import pytest
import torch

from densekit import create_model
from densekit.losses import seg_loss
from densekit.models import create_head
from densekit.models.decoders import PyramidAdapter

# lightm: test_lightm.py (its full-res Mamba is slow here)
BACKBONES = ["mci0", "mci1", "mci2", {"name": "mobilenetv3_large", "dilated": True}, "mobilenetv3_large", "mobilesam"]
HEADS = ["lraspp", "unet", "fpn", "deeplabv3plus", "ffnet"]


def _id(spec):
    return spec if isinstance(spec, str) else "-".join(f"{v}" for v in spec.values())


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("backbone", BACKBONES, ids=_id)
def test_backbone_head_train_step(backbone, head):
    torch.manual_seed(0)
    if isinstance(backbone, dict):
        backbone = {**backbone, "pretrained": False}
    model = create_model("seg", backbone=backbone, head=head, num_classes=3).train()
    x, y = torch.rand(2, 3, 48, 80), torch.randint(0, 3, (2, 48, 80))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.detach().clone() for k, v in model.head.named_parameters()}
    loss = seg_loss(model(x), y)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    opt.step()
    changed = sum(not torch.equal(before[k], v) for k, v in model.head.named_parameters())
    assert changed == len(before)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 37, 51)).shape == (1, 3, 37, 51)


# reference/models.md §7.2: on MCi2 features (80, 160, 320, 640), 19 classes
FFNET = {
    "B": (
        dict(base_channels=(64, 128, 128, 256), up_channels=(96, 96, 64, 32), seg_channels=256, seg_kernel=3),
        1.31e6,
    ),
    "C": (dict(base_channels=(128,) * 4, up_channels=(128, 16, 16, 16), seg_channels=128, seg_kernel=1), 0.61e6),
}


@pytest.mark.parametrize("variant", sorted(FFNET))
def test_ffnet_head_parameter_count(variant):
    kwargs, expected = FFNET[variant]
    head = create_head("ffnet", [80, 160, 320, 640], [4, 8, 16, 32], 19, **kwargs)
    n = sum(p.numel() for p in head.parameters())
    assert abs(n - expected) / expected < 0.01, n


@pytest.mark.parametrize("head", ["fpn", "deeplabv3plus", "ffnet"])
def test_output_reduction_is_stride_4(head):
    h = create_head(head, [16, 24, 32, 48], [4, 8, 16, 32], 5).eval()  # batch of 1: BN in eval mode
    feats = [torch.rand(1, c, 128 // r, 128 // r) for c, r in zip([16, 24, 32, 48], [4, 8, 16, 32])]
    assert h.output_reduction == 4 and h(feats).shape == (1, 5, 32, 32)
    unet = create_head("unet", [16, 24, 32, 48], [4, 8, 16, 32], 5).eval()
    assert unet.output_reduction == 2 and unet(feats).shape == (1, 5, 64, 64)


def test_pyramid_adapter_pools_repeated_strides():
    adapt = PyramidAdapter([4, 8, 16, 16])
    feats = [torch.rand(1, 2, 64 // r, 64 // r) for r in (4, 8, 16, 16)]
    out = adapt(feats)
    assert [f.shape[-1] for f in out] == [16, 8, 4, 2]
    torch.testing.assert_close(out[3], torch.nn.functional.avg_pool2d(feats[3], 2))
    with pytest.raises(ValueError, match=r"cannot form a x2 pyramid"):
        PyramidAdapter([4, 16, 32, 64])


def test_unknown_head_lists_options():
    heads = r"\['deeplabv3plus', 'ffnet', 'flow', 'fpn', 'lightm', 'lraspp', 'revunet3d', 'unet'\]"
    with pytest.raises(ValueError, match=r"unknown head 'psp'; available: " + heads):
        create_head("psp", [8, 8, 8, 8], [4, 8, 16, 32], 2)


def test_lightm_unet_as_backbone_plus_head_is_the_release():
    model = create_model("seg", backbone="lightm", head="lightm", num_classes=2)
    assert sum(p.numel() for p in model.parameters()) == 5_011_765  # reference/models.md: released 2D network
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 30, 44)).shape == (1, 2, 30, 44)
