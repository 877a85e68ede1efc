"""Plain run config -> model, task module, datamodule; and the one checkpoint reader.

Hydra-free: every function takes plain dicts (the resolved run config that ``train.py`` composes, that a
checkpoint carries in its hyper-parameters and that ``config.yaml`` holds). An OmegaConf config is
accepted too (resolved to plain containers first) without this module importing OmegaConf. Training,
evaluation, export, the Predictor and the notebook all build through here, so a checkpoint is rebuilt
exactly as it was trained.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import DenseDataModule, build_dataset
from .tasks import DenseTask, get_task

_LOADER_KEYS = ("batch_size", "num_workers", "val_batch_size")
# task-level facts in the data config, not dataset arguments
_TASK_KEYS = ("num_classes", "class_names", "ignore_index", "eval_crop")


def plain(config: Any) -> Any:
    """``config`` as plain dicts/lists: an OmegaConf container is resolved (``OmegaConf.to_container``,
    found through the object's own module, so this module never imports OmegaConf); anything else is
    returned as it is."""
    if config is None:
        return {}
    if type(config).__module__.startswith("omegaconf"):
        return sys.modules["omegaconf"].OmegaConf.to_container(config, resolve=True)
    return config


# -- models and tasks ----------------------------------------------------------------------------------
def create_model(task: str, *, backbone, head, num_classes: int | None = None, **kwargs) -> nn.Module:
    """The network for ``task`` from a backbone and a head, each a registered name, a dict
    ``{"name": ..., **params}`` or a ready module.

    seg:    ``model(image) -> logits (B, num_classes, H, W)``
    depth:  ``model(image) -> metres (B, 1, H, W)``; kwargs ``activation`` ("sigmoid" | "softplus"),
            ``max_depth`` (default 10), ``min_depth`` (default 1e-3); see ``densekit.models.DepthActivation``.
    volume: ``model(x (B, C, D, H, W)) -> logits (B, num_classes, D, H, W)`` from a 3D backbone and head.
    flow:   ``model(image1, image2) -> (B, 2, H, W)`` pixels in eval mode, the coarse-to-fine list in
            training; head "flow".
    The accepted ``kwargs`` are the task's ``model_kwargs`` (the config's ``task.model`` keys).
    """
    return get_task(task).build_model(backbone=backbone, head=head, num_classes=num_classes, **kwargs)


def model_from_config(config: dict, pretrained: bool | None = False) -> nn.Module:
    """The network a run config describes (``task``, ``backbone``, ``head``, ``data``, ``task.model``).

    ``pretrained`` replaces the backbone's own setting (False when rebuilding from a checkpoint, whose
    weights are loaded next); None keeps the config's value.
    """
    config = plain(config)
    task = get_task(config["task"]["name"])
    return task.build_model(**task.model_config(config, pretrained=pretrained))


def task_from_config(
    config: dict, class_names: list[str] | None = None, with_noc: bool = False, pretrained: bool | None = None
) -> DenseTask:
    """The task module (network included) a run config describes.

    ``pretrained=None``: the backbone's configured value, except when the config continues from a
    checkpoint (``init_from`` or ``ckpt_path``): its weights replace the network's, so fetching hub
    weights first would only be overwritten (and log a misleading "random initialisation").
    """
    config = plain(config)
    if pretrained is None and (config.get("init_from") or config.get("ckpt_path")):
        pretrained = False
    model = model_from_config(config, pretrained=pretrained)
    return get_task(config["task"]["name"]).from_config(config, model=model, class_names=class_names, with_noc=with_noc)


# -- data ----------------------------------------------------------------------------------------------
def split_data_config(data: dict) -> tuple[str, dict, dict, dict]:
    """A plain data config -> (dataset name, dataset kwargs, loader kwargs, per-split lengths)."""
    data = dict(plain(data))
    name = data.pop("name")
    loader = {k: data.pop(k) for k in _LOADER_KEYS if k in data}
    lengths = {"train": data.pop("train_length", None), "val": data.pop("val_length", None)}
    for key in _TASK_KEYS:
        data.pop(key, None)
    return name, data, loader, lengths


def datamodule_from_config(config: dict) -> DenseDataModule:
    """The datamodule of a run config: its ``data`` section, the task's batch targets (``task.targets``,
    else the task class's), ``seed`` and the trainer's ``val_check_interval``."""
    config = plain(config)
    name, data, loader, lengths = split_data_config(config["data"])
    task = config.get("task") or {}
    targets = tuple(task.get("targets") or get_task(task["name"]).targets)

    def make(split: str):
        length = {} if lengths.get(split) is None else {"length": lengths[split]}
        return build_dataset(name, split, targets=targets, **length, **data)

    interval = (config.get("trainer") or {}).get("val_check_interval")
    # an int interval counts training batches: an epoch holds at least that many (a smaller split repeats),
    # so that validation runs as configured instead of Lightning refusing an interval longer than the epoch
    min_batches = interval if isinstance(interval, int) and not isinstance(interval, bool) else 0
    return DenseDataModule(make, seed=config.get("seed", 0), min_train_batches=min_batches, **loader)


# -- checkpoints ---------------------------------------------------------------------------------------
def read_checkpoint(path: str | Path, what: str = "checkpoint", weights: bool = True) -> dict:
    """THE checkpoint reader: a densekit (Lightning) checkpoint file -> its dict.

    One-line errors: ``FileNotFoundError`` for a missing file; ``ValueError`` for an unreadable one (torch's
    first line) and for a file that is not a Lightning checkpoint (no ``state_dict``). ``what`` starts
    the messages that name a config key (``"init_from"``, ``"ckpt_path"``). ``weights=False``
    memory-maps the file, so only what is touched is read (the config, the step; not every tensor).
    """
    path = Path(path)
    lead = f"{what}: " if what != "checkpoint" else ""
    if not path.is_file():
        raise FileNotFoundError(f"{lead}checkpoint not found: {path}")
    try:
        try:
            ckpt = torch.load(str(path), map_location="cpu", weights_only=False, mmap=not weights)
        except RuntimeError:
            if weights:
                raise
            ckpt = torch.load(str(path), map_location="cpu", weights_only=False)  # legacy (non-zip): no mmap
    except Exception as err:  # noqa: BLE001 - whatever torch says about a file it cannot read
        first = (str(err).splitlines() or [""])[0]
        raise ValueError(f"{lead}could not read checkpoint {path}: {type(err).__name__}: {first}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{lead}{path} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def checkpoint_config(ckpt: dict, path: str | Path = "checkpoint") -> dict:
    """The resolved run config a densekit checkpoint carries (its hyper-parameters' ``config``); a
    ValueError when it has none (a Lightning checkpoint of another program)."""
    config = (ckpt.get("hyper_parameters") or {}).get("config") if isinstance(ckpt, dict) else None
    if not config or "task" not in config:
        raise ValueError(f"{path} is not a densekit checkpoint (no run config in its hyper_parameters)")
    return config


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", str(text))[:3])


def check_version(ckpt: dict, path: str | Path = "checkpoint") -> str | None:
    """Refuse a checkpoint written by a newer densekit (a ``ValueError`` naming both versions: its config may
    hold keys this version does not know); for one written by an older densekit, or before versions were
    recorded (0.1.0), return the line to tell the user (its config is read through the compatibility rules
    that keep old checkpoints loading, tested on tests/fixtures/old_checkpoints). None when they match."""
    from . import __version__

    written = ckpt.get("densekit_version") if isinstance(ckpt, dict) else None
    if written is None:
        return f"{path}: written by densekit 0.1.0 (no version recorded); this is densekit {__version__}"
    if _version(written) > _version(__version__):
        raise ValueError(
            f"{path} was written by densekit {written}, newer than this densekit {__version__}: "
            "upgrade densekit (pip install -U densekit) to read it"
        )
    if _version(written) != _version(__version__):
        return f"{path}: written by densekit {written}; this is densekit {__version__} (read as compatible)"
    return None


def model_state(ckpt: dict) -> dict:
    """The network's weights from a checkpoint's ``state_dict``: the task module's ``model.`` prefix
    stripped, the task's own buffers (metric state) left out."""
    return {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}


def load_checkpoint_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(the network in eval mode, the run config) from a densekit checkpoint: rebuilt from the config it
    carries with ``pretrained=False`` (the checkpoint holds the trained weights) and loaded strictly."""
    ckpt = read_checkpoint(path)
    check_version(ckpt, path)  # a newer densekit's checkpoint: refused, naming both versions
    config = checkpoint_config(ckpt, path)
    model = model_from_config(config, pretrained=False)
    missing, unexpected = model.load_state_dict(model_state(ckpt), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not match its own config: missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    return model.to(device).eval(), config


def training_frame_size(config: dict) -> tuple[int, int] | None:
    """The (H, W) of the frames a checkpoint's model trained on, from its run config: ``data.size`` (the
    embedded scenes are generated at that size, their motions a fraction of it), else the training crop
    ``data.augment.crop`` (real datasets: the crops the network saw); None when the config has neither."""
    data = plain(config).get("data") or {}
    for size in (data.get("size"), (data.get("augment") or {}).get("crop")):
        if isinstance(size, (list, tuple)) and len(size) == 2:
            return int(size[0]), int(size[1])
    return None


__all__ = [
    "check_version",
    "checkpoint_config",
    "create_model",
    "datamodule_from_config",
    "load_checkpoint_model",
    "model_from_config",
    "model_state",
    "plain",
    "read_checkpoint",
    "split_data_config",
    "task_from_config",
    "training_frame_size",
]
