"""densekit.models.wrappers: flip/scale TTA, flow TTA and sliding windows give the numbers they promise."""

import pytest
import torch
from torch import nn

from densekit.models.wrappers import FlipTTA, FlowTTA, SlidingWindow


class Identity(nn.Module):
    def forward(self, x):
        return x


class Pointwise(nn.Module):
    """Output at a pixel depends only on that pixel: any window or flip reproduces it exactly."""

    def forward(self, x):
        return torch.cat([x[:, :1] * 2.0, -x[:, :1]], dim=1)


class ConstantFlow(nn.Module):
    """Predicts the same flow (u, v) everywhere: a horizontally symmetric model for u = 0 only."""

    def __init__(self, u: float, v: float):
        super().__init__()
        self.uv = torch.tensor([u, v])

    def forward(self, a, b):
        return self.uv.view(1, 2, 1, 1).expand(a.shape[0], 2, *a.shape[-2:]).clone()


def test_identity_under_flip_and_scale_tta_gives_the_input_back():
    x = torch.rand(2, 3, 16, 24)
    torch.testing.assert_close(FlipTTA(Identity(), flips=((-1,),))(x), x)
    torch.testing.assert_close(FlipTTA(Identity(), flips=((-1,), (-2,)))(x), x)
    # one scale of 1.0, no flip: the model's own output, the same tensor values bit for bit
    assert torch.equal(FlipTTA(Identity())(x), x)
    # scales: resized down and back up is a low-pass copy; a constant image survives exactly
    const = torch.full((1, 3, 16, 24), 0.25)
    torch.testing.assert_close(FlipTTA(Identity(), scales=(0.5, 1.0, 1.5))(const), const)
    vol = torch.rand(1, 2, 6, 8, 10)
    torch.testing.assert_close(FlipTTA(Identity(), flips=((-3,), (-2,), (-1,)))(vol), vol)


def test_probability_tta_returns_logits_of_the_mean_probability():
    x = torch.rand(1, 3, 16, 16)
    out = FlipTTA(Pointwise(), flips=((-1,),), probabilities=True)(x)
    torch.testing.assert_close(out.softmax(1), Pointwise()(x).softmax(1))  # pointwise: flip changes nothing
    ms = FlipTTA(Pointwise(), scales=(0.5, 1.0), probabilities=True)(x)
    assert ms.shape == (1, 2, 16, 16)
    torch.testing.assert_close(ms.exp().sum(1), torch.ones(1, 16, 16))

    # a horizontally asymmetric model: the flip view is the mirrored prediction, averaged with the plain one
    class Ramp(nn.Module):  # x times a left-to-right ramp 0..1: its mirror is the reversed ramp
        def forward(self, x):
            return x * torch.linspace(0, 1, x.shape[-1])

    ones = torch.ones(1, 2, 4, 8)
    torch.testing.assert_close(FlipTTA(Ramp(), flips=((-1,),))(ones), torch.full_like(ones, 0.5))


def test_translation_equivariant_conv_under_the_sliding_window_equals_the_whole_image_inside():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, kernel_size=5, padding=2).eval()  # zero padding, receptive radius 2 px
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        whole = conv(x)
        assert torch.equal(SlidingWindow(conv, (48, 48))(x), whole)  # fits one window: run whole
        # windows of 24 px every 8 px start at 0, 8, 16 on each axis (the last flush with the border). A pixel
        # in [18, 22) is >= 2 px from every covering window's inner edges (16 + 2 <= x < 24 - 2), so every
        # window sees its 5 x 5 neighbourhood as the whole image does: the average is the whole-image value
        out = SlidingWindow(conv, (24, 24), stride=(8, 8))(x)
        assert out.shape == whole.shape
        inner = (slice(None), slice(None), slice(18, 22), slice(18, 22))
        torch.testing.assert_close(out[inner], whole[inner])
        assert not torch.allclose(out, whole)  # near the windows' inner edges zero padding differs
        # a pointwise model (radius 0) is reproduced everywhere, whatever the windows
        for roi, stride in [((16, 16), (8, 8)), ((20, 30), (20, 30)), ((64, 64), (32, 32))]:
            torch.testing.assert_close(SlidingWindow(Pointwise(), roi, stride=stride)(x), Pointwise()(x))


def test_sliding_window_3d_and_shape_checks():
    conv = nn.Conv3d(2, 3, kernel_size=3, padding=1).eval()
    vol = torch.rand(1, 2, 20, 20, 20)
    with torch.no_grad():
        whole = conv(vol)
        assert torch.equal(SlidingWindow(conv, (24, 24, 24))(vol), whole)  # fits: run whole
        out = SlidingWindow(conv, (12, 12, 12), overlap=0.5, mode="constant")(vol)
    assert out.shape == whole.shape
    # voxels well inside: every covering window sees their 3 x 3 x 3 neighbourhood
    torch.testing.assert_close(out[..., 9:11, 9:11, 9:11], whole[..., 9:11, 9:11, 9:11], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="a 3D window"):
        SlidingWindow(conv, (8, 8, 8))(torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="roi_size"):
        SlidingWindow(conv, (8,))


def test_flow_tta_of_a_constant_flow_model_returns_that_flow():
    a, b = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)
    zero_u = ConstantFlow(0.0, 1.5)
    torch.testing.assert_close(FlowTTA(zero_u, flip=True)(a, b), zero_u(a, b))
    # u != 0 is mirrored to -u: a constant rightward flow is not flip-symmetric, the average is u = 0
    right = ConstantFlow(2.0, 1.5)
    torch.testing.assert_close(FlowTTA(right, flip=True)(a, b)[:, 0], torch.zeros(2, 32, 48))
    torch.testing.assert_close(FlowTTA(right, flip=True)(a, b)[:, 1], torch.full((2, 32, 48), 1.5))
    # at half scale the model sees frames half the size; its (pixel) flow is doubled back to the input size
    half = FlowTTA(right, scales=(0.5,))(a, b)
    assert half.shape == (2, 2, 32, 48)
    torch.testing.assert_close(half[:, 0], torch.full((2, 32, 48), 4.0))
    torch.testing.assert_close(half[:, 1], torch.full((2, 32, 48), 3.0))
    assert torch.equal(FlowTTA(right)(a, b), right(a, b))  # nothing to do: the model's own output
    with pytest.raises(ValueError, match="scales"):
        FlowTTA(right, scales=())
