import warnings

import pytest
import torch

from densekit import create_backbone, create_model
from densekit.models import backbones as bb_mod
from densekit.models import pad_to_multiple

EXPECTED = {
    "mci0": [64, 128, 256, 512],
    "mci1": [64, 128, 256, 512],
    "mci2": [80, 160, 320, 640],
}


@pytest.fixture(scope="module")
def backbones():
    torch.manual_seed(0)
    return {name: create_backbone(name).eval() for name in EXPECTED}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("size", [(64, 64), (70, 100)])  # the second is not a multiple of 32
def test_backbone_contract(backbones, name, size):
    bb = backbones[name]
    assert bb.channels == EXPECTED[name]
    assert bb.reductions == [4, 8, 16, 32]
    assert torch.equal(bb.mean.flatten(), torch.zeros(3)) and torch.equal(bb.std.flatten(), torch.ones(3))
    x, _ = pad_to_multiple(torch.rand(2, 3, *size), bb.stride)
    with torch.no_grad():
        feats = bb(x)
    assert len(feats) == 4
    for f, c, r in zip(feats, bb.channels, bb.reductions):
        assert tuple(f.shape) == (2, c, x.shape[2] // r, x.shape[3] // r)
        assert torch.isfinite(f).all()


def test_mci2_trunk_parameter_count(backbones):
    # reference/models.md: the dense trunk (stem + stages 0-3) of MCi2 is 34.94 M un-fused
    n = sum(p.numel() for p in backbones["mci2"].parameters())
    assert abs(n - 34.94e6) / 34.94e6 < 0.002, n


@pytest.mark.parametrize("size", [(64, 64), (45, 77), (33, 100)])
def test_model_pads_and_crops_back(size):
    torch.manual_seed(0)
    model = create_model("seg", backbone="mci0", head="lraspp", num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    assert tuple(out.shape) == (1, 5, *size)


def test_backbone_rejects_wrong_channel_count(backbones):
    with pytest.raises(ValueError, match=r"expects images \(B, 3, H, W\).*got shape \(1, 4, 32, 32\)"):
        backbones["mci0"](torch.rand(1, 4, 32, 32))


def test_unknown_backbone_lists_options():
    with pytest.raises(ValueError) as err:
        create_backbone("mci9")
    text = str(err.value)
    assert text.startswith("unknown backbone 'mci9'; available: [")
    for name in ("mci0", "mci1", "mci2", "mobilenetv3_large", "mobilesam", "lightm", "lightm3d"):
        assert f"'{name}'" in text


# --- pretrained options -------------------------------------------------------------------------


def _outputs(bb, x):
    with torch.no_grad():
        return bb.eval()(x)


def test_local_file_round_trip(tmp_path):
    torch.manual_seed(1)
    src = create_backbone("mci0")
    x = torch.rand(1, 3, 64, 64)
    # timm key names (what a timm / converted MobileCLIP trunk file holds)
    timm_file = tmp_path / "trunk.pth"
    torch.save(src.model.state_dict(), timm_file)
    # a densekit backbone state dict ('model.' prefix), wrapped like a training checkpoint
    wrapped_file = tmp_path / "wrapped.pt"
    torch.save({"state_dict": src.state_dict()}, wrapped_file)
    torch.manual_seed(2)
    for path in (timm_file, wrapped_file):
        loaded = create_backbone("mci0", pretrained=str(path))
        for a, b in zip(_outputs(src, x), _outputs(loaded, x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_openclip_style_file_drops_head_keys(tmp_path):
    torch.manual_seed(1)
    src = create_backbone("mci0")
    state = {f"visual.trunk.{k}": v for k, v in src.model.state_dict().items()}
    state["visual.trunk.head.fc.weight"] = torch.zeros(512, 1024)  # CLIP projection: not part of the trunk
    state["visual.trunk.final_conv.conv_kxk.0.conv.weight"] = torch.zeros(1024, 1, 3, 3)
    state["text.token_embedding.weight"] = torch.zeros(10, 4)  # other tower: ignored
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(state, path)
    loaded = create_backbone("mci0", pretrained=str(path))
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(_outputs(src, x)[-1], _outputs(loaded, x)[-1], rtol=0, atol=0)


def test_strict_load_lists_missing_and_unexpected_keys(tmp_path):
    state = create_backbone("mci0").model.state_dict()
    state.pop("stem.0.conv_kxk.0.conv.weight")
    state["stages.9.bogus.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        create_backbone("mci0", pretrained=str(path))
    text = str(err.value)
    assert "missing keys (1): stem.0.conv_kxk.0.conv.weight" in text
    assert "unexpected keys (1): stages.9.bogus.weight" in text
    assert str(path) in text


def test_shape_mismatch_is_reported(tmp_path):
    torch.save(create_backbone("mci2").model.state_dict(), tmp_path / "mci2.pth")
    with pytest.raises(ValueError) as err:
        create_backbone("mci0", pretrained=str(tmp_path / "mci2.pth"))
    text = str(err.value)
    assert "does not match fastvit_mci0.apple_mclip" in text
    assert "shape mismatches: stages.0.blocks.0.layer_scale.gamma: file (80, 1, 1) vs model (64, 1, 1)" in text


def test_missing_file_is_a_one_line_error(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError) as err:
        create_backbone("mci0", pretrained=str(missing))
    assert str(err.value) == f"backbone.pretrained: weight file not found: {missing}"


def test_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "truncated.pt"
    path.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(ValueError, match="could not read weight file"):
        create_backbone("mci0", pretrained=str(path))


def test_auto_offline_warns_once_and_continues(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(bb_mod, "_warned_tags", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = create_backbone("mci0", pretrained="auto")
        b = create_backbone("mci0", pretrained="auto")
    msgs = [str(w.message) for w in caught if "pretrained=auto" in str(w.message)]
    assert len(msgs) == 1
    assert "timm tag fastvit_mci0.apple_mclip" in msgs[0] and "RANDOM" in msgs[0]
    assert "backbone.pretrained=/path/to/weights" in msgs[0]
    assert a.channels == b.channels == [64, 128, 256, 512]


def test_true_offline_raises(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"could not get pretrained weights for 'timm tag fastvit_mci0.apple_mclip'"):
        create_backbone("mci0", pretrained=True)


@pytest.mark.parametrize("name", ["mci0", "mobilenetv3_large"])
def test_freeze_options(name):
    def trainable(bb):
        return {n for n, p in bb.named_parameters() if p.requires_grad}

    full = create_backbone(name)
    assert trainable(full) == {n for n, _ in full.named_parameters()}
    assert trainable(create_backbone(name, freeze=True)) == set()
    bn = create_backbone(name, freeze="bn_only")
    names = trainable(bn)
    norm_biases = {
        f"{mn}.bias" for mn, m in bn.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and m.bias is not None
    }
    assert names == norm_biases and len(names) > 10
    with pytest.raises(ValueError, match="freeze must be false, true or bn_only"):
        create_backbone(name, freeze="top3")
