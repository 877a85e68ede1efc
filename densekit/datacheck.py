"""Checking the data against a composed run config before training, and filling in what the data knows
and the config leaves open (the number and names of classes, a volume's input channels, a 16-bit image
range), so that the saved config (config.yaml, the checkpoint) rebuilds the run exactly. Works on the
OmegaConf config ``densekit.train`` composes (it edits it in place).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from .data import DenseDataModule
from .errors import ConfigError
from .tasks import get_task

log = logging.getLogger(__name__)


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def _world_size(trainer: dict) -> int:
    """The number of training processes the trainer config asks for (1 when it leaves it to Lightning)."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    else:
        try:
            count = int(devices)
        except (TypeError, ValueError):
            count = 1  # "auto"
    return max(1, count) * max(1, int(trainer.get("num_nodes") or 1))


def check_data(cfg: DictConfig, datamodule: DenseDataModule) -> list[str] | None:
    """Build the datasets (cheap: file listing) and check them against the config, filling in what the data
    knows and the config leaves open: ``data.num_classes`` (from classes.txt, dataset.json or the reader),
    ``backbone.in_channels`` (3D: the volumes' channels). Adapts the batch size and epoch to a small train
    split (``DenseDataModule.fit_to_split``). Returns the class names; every change is in
    ``datamodule.notes``."""
    datamodule.setup("fit")
    train_set = datamodule.train_set
    channels = getattr(train_set, "in_channels", None)
    if channels is not None and "in_channels" in cfg.backbone and cfg.backbone.in_channels != channels:
        source = getattr(train_set, "channels_source", None) or f"data={cfg.data.name}"
        datamodule._note(
            f"backbone.in_channels={cfg.backbone.in_channels} -> {channels}: the data has {channels} "
            f"input channel(s) ({source})"
        )
        cfg.backbone.in_channels = int(channels)
    for dataset in (train_set, datamodule.val_set):
        for text in getattr(dataset, "notes", None) or []:
            datamodule._note(text)
    rule = getattr(train_set, "intensity", None)
    measured = getattr(rule, "range", None)
    if measured is not None and "intensity" in cfg.data and cfg.data.intensity.get("range") is None:
        # the train split's measured raw range goes into the saved config (config.yaml, the checkpoint), so
        # evaluation and prediction scale images exactly as training did
        cfg.data.intensity.range = [float(measured[0]), float(measured[1])]
    world = _world_size(_plain(cfg.trainer))
    length = datamodule.fit_to_split(world)
    max_steps, max_epochs = int(cfg.trainer.get("max_steps") or -1), cfg.trainer.get("max_epochs")
    per_epoch = length // (datamodule.batch_size * world)
    if max_steps > 0 and max_epochs not in (None, -1) and max_steps > int(max_epochs) * per_epoch:
        datamodule._note(
            f"trainer.max_steps={max_steps} will not be reached: trainer.max_epochs={max_epochs} x {per_epoch} "
            f"batches per epoch stops at step {int(max_epochs) * per_epoch}; set trainer.max_epochs=-1 to train "
            f"to max_steps"
        )
    if not get_task(cfg.task.name).has_classes:
        return None
    names = (
        getattr(datamodule.val_set, "class_names", None)
        or getattr(train_set, "class_names", None)
        or cfg.data.get("class_names")
    )
    given = None if OmegaConf.is_missing(cfg.data, "num_classes") else cfg.data.get("num_classes")
    if given is None:
        if names is None:
            raise ConfigError(
                f"data.num_classes is not set and data={cfg.data.name} does not list its classes: set "
                f"data.num_classes=K (and data.class_names), or give the dataset a class list"
            )
        cfg.data.num_classes = len(names)
        log.info("data.num_classes=%d from the data's class list %s", len(names), list(names)[:10])
    elif names is not None and len(names) != given:
        raise ConfigError(
            f"data.num_classes={given} but data={cfg.data.name} has {len(names)} classes: {list(names)[:10]}"
        )
    weights = (cfg.task.get("loss") or {}).get("class_weights")
    if weights is not None and len(weights) != cfg.data.num_classes:
        raise ConfigError(
            f"task.loss.class_weights has {len(weights)} weights but data={cfg.data.name} has "
            f"{cfg.data.num_classes} classes: give one weight per class"
        )
    if names is not None and cfg.data.get("class_names") is None:
        # the names the data gave (classes.txt, dataset.json) go into the saved config, so evaluate.py, the
        # Predictor and the notebook name the classes; the reader's own input (``classes``, an interpolation of
        # class_names) is frozen first, so that a rebuilt reader still reads e.g. classes.txt's colour table
        if "classes" in cfg.data:
            cfg.data.classes = cfg.data.classes
        cfg.data.class_names = [str(n) for n in names]
    return list(names) if names is not None else None


def record_fingerprint(run_dir: Path, datamodule: DenseDataModule) -> dict:
    """The quick data checks of ``scripts/inspect_data.py`` on a sample of each split, at the start of a run:
    written to ``<run_dir>/fingerprint.json``; their warnings (0/255 masks, 16-bit ranges, bad samples, ...)
    go to the log and the run's notes. Never fails the run (a failure to describe the data is a note)."""
    from .data.fingerprint import quick_check

    prints = {
        split: quick_check(ds)
        for split, ds in (("train", datamodule.train_set), ("val", datamodule.val_set))
        if ds is not None
    }
    if pl.utilities.rank_zero_only.rank == 0:
        (run_dir / "fingerprint.json").write_text(json.dumps(prints, indent=2, default=str) + "\n")
    for split, fp in prints.items():
        for text in fp.get("warnings") or []:
            datamodule._note(f"{split} data: {text}")
    return prints
