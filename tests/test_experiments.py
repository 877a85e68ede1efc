"""Every published-configuration recipe composes and trains a few steps on fixture data in its real format."""

import math

import pytest

from densekit.train import train
from helpers import make_ade, make_chairs, make_cityscapes, make_folder, make_nyu_folder, make_sintel, make_things
from helpers import make_kitti_depth as make_kitti
from helpers import make_kitti_flow as make_kitti15

SHRINK = [
    "backbone.pretrained=false",
    "data.augment.crop=[32,64]",
    "data.batch_size=1",
    "data.val_batch_size=1",
    "data.num_workers=0",
    "trainer.max_steps=2",
    "trainer.val_check_interval=1",
    "+trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]

RECIPES = {
    "lraspp_mbv3_cityscapes": (
        make_cityscapes,
        {"backbone.name": "mobilenetv3_large", "head.name": "lraspp", "data.name": "cityscapes", "optim.name": "sgd"},
    ),
    "mci2_fpn_ade20k": (
        make_ade,
        {"backbone.name": "mci2", "head.name": "fpn", "data.name": "ade20k", "optim.lr": 2e-4},
    ),
    "lightm_folder": (
        lambda root: make_folder(make_folder(root), split="val"),
        {"backbone.name": "lightm", "head.name": "lightm", "data.name": "folder"},
    ),
    "mobilesam_lraspp_cityscapes": (
        make_cityscapes,
        {"backbone.name": "mobilesam", "head.name": "lraspp", "data.name": "cityscapes"},
    ),
}


# depth recipes: fixture frames are 6x8, so the crops shrink (and pad: padded pixels are not valid)
DEPTH_RECIPES = {
    "depth_nyuv2_mci2": (
        make_nyu_folder,
        {
            "task.name": "depth",
            "backbone.name": "mci2",
            "head.name": "fpn",
            "data.name": "nyuv2",
            "data.eval_crop": "eigen_nyu",
        },
    ),
    "depth_kitti_eigen": (
        make_kitti,
        {
            "task.name": "depth",
            "backbone.name": "mci2",
            "head.name": "fpn",
            "data.name": "kitti",
            "data.eval_crop": "garg",
            "data.max_depth": 80.0,
        },
    ),
}


def _get(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_composes_and_trains(compose, tmp_path, recipe):
    make, expected = RECIPES[recipe]
    root = make(tmp_path / "data")
    extra = ["data.num_classes=3", "data.augment.crop=[16,32]"] if recipe == "lightm_folder" else []
    cfg = compose([f"experiment={recipe}", f"data.root={root}", f"output_dir={tmp_path / 'run'}", *SHRINK, *extra])
    for key, value in expected.items():
        assert _get(cfg, key) == value
    metrics = train(cfg)
    assert 0.0 <= metrics["val/mIoU"] <= 1.0
    assert list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(DEPTH_RECIPES))
def test_depth_recipe_composes_and_trains(compose, tmp_path, recipe):
    make, expected = DEPTH_RECIPES[recipe]
    root = make(tmp_path / "data")
    shrink = [o for o in SHRINK if "crop" not in o] + ["data.augment.crop=[32,64]", "data.kb_crop=false"][
        : 2 if recipe == "depth_kitti_eigen" else 1
    ]
    cfg = compose([f"experiment={recipe}", f"data.root={root}", f"output_dir={tmp_path / 'run'}", *shrink])
    for key, value in expected.items():
        assert _get(cfg, key) == value
    assert cfg.task.metrics.crop == expected["data.eval_crop"] and cfg.task.model.max_depth == cfg.data.max_depth
    metrics = train(cfg)
    assert metrics["val/abs_rel"] >= 0.0 and 0.0 <= metrics["val/d1"] <= 1.0
    assert list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))


FLOW_SHRINK = [o for o in SHRINK if "crop" not in o] + ["data.augment.crop=[12,16]", "data.val_length=2"]


@pytest.mark.slow
def test_flow_staged_schedule_composes_and_trains(compose, tmp_path):
    """chairs from scratch, then things / sintel / kitti each initialised from the previous weights."""
    chairs = make_chairs(tmp_path / "chairs")
    cfg = compose(
        ["experiment=flow_chairs", f"data.root={chairs}", f"output_dir={tmp_path / 'chairs_run'}", *FLOW_SHRINK]
    )
    assert (cfg.data.name, cfg.head.name, cfg.optim.lr, cfg.trainer.max_steps) == ("chairs", "flow", 4e-4, 2)
    metrics = train(cfg)
    assert metrics["val/epe"] >= 0.0
    stage1 = next((tmp_path / "chairs_run" / "checkpoints").glob("best-*.ckpt"))
    things = make_things(make_things(tmp_path / "things"), part="TEST")
    for recipe, root in [
        ("flow_things", things),
        ("flow_sintel_ft", make_sintel(tmp_path / "sintel")),
        ("flow_kitti_ft", make_kitti15(tmp_path / "kitti")),
    ]:
        run = tmp_path / f"{recipe}_run"
        cfg = compose(
            [f"experiment={recipe}", f"data.root={root}", f"output_dir={run}", f"init_from={stage1}", *FLOW_SHRINK]
        )
        metrics = train(cfg)
        assert math.isfinite(metrics["val/epe"]), recipe
        if recipe != "flow_things":  # Sintel and KITTI mark occlusions: EPE is split into noc / occ
            assert "val/epe_noc" in metrics and cfg.task.loss.kind == "robust"


def test_staged_flow_recipes_need_the_previous_stage(compose, tmp_path):
    with pytest.raises(ValueError, match="continues from experiment=flow_chairs: pass init_from="):
        train(compose(["experiment=flow_things", f"output_dir={tmp_path}", "data.root=/nonexistent"]))
    cfg = compose(
        [
            "task=flow",
            f"output_dir={tmp_path}",
            f"init_from={tmp_path / 'none.ckpt'}",
            *FLOW_SHRINK,
            "data.augment.crop=[64,64]",
        ]
    )
    with pytest.raises(FileNotFoundError, match="init_from: checkpoint not found"):
        train(cfg)


def test_recipes_keep_their_published_settings(compose):
    lr = compose(["experiment=lraspp_mbv3_cityscapes"])
    assert lr.backbone.dilated and lr.backbone.reduced_tail
    assert list(lr.head.pool.kernel) == [49, 49] and list(lr.head.pool.stride) == [16, 20]
    assert list(lr.data.augment.crop) == [769, 769]
    fpn = compose(["experiment=mci2_fpn_ade20k"])
    assert list(fpn.data.augment.crop) == [512, 512] and fpn.optim.name == "adamw" and fpn.trainer.max_steps == 40000
