"""MobileSAM image encoder (TinyViT-5M @1024 + neck): contract, official names, parity, checkpoint loading."""

import logging
import math
import re
import zlib
from pathlib import Path

import pytest
import torch

from densekit import create_model
from densekit.models import backbones as bb_mod
from densekit.models.mobilesam import SAM_PIXEL_MEAN, SAM_PIXEL_STD, MobileSAMEncoder, relative_bias_index

FIXTURE = Path(__file__).parent / "fixtures" / "mobilesam_reference.pt"


def seeded_weights(state: dict, seed: int = 0) -> dict:
    """The deterministic weights both the official encoder and ours get (the parity recipe).

    Each tensor is drawn from its own generator seeded by ``seed * 1_000_003 + crc32(name)``, so the values
    depend only on the parameter's name and shape, never on state-dict order (the official state dict also
    holds the unused norm_head/head, ours does not):
      running_var -> U(0.5, 1.5); attention_biases -> N(0, 1) (large, so a mis-indexed bias shows);
      1-D ``*.weight`` (BN/LN scales) -> 1 + 0.1 N(0, 1); other 1-D (biases, running_mean) -> 0.1 N(0, 1);
      conv/linear weights -> N(0, 1) / sqrt(fan_in); integer tensors (num_batches_tracked) kept.
    The fixture was made by applying this to ``TinyViT(...)`` of ChaoningZhang/MobileSAM@34bbbfd
    (``tiny_vit_sam.py``, the ``build_sam_vit_t`` arguments), then ``.eval()``, and running it on
    ``Sam.preprocess`` of 255 * the input below; stage taps are the outputs of ``layers[i].blocks[-1]``.
    """
    out = {}
    for name, t in state.items():
        if not t.is_floating_point():
            out[name] = t.clone()
            continue
        g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        if name.endswith("running_var"):
            v = torch.rand(t.shape, generator=g) + 0.5
        elif name.endswith("attention_biases"):
            v = torch.randn(t.shape, generator=g)
        elif t.dim() == 1 and name.endswith("weight"):
            v = 1 + 0.1 * torch.randn(t.shape, generator=g)
        elif t.dim() == 1:
            v = 0.1 * torch.randn(t.shape, generator=g)
        else:
            v = torch.randn(t.shape, generator=g) / math.sqrt(t[0].numel())
        out[name] = v
    return out


@pytest.fixture(scope="module")
def model():
    m = MobileSAMEncoder()
    m.load_state_dict(seeded_weights(m.state_dict()), strict=True)
    return m.eval()


@pytest.fixture(scope="module")
def sam_file(model, tmp_path_factory):
    """A full SAM-format state dict as mobile_sam.pt holds it: image_encoder.* (incl. the unused TinyViT
    classifier), prompt_encoder.*, mask_decoder.*."""
    state = {f"image_encoder.{k}": v for k, v in model.state_dict().items()}
    state["image_encoder.norm_head.weight"] = torch.ones(320)
    state["image_encoder.norm_head.bias"] = torch.zeros(320)
    state["image_encoder.head.weight"] = torch.zeros(1000, 320)
    state["image_encoder.head.bias"] = torch.zeros(1000)
    state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.randn(2, 128)
    state["mask_decoder.iou_token.weight"] = torch.randn(1, 256)
    path = tmp_path_factory.mktemp("sam") / "mobile_sam.pt"
    torch.save(state, path)
    return path


# --- contract -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(128, 128), (96, 160), (50, 70)])  # none a multiple of the 7/14 windows
def test_contract_shapes(model, size):
    assert model.channels == [64, 128, 160, 256]
    assert model.reductions == [4, 8, 16, 16]
    assert model.stride == 16
    # SAM's 0-255 pixel mean/std divided by 255 (they equal the ImageNet statistics)
    assert SAM_PIXEL_MEAN == (123.675, 116.28, 103.53) and SAM_PIXEL_STD == (58.395, 57.12, 57.375)
    torch.testing.assert_close(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]), rtol=0, atol=1e-7)
    torch.testing.assert_close(model.std.flatten(), torch.tensor([0.229, 0.224, 0.225]), rtol=0, atol=1e-7)
    with torch.no_grad():
        feats = model(torch.rand(1, 3, *size))
    assert len(feats) == 4
    for f, c, r in zip(feats, model.channels, model.reductions):
        # stride-2 convs with padding 1 round up: ceil(ceil(H/2)/2) = ceil(H/4), ...
        assert tuple(f.shape) == (1, c, math.ceil(size[0] / r), math.ceil(size[1] / r))
        assert torch.isfinite(f).all()


def test_in_a_seg_model_with_padding(model):
    # heads take the low level by reduction (8 -> stage 1) and the last entry (the neck) as the deepest
    seg = create_model("seg", backbone=model, head="lraspp", num_classes=3).eval()
    assert seg.head.low_index == 1 and seg.head.high_index == 3
    with torch.no_grad():
        assert tuple(seg(torch.rand(1, 3, 40, 57)).shape) == (1, 3, 40, 57)  # padded to 48x64, cropped back


def test_levels_option_and_validation():
    m = MobileSAMEncoder(levels=["stage1", "stage3", "neck"])
    assert m.channels == [128, 320, 256] and m.reductions == [8, 16, 16]
    with torch.no_grad():
        shapes = [tuple(f.shape) for f in m.eval()(torch.rand(1, 3, 32, 48))]
    assert shapes == [(1, 128, 4, 6), (1, 320, 2, 3), (1, 256, 2, 3)]
    with pytest.raises(ValueError, match=r"levels must be distinct names from .* got \['neck', 'stage0'\]"):
        MobileSAMEncoder(levels=["neck", "stage0"])
    with pytest.raises(ValueError, match=r"got \[\]"):
        MobileSAMEncoder(levels=[])


def test_train_mode_gradients_reach_every_parameter():
    torch.manual_seed(0)
    m = MobileSAMEncoder(drop_path_rate=0.1).train()
    assert m.layers[3].blocks[1].drop_path.drop_prob == pytest.approx(0.1)  # linear rule: last block 0.1
    assert isinstance(m.layers[0].blocks[0].drop_path, torch.nn.Identity)  # first block: 0
    sum(f.square().mean() for f in m(torch.rand(2, 3, 32, 16))).backward()
    no_grad = [k for k, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []
    assert m.layers[2].blocks[0].attn.attention_biases.grad.abs().sum() > 0


def test_rejects_wrong_channel_count(model):
    with pytest.raises(ValueError, match=r"expects images \(B, 3, H, W\).*got shape \(1, 1, 32, 32\)"):
        model(torch.rand(1, 1, 32, 32))


def test_parameter_count_matches_reference(model):
    # reference/models.md 2.3 [calc]: image_encoder state dict 6,065,532 minus the unused classifier
    # (norm_head 640 + head 321,000 = 321,640) = 5,743,892; by part: patch_embed 19,488, layer0 72,448,
    # merges 26,496 + 48,480 + 158,400, layer1 399,752, layer2 1,872,120, layer3 2,473,940, neck 672,768.
    assert sum(p.numel() for p in model.parameters()) == 5_743_892 == 6_065_532 - 321_640
    parts = {
        "patch_embed.": 19_488,
        "layers.0.blocks.": 72_448,
        "layers.0.downsample.": 26_496,
        "layers.1.downsample.": 48_480,
        "layers.2.downsample.": 158_400,
        "layers.1.blocks.": 399_752,
        "layers.2.blocks.": 1_872_120,
        "layers.3.blocks.": 2_473_940,
        "neck.": 672_768,
    }
    for prefix, n in parts.items():
        assert sum(p.numel() for k, p in model.named_parameters() if k.startswith(prefix)) == n, prefix


def test_official_key_names_and_shapes(model):
    # The official image_encoder state dict has 302 entries; ours is the same minus norm_head/head (4).
    state = model.state_dict()
    assert len(state) == 298
    expected = {
        "patch_embed.seq.0.c.weight": (32, 3, 3, 3),
        "patch_embed.seq.2.bn.running_var": (64,),
        "layers.0.blocks.1.conv2.c.weight": (256, 1, 3, 3),
        "layers.0.downsample.conv2.c.weight": (128, 1, 3, 3),
        "layers.1.blocks.0.attn.attention_biases": (4, 49),
        "layers.2.blocks.5.attn.attention_biases": (5, 196),
        "layers.2.downsample.conv2.c.weight": (320, 1, 3, 3),
        "layers.3.blocks.1.attn.qkv.weight": (960, 320),
        "layers.3.blocks.1.local_conv.bn.num_batches_tracked": (),
        "layers.3.blocks.1.mlp.fc1.weight": (1280, 320),
        "neck.0.weight": (256, 320, 1, 1),
        "neck.2.weight": (256, 256, 3, 3),
        "neck.3.bias": (256,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any("attention_bias_idxs" in k for k in state)  # non-persistent, as officially
    assert model.layers[2].downsample.conv2.c.stride == (1, 1)  # stride-1 last merge: deepest level at /16
    assert model.layers[1].downsample.conv2.c.stride == (2, 2)


def test_relative_bias_index_hand_computed():
    idx = relative_bias_index(3)  # positions numbered row-major: (r, c) -> 3r + c
    assert idx.shape == (9, 9)
    assert idx[0, 7].item() == 7 == idx[7, 0].item()  # (0,0)-(2,1): |dy|=2, |dx|=1 -> 2*3+1
    assert idx[5, 6].item() == 5  # (1,2)-(2,0): |dy|=1, |dx|=2 -> 1*3+2
    assert idx[4, 4].item() == 0 and idx.unique().numel() == 9


# --- parity with the official encoder -------------------------------------------------------------------


def test_matches_official_encoder_at_1024(model):
    """Stored values of the official encoder's neck (and stage taps) vs ours under the same weights/input.
    Measured when the fixture was made: max abs diff over the whole neck output 8.0e-6 (stage taps
    <= 1.6e-5)."""
    ref = torch.load(FIXTURE, weights_only=True)
    x = torch.rand(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))  # [0, 1]; we normalise
    with torch.no_grad():
        feats = model(x)
    assert tuple(feats[-1].shape) == (1, 256, 64, 64)
    for name, f in zip(["stage0", "stage1", "stage2", "neck"], feats):
        f = f[0]
        values = f.flatten()[ref[f"{name}_index"].long()]
        assert (values - ref[f"{name}_values"]).abs().max().item() <= 1e-4, name
        assert (f.mean((1, 2)) - ref[f"{name}_channel_mean"]).abs().max().item() <= 1e-4, name
        assert (f.std((1, 2)) - ref[f"{name}_channel_std"]).abs().max().item() <= 1e-4, name
    # not a trivial reference: 500 values of order 1
    assert ref["neck_values"].numel() == 500 and ref["neck_values"].abs().max() > 1.0


# --- loading checkpoints ---------------------------------------------------------------------------------


def test_loads_sam_checkpoint_and_reports_dropped_parts(model, sam_file, caplog):
    with caplog.at_level(logging.INFO, logger="densekit.models.mobilesam"):
        loaded = MobileSAMEncoder(pretrained=str(sam_file)).eval()
    text = caplog.text
    assert "head.bias, head.weight, norm_head.bias, norm_head.weight" in text
    assert "ignoring non-encoder parts mask_decoder, prompt_encoder" in text
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(model(x), loaded(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_loads_encoder_only_file(model, tmp_path):
    path = tmp_path / "encoder.pth"
    torch.save(model.state_dict(), path)  # our (= official, unprefixed) names
    loaded = MobileSAMEncoder(pretrained=str(path)).eval()
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[-1], loaded(x)[-1], rtol=0, atol=0)


def test_strict_load_lists_keys(sam_file, tmp_path):
    state = torch.load(sam_file, weights_only=True)
    state.pop("image_encoder.neck.3.bias")
    state["image_encoder.layers.9.bogus.weight"] = torch.zeros(1)
    state["image_encoder.layers.1.blocks.0.attn.attention_biases"] = torch.zeros(4, 64)  # an 8x8-window model
    path = tmp_path / "bad_sam.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        MobileSAMEncoder(pretrained=str(path))
    text = str(err.value)
    assert f"weight file {path} does not match mobilesam" in text
    assert "missing keys (1): neck.3.bias" in text
    assert "unexpected keys (1): layers.9.bogus.weight" in text
    assert "layers.1.blocks.0.attn.attention_biases: file (4, 64) vs model (4, 49)" in text


def test_checkpoint_of_another_architecture(tmp_path):
    # SAM ViT-B style image encoder: none of its keys exist in TinyViT
    vit = {
        "image_encoder.pos_embed": torch.zeros(1, 64, 64, 768),
        "image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16),
        "image_encoder.blocks.0.attn.qkv.weight": torch.zeros(2304, 768),
        "mask_decoder.iou_token.weight": torch.zeros(1, 256),
    }
    path = tmp_path / "sam_vit_b.pth"
    torch.save(vit, path)
    want = re.escape(f"weight file {path} holds an image encoder of another architecture: none of its 3 ")
    with pytest.raises(ValueError, match=want):
        MobileSAMEncoder(pretrained=str(path))
    # a classification trunk with no image_encoder keys at all
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, path)
    want = re.escape(f"weight file {path} is not a MobileSAM checkpoint: expected 'image_encoder.*' keys")
    with pytest.raises(ValueError, match=want + r".* found 2 keys: conv1\.weight, fc\.weight"):
        MobileSAMEncoder(pretrained=str(path))


def test_truncated_and_missing_files(sam_file, tmp_path):
    data = sam_file.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(f"could not read weight file {path}")):
        MobileSAMEncoder(pretrained=str(path))
    with pytest.raises(FileNotFoundError, match="weight file not found"):
        MobileSAMEncoder(pretrained=str(tmp_path / "nope.pt"))


def test_pretrained_true_and_auto_say_there_is_no_hub_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"'mobilesam \(no hub copy.*pretrained=/path/to/mobile_sam.pt"):
        MobileSAMEncoder(pretrained=True)
    monkeypatch.setattr(bb_mod, "_warned_tags", set())
    with pytest.warns(UserWarning, match=r"mobilesam \(no hub copy.*RANDOM initialisation"):
        m = MobileSAMEncoder(pretrained="auto")
    assert m.channels == [64, 128, 160, 256]
