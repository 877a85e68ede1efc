"""Every published-configuration recipe composes and trains a few steps on fixture data in its real format."""

import pytest

from densekit.train import train
from tests.test_depth_datasets import make_kitti, make_nyu_folder
from tests.test_seg_datasets import make_ade, make_cityscapes, make_folder

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
    "lraspp_mbv3_cityscapes": (make_cityscapes, {"backbone.name": "mobilenetv3_large", "head.name": "lraspp",
                                                  "data.name": "cityscapes", "optim.name": "sgd"}),
    "mci2_fpn_ade20k": (make_ade, {"backbone.name": "mci2", "head.name": "fpn", "data.name": "ade20k",
                                   "optim.lr": 2e-4}),
    "lightm_folder": (lambda root: make_folder(make_folder(root), split="val"), {"backbone.name": "lightm", "head.name": "lightm", "data.name": "folder"}),
    "mobilesam_lraspp_cityscapes": (make_cityscapes, {"backbone.name": "mobilesam", "head.name": "lraspp",
                                                      "data.name": "cityscapes"}),
}


# depth recipes: fixture frames are 6x8, so the crops shrink (and pad: padded pixels are not valid)
DEPTH_RECIPES = {
    "depth_nyuv2_mci2": (make_nyu_folder, {"task.name": "depth", "backbone.name": "mci2", "head.name": "fpn",
                                           "data.name": "nyuv2", "data.eval_crop": "eigen_nyu"}),
    "depth_kitti_eigen": (make_kitti, {"task.name": "depth", "backbone.name": "mci2", "head.name": "fpn",
                                       "data.name": "kitti", "data.eval_crop": "garg", "data.max_depth": 80.0}),
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


def test_recipes_keep_their_published_settings(compose):
    lr = compose(["experiment=lraspp_mbv3_cityscapes"])
    assert lr.backbone.dilated and lr.backbone.reduced_tail
    assert list(lr.head.pool.kernel) == [49, 49] and list(lr.head.pool.stride) == [16, 20]
    assert list(lr.data.augment.crop) == [769, 769]
    fpn = compose(["experiment=mci2_fpn_ade20k"])
    assert list(fpn.data.augment.crop) == [512, 512] and fpn.optim.name == "adamw" and fpn.trainer.max_steps == 40000
