"""The backbone and head registries: every component registers itself where it is defined, with its facts;
unknown names list the valid ones; a name cannot be registered twice; ``assemble`` checks dims from the
facts; a new file in densekit/models registers itself (every module is imported by the package)."""

import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import densekit.models
from densekit.models import (
    BACKBONES,
    HEADS,
    DenseModel,
    DepthActivation,
    VolumeModel,
    assemble,
    create_backbone,
    create_head,
)
from densekit.models.backbones import TimmBackbone
from densekit.models.flow import CompactFlowNet
from densekit.models.lightm import LightMEncoder
from helpers import CONF


def _yaml_names(group: str) -> set[str]:
    return {yaml.safe_load(p.read_text())["name"] for p in (CONF / group).glob("*.yaml")}


def test_every_backbone_states_its_dims_and_preset():
    assert set(BACKBONES) >= {
        "mci0",
        "mci1",
        "mci2",
        "mobilenetv3_large",
        "mobilesam",
        "lightm",
        "lightm3d",
        "revmb3d",
        "flow_pyramid",
    }
    for name in BACKBONES:
        facts = BACKBONES.facts(name)
        assert facts["dims"] in (2, 3), name
        assert isinstance(facts.get("preset", {}), dict), name
        assert isinstance(facts.get("tasks", ()), tuple), name
    assert BACKBONES.names(dims=3) == ["lightm3d", "revmb3d"]
    assert BACKBONES["mci1"] is TimmBackbone and BACKBONES.fact("mci1", "preset")["arch"] == "fastvit_mci1"
    assert BACKBONES["lightm"] is BACKBONES["lightm3d"] is LightMEncoder
    assert BACKBONES.fact("lightm3d", "preset") == {"dims": 3, "in_channels": 4}
    assert BACKBONES.fact("flow_pyramid", "tasks") == ("flow",)


def test_every_head_states_dims_tasks_width_keys_and_what_it_builds():
    assert set(HEADS) == {"lraspp", "unet", "fpn", "deeplabv3plus", "ffnet", "lightm", "revunet3d", "flow"}
    for name in HEADS:
        facts = HEADS.facts(name)
        assert facts["dims"] and set(facts["dims"]) <= {2, 3}, name
        assert facts["tasks"] and isinstance(facts["tasks"], tuple), name
        assert facts.get("builds", "head") in ("head", "model"), name
        params = inspect.signature(HEADS[name]).parameters
        for key in facts["width_keys"]:  # every width key is a real hyper-parameter of the head
            assert key in params, (name, key)
        if len(facts["dims"]) > 1:  # a head serving 2D and 3D is told which
            assert "dims" in params, name
    assert HEADS.names(tasks="volume") == ["lightm", "revunet3d"]
    assert HEADS.names(tasks="flow") == ["flow"]
    assert (
        HEADS.names(tasks="seg")
        == HEADS.names(tasks="depth")
        == ["deeplabv3plus", "ffnet", "fpn", "lightm", "lraspp", "unet"]
    )
    assert HEADS["flow"] is CompactFlowNet and HEADS.fact("flow", "builds") == "model"
    assert HEADS.fact("fpn", "width_keys") == ("pyramid_channels", "segmentation_channels")


def test_every_registered_name_has_a_config_file_and_every_config_a_registered_name():
    assert _yaml_names("backbone") == set(BACKBONES)
    assert _yaml_names("head") == set(HEADS)  # ffnet_a/b/c.yaml are variants of the registered ffnet
    for path in (CONF / "head").glob("*.yaml"):  # sweeps scale the width keys found in the head's config
        cfg = yaml.safe_load(path.read_text())
        for key in HEADS.fact(cfg["name"], "width_keys"):
            assert key in cfg, (path.name, key)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet50'; available: \['flow_pyramid', 'lightm'"):
        create_backbone("resnet50")
    with pytest.raises(ValueError, match=r"unknown head 'psp'; available: \['deeplabv3plus', 'ffnet', 'flow'"):
        create_head("psp", [8, 16], [4, 8], 2)
    with pytest.raises(ValueError, match=r"unknown head 'psp'; available: \['deeplabv3plus'"):
        assemble("mci0", "psp", 2)
    with pytest.raises(ValueError, match=r"unknown backbone 'vit'; available: \["):
        BACKBONES.facts("vit")


def test_registering_a_name_twice_raises_and_leaves_the_entry():
    with pytest.raises(ValueError, match=r"backbone 'mci0' is already registered \(by .*TimmBackbone\)"):
        BACKBONES.add("mci0", LightMEncoder, dims=2)
    with pytest.raises(ValueError, match=r"head 'lraspp' is already registered"):
        HEADS.register("lraspp", dims=(2,), tasks=("seg",))(CompactFlowNet)
    assert BACKBONES["mci0"] is TimmBackbone and HEADS["lraspp"] is not CompactFlowNet


def test_create_head_refuses_a_head_that_builds_the_model():
    with pytest.raises(ValueError, match=r"head 'flow' builds a whole model .* use densekit.models.assemble"):
        create_head("flow", [8, 16], [4, 8], 2)


def test_assemble_checks_dims_from_the_facts_before_building():
    with pytest.raises(ValueError, match=r"head 'revunet3d' needs a 3D backbone; 'mci0' is 2D"):
        assemble("mci0", "revunet3d", 3)
    with pytest.raises(ValueError, match=r"head 'lraspp' needs a 2D backbone; 'revmb3d' is 3D"):
        assemble({"name": "revmb3d", "widths": [8, 16, 16, 24, 24]}, "lraspp", 3)
    with pytest.raises(ValueError, match=r"head 'flow' needs a 2D backbone; 'lightm3d' is 3D"):
        assemble("lightm3d", "flow", 2)
    with pytest.raises(ValueError, match="out_channels must be a positive integer"):
        assemble("mobilenetv3_large", "lraspp", 0)
    with pytest.raises(TypeError, match="expected a name, a dict with 'name', or an nn.Module"):
        assemble(3, "lraspp", 2)


def test_assemble_builds_2d_3d_and_whole_model_heads(single_thread):
    torch.manual_seed(0)
    seg = assemble({"name": "mobilenetv3_large", "variant": "small"}, {"name": "lraspp", "inter_channels": 16}, 3)
    assert isinstance(seg, DenseModel) and seg.eval()(torch.rand(1, 3, 50, 70)).shape == (1, 3, 50, 70)
    depth = assemble("mobilenetv3_large", "lraspp", 1, DepthActivation("sigmoid", max_depth=4.0, min_depth=1.0))
    out = depth.eval()(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 1, 32, 32) and 1.0 <= out.min() and out.max() <= 4.0
    vol = assemble({"name": "lightm3d", "init_filters": 8}, {"name": "lightm"}, 4)  # lightm head gets dims=3
    assert isinstance(vol, VolumeModel) and any(isinstance(m, torch.nn.Conv3d) for m in vol.head.modules())
    with torch.no_grad():
        assert vol.eval()(torch.randn(1, 4, 9, 10, 11)).shape == (1, 4, 9, 10, 11)
    flow = assemble("flow_pyramid", {"name": "flow", "context_channels": []}, 2)
    assert isinstance(flow, CompactFlowNet) and flow.context is None
    with pytest.raises(ValueError, match="builds the whole model; it takes no output module"):
        assemble("flow_pyramid", "flow", 2, output=torch.nn.Identity())


def test_every_model_module_is_imported_by_the_package():
    """A new backbone/head file registers itself: ``import densekit.models`` imports every module in it."""
    folder = Path(densekit.models.__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(folder)]))
    assert {"backbones", "heads", "assembly", "flow", "flow_ops", "flow_pyramid", "mobilesam"} <= set(names)
    code = (
        "import sys, densekit.models; "
        f"missing = [n for n in {names!r} if 'densekit.models.' + n not in sys.modules]; "
        "print(missing); sys.exit(bool(missing))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
