"""Small datasets train with the defaults (issue 14, items 1, 3, 6, 10): the batch shrinks to the split, an
epoch repeats a small split up to trainer.val_check_interval batches, num_classes comes from classes.txt,
workers are capped to the machine, init_from does not log a misleading random-init warning."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densekit.data import DenseDataModule
from densekit.data.datamodule import Repeated, available_cpus, resolve_num_workers


def make_folder(root: Path, n_train: int = 3, n_val: int = 2, size=(48, 64), classes=("bg", "cell", "edge")):
    """root/images/<split>/*.png + root/masks/<split>/*.png (ids 0..K-1) + root/classes.txt, as documented."""
    rng = np.random.default_rng(0)
    h, w = size
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(n):
            mask = np.zeros((h, w), np.uint8)
            mask[h // 4 : h // 2, w // 4 : w // 2] = 1
            mask[h // 2 :, w // 2 :] = 2
            image = (rng.random((h, w, 3)) * 60 + mask[..., None] * 70).astype(np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"im{i}.png")
            Image.fromarray(mask).save(root / "masks" / split / f"im{i}.png")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


class _Items(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": torch.full((1,), float(i))}


def _module(n, batch_size, min_batches=0):
    dm = DenseDataModule(lambda split: _Items(n), batch_size=batch_size, min_train_batches=min_batches)
    dm.setup("fit")
    return dm


def test_batch_shrinks_to_a_small_split_and_says_so():
    dm = _module(3, 8)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert dm.batch_size == 3 and len(batches) == 1 and batches[0]["image"].shape == (3, 1)
    assert sorted(batches[0]["image"].flatten().tolist()) == [0.0, 1.0, 2.0]  # every sample once
    assert any("fewer than data.batch_size=8: batch size 3" in n for n in dm.notes)


def test_epoch_repeats_a_small_split_to_val_check_interval_batches():
    dm = _module(5, 2, min_batches=7)
    batches = list(dm.train_dataloader())
    assert len(batches) == 7  # 14 samples drawn from 5
    seen = torch.cat([b["image"].flatten() for b in batches]).tolist()
    assert set(seen) == {0.0, 1.0, 2.0, 3.0, 4.0} and len(seen) == 14
    assert any("repeats the split to 7 batches (14 samples, 2.8 passes" in n for n in dm.notes)


def test_no_adaptation_when_the_split_is_large_enough():
    dm = _module(40, 4, min_batches=5)
    assert len(list(dm.train_dataloader())) == 10 and dm.notes == []


def test_repeated_gives_each_repeat_its_own_index():
    base = _Items(3)
    rep = Repeated(base, 7)
    assert len(rep) == 7 and [rep[i]["image"].item() for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_num_workers_follow_the_machine():
    cpus = available_cpus()
    assert resolve_num_workers(cpus + 3) == cpus
    assert resolve_num_workers(0) == 0
    auto = resolve_num_workers("auto")
    assert auto == max(0, min(8, cpus - 1))
    with pytest.raises(ValueError, match=r"data.num_workers='many': expected an int >= 0 or 'auto'"):
        resolve_num_workers("many")


def _train(compose, overrides):
    from densekit.train import train

    cfg = compose(overrides)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        metrics = train(cfg)
    return cfg, metrics, out.getvalue()


def test_readme_own_data_line_trains_and_validates_on_three_images(compose, tmp_path, caplog):
    """The README's line (data=folder data.root=... data.num_classes=3 head=unet) + trainer.max_steps=4 on a
    3-image folder: today it stopped at 'fewer than batch_size=8' / Lightning's val_check_interval error."""
    root = make_folder(tmp_path / "mine")
    run = tmp_path / "run"
    caplog.set_level(logging.WARNING)
    cfg, metrics, out = _train(
        compose,
        [
            "data=folder",
            f"data.root={root}",
            "data.num_classes=3",
            "head=unet",
            "trainer.max_steps=4",
            "backbone=mobilenetv3_large",
            "backbone.pretrained=false",  # the README's mci2 works too, slower
            "trainer.enable_progress_bar=false",
            f"output_dir={run}",
        ],
    )
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4  # trained to max_steps, not 1 step (max_epochs=1 with an epoch of 1 batch)
    assert 0.0 <= metrics["val/mIoU"] <= 1.0 and "val/IoU/cell" in metrics and "val/IoU/edge" in metrics
    text = caplog.text
    assert "fewer than data.batch_size=8: batch size 3 is used" in text
    assert "an epoch repeats the split to 50 batches" in text


def test_num_classes_from_classes_txt(compose, tmp_path):
    """data.num_classes may be omitted where classes.txt says it; a wrong value is refused naming both."""
    from densekit.builder import datamodule_from_config
    from densekit.data import DenseDataModule  # noqa: F401
    from densekit.datacheck import check_data
    from densekit.errors import ConfigError

    root = make_folder(tmp_path / "mine", classes=("bg", "a", "b"))
    cfg = compose(["data=folder", f"data.root={root}", "data.num_workers=0"])
    dm = datamodule_from_config(cfg)
    names = check_data(cfg, dm)
    assert cfg.data.num_classes == 3 and names == ["bg", "a", "b"]
    cfg = compose(["data=folder", f"data.root={root}", "data.num_classes=5", "data.num_workers=0"])
    with pytest.raises(ConfigError, match=r"data.num_classes=5 but data=folder has 3 classes"):
        check_data(cfg, datamodule_from_config(cfg))


def test_max_steps_beyond_max_epochs_is_noted(compose, tmp_path):
    from densekit.builder import datamodule_from_config
    from densekit.datacheck import check_data

    root = make_folder(tmp_path / "mine", n_train=6)
    cfg = compose(
        [
            "data=folder",
            f"data.root={root}",
            "data.batch_size=2",
            "trainer.val_check_interval=null",
            "trainer.max_steps=10",
            "data.num_workers=0",
        ]
    )
    dm = datamodule_from_config(cfg)
    check_data(cfg, dm)
    assert any(
        "trainer.max_steps=10 will not be reached: trainer.max_epochs=1 x 3 batches per epoch stops at step 3" in n
        for n in dm.notes
    )


def test_init_from_does_not_claim_random_initialisation(compose, smoke_run, tmp_path, recwarn):
    """With init_from the hub weights are not looked up (they would be overwritten), so the log no longer
    says 'Continuing from RANDOM initialisation'."""
    from densekit.builder import task_from_config

    run_dir = smoke_run[0]
    best = sorted((run_dir / "checkpoints").glob("*.ckpt"))[0]
    cfg = compose(["experiment=smoke", "backbone.pretrained=auto", f"init_from={best}"])
    task_from_config(cfg, None)
    assert not [w for w in recwarn if "RANDOM" in str(w.message)]


def test_16bit_training_range_is_saved_and_the_predictor_scales_alike(compose, tmp_path):
    """A folder of 16-bit grey images using 0..235: training measures the range once; the run config (and so
    the checkpoint) carries it, and the Predictor scales a 16-bit input exactly as the training data did."""
    from densekit import Predictor
    from densekit.builder import datamodule_from_config
    from densekit.datacheck import check_data

    root = make_folder(tmp_path / "grey")
    for split in ("train", "val"):
        for p in (root / "images" / split).glob("*.png"):
            grey = np.asarray(Image.open(p).convert("L")).astype(np.uint16) * 235 // 255  # 0..235 of 0..65535
            Image.fromarray(grey.astype(np.uint16)).save(p)
    run = tmp_path / "run"
    _, metrics, _ = _train(
        compose,
        [
            "data=folder",
            f"data.root={root}",
            "trainer.max_steps=2",
            "trainer.val_check_interval=null",
            "backbone=mobilenetv3_large",
            "backbone.pretrained=false",
            "data.num_workers=0",
            "trainer.enable_progress_bar=false",
            f"output_dir={run}",
        ],
    )
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    lo, hi = saved["data"]["intensity"]["range"]
    assert 0 <= lo < hi <= 235 and saved["data"]["num_classes"] == 3
    assert saved["data"]["class_names"] == ["bg", "cell", "edge"]
    cfg = compose(["data=folder", f"data.root={root}", "data.num_workers=0"])
    dm = datamodule_from_config(cfg)
    check_data(cfg, dm)
    sample = dm.val_set[0]["image"]  # (3, H, W) float in [0, 1], as training saw it
    ckpt = sorted((run / "checkpoints").glob("*.ckpt"))[0]
    predictor = Predictor.from_checkpoint(ckpt)
    from densekit.inference import _load_image

    raw = np.asarray(Image.open(sorted((root / "images" / "val").glob("*.png"))[0]))
    assert raw.dtype == np.uint16 and raw.max() <= 235
    seen = _load_image(raw, predictor.intensity)  # (H, W, 3)
    assert seen.max() > 0.9  # not the black image that / 65535 gives
    np.testing.assert_allclose(seen.transpose(2, 0, 1), sample.numpy(), atol=1e-6)


def test_seg_loss_class_weights_and_an_all_ignore_batch():
    from densekit.losses import seg_loss

    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5))
    plain = seg_loss(logits, target)
    assert torch.allclose(seg_loss(logits, target, class_weights=[1.0, 1.0, 1.0]), plain)
    weighted = seg_loss(logits, target, class_weights=[0.0, 0.0, 1.0])
    only2 = torch.nn.functional.cross_entropy(logits, target.masked_fill(target != 2, 255), ignore_index=255)
    assert torch.allclose(weighted, only2)  # weights 0 for classes 0/1 = CE over class-2 pixels only
    with pytest.raises(ValueError, match="class_weights: expected 3 finite weights"):
        seg_loss(logits, target, class_weights=[1.0, 2.0])
    empty = seg_loss(logits, torch.full((2, 4, 5), 255))  # nothing labelled: 0, not NaN
    assert empty.item() == 0.0
    empty.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_class_weights_count_is_checked_against_the_classes(compose, tmp_path):
    from densekit.builder import datamodule_from_config
    from densekit.datacheck import check_data
    from densekit.errors import ConfigError

    root = make_folder(tmp_path / "mine")
    cfg = compose(["data=folder", f"data.root={root}", "data.num_workers=0", "task.loss.class_weights=[1,2]"])
    with pytest.raises(ConfigError, match="task.loss.class_weights has 2 weights but data=folder has 3 classes"):
        check_data(cfg, datamodule_from_config(cfg))
