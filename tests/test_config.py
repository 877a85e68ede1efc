import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from densekit.train import check_config


def test_default_config_is_seg_mci2_lraspp_synthetic(compose):
    cfg = compose(["task=seg", "backbone=mci2"])
    assert cfg.task.name == "seg"
    assert cfg.backbone.name == "mci2"
    assert cfg.backbone.pretrained == "auto"
    assert cfg.head.name == "lraspp"
    assert cfg.data.name == "synthetic"
    assert cfg.data.num_classes == len(cfg.data.class_names) == 5
    assert cfg.output_dir is None
    check_config(cfg)


@pytest.mark.parametrize("name", ["mci0", "mci1", "mci2"])
def test_backbone_group(compose, name):
    cfg = compose([f"backbone={name}"])
    assert cfg.backbone.name == name and cfg.backbone.tag == "apple_mclip"


def test_unknown_group_value_lists_the_options(compose):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as err:
        compose(["backbone=resnet9000"])
    text = str(err.value)
    assert "resnet9000" in text
    for option in ("mci0", "mci1", "mci2"):
        assert option in text


def test_unknown_key_is_rejected(compose):
    with pytest.raises(ConfigCompositionException) as err:
        compose(["trainer.max_epochz=3"])
    assert "max_epochz" in str(err.value)


def test_smoke_experiment_composes(compose):
    cfg = compose(["experiment=smoke"])
    assert cfg.backbone.name == "mci0" and list(cfg.data.size) == [64, 64]
    assert cfg.backbone.pretrained is False


def test_incompatible_head_is_rejected_before_building(compose):
    cfg = compose([])
    cfg.head.name = "unet3d"
    with pytest.raises(
        ValueError,
        match=r"head=unet3d does not fit task=seg; valid heads: "
        r"\['deeplabv3plus', 'ffnet', 'fpn', 'lightm', 'lraspp', 'unet'\]",
    ):
        check_config(cfg)


def test_3d_backbone_for_a_2d_task_is_rejected(compose):
    cfg = compose(["backbone=lightm3d"])
    with pytest.raises(ValueError, match=r"backbone=lightm3d is 3D but task=seg needs a 2D backbone"):
        check_config(cfg)


def test_lightm_unet_composes(compose):
    cfg = compose(["backbone=lightm", "head=lightm"])
    check_config(cfg)
    assert cfg.backbone.blocks_down == [1, 2, 2, 4] and cfg.backbone.d_state == 16
