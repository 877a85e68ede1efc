import pytest
import torch

from densekit.models import LRASPPHead, create_head

CH, RED = [16, 24, 40, 64], [4, 8, 16, 32]


def _feats(b=2, h=64, w=96):
    return [torch.rand(b, c, h // r, w // r) for c, r in zip(CH, RED)]


def test_lraspp_output_at_stride_8():
    head = create_head("lraspp", CH, RED, out_channels=7)
    out = head(_feats())
    assert tuple(out.shape) == (2, 7, 8, 12)
    assert head.output_reduction == 8


def test_lraspp_paper_pooling_gives_a_gate_grid():
    head = LRASPPHead(CH, RED, 3, pool={"kernel": [2, 2], "stride": [1, 2]}).eval()
    feats = _feats(1, 128, 128)
    assert tuple(head(feats).shape) == (1, 3, 16, 16)
    # the gate varies over space, unlike global pooling
    gate = head.scale(feats[-1])
    assert gate.shape[-2:] != (1, 1)


def test_lraspp_equals_its_definition():
    torch.manual_seed(0)
    head = LRASPPHead(CH, RED, 4, inter_channels=8).eval()
    feats = _feats(1, 64, 64)
    low, high = feats[1], feats[3]
    with torch.no_grad():
        x = head.cbr(high) * torch.sigmoid(head.scale[1](high.mean((2, 3), keepdim=True)))
        x = torch.nn.functional.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        ref = head.low_classifier(low) + head.high_classifier(x)
        torch.testing.assert_close(head(feats), ref)


def test_lraspp_needs_a_stride_8_level():
    with pytest.raises(ValueError, match=r"reduction 8; the backbone provides \[4, 16, 32\]"):
        LRASPPHead([8, 8, 8], [4, 16, 32], 3)


def test_lraspp_bad_pool():
    with pytest.raises(ValueError, match="lraspp pool must be"):
        LRASPPHead(CH, RED, 3, pool="max")


def test_lraspp_paper_pooling_grid_at_cityscapes_size():
    head = LRASPPHead(CH, RED, 3, pool={"kernel": [49, 49], "stride": [16, 20]}).eval()
    high = torch.rand(1, CH[-1], 64, 128)  # 1024x2048 at output stride 16
    assert head.scale[0](high).shape[-2:] == (1, 4)  # the paper's 1x4 grid of gates
    crop = torch.rand(1, CH[-1], 49, 49)  # 769-px training crop: one global gate
    torch.testing.assert_close(head.scale[0](crop), crop.mean((2, 3), keepdim=True))
    small = torch.rand(1, CH[-1], 3, 5)  # smaller than the window: global pooling, no error
    torch.testing.assert_close(head.scale[0](small), small.mean((2, 3), keepdim=True))
