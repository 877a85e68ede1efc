import pytest
import torch

from densekit.models import DenseModel
from densekit.models.lightm import LightMDecoder, LightMEncoder, LightMUNet, release_key_filter

CHANNELS, REDUCTIONS = [32, 64, 128, 256], [1, 2, 4, 8]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    yield


@pytest.fixture(scope="module")
def enc2d():
    torch.manual_seed(0)
    return LightMEncoder(dims=2, in_channels=3).eval()


@pytest.fixture(scope="module")
def net2d():
    torch.manual_seed(0)
    return LightMUNet(dims=2, in_channels=3, num_classes=2).eval()


# A reduced configuration (3 levels, 16/32/64 channels, 8 Mamba layers instead of 21) for the tests
# that run the whole network: the time of a CPU forward here is dominated by the number of ops.
SMALL = {"init_filters": 16, "blocks_down": (1, 1, 1), "blocks_up": (1, 1), "num_groups": 4}


@pytest.fixture(scope="module")
def small2d():
    torch.manual_seed(0)
    return LightMUNet(dims=2, in_channels=3, num_classes=2, **SMALL).eval()


@pytest.mark.parametrize("size", [(32, 32), (30, 44)])  # the second is not a multiple of the stride 8
def test_encoder_contract_2d(enc2d, size):
    assert enc2d.channels == CHANNELS and enc2d.reductions == REDUCTIONS and enc2d.stride == 8
    torch.testing.assert_close(enc2d.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(enc2d.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    with torch.no_grad():
        feats = enc2d(torch.rand(2, 3, *size))
    assert len(feats) == 4
    for f, c, r in zip(feats, CHANNELS, REDUCTIONS):  # max-pooling floors odd sizes
        assert tuple(f.shape) == (2, c, size[0] // r, size[1] // r)
        assert torch.isfinite(f).all()


def test_encoder_contract_3d():
    torch.manual_seed(0)
    enc = LightMEncoder(dims=3, in_channels=4).eval()
    assert enc.channels == CHANNELS and enc.reductions == REDUCTIONS
    x = torch.randn(1, 4, 8, 8, 16)
    with torch.no_grad():
        feats = enc(x)
    for f, c, r in zip(feats, CHANNELS, REDUCTIONS):
        assert tuple(f.shape) == (1, c, 8 // r, 8 // r, 16 // r)
    # volumes are taken as already z-scored: the stem sees the input unchanged
    assert enc.normalize(x) is x


def test_full_model_2d_output_at_input_size(net2d):
    with torch.no_grad():
        out = net2d(torch.rand(1, 3, 27, 41))  # padded to 32 x 48, cropped back
    assert tuple(out.shape) == (1, 2, 27, 41) and torch.isfinite(out).all()


def test_full_model_2d_padding_is_crop_consistent(small2d):
    # the input is padded at the bottom/right only: a padded copy of the input gives the same logits
    x = torch.rand(1, 3, 13, 18)
    padded = torch.nn.functional.pad(x, (0, 2, 0, 3), mode="replicate")  # 16 x 20: multiples of 4
    with torch.no_grad():
        out = small2d(x)
        direct = small2d.decoder(small2d.encoder(padded))
    assert small2d.encoder.stride == 4 and tuple(out.shape) == (1, 2, 13, 18)
    torch.testing.assert_close(out, direct[..., :13, :18], rtol=0, atol=0)


def test_decoder_as_2d_head_reproduces_full_model(small2d):
    # backbone=lightm + head=lightm through the generic DenseModel is the released network
    head = LightMDecoder(small2d.encoder.channels, small2d.encoder.reductions, 2, blocks_up=(1, 1), num_groups=4)
    head.load_state_dict(small2d.decoder.state_dict())
    assert head.output_reduction == 1
    model = DenseModel(small2d.encoder, head, 2).eval()
    x = torch.rand(1, 3, 13, 18)
    with torch.no_grad():
        torch.testing.assert_close(model(x), small2d(x), rtol=0, atol=1e-6)


def test_full_model_3d_forward_backward():
    torch.manual_seed(0)
    net = LightMUNet(dims=3, in_channels=4, num_classes=3, **SMALL)
    x = torch.randn(1, 4, 9, 8, 6)  # depth 9 and width 6: padded to 12 and 8, cropped back
    out = net(x)
    assert tuple(out.shape) == (1, 3, 9, 8, 6)
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in net.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, zero


def test_full_model_2d_backward():
    torch.manual_seed(0)
    net = LightMUNet(dims=2, in_channels=3, num_classes=2, **SMALL)
    out = net(torch.rand(2, 3, 12, 12))
    torch.nn.functional.cross_entropy(out, torch.randint(0, 2, (2, 12, 12))).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_released_parameter_counts():
    # released 2D configuration: nnUNetTrainerLightMUNet on Montgomery&Shenzhen (3 input channels R,G,B;
    # 2 classes), init_filters 32, blocks (1,2,2,4)/(1,1,1), Mamba d_state 16, d_conv 4, expand 2.
    # The release counts 5,011,765 (reference/models.md 3.3, checked against the official code);
    # issue #30 of MrBlankness/LightM-UNet quotes "5.01 M".
    n2d = sum(p.numel() for p in LightMUNet(dims=2, in_channels=3, num_classes=2).parameters())
    assert n2d == 5_011_765
    assert abs(n2d - 5.01e6) / 5.01e6 < 0.01
    n3d = sum(p.numel() for p in LightMUNet(dims=3, in_channels=1, num_classes=3).parameters())
    assert n3d == 5_015_766  # 3D LiTS configuration (1 channel, 3 classes)


# Key names and shapes of the released network (2D, 3 -> 2), read from the official model's state dict.
RELEASE_KEYS = {
    "convInit.0.conv.weight": (3, 1, 3, 3),
    "convInit.1.conv.weight": (32, 3, 1, 1),
    "down_layers.0.1.conv1.skip_scale": (1,),
    "down_layers.1.0.0.mamba.in_proj.weight": (128, 32),
    "down_layers.1.0.0.proj.weight": (64, 32),
    "down_layers.1.0.0.norm.weight": (32,),
    "down_layers.3.4.conv2.mamba.A_log": (512, 16),
    "down_layers.3.4.conv2.mamba.x_proj.weight": (48, 512),
    "up_samples.0.0.conv.weight": (128, 256, 1, 1),
    "up_layers.2.0.conv.0.conv.weight": (32, 1, 3, 3),
    "up_layers.2.0.skip_scale": (1,),
    "conv_final.0.weight": (32,),
    "conv_final.2.0.conv.weight": (32, 1, 1, 1),
    "conv_final.2.0.conv.bias": (32,),
    "conv_final.2.1.conv.weight": (2, 32, 1, 1),
    "conv_final.2.1.conv.bias": (2,),
}
RELEASE_KEY_COUNTS = {"down_layers": 330, "up_layers": 21, "conv_final": 6, "up_samples": 3, "convInit": 2}


def _to_release(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        k = k.replace("encoder.stem.", "convInit.").replace("encoder.stages.", "down_layers.")
        out[k.removeprefix("decoder.")] = v
    return out


def test_release_key_names_load(net2d, tmp_path):
    release = _to_release(net2d.state_dict())
    for key, shape in RELEASE_KEYS.items():
        assert tuple(release[key].shape) == shape, key
    counts = {}
    for k in release:
        counts[k.split(".")[0]] = counts.get(k.split(".")[0], 0) + 1
    assert counts == RELEASE_KEY_COUNTS
    assert set(release_key_filter(release, net2d)) == set(net2d.state_dict())
    path = tmp_path / "release.pth"
    torch.save(release, path)
    torch.manual_seed(1)
    loaded = LightMUNet(dims=2, in_channels=3, num_classes=2, pretrained=str(path))
    enc = LightMEncoder(dims=2, in_channels=3, pretrained=str(path))  # decoder keys dropped
    for model, want in ((loaded, net2d.state_dict()), (enc, net2d.encoder.state_dict())):
        got = model.state_dict()
        assert set(got) == set(want)
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_strict_load_lists_bad_keys(net2d, tmp_path):
    release = _to_release(net2d.state_dict())
    release.pop("convInit.0.conv.weight")
    path = tmp_path / "bad.pth"
    torch.save(release, path)
    with pytest.raises(ValueError, match=r"missing keys \(1\): encoder.stem.0.conv.weight"):
        LightMUNet(dims=2, in_channels=3, num_classes=2, pretrained=str(path))


def test_pretrained_options():
    with pytest.raises(ValueError, match="no published pretrained weights"):
        LightMEncoder(dims=2, pretrained=True)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        LightMEncoder(dims=3, in_channels=4, pretrained="/nonexistent/nope.pth")
    LightMEncoder(dims=2, pretrained="auto")  # nothing published: random init, no error


def _never_called(module):
    def hook(*_):
        raise AssertionError("the stem ran before the input was checked")

    return module.register_forward_pre_hook(hook)


def test_dims_mismatch_errors_before_any_work(enc2d):
    enc3d = LightMEncoder(dims=3, in_channels=4)
    net3d = LightMUNet(dims=3, in_channels=4, num_classes=3)
    handles = [_never_called(m.stem) for m in (enc2d, enc3d, net3d.encoder)]
    try:
        with pytest.raises(ValueError, match=r"dims=2\) expects \(B, C, H, W\).*5-D.*use lightm3d"):
            enc2d(torch.rand(1, 3, 8, 8, 8))
        with pytest.raises(ValueError, match=r"dims=3\) expects \(B, C, D, H, W\).*4-D.*use lightm \(dims=2\)"):
            enc3d(torch.rand(1, 4, 8, 8))
        with pytest.raises(ValueError, match=r"dims=3\).*4-D"):
            net3d(torch.rand(1, 4, 8, 8))
        with pytest.raises(ValueError, match=r"C=4, got shape \(1, 1, 8, 8, 8\)"):
            enc3d(torch.rand(1, 1, 8, 8, 8))
    finally:
        for h in handles:
            h.remove()


def test_bad_config_errors():
    with pytest.raises(ValueError, match="dims must be 2 .* or 3 .*got 4"):
        LightMEncoder(dims=4)
    with pytest.raises(ValueError, match=r"mean/std need 4 values"):
        LightMEncoder(dims=2, in_channels=4, mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"reductions must double, got \[4, 8, 16, 16\]"):
        LightMDecoder([64, 128, 256, 512], [4, 8, 16, 16], 2)


def test_dense_model_checkpoint_loads_into_full_model(small2d, tmp_path):
    # backbone=lightm head=lightm trained through DenseModel -> the standalone LightMUNet
    head = LightMDecoder(small2d.encoder.channels, small2d.encoder.reductions, 2, blocks_up=(1, 1), num_groups=4)
    dense = DenseModel(
        LightMEncoder(dims=2, in_channels=3, **{k: SMALL[k] for k in ("init_filters", "blocks_down", "num_groups")}),
        head,
        2,
    )
    path = tmp_path / "dense.pth"
    torch.save(dense.state_dict(), path)
    net = LightMUNet(dims=2, in_channels=3, num_classes=2, pretrained=str(path), **SMALL)
    want = {
        ("encoder." + k[len("backbone.") :]) if k.startswith("backbone.") else "decoder." + k[len("head.") :]: v
        for k, v in dense.state_dict().items()
    }
    got = net.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_cpu_kernels_match_the_pytorch_path():
    # the compiled CPU path (token-major Mamba blocks, fused kernels, channels-last maps) against the
    # pure-PyTorch one, forward and gradients, on the reduced network in 2D and 3D; in float64, where
    # sums over a whole map (skip_scale's gradient) do not lose digits to their order
    from densekit import ops

    if ops._compiled() is None:
        pytest.skip("numba is not installed")
    for dims, size in ((2, (1, 3, 16, 12)), (3, (1, 4, 8, 8, 4))):
        torch.manual_seed(0)
        net = LightMUNet(dims=dims, in_channels=size[1], num_classes=2, **SMALL).double()
        x = torch.rand(*size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        out = {}
        for backend in ("compiled", "torch"):
            saved, ops._numba_mod = ops._numba_mod, (ops._compiled() if backend == "compiled" else False)
            try:
                net.zero_grad()
                y = net(x)
                y.square().mean().backward()
            finally:
                ops._numba_mod = saved
            out[backend] = (y.detach(), {n: p.grad.clone() for n, p in net.named_parameters()})
        torch.testing.assert_close(out["compiled"][0], out["torch"][0], rtol=1e-10, atol=1e-12)
        for name, g in out["torch"][1].items():
            rel = ((out["compiled"][1][name] - g).abs().max() / g.abs().max().clamp_min(1e-30)).item()
            assert rel <= 1e-9, (dims, name, rel)
