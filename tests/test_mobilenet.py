"""MobileNetV3-Large + LR-ASPP against torchvision's lraspp_mobilenet_v3_large (the reference)."""

import pytest
import torch
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

from densekit import create_backbone, create_model


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    tv = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    # non-trivial BN statistics, so that a mis-mapped BN would show
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return tv.eval()


def _ours_from(tv):
    model = create_model(
        "seg", backbone={"name": "mobilenetv3_large", "dilated": True}, head="lraspp", num_classes=21
    ).eval()
    state = {}
    for key, value in tv.state_dict().items():
        if key.startswith("backbone."):
            state["backbone.features." + key[len("backbone.") :]] = value
        else:
            state["head." + key[len("classifier.") :]] = value
    model.load_state_dict(state, strict=True)
    return model


def test_parameter_count_equals_torchvision(reference):
    model = _ours_from(reference)
    assert sum(p.numel() for p in model.parameters()) == 3_221_538 == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("size", [(96, 128), (160, 96)])
def test_outputs_match_torchvision(reference, size):
    model = _ours_from(reference)
    x = torch.rand(2, 3, *size)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = reference((x - mean) / std)["out"]  # torchvision takes normalised input; our backbone normalises
        ours = model(x)
    assert ours.shape == ref.shape == (2, 21, *size)
    assert (ours - ref).abs().max().item() <= 1e-5


def test_contract_and_taps():
    bb = create_backbone("mobilenetv3_large")
    assert bb.channels == [24, 40, 80, 960] and bb.reductions == [4, 8, 16, 32]
    dil = create_backbone("mobilenetv3_large", dilated=True)
    assert dil.reductions == [4, 8, 16, 16]
    last = create_backbone("mobilenetv3_large", taps="last")
    assert last.channels == [24, 40, 112, 960]
    x = torch.rand(1, 3, 70, 90)
    model = create_model("seg", backbone="mobilenetv3_large", head="lraspp", num_classes=3).eval()
    with torch.no_grad():
        assert model(x).shape == (1, 3, 70, 90)


def test_loads_torchvision_segmentation_checkpoint(reference, tmp_path):
    path = tmp_path / "lraspp_mobilenet_v3_large.pth"
    torch.save(reference.state_dict(), path)  # backbone.* + classifier.* as torchvision saves it
    bb = create_backbone("mobilenetv3_large", pretrained=str(path), dilated=True).eval()
    tv_feats = reference.backbone
    x = torch.rand(1, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = tv_feats((x - mean) / std)["high"]
        assert (bb(x)[-1] - ref).abs().max().item() <= 1e-6


def test_bad_variant_and_taps():
    with pytest.raises(ValueError, match="variant must be one of"):
        create_backbone("mobilenetv3_large", variant="huge")
    with pytest.raises(ValueError, match="taps must be"):
        create_backbone("mobilenetv3_large", taps="middle")
