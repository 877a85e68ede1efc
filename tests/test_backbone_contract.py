"""The backbone contract, for every registered 2D backbone: channels/reductions/list of features at two
input sizes (one not a multiple of 32), finite outputs and gradients."""

import pytest
import torch

from densekit import create_backbone
from densekit.models import BACKBONES, pad_to_multiple

# lightm: same checks at smaller sizes in test_lightm.py (a full-resolution Mamba layer is slow on this CPU)
NAMES_2D = sorted(n for n in BACKBONES.names(dims=2) if not n.startswith("lightm"))


@pytest.mark.parametrize("name", NAMES_2D)
def test_contract_every_backbone(name):
    torch.manual_seed(0)
    bb = create_backbone(name, pretrained=False)
    assert len(bb.channels) == len(bb.reductions) >= 3
    assert bb.reductions == sorted(bb.reductions) and bb.stride == max(bb.reductions)
    for size in [(64, 64), (50, 70)]:
        x, _ = pad_to_multiple(torch.rand(2, 3, *size), bb.stride)
        feats = bb.train()(x)
        assert len(feats) == len(bb.channels)
        for f, c, r in zip(feats, bb.channels, bb.reductions):
            assert tuple(f.shape) == (2, c, x.shape[2] // r, x.shape[3] // r), (name, size)
            assert torch.isfinite(f).all()
    sum(f.float().pow(2).mean() for f in feats).backward()
    grads = [p.grad for p in bb.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
